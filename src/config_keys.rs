//! The readers of config.json's keys that every model family's parser shares: each names the
//! key and what it expected when the value is of the wrong type or out of range.

use crate::backend::Act;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::PathBuf;

pub(super) struct Cfg<'a> {
    pub(super) v: &'a Value,
    pub(super) path: PathBuf,
}

impl Cfg<'_> {
    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|x| !x.is_null())
    }
    pub(super) fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => match x.as_u64() {
                // sizes and token ids travel as i32 on the device; a larger value is a typo
                // (and would overflow the products of sizes further on)
                Some(n) if n <= i32::MAX as u64 => Ok(Some(n as usize)),
                Some(n) => Err(Error::config(
                    &self.path,
                    format!(
                        "`{key}` is {n}: more than this engine supports ({})",
                        i32::MAX
                    ),
                )),
                None => Err(Error::config(
                    &self.path,
                    format!("`{key}` must be a non-negative integer, got {x}"),
                )),
            },
        }
    }
    pub(super) fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?.ok_or_else(|| {
            Error::config(&self.path, format!("missing `{key}` (a positive integer)"))
        })
    }
    pub(super) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }
    pub(super) fn positive(&self, key: &str, value: usize) -> Result<usize> {
        if value == 0 {
            Err(Error::config(
                &self.path,
                format!("`{key}` must be positive, got 0"),
            ))
        } else {
            Ok(value)
        }
    }
    pub(super) fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| {
                Error::config(&self.path, format!("`{key}` must be a number, got {x}"))
            }),
        }
    }
    /// A layer-norm epsilon: finite and positive (a negative one turns the variance of a
    /// constant row negative and every loss NaN).
    pub(super) fn epsilon_or(&self, key: &str, default: f64) -> Result<f64> {
        let eps = self.f64_or(key, default)?;
        if eps.is_finite() && eps > 0.0 {
            Ok(eps)
        } else {
            Err(Error::config(
                &self.path,
                format!("`{key}` must be a small positive number (such as 1e-12), got {eps}"),
            ))
        }
    }
    pub(super) fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x.as_bool().map(Some).ok_or_else(|| {
                Error::config(
                    &self.path,
                    format!("`{key}` must be true or false, got {x}"),
                )
            }),
        }
    }
    pub(super) fn str_opt(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(x) => x.as_str().map(|s| Some(s.to_string())).ok_or_else(|| {
                Error::config(&self.path, format!("`{key}` must be a string, got {x}"))
            }),
        }
    }
    /// The activation `key` names in transformers' words (`hidden_act`, `dense_act_fn`), None
    /// when absent.
    pub(super) fn act_opt(&self, key: &str) -> Result<Option<Act>> {
        let Some(name) = self.str_opt(key)? else {
            return Ok(None);
        };
        let act = Act::from_hf_name(&name).ok_or_else(|| {
            let supported = Act::SUPPORTED;
            let msg = format!("{key} \"{name}\" is not supported: expected one of {supported}");
            Error::config(&self.path, msg)
        })?;
        Ok(Some(act))
    }
    /// A token id that may be given as an integer or a list (eos_token_id: [1]).
    pub(super) fn token_id_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            Some(Value::Array(a)) if !a.is_empty() => a
                .first()
                .and_then(Value::as_u64)
                .filter(|&n| n <= i32::MAX as u64)
                .map(|n| n as usize)
                .ok_or_else(|| Error::config(&self.path, format!("`{key}` must hold integers"))),
            _ => self.usize_or(key, default),
        }
    }

    /// The first of `keys` present, as a positive integer; an error naming them all when none is.
    pub(super) fn usize_any(&self, keys: &[&str]) -> Result<usize> {
        for k in keys {
            if let Some(v) = self.usize_opt(k)? {
                return self.positive(k, v);
            }
        }
        Err(Error::config(
            &self.path,
            format!("missing `{}` (a positive integer)", keys.join("` or `")),
        ))
    }

    /// A token id or a list of them (Llama 3.1's eos_token_id).
    pub(super) fn token_ids(&self, key: &str) -> Result<Vec<usize>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64().map(|n| n as usize).ok_or_else(|| {
                        Error::config(&self.path, format!("`{key}` must hold integers, got {x}"))
                    })
                })
                .collect(),
            Some(_) => Ok(vec![self.usize(key)?]),
        }
    }
}

/// Special token ids must be rows of the embedding table.
pub(super) fn check_token_ids(cfg: &Cfg, vocab_size: usize, ids: &[(&str, usize)]) -> Result<()> {
    match ids.iter().find(|(_, id)| *id >= vocab_size) {
        Some((key, id)) => Err(Error::config(
            &cfg.path,
            format!("`{key}` is {id}, outside the vocabulary (vocab_size {vocab_size})"),
        )),
        None => Ok(()),
    }
}
