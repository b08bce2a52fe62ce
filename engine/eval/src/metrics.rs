//! Scores: multiple choice from log-likelihoods (`acc`, `acc_norm` as lm-evaluation-harness
//! computes them); open answers by ROUGE-1/2/L F1 as Google's `rouge-score` computes them (its
//! default tokenizer, no stemmer: lower-cased, runs of `[a-z0-9]`; text in other scripts has no
//! tokens there, where ms-swift's scorer cuts Chinese with jieba) and corpus BLEU-4 as
//! `sacrebleu` computes it (its `13a` tokenizer, `exp` smoothing, one reference per answer);
//! answers extracted for exact match (a choice letter, a final number).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

/// The index of the largest value; the first one on ties (numpy's `argmax`).
pub fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// lm-evaluation-harness's multiple-choice predictions: `acc`'s (the highest log-likelihood)
/// and `acc_norm`'s (the highest log-likelihood divided by the choice's length, `len(choice)`
/// in Python: characters, which are bytes for ASCII choices).
pub fn mcq_predictions(loglikelihoods: &[f64], choices: &[String]) -> (usize, usize) {
    let norm: Vec<f64> = loglikelihoods
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.chars().count().max(1) as f64)
        .collect();
    (argmax(loglikelihoods), argmax(&norm))
}

/// `rouge-score`'s default tokenizer: lower-case, every run of characters outside `[a-z0-9]`
/// a separator.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// ROUGE-N F1 of `prediction` against `target` (`rouge-score`'s `rougeN`).
pub fn rouge_n(target: &str, prediction: &str, n: usize) -> f64 {
    let (t, p) = (rouge_tokens(target), rouge_tokens(prediction));
    let (tn, pn) = (ngrams(&t, n), ngrams(&p, n));
    let overlap: usize = tn
        .iter()
        .map(|(g, c)| (*c).min(pn.get(g).copied().unwrap_or(0)))
        .sum();
    let (tc, pc): (usize, usize) = (tn.values().sum(), pn.values().sum());
    fmeasure(
        overlap as f64 / pc.max(1) as f64,
        overlap as f64 / tc.max(1) as f64,
    )
}

/// ROUGE-L F1 (longest common subsequence of tokens; `rouge-score`'s `rougeL`).
pub fn rouge_l(target: &str, prediction: &str) -> f64 {
    let (t, p) = (rouge_tokens(target), rouge_tokens(prediction));
    if t.is_empty() || p.is_empty() {
        return 0.0;
    }
    let mut prev = vec![0usize; p.len() + 1];
    for a in &t {
        let mut cur = vec![0usize; p.len() + 1];
        for (j, b) in p.iter().enumerate() {
            cur[j + 1] = if a == b {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        prev = cur;
    }
    let lcs = prev[p.len()] as f64;
    fmeasure(lcs / p.len() as f64, lcs / t.len() as f64)
}

/// `sacrebleu`'s `13a` tokenizer (mteval-v13a's).
pub fn tokenize_13a(line: &str) -> Vec<String> {
    static RES: OnceLock<[(Regex, &'static str); 4]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| unreachable!("fixed pattern: {e}"));
        [
            (re(r"([{-~\[-` -&(-+:-@/])"), " ${1} "),
            (re(r"([^0-9])([\.,])"), "${1} ${2} "),
            (re(r"([\.,])([^0-9])"), " ${1} ${2}"),
            (re(r"([0-9])(-)"), "${1} ${2} "),
        ]
    });
    let mut s = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut s = format!(" {s} ");
    for (re, rep) in res {
        s = re.replace_all(&s, *rep).into_owned();
    }
    s.split_whitespace().map(str::to_string).collect()
}

/// Corpus BLEU-4 (0..100) of `predictions` against one reference each, as `sacrebleu`'s
/// `corpus_bleu` computes it by default.
pub fn corpus_bleu(predictions: &[String], references: &[String]) -> f64 {
    let (mut correct, mut total) = ([0usize; 4], [0usize; 4]);
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (p, r) in predictions.iter().zip(references) {
        let (h, t) = (tokenize_13a(p), tokenize_13a(r));
        sys_len += h.len();
        ref_len += t.len();
        for n in 1..=4 {
            let (hn, tn) = (ngrams(&h, n), ngrams(&t, n));
            total[n - 1] += h.len().saturating_sub(n - 1);
            correct[n - 1] += hn
                .iter()
                .map(|(g, c)| (*c).min(tn.get(g).copied().unwrap_or(0)))
                .sum::<usize>();
        }
    }
    // sacrebleu stops early when nothing matches at all (its issue #141): the score is 0.
    if correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; 4];
    let mut smooth = 1.0;
    for n in 0..4 {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let log = |x: f64| if x == 0.0 { -9999999999.0 } else { x.ln() };
    bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / 4.0).exp()
}

/// The choice letter an answer gives: the letter after `answer is` / `answer:` when the text
/// says so, else the first standalone A-D.
pub fn extract_letter(text: &str) -> Option<char> {
    static RES: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (said, first) = RES.get_or_init(|| {
        (
            Regex::new(r"(?i)answer(?:\s+is)?\s*[:：]?\s*\(?([A-D])\b")
                .unwrap_or_else(|e| unreachable!("fixed pattern: {e}")),
            Regex::new(r"\b([A-D])\b").unwrap_or_else(|e| unreachable!("fixed pattern: {e}")),
        )
    });
    said.captures(text)
        .or_else(|| first.captures(text))
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().chars().next())
        .map(|c| c.to_ascii_uppercase())
}

/// The last number in a text (thousands separators dropped), for math answers.
pub fn extract_number(text: &str) -> Option<f64> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"-?\d[\d,]*(?:\.\d+)?").unwrap_or_else(|e| unreachable!("fixed pattern: {e}"))
    });
    re.find_iter(text)
        .last()
        .and_then(|m| m.as_str().replace(',', "").parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acc_norm_divides_by_the_choice_length() {
        let lls = [-4.0, -6.0];
        let choices = ["ab".to_string(), "abcdef".to_string()];
        // acc: -4 > -6; acc_norm: -2 < -1.
        assert_eq!(mcq_predictions(&lls, &choices), (0, 1));
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
    }

    #[test]
    fn rouge_by_hand() {
        // target "the cat sat", prediction "the cat ran": 2 of 3 unigrams, 1 of 2 bigrams.
        assert!((rouge_n("The cat sat.", "the CAT ran", 1) - 2.0 / 3.0).abs() < 1e-12);
        assert!((rouge_n("The cat sat.", "the CAT ran", 2) - 0.5).abs() < 1e-12);
        // LCS of "a b c d" and "a c b d" is 3.
        assert!((rouge_l("a b c d", "a c b d") - 0.75).abs() < 1e-12);
        assert_eq!(rouge_l("", "a"), 0.0);
    }

    #[test]
    fn thirteen_a_tokenizer_splits_punctuation_but_not_numbers() {
        assert_eq!(
            tokenize_13a("Hello, world! It costs $3.50 (1,000-2)."),
            [
                "Hello", ",", "world", "!", "It", "costs", "$", "3.50", "(", "1,000", "-", "2",
                ")", "."
            ]
        );
    }

    #[test]
    fn identical_corpus_is_100_and_extraction() {
        let s = vec!["a b c d e".to_string()];
        assert!((corpus_bleu(&s, &s) - 100.0).abs() < 1e-9);
        // No n-gram in common: sacrebleu's early stop gives 0, not a smoothed value.
        assert_eq!(corpus_bleu(&["x y z".to_string()], &s), 0.0);
        assert_eq!(extract_letter("I think the answer is (c)."), Some('C'));
        assert_eq!(extract_letter("B. because"), Some('B'));
        assert_eq!(extract_letter("none"), None);
        assert_eq!(extract_number("so 3 + 4 = 1,234.5 apples"), Some(1234.5));
        assert_eq!(extract_number("no number"), None);
    }
}
