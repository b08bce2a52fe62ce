//! `example-echo`, the example plugin's inference backend: a toy that answers each prompt with
//! its last turn (the tokens after the second-to-last occurrence of the prompt's first token,
//! e.g. ChatML's `<|im_start|>`; the whole prompt when that token occurs fewer than twice), so
//! its answers are known without a model,
//! written against the backend contract exactly as a real one would be. It loads a folder
//! (reading only `vocab_size` from config.json), keeps per sequence what it has answered, and
//! chooses its tokens itself (backend sampling: greedy only, no log-probabilities), so the host
//! refuses `temperature`, `top_k`, ... and `logprobs` for it by name.

use std::collections::BTreeMap;

use swift_plugin_tensors::prelude::*;

pub fn record() -> BackendRecord {
    BackendRecord::new(
        "example-echo",
        "the example plugin's toy backend: answers a prompt with the prompt's tokens",
    )
    .with_capabilities(Capabilities {
        formats: vec![ModelFormat::Folder],
        devices: vec!["cpu".into()],
        dtypes: false,
        adapters: AdapterSupport::None,
        sampling: SamplingBy::Backend,
        sampling_params: Vec::new(),
        logprobs: false,
        max_batch: 4,
        prompt_logprobs: false,
        images: false,
    })
}

pub struct Echo;

impl Backend for Echo {
    fn check_model(&self, config: &serde_json::Value) -> Result<(), String> {
        config
            .get("vocab_size")
            .and_then(serde_json::Value::as_u64)
            .map(|_| ())
            .ok_or_else(|| "config.json has no vocab_size".into())
    }

    fn load(&self, request: &LoadRequest) -> Result<Box<dyn BackendModel>, String> {
        let vocab = request
            .config
            .get("vocab_size")
            .and_then(serde_json::Value::as_u64)
            .ok_or("config.json has no vocab_size")? as usize;
        Ok(Box::new(EchoModel {
            vocab,
            seqs: BTreeMap::new(),
        }))
    }
}

/// Per sequence: its prompt and how many tokens it has answered.
struct EchoModel {
    vocab: usize,
    seqs: BTreeMap<u64, (Vec<i64>, usize)>,
}

impl EchoModel {
    fn next(&mut self, seq: u64) -> Result<Chosen, String> {
        let (prompt, n) = self
            .seqs
            .get_mut(&seq)
            .ok_or_else(|| format!("sequence {seq} is not running"))?;
        let token = prompt[*n % prompt.len()];
        *n += 1;
        Ok(Chosen {
            token,
            logprob: None,
            top: Vec::new(),
        })
    }
}

/// The prompt's last turn (see the module's page).
pub fn last_turn(prompt: &[i64]) -> &[i64] {
    let first = prompt[0];
    let at: Vec<usize> = (0..prompt.len()).filter(|&i| prompt[i] == first).collect();
    match at.len() {
        n if n >= 2 && at[n - 2] + 1 < prompt.len() => &prompt[at[n - 2] + 1..],
        _ => prompt,
    }
}

impl BackendModel for EchoModel {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            vocab_size: self.vocab,
            max_len: None,
            description: "example-echo (answers with the prompt)".into(),
        }
    }

    fn step(&mut self, step: &Step) -> Result<StepOutput, String> {
        for s in &step.leave {
            self.seqs.remove(s);
        }
        let mut chosen = Vec::new();
        for (seq, _) in &step.feed {
            chosen.push(self.next(*seq)?);
        }
        for j in &step.join {
            if j.prompt.is_empty() {
                return Err(format!("sequence {} joins with no tokens", j.seq));
            }
            self.seqs.insert(j.seq, (last_turn(&j.prompt).to_vec(), 0));
            chosen.push(self.next(j.seq)?);
        }
        Ok(StepOutput {
            vocab: self.vocab,
            logits: Vec::new(),
            chosen,
        })
    }
}
