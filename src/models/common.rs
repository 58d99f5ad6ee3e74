//! What both models share: the host batch, the recompute policy, the parity capture, and the
//! small helpers every forward uses.

use crate::backend::{Backend, DType};
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::weights::WeightSource;

/// The most positions (prompt included) a row may take on a model without a position table,
/// and the most a generation may reach: T5 was pre-trained on 512 and its relative buckets
/// stop growing at 128, so 16 times its training length is far past any use and still bounds
/// the memory a typo can ask for.
pub const MAX_TOKENS: usize = 8192;

/// Tensors a forward records for `parity`, named as the reference names them
/// (`hidden_states.{i}`, `encoder_hidden_states.{l}`, `logits`, ...), in float32 on the host.
pub type Capture = std::collections::BTreeMap<String, Vec<f32>>;

/// What to keep for backward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recompute {
    /// Keep the minimal set: nonlinear state only (norm inputs and statistics, activation
    /// inputs, attention q/k/v and log-sum-exp). No linear input, no Tq×Tk matrix.
    #[default]
    None,
    /// As `None`, less a gated MLP's up branch (N·I per layer, the largest saved tensor
    /// beside the gate), which backward recomputes from the kept norm input: one more
    /// (N, C)·(C, I) product per layer. Decoder-only models with a gated MLP (the Llama
    /// family) only.
    Mlp,
    /// Keep only each layer's input; rerun the layer's forward during backward.
    Layer,
}

impl Recompute {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Mlp => "mlp",
            Recompute::Layer => "layer",
        }
    }

    /// `--recompute mlp` on a model other than a decoder with a gated MLP: an error naming it.
    pub(crate) fn refuse_mlp(self, model: &str) -> Result<()> {
        if self != Recompute::Mlp {
            return Ok(());
        }
        Err(Error::arg(
            "--recompute",
            format!(
                "\"mlp\" recomputes the up branch of a decoder-only model's gated MLP (the \
                 Llama family), not {model}'s: use \"none\" or \"layer\""
            ),
        ))
    }
}

impl std::str::FromStr for Recompute {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Recompute::None),
            "mlp" => Ok(Recompute::Mlp),
            "layer" => Ok(Recompute::Layer),
            _ => Err(Error::arg(
                "--recompute",
                format!("\"{s}\": expected \"none\", \"mlp\" or \"layer\""),
            )),
        }
    }
}

/// A batch of token ids on the host, right-padded: ids, mask, token types (B, T).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    pub b: usize,
    pub t: usize,
    pub ids: Vec<i32>,
    /// 1 for a real token, 0 for padding
    pub mask: Vec<i32>,
    pub type_ids: Option<Vec<i32>>,
}

impl TokenBatch {
    /// Number of real tokens in row `bi`.
    pub fn row_len(&self, bi: usize) -> usize {
        self.mask[bi * self.t..(bi + 1) * self.t]
            .iter()
            .filter(|&&m| m != 0)
            .count()
    }

    pub fn check(&self) -> Result<()> {
        let n = self.b * self.t;
        crate::error::ensure_len("input_ids", n, self.ids.len())?;
        crate::error::ensure_len("attention_mask", n, self.mask.len())?;
        if let Some(types) = &self.type_ids {
            crate::error::ensure_len("token_type_ids", n, types.len())?;
        }
        Ok(())
    }
}

/// The key mask with the P prompt columns in front: (B, P + T).
pub fn prompt_key_mask(batch: &TokenBatch, p: usize) -> Vec<i32> {
    let mut mask = Vec::with_capacity(batch.b * (p + batch.t));
    for bi in 0..batch.b {
        mask.extend(std::iter::repeat_n(1, p));
        mask.extend(
            batch.mask[bi * batch.t..(bi + 1) * batch.t]
                .iter()
                .map(|&m| (m != 0) as i32),
        );
    }
    mask
}

/// Allocates a zeroed buffer.
pub(crate) fn zeros<B: Backend>(be: &B, dtype: DType, len: usize) -> Result<B::Buf> {
    be.zeros(dtype, len)
}

/// Allocates a buffer the next op overwrites whole (`Storage::output`): not zeroed.
pub(crate) fn output<B: Backend>(be: &B, dtype: DType, len: usize) -> Result<B::Buf> {
    be.output(dtype, len)
}

/// Registers a tensor kept for backward with the accountant.
pub(crate) fn hold<B: Backend>(be: &B, acct: &mut MemoryAccountant, name: String, buf: &B::Buf) {
    let bytes = be.len(buf) * be.dtype(buf).size();
    acct.hold(name, bytes, be.buf_id(buf));
}

/// out (M, N) = inp (M, K) · W^T + bias, reporting the input to the accountant.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear<B: Backend>(
    be: &B,
    acct: &mut MemoryAccountant,
    inp: &B::Buf,
    w: &B::Buf,
    bias: Option<&B::Buf>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<B::Buf> {
    acct.linear_input(be.buf_id(inp));
    let mut out = be.output(be.act_dtype(), m * n)?;
    be.linear_fwd(&mut out, inp, w, bias, m, k, n)?;
    Ok(out)
}

/// Loads one tensor to the device in the backend's weight dtype.
pub(crate) fn load<B: Backend>(
    be: &B,
    store: &dyn WeightSource,
    name: &str,
    shape: &[usize],
) -> Result<B::Buf> {
    let t = store.get(name, shape)?;
    be.upload(be.weight_dtype(), &t.data)
}
