//! lm-evaluation-harness's plain multiple-choice prompt and the requests it scores.
//!
//! A question is `{question.strip()}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:` (its MMLU
//! `doc_to_text`); a few-shot example is that text, the target delimiter ` ` and the right
//! letter; examples are joined by the few-shot delimiter `\n\n`, after the benchmark's header.
//! Each choice's continuation is ` A` .. ` D`. Tokens are split as lm-evaluation-harness's
//! `_encode_pair` splits them: trailing whitespace of the context moves to the continuation,
//! the context and the whole text are tokenized separately and the continuation's tokens are
//! the whole's after the context's.

use crate::rows::{McqRow, LETTERS};

/// The target delimiter between a question and its answer.
pub const TARGET_DELIMITER: &str = " ";
/// Between few-shot examples (and between the last example and the question).
pub const FEWSHOT_DELIMITER: &str = "\n\n";

/// A question's text, up to and including `Answer:`.
pub fn question_text(row: &McqRow) -> String {
    let mut s = row.question.trim().to_string();
    for (l, c) in LETTERS.iter().zip(&row.choices) {
        s.push('\n');
        s.push_str(l);
        s.push_str(". ");
        s.push_str(c);
    }
    s.push_str("\nAnswer:");
    s
}

/// The prompt's shared part: the header and the few-shot examples, each followed by the
/// few-shot delimiter. Every question's context starts with it.
pub fn shared_prefix(header: &str, shots: &[McqRow]) -> String {
    let mut s = header.to_string();
    for shot in shots {
        s.push_str(&question_text(shot));
        s.push_str(TARGET_DELIMITER);
        s.push_str(LETTERS[shot.answer]);
        s.push_str(FEWSHOT_DELIMITER);
    }
    s
}

/// The continuations of a row's choices (` A` .. ` D`) and the choice strings lm-evaluation
/// -harness normalises `acc_norm` by (`A` .. `D`).
pub fn choices(row: &McqRow) -> Vec<(String, String)> {
    LETTERS[..row.choices.len()]
        .iter()
        .map(|l| (format!("{TARGET_DELIMITER}{l}"), l.to_string()))
        .collect()
}

/// One scoring request in tokens: the context's tokens and the continuation's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// `_encode_pair`: splits `context + continuation` into tokens as lm-evaluation-harness does.
pub fn encode_pair<E>(
    context: &str,
    continuation: &str,
    encode: &dyn Fn(&str) -> Result<Vec<u32>, E>,
) -> Result<Request, E> {
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = encode(&format!("{trimmed}{continuation}"))?;
    let ctx = encode(trimmed)?;
    let split = ctx.len().min(whole.len());
    Ok(Request {
        continuation: whole[split..].to_vec(),
        context: ctx,
    })
}

/// How many of the prompt's shared tokens (`prefix`: the header and few-shot examples alone,
/// tokenized) can be computed once and cached under every scored input. Each of `inputs` is an
/// input's tokens and its first scored position (no scored position may be in the cache). A
/// tokenizer may end the prefix alone differently from the prefix followed by a question (a
/// byte-level BPE makes one token of a trailing "\n\n" but two before a word), so the cache is
/// the longest start of `prefix` that every input shares; an input sharing less than half of
/// `prefix` is not counted (it is computed whole: `shares(input) < len`).
pub fn cached_prefix_len<T: PartialEq>(prefix: &[T], inputs: &[(&[T], usize)]) -> usize {
    let floor = prefix.len().div_ceil(2).max(1);
    inputs
        .iter()
        .map(|(input, scored_from)| shared_len(prefix, input, *scored_from))
        .filter(|&n| n >= floor)
        .min()
        .unwrap_or(0)
}

/// How many leading tokens `input` shares with `prefix`, at most `scored_from`.
pub fn shared_len<T: PartialEq>(prefix: &[T], input: &[T], scored_from: usize) -> usize {
    input
        .iter()
        .zip(prefix)
        .take_while(|(a, b)| a == b)
        .count()
        .min(scored_from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(q: &str, answer: usize) -> McqRow {
        McqRow {
            question: format!("  {q} "),
            choices: vec!["w".into(), "x".into(), "y".into(), "z".into()],
            answer,
        }
    }

    #[test]
    fn lm_eval_prompt_shape() {
        let prefix = shared_prefix("H\n\n", &[row("one?", 2)]);
        assert_eq!(prefix, "H\n\none?\nA. w\nB. x\nC. y\nD. z\nAnswer: C\n\n");
        assert_eq!(
            question_text(&row("two?", 0)),
            "two?\nA. w\nB. x\nC. y\nD. z\nAnswer:"
        );
        let c = choices(&row("q", 0));
        assert_eq!(c[3], (" D".to_string(), "D".to_string()));
    }

    #[test]
    fn the_cache_holds_what_every_input_shares() {
        // The prefix alone ends in a merged "\n\n" (9); before a question it is "\n", "\n" (5, 5).
        let prefix = [1, 2, 3, 9];
        let a = [1, 2, 3, 5, 5, 7, 8];
        let b = [1, 2, 3, 5, 5, 6];
        assert_eq!(cached_prefix_len(&prefix, &[(&a[..], 6), (&b[..], 5)]), 3);
        // An input sharing less than half is left to run whole; it does not shrink the cache.
        let odd = [1, 4, 4, 4];
        assert_eq!(cached_prefix_len(&prefix, &[(&a[..], 6), (&odd[..], 3)]), 3);
        assert_eq!(shared_len(&prefix, &odd, 3), 1);
        // No cached position is scored.
        assert_eq!(cached_prefix_len(&prefix, &[(&a[..], 2)]), 2);
        // Equal tokens throughout: the whole prefix.
        assert_eq!(cached_prefix_len(&prefix, &[(&[1, 2, 3, 9, 7][..], 4)]), 4);
        assert_eq!(cached_prefix_len::<i64>(&[], &[(&[1, 2][..], 1)]), 0);
    }

    #[test]
    fn trailing_space_moves_to_the_continuation() {
        let enc = |s: &str| -> Result<Vec<u32>, ()> { Ok(s.bytes().map(u32::from).collect()) };
        let r = encode_pair("ab ", "c", &enc).unwrap();
        assert_eq!(r.context, vec![97, 98]);
        assert_eq!(r.continuation, vec![32, 99]);
    }
}
