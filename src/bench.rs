//! `softprompt bench`: one training step (forward + backward to what is trained: the prompt,
//! or under `--method` P-tuning's encoder or prefix tuning's table, `bench_method.rs`) on
//! preset shapes with random frozen weights, so nothing needs downloading. The same presets,
//! flags, workload, FLOP count and JSON keys as `scripts/bench_torch.py`, so the two compare.

use crate::backend::{Act, Backend, DType};
use crate::bench_check::{check_against_reference, Check};
use crate::bench_decoder as dec;
use crate::bench_method::{self as method, Tuned};
use crate::closeness::{Closeness, TENSOR_FLOOR};
use crate::config::{BertConfig, DecoderConfig, ModelConfig, T5Config};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::cls_head::HostClsHead;
use crate::models::heads::Pooling;
use crate::models::{Model, Objective, Recompute, TokenBatch, MAX_TOKENS};
use crate::rng::Rng;
use crate::train::Method;
use serde_json::{json, Value};
use std::time::Instant;

#[derive(Clone, Debug, PartialEq)]
pub enum Preset {
    Bert(BertConfig),
    T5(T5Config),
    /// BLOOM and the Llama family (`bench_decoder.rs`)
    Decoder(DecoderConfig),
}

pub const PRESETS: &str = "bert-base, bert-large, t5-base, t5-large, t5-xl, t5-xxl, bloom-560m, bloom-7b1, llama-3.2-1b, llama-3.2-3b, llama-3.1-8b, qwen2.5-7b";

fn bert_preset(layers: usize, hidden: usize, heads: usize, inter: usize) -> Preset {
    Preset::Bert(BertConfig {
        vocab_size: 30522,
        hidden_size: hidden,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        intermediate_size: inter,
        hidden_act: Act::GeluErf,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        tie_word_embeddings: true,
    })
}

/// T5 v1.1 shapes: gated-gelu, untied LM head, no output scaling.
fn t5_preset(d_model: usize, heads: usize, d_ff: usize, layers: usize) -> Preset {
    Preset::T5(T5Config {
        vocab_size: 32128,
        d_model,
        d_kv: 64,
        d_ff,
        num_layers: layers,
        num_decoder_layers: layers,
        num_heads: heads,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        layer_norm_epsilon: 1e-6,
        dense_act: Act::GeluTanh,
        is_gated_act: true,
        scale_decoder_outputs: false,
        tie_word_embeddings: false,
        decoder_start_token_id: 0,
        pad_token_id: 0,
        eos_token_id: 1,
    })
}

impl Preset {
    pub fn by_name(name: &str) -> Result<Preset> {
        if let Some(c) = dec::by_name(name) {
            return Ok(Preset::Decoder(c));
        }
        Ok(match name {
            "bert-base" => bert_preset(12, 768, 12, 3072),
            "bert-large" => bert_preset(24, 1024, 16, 4096),
            "t5-base" => t5_preset(768, 12, 2048, 12),
            "t5-large" => t5_preset(1024, 16, 2816, 24),
            "t5-xl" => t5_preset(2048, 32, 5120, 24),
            "t5-xxl" => t5_preset(4096, 64, 10240, 24),
            other => {
                return Err(Error::arg(
                    "--preset",
                    format!("\"{other}\": expected one of {PRESETS}"),
                ))
            }
        })
    }

    /// The same preset with fewer layers: the check against the reference runs on this.
    pub fn truncated(&self, layers: usize) -> Preset {
        match self.clone() {
            Preset::Bert(mut c) => {
                c.num_hidden_layers = c.num_hidden_layers.min(layers);
                Preset::Bert(c)
            }
            Preset::T5(mut c) => {
                c.num_layers = c.num_layers.min(layers);
                c.num_decoder_layers = c.num_decoder_layers.min(layers);
                Preset::T5(c)
            }
            Preset::Decoder(mut c) => {
                c.num_layers = c.num_layers.min(layers);
                Preset::Decoder(c)
            }
        }
    }

    /// The preset's model config, for `Model::random`.
    pub fn config(&self) -> ModelConfig {
        match self.clone() {
            Preset::Bert(c) => ModelConfig::Bert(c),
            Preset::T5(c) => ModelConfig::T5(c),
            Preset::Decoder(c) if c.is_bloom() => ModelConfig::Bloom(c),
            Preset::Decoder(c) => ModelConfig::Llama(c),
        }
    }

    pub fn shapes(&self) -> Value {
        match self {
            Preset::Bert(c) => {
                json!({"layers": c.num_hidden_layers, "decoder_layers": 0, "hidden": c.hidden_size,
                "heads": c.num_attention_heads, "head_dim": c.head_dim(), "ff": c.intermediate_size, "vocab": c.vocab_size})
            }
            Preset::T5(c) => {
                json!({"layers": c.num_layers, "decoder_layers": c.num_decoder_layers, "hidden": c.d_model,
                "heads": c.num_heads, "head_dim": c.d_kv, "ff": c.d_ff, "vocab": c.vocab_size})
            }
            Preset::Decoder(c) => dec::shapes(c),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub batch: usize,
    /// real tokens per row, prompt excluded
    pub seq: usize,
    /// T5 decoder length; decoder-only: the labelled tokens at the end of each row
    pub target_len: usize,
    pub prompt: usize,
    pub recompute: Recompute,
    /// BERT: "pet", "mlm" or "cls" (two labels on mean-pooled states)
    pub objective: String,
    /// what is trained; `prompt` is P rows of the prompt, P-tuning's encoder or the prefix
    pub method: Method,
}

/// Tokens per step: B·(P+T) (B·T under prefix tuning, whose prefix is in the keys only), plus
/// B·L through a T5 decoder.
pub fn tokens_per_step(preset: &Preset, w: &Workload) -> usize {
    let enc = w.batch * method::spans(preset, w).rows;
    match preset {
        Preset::Bert(_) | Preset::Decoder(_) => enc,
        Preset::T5(_) => enc + w.batch * w.target_len,
    }
}

/// FLOPs of one step, the convention `scripts/bench_torch.py` shares: 2 per multiply-add,
/// forward plus input-gradient backward = 2× forward, over the linear layers the task needs
/// (heads only at the rows the loss reads), plus 12·B·Tq·Tk·A per attention call (4 forward,
/// 8 backward), causal counted in full. Where the step needs fewer rows, fewer: the first
/// layer's (T5: the encoder's first block's) query, key and value input gradient at the B·P
/// prompt rows only, none under prefix tuning (`Spans::front`); BERT's last layer's queries,
/// output projection and FFN (and its attention's queries) at the R rows per example its head
/// reads (`pet` 1, `mlm` the labelled count, `cls` the T tokens), the decoder-only models' at
/// the L target rows. Under `--method` the lengths are `bench_method::spans`: prefix tuning's
/// rows are the T tokens, whose attention sees P + T keys (T5's decoder self-attention P + L),
/// and an encoder that runs no backward (PEFT's T5 placement) counts its forward only, with
/// the cross-attention's key and value products over its output.
pub fn flops_per_step(preset: &Preset, w: &Workload) -> f64 {
    let s = method::spans(preset, w);
    let b = w.batch as f64;
    let (t, keys) = (s.rows as f64, s.keys as f64);
    let lin = |rows: f64, k: usize, n: usize| 4.0 * rows * k as f64 * n as f64;
    let attn = |tq: f64, tk: f64, a: usize| 12.0 * b * tq * tk * a as f64;
    // the input-gradient half of a `lin` at the rows that are not the prompt's
    let skipped = |k: usize, n: usize| 2.0 * b * (t - s.front as f64) * k as f64 * n as f64;
    match preset {
        Preset::Bert(c) => {
            let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
            let labelled = (0.15 * w.seq as f64).round().max(1.0);
            let (head, r) = match w.objective.as_str() {
                "mlm" => (lin(labelled * b, h, h) + lin(labelled * b, h, v), labelled),
                "cls" => (0.0, w.seq as f64),
                _ => (lin(b, h, h) + lin(b, h, PET_VERBALIZER.len()), 1.0),
            };
            // q, o and the FFN at `tq` rows per example, with attention of those queries
            let rowwise = |tq: f64| {
                2.0 * lin(b * tq, h, h) + lin(b * tq, h, i) + lin(b * tq, i, h) + attn(tq, keys, h)
            };
            let kv = 2.0 * lin(b * t, h, h);
            let layers = c.num_hidden_layers as f64;
            (layers - 1.0) * rowwise(t) + rowwise(r.min(t)) + layers * kv - 3.0 * skipped(h, h)
                + head
        }
        Preset::T5(c) => {
            let (d, a, f, v) = (c.d_model, c.inner_dim(), c.d_ff, c.vocab_size);
            let l = w.target_len as f64;
            let (enc_rows, dec_rows) = (b * t, b * l);
            // an encoder without backward: its forward, half of forward + backward
            let enc_share = if s.encoder_backward { 1.0 } else { 0.5 };
            let ffn = |rows: f64| if c.is_gated_act { 2.0 * lin(rows, d, f) } else { lin(rows, d, f) } + lin(rows, f, d);
            let enc_layer = enc_share
                * (3.0 * lin(enc_rows, d, a)
                    + lin(enc_rows, a, d)
                    + ffn(enc_rows)
                    + attn(t, keys, a));
            // the first block's q, k and v input gradient, where the encoder runs backward
            let enc_skipped = if s.encoder_backward {
                3.0 * skipped(d, a)
            } else {
                0.0
            };
            let dec_layer = 3.0 * lin(dec_rows, d, a)
                + lin(dec_rows, a, d)
                + attn(l, l + s.decoder_prefix as f64, a)
                + lin(dec_rows, d, a)
                + lin(dec_rows, a, d)
                + enc_share * 2.0 * lin(enc_rows, d, a)
                + attn(l, t, a)
                + ffn(dec_rows);
            c.num_layers as f64 * enc_layer - enc_skipped
                + c.num_decoder_layers as f64 * dec_layer
                + lin(dec_rows, d, v)
        }
        Preset::Decoder(c) => dec::flops(c, w.batch, &s, w.target_len),
    }
}

/// The two verbalizer ids of the bench's `pet` objective.
pub const PET_VERBALIZER: [i32; 2] = [1000, 2000];

/// The batch of one step: full-length random rows; PET masks at T/2 with two verbalizer ids;
/// MLM labels on 15% of the positions; T5 random labels (B, L).
pub struct BenchBatch {
    pub tokens: TokenBatch,
    pub labels: Vec<i32>,
    pub prompt: Vec<f32>,
}

pub fn bench_batch(preset: &Preset, w: &Workload, seed: u64) -> BenchBatch {
    let mut rng = Rng::new(seed);
    let (vocab, d) = match preset {
        Preset::Bert(c) => (c.vocab_size, c.hidden_size),
        Preset::T5(c) => (c.vocab_size, c.d_model),
        Preset::Decoder(c) => (c.vocab_size, c.hidden_size),
    };
    let n = w.batch * w.seq;
    let ids = (0..n)
        .map(|_| 1 + rng.below(vocab as u64 - 1) as i32)
        .collect();
    let labels = match preset {
        Preset::T5(_) => (0..w.batch * w.target_len)
            .map(|_| rng.below(vocab as u64) as i32)
            .collect(),
        Preset::Bert(_) if w.objective == "mlm" => (0..n)
            .map(|_| {
                if rng.uniform() < 0.15 {
                    rng.below(vocab as u64) as i32
                } else {
                    -100
                }
            })
            .collect(),
        Preset::Bert(_) => (0..w.batch).map(|_| rng.below(2) as i32).collect(),
        Preset::Decoder(_) => dec::labels(&mut rng, vocab, w.batch, w.seq, w.target_len),
    };
    let prompt = (0..w.prompt * d).map(|_| rng.normal() as f32).collect();
    BenchBatch {
        tokens: TokenBatch {
            b: w.batch,
            t: w.seq,
            ids,
            mask: vec![1; n],
            type_ids: None,
        },
        labels,
        prompt,
    }
}

/// One forward + backward of what `tuned` trains (the host encoder's too, if any); returns
/// the loss, d loss / d what is trained (`Tuned::backward`), and the bytes held for backward:
/// when the forward pass ended, and at the accountant's peak.
pub fn step<B: Backend>(
    be: &B,
    model: &Model<B>,
    batch: &BenchBatch,
    tuned: &Tuned,
    w: &Workload,
) -> Result<(f64, Vec<f32>, (usize, usize))> {
    let mut acct = MemoryAccountant::new();
    let (host_table, tape) = tuned.forward()?;
    let table = be.upload(DType::F32, &host_table)?;
    let (b, t) = (w.batch, w.seq);
    let mask_positions = vec![(t / 2) as i32; b];
    let head = match (model, w.objective.as_str()) {
        (Model::Bert(m), "cls") => Some(cls_head(m.cfg.hidden_size).upload(be)?),
        _ => None,
    };
    let objective = match model {
        Model::T5(_) => Objective::Seq2Seq {
            labels: &batch.labels,
            l: w.target_len,
        },
        Model::Bert(_) if w.objective == "mlm" => Objective::Mlm {
            labels: &batch.labels,
        },
        Model::Bert(_) if head.is_some() => Objective::Cls {
            head: head
                .as_ref()
                .ok_or_else(|| Error::arg("--objective", "no cls head"))?,
            pooling: Pooling::Mean,
            labels: &batch.labels,
        },
        Model::Bert(_) => Objective::Pet {
            mask_positions: &mask_positions,
            verbalizer_ids: &PET_VERBALIZER,
            labels: &batch.labels,
        },
        Model::Bloom(_) | Model::Llama(_) => Objective::Causal {
            labels: &batch.labels,
        },
    };
    let mut dtable = be.zeros(DType::F32, host_table.len())?;
    let out = model.train_step(
        be,
        &mut acct,
        &mut dtable,
        &table,
        &batch.tokens,
        tuned.tuning,
        &objective,
        w.recompute,
        None,
    )?;
    let grad = tuned.backward(tape, be.download(&dtable)?)?;
    be.synchronize()?;
    Ok((
        out.loss,
        grad,
        (acct.held_after_forward(), acct.peak_bytes()),
    ))
}

/// The bench's `cls` head: two labels over C, small random weights (a head of zeros would
/// give every row the same gradient).
fn cls_head(c: usize) -> HostClsHead {
    let mut rng = Rng::new(7);
    let mut head = HostClsHead::zeros(PET_VERBALIZER.len(), c);
    for x in head.weight.iter_mut().chain(head.bias.iter_mut()) {
        *x = rng.normal() as f32 * 0.02;
    }
    head
}

/// Relative L2 distance (`closeness`), as `parity` measures it.
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    Closeness::of(got, want, TENSOR_FLOOR).rel_err
}

/// CPU seconds this process has used, all threads (Linux: /proc/self/stat, 10 ms ticks);
/// None elsewhere. Beside wall time it shows the work a step did on a machine shared with
/// other jobs, whose load stretches wall time but not this.
pub fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name, which is in parentheses and may hold spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    Some((utime + stime) / 100.0)
}

/// The workload's sizes, before anything is sized by them: at least one row, token and
/// prompt row (a step of nothing was timed, exit 0), positions within the preset's table
/// (BERT) or the engine's cap (a --seq of 10^9 took 8 GB before its error, a --prompt of
/// 10^9 aborted on the allocation), a T5 or decoder target within the cap (a --target-len
/// of 10^9 took 24 GB), `--recompute mlp:K` within the preset's layers, and a known
/// objective.
pub fn check_workload(preset: &Preset, w: &Workload) -> Result<()> {
    for (flag, n) in [
        ("--batch", w.batch),
        ("--seq", w.seq),
        ("--prompt", w.prompt),
    ] {
        if n == 0 {
            return Err(Error::arg(flag, "is 0: expected at least 1"));
        }
    }
    let (table, what) = match preset {
        Preset::Bert(c) => (
            c.max_position_embeddings,
            "the preset's max_position_embeddings",
        ),
        _ => (MAX_TOKENS, "this engine's cap"),
    };
    let positions = w.prompt.saturating_add(w.seq);
    if positions > table {
        let flag = if w.prompt > w.seq {
            "--prompt"
        } else {
            "--seq"
        };
        return Err(Error::arg(
            flag,
            format!(
                "{} tokens + --prompt {} = {} positions, past {what} of {table}",
                w.seq,
                w.prompt,
                crate::error::sum_text(&[w.seq, w.prompt])
            ),
        ));
    }
    if !matches!(preset, Preset::Bert(_)) && !(1..=MAX_TOKENS).contains(&w.target_len) {
        return Err(Error::arg(
            "--target-len",
            format!(
                "{} is out of range: expected 1 to {MAX_TOKENS}",
                w.target_len
            ),
        ));
    }
    // a gated decoder's mlp:K within its layers (the others refuse mlp as the step starts)
    if let Preset::Decoder(c) = preset {
        if !c.is_bloom() {
            w.recompute.check_layers(c.num_layers)?;
        }
    }
    if !matches!(w.objective.as_str(), "pet" | "mlm" | "cls") {
        return Err(Error::arg(
            "--objective",
            format!("\"{}\": expected pet, mlm or cls", w.objective),
        ));
    }
    Ok(())
}

/// A step's activations within the host's memory, on the CPU (a --batch of 10^11 aborted on
/// the allocation): the estimate the trainer checks a run with.
pub fn check_memory<B: Backend>(be: &B, model: &Model<B>, w: &Workload) -> Result<()> {
    if be.device().is_gpu() {
        return Ok(());
    }
    let tokens = w.prompt.saturating_add(w.seq);
    let need = model.step_bytes(be.act_dtype().size(), w.batch, tokens, w.target_len);
    check_host_bytes(need, w)
}

/// `need` bytes for a step of `w` within the host's available memory, else an error naming
/// --batch (bench --ceiling checks its workload by the same estimate, with no model built).
pub fn check_host_bytes(need: u128, w: &Workload) -> Result<()> {
    let Some(available) = crate::memory::host_available_bytes() else {
        return Ok(());
    };
    let tokens = w.prompt.saturating_add(w.seq);
    if need <= available as u128 {
        return Ok(());
    }
    let (need, room) = crate::memory::refusal_words(need, available);
    Err(Error::arg(
        "--batch",
        format!(
            "a step of {} rows x {tokens} positions would need about {need} for activations, \
             but {room}: lower --batch or --seq",
            w.batch,
        ),
    ))
}

/// Stops a preset whose float32 weights would not fit the CPU, before anything is allocated
/// (bench and profile; t5-xxl and llama-3.1-8b under profile grew toward 44 and 32 GB).
/// `checked`: bench's 2-layer reference check runs beside the model (profile runs none).
pub fn check_fits_cpu(name: &str, preset: &Preset, checked: bool) -> Result<()> {
    dec::check_fits_cpu(name, parameters(preset))?;
    // the model's random float32 weights and the 2-layer check's beside them (float64
    // reference and the engine's own, and the float64 copy of the reference's largest
    // tensor, its embedding table, as it is built), with a margin for the steps' transients,
    // within what the process may allocate (under ulimit -v bench aborted building them;
    // verification 31, F10b-3; a 100 MB band past the check aborted on bloom's embeddings,
    // verification 32)
    // without the check, the float32 copy of the embedding table made as the model loads
    // (profile aborted on it once the check's share was left out; verification 33, N3)
    let small = parameters(&preset.truncated(2)) as u128;
    let table = embedding_elements(preset) as u128;
    let beside = match checked {
        true => 12 * small + 8 * table,
        // and a second such copy: profile aborted in a 150 MB band past 4 (verification 34,
        // F-2)
        false => 8 * table,
    };
    let need = 4 * parameters(preset) as u128 + beside + 4 * crate::models::LOAD_SLACK;
    let what = match checked {
        true => format!("{name}'s float32 weights, with the reference check's,"),
        false => format!("{name}'s float32 weights"),
    };
    match crate::memory::host_room_refusal(&what, need) {
        Some(words) => Err(Error::arg("--preset", words)),
        None => Ok(()),
    }
}

/// The elements of `preset`'s word embedding table, its largest tensor.
fn embedding_elements(preset: &Preset) -> usize {
    match preset {
        Preset::Bert(c) => c.vocab_size * c.hidden_size,
        Preset::T5(c) => c.vocab_size * c.d_model,
        Preset::Decoder(c) => c.vocab_size * c.hidden_size,
    }
}

/// Weight count of `preset`: embeddings, layers (norm weights and biases counted roughly:
/// they are a rounding error next to the matrices) and untied heads.
fn parameters(preset: &Preset) -> usize {
    match preset {
        Preset::Bert(c) => {
            let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
            let embed = (v + c.max_position_embeddings + c.type_vocab_size) * d;
            let layer = 4 * d * d + 2 * d * f + 9 * d + f;
            // the MLM head's transform and decoder bias
            embed + c.num_hidden_layers * layer + d * d + v + 4 * d
        }
        Preset::T5(c) => {
            let (d, a, f, v) = (c.d_model, c.inner_dim(), c.d_ff, c.vocab_size);
            let wi = if c.is_gated_act { 2 } else { 1 };
            let enc = 4 * d * a + (wi + 1) * d * f + 2 * d;
            let dec = 8 * d * a + (wi + 1) * d * f + 3 * d;
            // T5 v1.0 scales its tied head; v1.1 and later have their own lm_head
            let head = if c.scale_decoder_outputs { 0 } else { v * d };
            v * d + c.num_layers * enc + c.num_decoder_layers * dec + 2 * d + head
        }
        Preset::Decoder(c) => dec::parameters(c),
    }
}

/// Times `steps` steps after `warmup` and returns the JSON report.
pub fn run<B: Backend>(
    be: &B,
    preset_name: &str,
    w: &Workload,
    steps: usize,
    warmup: usize,
) -> Result<Value> {
    // the loop's count wrapped, no step was timed, and the median indexed an empty list
    let total = warmup.checked_add(steps.max(1)).ok_or_else(|| {
        Error::arg(
            "--warmup",
            format!(
                "{warmup} steps of warmup and --steps {steps} add past the largest step count \
                 ({}): expected fewer",
                usize::MAX
            ),
        )
    })?;
    let preset = Preset::by_name(preset_name)?;
    if !be.device().is_gpu() {
        check_fits_cpu(preset_name, &preset, true)?;
    }
    if matches!(preset, Preset::Decoder(_)) && w.target_len > w.seq {
        return Err(Error::arg(
            "--target-len",
            format!(
                "{} labelled tokens in rows of --seq {}",
                w.target_len, w.seq
            ),
        ));
    }
    check_workload(&preset, w)?;
    method::check(&preset, &w.method)?;
    let live_before = be.memory().live_bytes;
    let model = Model::random(be, &preset.config(), 1)?;
    let weights_bytes = be.memory().live_bytes - live_before;
    check_memory(be, &model, w)?;
    let check = check_against_reference(be, &preset, w, Check::for_backend(be)?)?;
    let batch = bench_batch(&preset, w, 3);
    let tuned = Tuned::new(&model, w, &batch.prompt, 5)?;
    let (mut times, mut cpu_times) = (Vec::new(), Vec::new());
    let (mut saved, mut saved_peak) = (0, 0);
    let mut loss = 0.0;
    be.reset_peak();
    for i in 0..total {
        let (start, cpu_start) = (Instant::now(), process_cpu_secs());
        let (l, _, held) = step(be, &model, &batch, &tuned, w)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if i >= warmup {
            times.push(ms);
            if let (Some(a), Some(b)) = (cpu_start, process_cpu_secs()) {
                cpu_times.push((b - a) * 1e3);
            }
        }
        (saved, saved_peak) = held;
        loss = l;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let step_ms = times[times.len() / 2];
    cpu_times.sort_by(|a, b| a.total_cmp(b));
    let cpu_ms = cpu_times.get(cpu_times.len() / 2).copied();
    let tokens = tokens_per_step(&preset, w);
    let flops = flops_per_step(&preset, w);
    let mut report = json!({
        "impl": "softprompt",
        "device": be.name(),
        "cpu": crate::device::cpu_model(),
        "cpu_kernels": match be.kernels() {
            k if k.is_empty() => Value::Null,
            k => json!(k),
        },
        "dtype": format!("{:?}", be.act_dtype()).to_lowercase(),
        "weights_dtype": format!("{:?}", be.weight_dtype()).to_lowercase(),
        "preset": preset_name,
        "batch": w.batch, "seq": w.seq, "target_len": w.target_len, "prompt": w.prompt,
        "recompute": w.recompute.name(),
        "objective": match preset { Preset::Bert(_) => w.objective.as_str(), Preset::T5(_) => "seq2seq", Preset::Decoder(_) => "causal" },
        "shapes": preset.shapes(),
        "steps": steps, "warmup": warmup,
        "step_ms": step_ms,
        "step_ms_all": times,
        "cpu_ms": cpu_ms,
        "tokens_per_s": tokens as f64 / (step_ms / 1e3),
        "tflops": flops / (step_ms / 1e3) / 1e12,
        "flops_per_step": flops,
        "saved_bytes": saved,
        "saved_peak_bytes": saved_peak,
        "peak_bytes": be.memory().peak_bytes,
        "weights_bytes": weights_bytes,
        "loss": loss,
        "check": check,
    });
    if let (Some(r), Value::Object(m)) = (
        report.as_object_mut(),
        method::report(&w.method, w.prompt, w.method.encoder_width(&model)),
    ) {
        r.extend(m);
    }
    Ok(report)
}
