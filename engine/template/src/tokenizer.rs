//! A Hugging Face fast tokenizer (`tokenizer.json`) plus what `tokenizer_config.json` adds: the
//! BOS/EOS token strings and the `chat_template`.

use std::path::{Path, PathBuf};

use crate::TemplateError;

/// A tokenizer with the settings templates need.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it was loaded from (for messages).
    pub path: PathBuf,
    /// `bos_token` of tokenizer_config.json, if any.
    pub bos_token: Option<String>,
    /// `eos_token` of tokenizer_config.json, if any.
    pub eos_token: Option<String>,
    /// The `chat_template` of tokenizer_config.json (the `default` one when it holds several).
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` from `file`, and `tokenizer_config.json` from the same folder when it
    /// exists (without it there is no chat_template and no BOS/EOS strings).
    pub fn from_file(file: &Path) -> Result<Self, TemplateError> {
        let inner =
            tokenizers::Tokenizer::from_file(file).map_err(|e| TemplateError::TokenizerLoad {
                path: file.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut tok = Self {
            inner,
            path: file.to_path_buf(),
            bos_token: None,
            eos_token: None,
            chat_template: None,
        };
        let config = file.with_file_name("tokenizer_config.json");
        if config.is_file() {
            tok.read_config(&config)?;
        }
        Ok(tok)
    }

    /// Loads `DIR/tokenizer.json` (and `DIR/tokenizer_config.json`): a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self, TemplateError> {
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(TemplateError::TokenizerLoad {
                path: file,
                reason: "no such file".into(),
            });
        }
        Self::from_file(&file)
    }

    fn read_config(&mut self, path: &Path) -> Result<(), TemplateError> {
        let err = |reason: String| TemplateError::TokenizerConfig {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let token = |key: &str| match v.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => {
                o.get("content").and_then(|c| c.as_str()).map(String::from)
            }
            _ => None,
        };
        self.bos_token = token("bos_token");
        self.eos_token = token("eos_token");
        self.chat_template = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of {name, template}: take `default`, else the first.
            Some(serde_json::Value::Array(list)) => {
                let named = |n: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n))
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                };
                named("default")
                    .or_else(|| {
                        list.first()
                            .and_then(|t| t.get("template"))
                            .and_then(|t| t.as_str())
                    })
                    .map(String::from)
            }
            _ => None,
        };
        Ok(())
    }

    /// Token ids of `text`, without BOS/EOS added by the tokenizer's post-processor. Special and
    /// added tokens written in the text become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TemplateError> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TemplateError::Tokenize(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TemplateError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TemplateError::Tokenize(e.to_string()))
    }

    /// The id of one token, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
