//! The decoder-only presets of `softprompt bench` (the shapes of the public BLOOM, Llama 3 and
//! Qwen2.5 checkpoints, random weights), their FLOP count and batch; `scripts/bench_common.py`
//! holds the same numbers for `scripts/bench_torch.py`.
//!
//! The workload is PEFT's causal-LM step: B rows of T real tokens behind P prompt rows, labels
//! on the last L tokens of each row (the target), -100 elsewhere; the LM head runs at the B·L
//! rows that predict them.

use crate::backend::rope::Llama3Scaling;
use crate::backend::{Act, IGNORE_INDEX};
use crate::bench_method::Spans;
use crate::config::{DecoderConfig, Positions};
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde_json::{json, Value};

pub const DECODER_PRESETS: &str =
    "bloom-560m, bloom-7b1, llama-3.2-1b, llama-3.2-3b, llama-3.1-8b, qwen2.5-7b";

/// float32 weights above this do not fit the CPU machines this engine is benchmarked on (24 GB):
/// the 7-8B presets stop before allocating anything there.
const CPU_WEIGHT_LIMIT: usize = 16 << 30;

/// bigscience/bloom-*: vocabulary 250880, MLP 4·hidden, ALiBi, tied head.
fn bloom(layers: usize, hidden: usize, heads: usize) -> DecoderConfig {
    DecoderConfig {
        model_type: "bloom".into(),
        vocab_size: 250880,
        hidden_size: hidden,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: hidden / heads,
        intermediate_size: 4 * hidden,
        norm_eps: 1e-5,
        act: Act::GeluTanh,
        positions: Positions::Alibi,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        tie_word_embeddings: true,
        sliding_window: None,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
        stop_token_ids: vec![2],
        stop_token_error: None,
        pad_token_id: Some(3),
    }
}

/// Llama 3.x: vocabulary 128256, 8 key/value heads, SwiGLU, RoPE θ 500000 with Llama 3
/// scaling (`factor` 32 for 3.2, 8 for 3.1).
fn llama(layers: usize, hidden: usize, heads: usize, ff: usize, factor: f64) -> DecoderConfig {
    let head_dim = hidden / heads;
    DecoderConfig {
        model_type: "llama".into(),
        vocab_size: 128256,
        hidden_size: hidden,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: 8,
        head_dim,
        intermediate_size: ff,
        norm_eps: 1e-5,
        act: Act::Silu,
        positions: Positions::Rope {
            theta: 500000.0,
            llama3: Some(Llama3Scaling {
                factor,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            }),
            linear_factor: None,
        },
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        // 3.2 1B and 3B tie the head, 3.1 8B does not
        tie_word_embeddings: factor == 32.0,
        sliding_window: None,
        bos_token_id: Some(128000),
        eos_token_ids: vec![128001],
        stop_token_ids: vec![128001],
        stop_token_error: None,
        pad_token_id: None,
    }
}

/// Qwen/Qwen2.5-7B: vocabulary 152064, 4 key/value heads, q/k/v biases, θ 1e6, untied head.
fn qwen25_7b() -> DecoderConfig {
    let mut c = llama(28, 3584, 28, 18944, 1.0);
    c.model_type = "qwen2".into();
    c.vocab_size = 152064;
    c.num_kv_heads = 4;
    c.norm_eps = 1e-6;
    c.positions = Positions::Rope {
        theta: 1e6,
        llama3: None,
        linear_factor: None,
    };
    c.qkv_bias = true;
    c.tie_word_embeddings = false;
    c.bos_token_id = None;
    c.eos_token_ids = vec![151643];
    c.stop_token_ids = vec![151643];
    c
}

/// The decoder-only preset `name`, if it is one.
pub fn by_name(name: &str) -> Option<DecoderConfig> {
    Some(match name {
        "bloom-560m" => bloom(24, 1024, 16),
        "bloom-7b1" => bloom(30, 4096, 32),
        "llama-3.2-1b" => llama(16, 2048, 32, 8192, 32.0),
        "llama-3.2-3b" => llama(28, 3072, 24, 8192, 32.0),
        "llama-3.1-8b" => llama(32, 4096, 32, 14336, 8.0),
        "qwen2.5-7b" => qwen25_7b(),
        _ => return None,
    })
}

/// Weight count (embeddings, layers, final norm, untied head).
pub fn parameters(c: &DecoderConfig) -> usize {
    let (d, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (c.q_width(), c.kv_width());
    let mlp = if c.is_bloom() { 2 * d * f } else { 3 * d * f };
    let layer = d * q + 2 * d * kv + q * d + mlp + 4 * d;
    let head = if c.tie_word_embeddings { 0 } else { v * d };
    v * d + c.num_layers * layer + 2 * d + head
}

/// Stops a preset of `parameters` weights whose float32 copy would not fit the CPU, before
/// anything is allocated (`bench::check_fits_cpu` counts them for every preset).
pub fn check_fits_cpu(name: &str, parameters: usize) -> Result<()> {
    let bytes = parameters.saturating_mul(4);
    if bytes > CPU_WEIGHT_LIMIT {
        return Err(Error::arg(
            "--preset",
            format!(
                "{name} holds {:.1} GB of float32 weights, more than the {} GB a CPU run may use: run it on a GPU (--device cuda, bf16)",
                bytes as f64 / 1e9,
                CPU_WEIGHT_LIMIT >> 30
            ),
        ));
    }
    Ok(())
}

/// FLOPs of one step (bench.rs's convention): per layer q (C×H·D), k, v (C×Hkv·D), o, the MLP
/// (BLOOM C×F, F×C; SwiGLU gate and up C×F, down F×C) over B·S rows (S = P + T; T under prefix
/// tuning) and attention of those queries, of width H·D, over the K keys (P + T), but the last
/// layer's q, o and MLP at the B·L target rows only, its attention of those queries; the first
/// layer's q, k and v input gradient at the B·P prompt rows only (none under prefix tuning);
/// the LM head C×V at the B·L target rows.
pub fn flops(c: &DecoderConfig, batch: usize, s: &Spans, target_len: usize) -> f64 {
    let lin = |rows: f64, k: usize, n: usize| 4.0 * rows * k as f64 * n as f64;
    let (b, keys) = (batch as f64, s.keys as f64);
    let (d, f) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.q_width(), c.kv_width());
    // the row-wise products and attention of `tq` queries per row
    let rowwise = |tq: f64| {
        let n = b * tq;
        let mlp = if c.is_bloom() {
            lin(n, d, f) + lin(n, f, d)
        } else {
            2.0 * lin(n, d, f) + lin(n, f, d)
        };
        lin(n, d, q) + lin(n, q, d) + mlp + 12.0 * b * tq * keys * q as f64
    };
    let (rows, tail) = (s.rows as f64, target_len.min(s.rows) as f64);
    let kv_all = 2.0 * lin(b * rows, d, kv);
    // input-gradient products (half of a `lin`) the first layer leaves out
    let skipped = 2.0 * b * (rows - s.front as f64) * d as f64 * (q + 2 * kv) as f64;
    let layers = c.num_layers.saturating_sub(1) as f64;
    layers * rowwise(rows) + rowwise(tail) + c.num_layers as f64 * kv_all - skipped
        + lin(b * target_len as f64, d, c.vocab_size)
}

/// Causal-LM labels (B, T): random ids on the last `target_len` tokens of each row.
pub fn labels(
    rng: &mut Rng,
    vocab: usize,
    batch: usize,
    seq: usize,
    target_len: usize,
) -> Vec<i32> {
    let from = seq.saturating_sub(target_len);
    (0..batch * seq)
        .map(|i| {
            if i % seq >= from {
                rng.below(vocab as u64) as i32
            } else {
                IGNORE_INDEX
            }
        })
        .collect()
}

/// The `shapes` object of the JSON report.
pub fn shapes(c: &DecoderConfig) -> Value {
    json!({"layers": c.num_layers, "decoder_layers": 0, "hidden": c.hidden_size,
    "heads": c.num_heads, "head_dim": c.head_dim, "ff": c.intermediate_size, "vocab": c.vocab_size,
    "kv_heads": c.num_kv_heads})
}
