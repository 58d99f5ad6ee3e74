//! Reference files, format 1 (`shared/docs/reference-format.md`): one safetensors file with
//! a batch, a prompt, and what PyTorch + PEFT computed for them.
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use crate::models::PrefixSpec;
use crate::models::TokenBatch;
use crate::prompt_encoder::{kind_name, PrefixProjection, PromptEncoder};
use crate::weights::{HostTensor, TensorFile, FLOAT_DTYPES};
use method::{check_encoder_tensors, method_tensors, read_encoder, read_prefix, ENCODER, GRAD};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[path = "reference_method.rs"]
mod method;

pub const FORMAT: u64 = 1;

#[derive(Clone, Debug, PartialEq)]
pub enum RefObjective {
    /// labels (B, T), -100 ignored
    Mlm { labels: Vec<i32> },
    /// mask_positions (B), verbalizer_ids (C), class_labels (B)
    Pet {
        mask_positions: Vec<i32>,
        verbalizer_ids: Vec<i32>,
        class_labels: Vec<i32>,
    },
    /// labels (B, L), -100 ignored
    Seq2Seq { labels: Vec<i32>, l: usize },
    /// this engine's extension: pooled hidden state, then a linear head (K, d) trained with
    /// the prompt; pooling "mean" (over real tokens) or "cls" (the first real token)
    Cls {
        head_weight: HostTensor,
        head_bias: Vec<f32>,
        class_labels: Vec<i32>,
        pooling: String,
    },
    /// decoder-only LMs: labels (B, T), -100 ignored, with PEFT's P labels of -100 in front
    Causal { labels: Vec<i32> },
    /// greedy generation of `max_new_tokens` per row, each row alone from its real tokens
    /// behind the prompt: the tokens (B, N) (the logits (B, N, V) are an expected output)
    Generate {
        generated_ids: Vec<i32>,
        max_new_tokens: usize,
    },
}

impl RefObjective {
    pub fn name(&self) -> &'static str {
        match self {
            RefObjective::Mlm { .. } => "mlm",
            RefObjective::Pet { .. } => "pet",
            RefObjective::Seq2Seq { .. } => "seq2seq",
            RefObjective::Cls { .. } => "cls",
            RefObjective::Causal { .. } => "causal",
            RefObjective::Generate { .. } => "generate",
        }
    }

    /// The expected outputs every reference of this objective holds (with prompt rows; a
    /// prefix's gradient is `prefix_grad`).
    pub fn required(&self) -> &'static [&'static str] {
        match self {
            RefObjective::Generate { .. } => &["generated_logits"],
            RefObjective::Cls { .. } => &[
                "loss",
                "logits",
                "prompt_grad",
                "head_weight_grad",
                "head_bias_grad",
            ],
            _ => &["loss", "logits", "prompt_grad"],
        }
    }
}

#[derive(Clone, Debug)]
pub struct Reference {
    pub path: PathBuf,
    pub arch: String,
    pub producer: String,
    pub metadata: Value,
    pub batch: TokenBatch,
    pub prompt: HostTensor,
    pub objective: RefObjective,
    /// loss, logits, prompt_grad, hidden states... by name
    pub expected: BTreeMap<String, HostTensor>,
    /// method `p-tuning`: PEFT's prompt encoder, whose output is `prompt`
    pub encoder: Option<PromptEncoder>,
    /// method `prefix`: `prompt` is then the prefix table (P, N·2·Hkv·D)
    pub prefix: Option<PrefixRef>,
}

/// What a `prefix` reference adds: where the prefix goes, and its projection if it has one.
#[derive(Clone, Debug)]
pub struct PrefixRef {
    pub spec: PrefixSpec,
    /// `prefix_projection`: the projection whose output is the reference's `prefix`
    pub projection: Option<PrefixProjection>,
}

/// The tensors a reference file holds as inputs; every other float tensor is an expected
/// output.
const INPUTS: [&str; 11] = [
    "input_ids",
    "prefix",
    "attention_mask",
    "token_type_ids",
    "prompt",
    "labels",
    "mask_positions",
    "verbalizer_ids",
    "class_labels",
    "head_weight",
    "head_bias",
];

/// The tensors a reference file holds as integers; every other tensor is a float.
const INT_TENSORS: [&str; 8] = [
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "labels",
    "mask_positions",
    "verbalizer_ids",
    "class_labels",
    "generated_ids",
];

/// A tensor of `file` that is not a float, where one is expected, named with its dtype: an
/// expected output stored as integers was read as missing ("missing the expected output
/// `logits`"), or skipped unseen when optional.
fn check_float_dtypes(path: &Path, file: &TensorFile) -> Result<()> {
    let mut tensors: Vec<_> = file.dtypes.iter().collect();
    tensors.sort_unstable_by_key(|(name, _)| name.as_str());
    for (name, dtype) in tensors {
        if !file.floats.contains_key(name) && !INT_TENSORS.contains(&name.as_str()) {
            return Err(Error::file(
                path,
                format!(
                    "tensor `{name}` is there with dtype {dtype:?}: expected a float tensor \
                     ({FLOAT_DTYPES}); only {} hold integers",
                    INT_TENSORS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The `softprompt` metadata, checked to be JSON of this format.
fn read_meta(path: &Path, file: &TensorFile) -> Result<Value> {
    let meta_text = file.metadata.get("softprompt").ok_or_else(|| {
        Error::file(
            path,
            "no `softprompt` metadata key: not a softprompt reference file (format 1)",
        )
    })?;
    let meta: Value = serde_json::from_str(meta_text)
        .map_err(|e| Error::file(path, format!("the `softprompt` metadata is not JSON: {e}")))?;
    // a missing or mistyped `format` read as format 0, which no file ever was
    let why = match meta.get("format") {
        _ if !meta.is_object() => format!("the `softprompt` metadata is {meta}: expected a JSON object with `format` {FORMAT}"),
        None => format!("the `softprompt` metadata has no `format` key: expected {FORMAT}"),
        Some(f) if f.as_u64() == Some(FORMAT) => return Ok(meta),
        Some(f) if f.is_u64() => format!("the `softprompt` metadata's `format` is {f}, a version this engine does not read: expected {FORMAT}"),
        Some(f) => format!("the `softprompt` metadata's `format` is {f}: expected the integer {FORMAT}"),
    };
    Err(Error::file(
        path,
        format!("{why} (shared/docs/reference-format.md); regenerate the file with scripts/torch_reference.py"),
    ))
}

/// input_ids, attention_mask and token_type_ids, all (B, T).
fn read_batch(path: &Path, file: &TensorFile) -> Result<TokenBatch> {
    let (b, t, ids) = ints_2d(file, "input_ids")?;
    // an empty batch would compare a loss of nothing (and pass every tensor of 0 elements)
    if b == 0 || t == 0 {
        return Err(Error::file(
            path,
            format!("`input_ids` is [{b}, {t}]: expected at least one row of one token"),
        ));
    }
    let (mb, mt, mask) = ints_2d(file, "attention_mask")?;
    if (mb, mt) != (b, t) {
        return Err(Error::file(
            path,
            format!("attention_mask is [{mb}, {mt}]: expected [{b}, {t}] like input_ids"),
        ));
    }
    // PyTorch turns a mask m into a bias (1 - m)·min: a 2 made a huge positive bias there and
    // a plain "keep" here, so the comparison failed with the file never blamed
    if let Some(i) = mask.iter().position(|&m| m != 0 && m != 1) {
        return Err(Error::file(
            path,
            format!(
                "attention_mask[{}, {}] is {}: expected 0 or 1",
                i / t,
                i % t,
                mask.get(i).copied().unwrap_or_default()
            ),
        ));
    }
    check_right_padded(path, &mask, t)?;
    let type_ids = if file.ints.contains_key("token_type_ids") {
        let (tb, tt, types) = ints_2d(file, "token_type_ids")?;
        if (tb, tt) != (b, t) {
            return Err(Error::file(
                path,
                format!("token_type_ids is [{tb}, {tt}]: expected [{b}, {t}]"),
            ));
        }
        Some(types)
    } else {
        None
    };
    Ok(TokenBatch {
        b,
        t,
        ids,
        mask,
        type_ids,
    })
}

/// Each row of the (B, T) mask is its real tokens, then its padding (the format pads on the
/// right): a left-padded mask ran as the file said and the FAIL blamed the engine's numbers.
fn check_right_padded(path: &Path, mask: &[i32], t: usize) -> Result<()> {
    for (b, row) in mask.chunks(t.max(1)).enumerate() {
        let real = row.iter().take_while(|&&m| m == 1).count();
        if let Some(i) = row.iter().skip(real).position(|&m| m != 0) {
            return Err(Error::file(
                path,
                format!(
                    "attention_mask[{b}, {}] is 1 after the padding at [{b}, {real}]: the format \
                     pads on the right (each row's real tokens, then 0s)",
                    real + i
                ),
            ));
        }
    }
    Ok(())
}

/// Each row's `[MASK]` position is one of its real tokens: one on padding was scored where
/// PyTorch scored it, and the FAIL blamed the engine's numbers.
fn check_mask_positions(path: &Path, positions: &[i32], batch: &TokenBatch) -> Result<()> {
    let rows = batch.mask.chunks(batch.t.max(1));
    for (b, (&pos, row)) in positions.iter().zip(rows).enumerate() {
        let real = row.iter().filter(|&&m| m == 1).count();
        let padding = match usize::try_from(pos) {
            Ok(i) if i < real => continue,
            Ok(i) if i < batch.t => ", a padding position",
            _ => "",
        };
        return Err(Error::file(
            path,
            format!(
                "mask_positions[{b}] is {pos}{padding}: expected one of row {b}'s {real} real \
                 tokens, 0..{real} (attention_mask)"
            ),
        ));
    }
    Ok(())
}

/// The objective's own tensors, checked against the batch's (B, T).
fn read_objective(
    path: &Path,
    file: &TensorFile,
    meta: &Value,
    objective: &str,
    batch: &TokenBatch,
) -> Result<RefObjective> {
    let (b, t) = (batch.b, batch.t);
    Ok(match objective {
        "mlm" | "causal" => {
            let (lb, lt, labels) = ints_2d(file, "labels")?;
            if (lb, lt) != (b, t) {
                return Err(Error::file(
                    path,
                    format!("labels is [{lb}, {lt}]: expected [{b}, {t}]"),
                ));
            }
            if objective == "mlm" {
                RefObjective::Mlm { labels }
            } else {
                RefObjective::Causal { labels }
            }
        }
        "generate" => {
            let (gb, n, generated_ids) = ints_2d(file, "generated_ids")?;
            if gb != b {
                return Err(Error::file(
                    path,
                    format!("generated_ids has {gb} rows: expected {b}"),
                ));
            }
            if meta.get("max_new_tokens").and_then(|v| v.as_u64()) != Some(n as u64) {
                return Err(Error::file(
                    path,
                    format!("metadata `max_new_tokens` must say {n}, the width of generated_ids"),
                ));
            }
            if meta.get("eos_token_id").is_some_and(|v| !v.is_null()) {
                return Err(Error::Unsupported(format!(
                    "{}: generation references with an eos_token_id (this engine checks fixed-length ones)",
                    path.display()
                )));
            }
            RefObjective::Generate {
                generated_ids,
                max_new_tokens: n,
            }
        }
        "pet" => {
            let verbalizer_ids = ints_1d(file, "verbalizer_ids", None)?;
            let class_labels = ints_1d(file, "class_labels", Some(b))?;
            check_class_labels(path, &class_labels, verbalizer_ids.len(), "verbalizer_ids")?;
            let mask_positions = ints_1d(file, "mask_positions", Some(b))?;
            check_mask_positions(path, &mask_positions, batch)?;
            RefObjective::Pet {
                mask_positions,
                verbalizer_ids,
                class_labels,
            }
        }
        "seq2seq" => {
            let (lb, l, labels) = ints_2d(file, "labels")?;
            if lb != b {
                return Err(Error::file(
                    path,
                    format!("labels has {lb} rows: expected {b}"),
                ));
            }
            RefObjective::Seq2Seq { labels, l }
        }
        "cls" => {
            let head_bias = file.float("head_bias")?.data.clone();
            let class_labels = ints_1d(file, "class_labels", Some(b))?;
            check_class_labels(path, &class_labels, head_bias.len(), "head_bias")?;
            RefObjective::Cls {
                head_bias,
                head_weight: file.float("head_weight")?.clone(),
                class_labels,
                pooling: meta
                    .get("pooling")
                    .and_then(|v| v.as_str())
                    .unwrap_or("mean")
                    .to_string(),
            }
        }
        other => {
            return Err(Error::file(
                path,
                format!("objective {other:?}: expected \"mlm\", \"pet\", \"seq2seq\", \"cls\", \"causal\" or \"generate\""),
            ))
        }
    })
}

/// Every class label is one of the `k` classes that `classes` (the tensor that counts them)
/// holds: the loss would blame `labels`, a name the file does not use.
fn check_class_labels(path: &Path, labels: &[i32], k: usize, classes: &str) -> Result<()> {
    if k == 0 {
        return Err(Error::file(
            path,
            format!("{classes} holds no class: expected at least one"),
        ));
    }
    match labels.iter().position(|&l| l < 0 || l as usize >= k) {
        None => Ok(()),
        Some(i) => Err(Error::file(
            path,
            format!(
                "class_labels[{i}] is {}: expected a class in 0..{k} ({classes} has {k})",
                labels.get(i).copied().unwrap_or_default()
            ),
        )),
    }
}

fn ints_2d(file: &TensorFile, name: &str) -> Result<(usize, usize, Vec<i32>)> {
    let (shape, data) = file.int(name)?;
    match shape.as_slice() {
        [a, b] => Ok((*a, *b, to_i32(&file.path, name, data)?)),
        s => Err(Error::file(
            &file.path,
            format!("`{name}` has shape {s:?}: expected [B, T]"),
        )),
    }
}

fn ints_1d(file: &TensorFile, name: &str, len: Option<usize>) -> Result<Vec<i32>> {
    let (shape, data) = file.int(name)?;
    match (shape.as_slice(), len) {
        ([n], Some(want)) if *n != want => Err(Error::file(
            &file.path,
            format!("`{name}` has {n} entries: expected {want}"),
        )),
        ([_], _) => to_i32(&file.path, name, data),
        (s, _) => Err(Error::file(
            &file.path,
            format!("`{name}` has shape {s:?}: expected one dimension"),
        )),
    }
}

fn to_i32(path: &Path, name: &str, data: &[i64]) -> Result<Vec<i32>> {
    data.iter()
        .map(|&x| {
            i32::try_from(x)
                .map_err(|_| Error::file(path, format!("`{name}` holds {x}, outside i32")))
        })
        .collect()
}

/// The PEFT names of the tensors of the reference's encoder (P-tuning's prompt encoder, a
/// prefix projection); none without one.
fn encoder_tensors<'a>(
    encoder: Option<&'a PromptEncoder>,
    prefix: Option<&'a PrefixRef>,
) -> Vec<&'a str> {
    let tensors = match (encoder, prefix.and_then(|p| p.projection.as_ref())) {
        (Some(e), _) => &e.tensors,
        (None, Some(projection)) => &projection.tensors,
        (None, None) => return Vec::new(),
    };
    tensors.keys().map(String::as_str).collect()
}

impl Reference {
    pub fn read(path: &Path) -> Result<Reference> {
        let file = TensorFile::read(path)?;
        let meta = read_meta(path, &file)?;
        check_float_dtypes(path, &file)?;
        let field = |k: &str| {
            meta.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        // a key that is missing or of the wrong type is named as such (it read as "")
        for k in ["arch", "objective"] {
            match meta.get(k) {
                Some(v) if v.is_string() => {}
                Some(v) => {
                    return Err(Error::file(
                        path,
                        format!("metadata `{k}` is {v}: expected a string"),
                    ))
                }
                None => return Err(Error::file(path, format!("metadata lacks `{k}`"))),
            }
        }
        let p = match meta.get("num_virtual_tokens") {
            None => return Err(Error::file(path, "metadata lacks `num_virtual_tokens`")),
            Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                Error::file(
                    path,
                    format!("metadata `num_virtual_tokens` is {v}: expected a positive integer"),
                )
            })?,
        };
        let p = usize::try_from(p)
            .map_err(|_| Error::file(path, "`num_virtual_tokens` is too large"))?;
        let method = field("method");
        if !matches!(method.as_str(), "" | "prompt" | "p-tuning" | "prefix") {
            return Err(Error::file(
                path,
                format!("method {method:?}: expected prompt, p-tuning or prefix"),
            ));
        }
        let batch = read_batch(path, &file)?;
        let rows = if method == "prefix" {
            "prefix"
        } else {
            "prompt"
        };
        let prompt = file.float(rows)?.clone();
        // a width of 0 holds no values whatever its rows, so its rows bound nothing
        if prompt.shape.len() != 2
            || prompt.shape.first() != Some(&p)
            || prompt.shape.get(1) == Some(&0)
        {
            return Err(Error::file(
                path,
                format!(
                    "`{rows}` has shape {:?}: expected [{p}, width] (num_virtual_tokens = {p}, width at least 1)",
                    prompt.shape
                ),
            ));
        }
        let objective = read_objective(path, &file, &meta, &field("objective"), &batch)?;
        let encoder = match method.as_str() {
            "p-tuning" => Some(read_encoder(path, &file, &meta, &prompt)?),
            _ => None,
        };
        let expected = file
            .floats
            .iter()
            .filter(|(k, _)| !INPUTS.contains(&k.as_str()) && !k.starts_with(ENCODER))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let prefix = match method.as_str() {
            "prefix" => Some(read_prefix(path, &file, &meta, &prompt)?),
            _ => None,
        };
        let names = encoder_tensors(encoder.as_ref(), prefix.as_ref());
        let method = method_tensors(encoder.as_ref(), prefix.as_ref(), &names);
        check_encoder_tensors(path, &file, &names, &method)?;
        Ok(Reference {
            prefix,
            path: path.to_path_buf(),
            arch: field("arch"),
            producer: field("producer"),
            metadata: meta,
            batch,
            prompt,
            objective,
            expected,
            encoder,
        })
    }

    /// The expected outputs the reference must hold (reference-format.md): its objective's,
    /// `prefix_grad` in place of `prompt_grad` for a prefix, and the gradient of every
    /// tensor of its encoder (P-tuning's prompt encoder, a prefix projection).
    pub fn required(&self) -> Vec<String> {
        let grad = match self.prefix {
            Some(_) => "prefix_grad",
            None => "prompt_grad",
        };
        let objective = (self.objective.required().iter())
            .map(|&n| if n == "prompt_grad" { grad } else { n }.to_string());
        let names = encoder_tensors(self.encoder.as_ref(), self.prefix.as_ref());
        let encoder = names.into_iter().map(|n| format!("{GRAD}{ENCODER}{n}"));
        objective.chain(encoder).collect()
    }

    pub fn p(&self) -> usize {
        self.prompt.shape.first().copied().unwrap_or(0)
    }

    pub fn d(&self) -> usize {
        self.prompt.shape.get(1).copied().unwrap_or(0)
    }

    /// The method the reference checks, as `parity` prints it: `prompt`, `p-tuning (mlp)` or
    /// `(lstm)`, `prefix (papers)` or `(peft)`, with `, projection` when it has one.
    pub fn method_label(&self) -> String {
        if let Some(pre) = &self.prefix {
            let projection = if pre.projection.is_some() {
                ", projection"
            } else {
                ""
            };
            return format!("prefix ({}{projection})", pre.spec.placement.name());
        }
        match &self.encoder {
            Some(e) => format!("p-tuning ({})", kind_name(e.cfg.kind).to_lowercase()),
            None => "prompt".into(),
        }
    }
}
