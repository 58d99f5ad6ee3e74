//! `bench` and `profile` under each training method (`--method`): the trained state of a step
//! (prompt tuning's prompt, P-tuning's encoder, prefix tuning's table or its projection), how
//! the step reads it, and the lengths its tokens and FLOPs count. The step itself and its
//! timing are `bench.rs`'s, the same for every method.

use crate::bench::{Preset, Workload};
use crate::error::{Error, Result};
use crate::models::{Model, Placement, Tuning};
use crate::rng::Rng;
use crate::train::encoder::{HostEncoder, HostTape};
use crate::train::Method;
use serde_json::{json, Value};

/// The method's name, as `--method` spells it.
pub fn name(method: &Method) -> &'static str {
    match method {
        Method::Prompt => "prompt",
        Method::PTuning(_) => "p-tuning",
        Method::Prefix(_) => "prefix",
    }
}

/// The report's method fields: its name and its settings (the settings hash's entry, null for
/// prompt tuning).
pub fn report(method: &Method, p: usize, d: usize) -> Value {
    json!({"method": name(method), "method_settings": method.settings(p, d)})
}

/// The method's settings against the preset, before anything is allocated: in range, and
/// `--prefix-placement peft` only where it is a choice (T5).
pub fn check(preset: &Preset, method: &Method) -> Result<()> {
    method.validate()?;
    match (method, preset) {
        (Method::Prefix(pre), Preset::Bert(_) | Preset::Decoder(_))
            if pre.placement == Placement::Peft =>
        {
            Err(Error::arg(
                "--prefix-placement",
                "peft: only T5 has a choice of placement (PEFT's reading of the blocks); this \
                 preset puts one block in front of every layer's keys either way: leave it at \
                 papers",
            ))
        }
        _ => Ok(()),
    }
}

/// What one step trains: a table of P rows that is the parameter, or a host encoder whose
/// output it is; and how the step reads the table.
pub struct Tuned {
    pub tuning: Tuning,
    /// the table when it is the parameter: (P, C) prompt or (P, N·2·Hkv·D) prefix
    table: Vec<f32>,
    encoder: Option<HostEncoder>,
}

impl Tuned {
    /// The trained state of `w.method` on `model`: prompt tuning's prompt is `prompt` (the
    /// batch's, `bench::bench_batch`); the others are drawn from `seed` as PEFT draws them (N(0,
    /// 1) rows, PyTorch's linear init), so two models of the same layout get the same state.
    pub fn new<B: crate::backend::Backend>(
        model: &Model<B>,
        w: &Workload,
        prompt: &[f32],
        seed: u64,
    ) -> Result<Tuned> {
        let (p, d) = (w.prompt, model.hidden_size());
        let width = match &w.method {
            Method::Prefix(pre) => {
                let (blocks, kv) = model.prefix_layout(pre.placement);
                blocks * 2 * kv
            }
            _ => d,
        };
        let tuning = Tuning::of(p, w.method.prefix_spec(p));
        let mut rng = Rng::new(seed);
        let encoder = (w
            .method
            .encoder_spec(p, w.method.encoder_width(model), width))
        .map(|spec| HostEncoder::init(spec, &mut rng))
        .transpose()?;
        let table = match (&w.method, &encoder) {
            (_, Some(_)) => Vec::new(),
            (Method::Prompt, None) => prompt.to_vec(),
            _ => (0..p * width).map(|_| rng.normal() as f32).collect(),
        };
        Ok(Tuned {
            tuning,
            table,
            encoder,
        })
    }

    /// The table the step reads (P rows, row-major), and the encoder's tape for `backward`.
    pub fn forward(&self) -> Result<(Vec<f32>, Option<HostTape>)> {
        match &self.encoder {
            Some(e) => e.forward().map(|(table, tape)| (table, Some(tape))),
            None => Ok((self.table.clone(), None)),
        }
    }

    /// d loss / d what is trained, from the table's gradient: that gradient itself, or the
    /// encoder's tensors' gradients (in name order, one after another).
    pub fn backward(&self, tape: Option<HostTape>, dtable: Vec<f32>) -> Result<Vec<f32>> {
        match (&self.encoder, tape) {
            (Some(e), Some(tape)) => Ok(e
                .backward(&tape, &dtable)?
                .into_values()
                .flatten()
                .collect()),
            _ => Ok(dtable),
        }
    }
}

/// The lengths a step's tokens and FLOPs count under `w.method`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spans {
    /// positions per row of the encoder (BERT's, T5's, or the decoder-only stack): P + T, or T
    /// under prefix tuning (the prefix sits in the keys only)
    pub rows: usize,
    /// keys each of those positions attends to: P + T, or T under PEFT's T5 placement (the
    /// encoder reads no prefix)
    pub keys: usize,
    /// prefix keys in front of T5's decoder self-attention: P under prefix tuning, else 0
    pub decoder_prefix: usize,
    /// whether the encoder runs backward: not under PEFT's T5 placement, where nothing
    /// trainable is below the decoder (its FLOPs then count the forward only)
    pub encoder_backward: bool,
    /// rows per row at which the first layer's input gradient is wanted (the first layer's
    /// query, key and value input-gradient products run there only): the P prompt rows, none
    /// under prefix tuning
    pub front: usize,
}

pub fn spans(preset: &Preset, w: &Workload) -> Spans {
    let (p, t) = (w.prompt, w.seq);
    match (&w.method, preset) {
        (Method::Prefix(pre), Preset::T5(_)) if pre.placement == Placement::Peft => Spans {
            rows: t,
            keys: t,
            decoder_prefix: p,
            encoder_backward: false,
            front: 0,
        },
        (Method::Prefix(_), _) => Spans {
            rows: t,
            keys: p + t,
            decoder_prefix: p,
            encoder_backward: true,
            front: 0,
        },
        _ => Spans {
            rows: p + t,
            keys: p + t,
            decoder_prefix: 0,
            encoder_backward: true,
            front: p,
        },
    }
}
