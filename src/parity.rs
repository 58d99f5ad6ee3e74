//! `softprompt parity`: runs a reference file's batch through the engine and compares every
//! tensor it can produce with what PyTorch computed (`reference-format.md`).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::backend::{Backend, DType};
use crate::closeness::{reference_floor, Closeness};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::cls_head::{ClsHead, HostClsHead};
use crate::models::{Capture, Model, Objective, PrefixSpec, Recompute, Tuning};
use crate::reference::{PrefixRef, RefObjective, Reference};
use crate::weights::{HostTensor, WeightStore};
use std::path::Path;

/// One compared tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ParityRow {
    pub name: String,
    pub shape: Vec<usize>,
    /// ||got - want|| / ||want|| (scalars: |got - want| / max(|want|, 1e-6)); NaN when the
    /// engine produced a non-finite value
    pub rel_err: f64,
    pub max_abs: f64,
    pub tol: f64,
}

impl ParityRow {
    pub fn passed(&self) -> bool {
        self.rel_err.is_finite() && self.rel_err <= self.tol
    }
}

#[derive(Clone, Debug)]
pub struct ParityReport {
    pub rows: Vec<ParityRow>,
    /// tensors of the reference that this engine does not compute
    pub skipped: Vec<String>,
}

impl ParityReport {
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.passed())
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<28} {:<16} {:>10} {:>10} {:>8}  {}\n",
            "tensor", "shape", "rel_err", "max_abs", "tol", "status"
        );
        for r in &self.rows {
            let status = if r.passed() { "ok" } else { "FAIL" };
            s += &format!(
                "{:<28} {:<16} {:>10.3e} {:>10.3e} {:>8.0e}  {}\n",
                r.name,
                format!("{:?}", r.shape),
                r.rel_err,
                r.max_abs,
                r.tol,
                status
            );
        }
        for name in &self.skipped {
            s += &format!("{name:<28} (not computed by the engine; skipped)\n");
        }
        s
    }
}

/// Compares one tensor. `want` and `got` must have the same number of elements.
pub fn compare(name: &str, got: &[f32], want: &HostTensor, tol: f64) -> Result<ParityRow> {
    if got.len() != want.data.len() {
        return Err(Error::shape(
            format!("reference tensor `{name}`"),
            format!("{} elements {:?}", want.data.len(), want.shape),
            format!("{} elements computed by the engine", got.len()),
        ));
    }
    let c = Closeness::of(got, &want.data, reference_floor(want.data.len()));
    Ok(ParityRow {
        name: name.to_string(),
        shape: want.shape.clone(),
        rel_err: c.rel_err,
        max_abs: c.max_abs,
        tol,
    })
}

/// The shape the engine gives output `name` of reference `r`, `len` elements long (the
/// vocabulary of MLM, seq2seq, causal and generated logits comes from `len`); None for a name
/// whose layout the engine does not fix.
pub fn engine_shape(r: &Reference, name: &str, len: usize) -> Option<Vec<usize>> {
    let (b, t, p, d) = (r.batch.b, r.batch.t, r.p(), r.d());
    let per = |rows: usize| len.checked_div(rows).unwrap_or(0);
    let seq2seq_l = match &r.objective {
        RefObjective::Seq2Seq { l, .. } => Some(*l),
        _ => None,
    };
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    Some(match (name, stem, &r.objective) {
        ("loss", _, _) => vec![],
        ("prompt_grad" | "prefix_grad", _, _) => vec![p, d],
        // prefix tuning's hidden states cover the real tokens only, at the model's width
        (_, "hidden_states" | "encoder_hidden_states" | "decoder_hidden_states", _)
            if r.prefix.is_some() =>
        {
            return None
        }
        ("logits", _, RefObjective::Pet { verbalizer_ids, .. }) => vec![b, verbalizer_ids.len()],
        ("logits", _, RefObjective::Cls { head_bias, .. }) => vec![b, head_bias.len()],
        ("logits", _, RefObjective::Mlm { .. }) => vec![b, t, per(b * t)],
        ("logits", _, RefObjective::Seq2Seq { l, .. }) => vec![b, *l, per(b * l)],
        ("logits", _, RefObjective::Causal { .. }) => vec![b, t, per(b * t)],
        (
            "generated_logits",
            _,
            RefObjective::Generate {
                max_new_tokens: n, ..
            },
        ) => {
            vec![b, *n, per(b * n)]
        }
        ("head_weight_grad", _, RefObjective::Cls { head_weight, .. }) => head_weight.shape.clone(),
        ("head_bias_grad", _, RefObjective::Cls { head_bias, .. }) => vec![head_bias.len()],
        (_, "hidden_states" | "encoder_hidden_states", _) => vec![b, p + t, d],
        (_, "decoder_hidden_states", _) => vec![b, seq2seq_l?, d],
        _ => return None,
    })
}

/// A reference tensor must have the engine's shape, not only its element count: `[3, 4]`
/// logits against the engine's `[4, 3]` compare element by element against the wrong ones.
/// The loss is a scalar, `[]` (reference-format.md). A tensor whose layout the engine does
/// not fix must at least hold the `len` values the engine computes.
fn check_shape(r: &Reference, name: &str, len: usize, want: &HostTensor) -> Result<()> {
    let computes = match engine_shape(r, name, len) {
        Some(shape) if want.shape == shape => return Ok(()),
        None if want.data.len() == len => return Ok(()),
        Some(shape) => format!("{shape:?}"),
        None => format!("{len} values"),
    };
    Err(Error::file(
        &r.path,
        format!(
            "tensor `{name}` has shape {:?}, but the engine computes {computes} for this batch \
             (B {}, T {}, P {}, d {}): the reference was written for another layout",
            want.shape,
            r.batch.b,
            r.batch.t,
            r.p(),
            r.d()
        ),
    ))
}

/// Runs the reference on `be` with the model in `model_dir` and compares at `tol`.
pub fn run<B: Backend>(
    be: &B,
    model_dir: &Path,
    reference: &Reference,
    tol: f64,
) -> Result<ParityReport> {
    // NaN passes nothing and infinity passes everything: neither is a check
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(Error::arg(
            "--tol",
            format!("{tol} is out of range: expected a finite number >= 0"),
        ));
    }
    let required = reference.required();
    for name in &required {
        if !reference.expected.contains_key(name) {
            return Err(Error::file(
                &reference.path,
                format!("missing the expected output `{name}`"),
            ));
        }
    }
    let outputs = outputs(be, model_dir, reference)?;
    check_layers(reference, &outputs)?;
    let mut report = ParityReport {
        rows: Vec::new(),
        skipped: Vec::new(),
    };
    for (name, want) in &reference.expected {
        match outputs.get(name) {
            Some(got) => {
                check_shape(reference, name, got.len(), want)?;
                report.rows.push(compare(name, got, want, tol)?)
            }
            None => report.skipped.push(name.clone()),
        }
    }
    for name in [ENCODER_OUTPUT, PROJECTION_OUTPUT] {
        if let Some(got) = outputs.get(name) {
            report
                .rows
                .push(compare(name, got, &reference.prompt, tol)?);
        }
    }
    if let RefObjective::Generate { generated_ids, .. } = &reference.objective {
        report.rows.push(compare_ids(&outputs, generated_ids)?);
    }
    // the required outputs first, the rest in name order
    report.rows.sort_by_key(|r| {
        (
            required
                .iter()
                .position(|n| *n == r.name)
                .unwrap_or(required.len()),
            natural_key(&r.name),
        )
    });
    Ok(report)
}

/// An objective or input the model does not run, named with the reference that asks for it
/// ("objective seq2seq needs a T5 model" named no file).
fn in_reference(r: &Reference, e: Error) -> Error {
    match e {
        Error::Unsupported(msg) => Error::Unsupported(format!("{}: {msg}", r.path.display())),
        e => e,
    }
}

/// The reference's hidden states are the model's layers, no more and no fewer: a
/// `hidden_states.7` the engine does not compute (a deeper model's reference) was skipped,
/// and a missing last layer passed unseen.
fn check_layers(r: &Reference, outputs: &Capture) -> Result<()> {
    let stem = |n: &str| n.rsplit_once('.').map(|(s, _)| s.to_string());
    let stems: std::collections::BTreeSet<String> = r
        .expected
        .keys()
        .filter_map(|n| stem(n))
        .filter(|s| s.ends_with("hidden_states"))
        .collect();
    for s in &stems {
        let of = |names: &mut dyn Iterator<Item = &String>| -> Vec<String> {
            names
                .filter(|n| stem(n).as_ref() == Some(s))
                .cloned()
                .collect()
        };
        let (want, got) = (of(&mut r.expected.keys()), of(&mut outputs.keys()));
        let extra = want.iter().find(|n| !got.contains(n));
        let missing = got.iter().find(|n| !want.contains(n));
        if let Some(n) = extra.or(missing) {
            let holds = if extra.is_some() { "holds" } else { "lacks" };
            return Err(Error::file(
                &r.path,
                format!(
                    "the reference {holds} `{n}`, but the model computes {} {s} tensors: it \
                     was written for another model",
                    got.len()
                ),
            ));
        }
    }
    Ok(())
}

/// What the engine on `be` computes for the reference's batch and prompt with the model in
/// `model_dir`: the tensors of the reference's expected outputs that it produces.
pub fn outputs<B: Backend>(be: &B, model_dir: &Path, reference: &Reference) -> Result<Capture> {
    let cfg = ModelConfig::load(model_dir)?;
    if reference.arch != cfg.arch() {
        return Err(Error::file(
            &reference.path,
            format!(
                "arch is {:?} but {} holds a {} model",
                reference.arch,
                model_dir.display(),
                cfg.arch()
            ),
        ));
    }
    if reference.prefix.is_none() && reference.d() != cfg.hidden_size() {
        return Err(Error::file(
            &reference.path,
            format!(
                "the prompt is {} wide but the model's hidden size is {}",
                reference.d(),
                cfg.hidden_size()
            ),
        ));
    }
    let model = Model::from_config(be, &WeightStore::open(model_dir)?, cfg)?;
    model_outputs(be, &model, reference).map_err(|e| in_reference(reference, e))
}

/// `outputs` on the loaded model: the reference's prefix, P-tuning encoder or prompt rows.
fn model_outputs<B: Backend>(be: &B, model: &Model<B>, reference: &Reference) -> Result<Capture> {
    if let Some(prefix) = &reference.prefix {
        return prefix_outputs(be, model, reference, prefix);
    }
    let Some(encoder) = &reference.encoder else {
        return step_outputs(be, model, reference, &reference.prompt.data, None);
    };
    // P-tuning: the prompt is the encoder's output, the step's prompt gradient goes back
    // through the encoder to its parameters
    let (mut prompt, tape) = encoder.forward()?;
    // the model reads the first P rows (PEFT's seq2seq table has 2P)
    prompt.truncate(reference.prompt.data.len());
    let mut out = step_outputs(be, model, reference, &prompt, None)?;
    let d_prompt = out.get("prompt_grad").cloned().unwrap_or_default();
    for (name, grad) in encoder.backward(&tape, &d_prompt)? {
        out.insert(format!("grad.encoder.{name}"), grad);
    }
    out.insert(ENCODER_OUTPUT.into(), prompt);
    Ok(out)
}

/// The prompt a P-tuning reference's encoder gives, compared with the reference's `prompt`.
const ENCODER_OUTPUT: &str = "prompt (encoder output)";

/// The prefix a projection gives, compared with the reference's `prefix`.
const PROJECTION_OUTPUT: &str = "prefix (projection output)";

/// A prefix reference's outputs: its table (or the projection's output) in front of the keys
/// its placement names, and with a projection the gradient of its tensors.
fn prefix_outputs<B: Backend>(
    be: &B,
    model: &Model<B>,
    r: &Reference,
    prefix: &PrefixRef,
) -> Result<Capture> {
    let (blocks, kv_width) = model.prefix_layout(prefix.spec.placement);
    let blocks = prefix.spec.blocks.unwrap_or(blocks);
    if r.d() != blocks * 2 * kv_width {
        return Err(Error::file(
            &r.path,
            format!(
                "the prefix is {} wide but the model takes {blocks} blocks of 2 x {kv_width}                  under the {} placement",
                r.d(),
                prefix.spec.placement.name()
            ),
        ));
    }
    let Some(projection) = &prefix.projection else {
        return step_outputs(be, model, r, &r.prompt.data, Some(prefix.spec));
    };
    let (table, tape) = projection.forward()?;
    let mut out = step_outputs(be, model, r, &table, Some(prefix.spec))?;
    let d_prefix = out.get("prefix_grad").cloned().unwrap_or_default();
    for (name, grad) in projection.backward(&tape, &d_prefix)? {
        out.insert(format!("grad.encoder.{name}"), grad);
    }
    out.insert(PROJECTION_OUTPUT.into(), table);
    Ok(out)
}

/// The generated tokens against the reference's, exactly: `rel_err` is the fraction of tokens
/// that differ, and the tolerance 0.
fn compare_ids(outputs: &Capture, want: &[i32]) -> Result<ParityRow> {
    let got = outputs
        .get("generated_ids")
        .ok_or_else(|| Error::Device("generated ids missing".into()))?;
    crate::error::ensure_len("generated_ids", want.len(), got.len())?;
    let wrong = got
        .iter()
        .zip(want)
        .filter(|(g, w)| **g as i32 != **w)
        .count();
    Ok(ParityRow {
        name: "generated_ids".into(),
        shape: vec![want.len()],
        rel_err: wrong as f64 / want.len().max(1) as f64,
        max_abs: wrong as f64,
        tol: 0.0,
    })
}

/// "hidden_states.10" sorts after "hidden_states.9".
fn natural_key(name: &str) -> (String, usize) {
    match name.rsplit_once('.') {
        Some((stem, n)) if n.chars().all(|c| c.is_ascii_digit()) => {
            (stem.to_string(), n.parse().unwrap_or(0))
        }
        _ => (name.to_string(), 0),
    }
}

/// One training step on the reference's batch and objective with `prompt` (P, d), or with
/// `prefix` the prefix table (P, N·2·Hkv·D), with a capture.
fn step_outputs<B: Backend>(
    be: &B,
    model: &Model<B>,
    r: &Reference,
    prompt: &[f32],
    prefix: Option<PrefixSpec>,
) -> Result<Capture> {
    if let RefObjective::Generate { max_new_tokens, .. } = &r.objective {
        return generate_outputs(be, model, r, *max_new_tokens);
    }
    let (p, c) = (r.p(), model.hidden_size());
    // the cls head outlives the objective that borrows it
    let mut head = None;
    let objective = step_objective(&mut head, be, r, c)?;
    let rows = prompt.len();
    let prompt = be.upload(DType::F32, prompt)?;
    let mut dprompt = be.zeros(DType::F32, prefix.map_or(p * c, |_| rows))?;
    let mut out = Capture::new();
    let acct = &mut MemoryAccountant::new();
    let tuning = Tuning::of(p, prefix);
    let step = model.train_step(
        be,
        acct,
        &mut dprompt,
        &prompt,
        &r.batch,
        tuning,
        &objective,
        Recompute::None,
        Some(&mut out),
    )?;
    let grad_name = if prefix.is_some() {
        "prefix_grad"
    } else {
        "prompt_grad"
    };
    out.insert("loss".into(), vec![step.loss as f32]);
    out.insert(grad_name.into(), be.download(&dprompt)?);
    if let Some(dhead) = step.head_grads {
        out.insert("head_weight_grad".into(), be.download(&dhead.weight)?);
        out.insert("head_bias_grad".into(), be.download(&dhead.bias)?);
    }
    Ok(out)
}

/// The training objective of reference `r` on a model of width `c` (d) over `r.batch`; a
/// `cls` reference's head (K, d) is uploaded into `head`, which the objective borrows. A
/// `generate` reference has no step: an error.
pub fn step_objective<'a, B: Backend>(
    head: &'a mut Option<ClsHead<B>>,
    be: &B,
    r: &'a Reference,
    c: usize,
) -> Result<Objective<'a, B>> {
    Ok(match &r.objective {
        RefObjective::Mlm { labels } => Objective::Mlm { labels },
        RefObjective::Pet {
            mask_positions,
            verbalizer_ids,
            class_labels,
        } => Objective::Pet {
            mask_positions,
            verbalizer_ids,
            labels: class_labels,
        },
        RefObjective::Cls {
            head_weight,
            head_bias,
            class_labels,
            pooling,
        } => {
            crate::error::ensure_len(
                "head_weight (K*d)",
                head_bias.len() * c,
                head_weight.data.len(),
            )?;
            let host = HostClsHead {
                k: head_bias.len(),
                c,
                weight: head_weight.data.clone(),
                bias: head_bias.clone(),
            };
            Objective::Cls {
                head: head.insert(host.upload(be)?),
                pooling: pooling.parse()?,
                labels: class_labels,
            }
        }
        RefObjective::Seq2Seq { labels, l } => Objective::Seq2Seq { labels, l: *l },
        RefObjective::Causal { labels } => Objective::Causal { labels },
        RefObjective::Generate { .. } => {
            return Err(Error::Unsupported(
                "objective generate has no training step: `parity` generates instead".into(),
            ))
        }
    })
}

/// Greedy generation of the reference's rows (their real tokens, in one left-padded batch with
/// a KV cache) behind its prompt: `generated_ids` (B, N) and `generated_logits` (B, N, V).
fn generate_outputs<B: Backend>(
    be: &B,
    model: &Model<B>,
    r: &Reference,
    max_new_tokens: usize,
) -> Result<Capture> {
    let decoder = model.decoder().ok_or_else(|| {
        Error::Unsupported(format!(
            "objective generate needs a decoder-only model, not {}",
            model.arch_name()
        ))
    })?;
    let t = r.batch.t;
    // the real tokens of each (B, T) row
    let rows: Vec<Vec<i32>> = r
        .batch
        .ids
        .chunks(t.max(1))
        .zip(r.batch.mask.chunks(t.max(1)))
        .take(r.batch.b)
        .map(|(ids, mask)| {
            ids.iter()
                .zip(mask)
                .filter(|(_, &m)| m != 0)
                .map(|(&i, _)| i)
                .collect()
        })
        .collect();
    let prompt = be.upload(DType::F32, &r.prompt.data)?;
    let opts = crate::models::decoder::GenerateOptions {
        max_new_tokens,
        keep_logits: true,
        ..Default::default()
    };
    // the length is the reference file's, which parity has no flag for (verification 29, F3)
    let g = (decoder.generate(be, &prompt, r.p(), &rows, &opts)).map_err(|e| match e {
        Error::Arg { flag, msg } if flag == "--max-new-tokens" => Error::file(
            &r.path,
            format!(
                "its max_new_tokens ({max_new_tokens}) cannot be generated here: {msg} (make \
                 the reference with that many new tokens)"
            ),
        ),
        e => e,
    })?;
    let mut out = Capture::new();
    out.insert(
        "generated_ids".into(),
        g.ids.iter().flatten().map(|&i| i as f32).collect(),
    );
    out.insert(
        "generated_logits".into(),
        g.logits.iter().flatten().flatten().copied().collect(),
    );
    Ok(out)
}
