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
    /// `Mlp` in the first K layers only (K at most the layer count: `check_layers`); the
    /// others keep their up branch. Held bytes fall between `None`'s and `Mlp`'s, by N·I per
    /// layer, and backward recomputes K products instead of one per layer: the knob that fits
    /// the saved state to a memory budget at the least recomputation. Spelled `mlp:K`.
    MlpLayers(usize),
    /// Keep only each layer's input; rerun the layer's forward during backward.
    Layer,
}

impl Recompute {
    /// The flag's spelling.
    pub fn name(self) -> String {
        match self {
            Recompute::None => "none".into(),
            Recompute::Mlp => "mlp".into(),
            Recompute::MlpLayers(k) => format!("mlp:{k}"),
            Recompute::Layer => "layer".into(),
        }
    }

    /// Whether layer `l`'s forward leaves its gated MLP's up branch to backward.
    pub(crate) fn recomputes_mlp_up(self, l: usize) -> bool {
        match self {
            Recompute::Mlp => true,
            Recompute::MlpLayers(k) => l < k,
            Recompute::None | Recompute::Layer => false,
        }
    }

    /// `mlp:K` against a model of `layers` layers: a K past them is refused (it ran as `mlp`,
    /// every layer, without a word), naming the flag, K and the layer count.
    pub(crate) fn check_layers(self, layers: usize) -> Result<()> {
        match self {
            Recompute::MlpLayers(k) if k > layers => Err(Error::arg(
                "--recompute",
                format!(
                    "\"mlp:{k}\" asks for the first {k} layers, but the model has {layers}: use \
                     mlp:1 to mlp:{layers}, or mlp for every layer"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `--recompute mlp` on a model other than a decoder with a gated MLP: an error naming it.
    pub(crate) fn refuse_mlp(self, model: &str) -> Result<()> {
        if !matches!(self, Recompute::Mlp | Recompute::MlpLayers(_)) {
            return Ok(());
        }
        Err(Error::arg(
            "--recompute",
            format!(
                "\"{}\" recomputes the up branch of a decoder-only model's gated MLP (the \
                 Llama family), not {model}'s: use \"none\" or \"layer\"",
                self.name()
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
            _ => match s.strip_prefix("mlp:").map(str::parse::<usize>) {
                Some(Ok(k)) if k > 0 => Ok(Recompute::MlpLayers(k)),
                _ => Err(Error::arg(
                    "--recompute",
                    format!(
                        "\"{s}\": expected \"none\", \"mlp\", \"mlp:K\" (K >= 1 layers) or \
                         \"layer\""
                    ),
                )),
            },
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

    /// The row whose real tokens reach furthest behind the `front(b)` rows in front of them,
    /// as (row, its front rows, its tokens), the first of equals; None without rows. Rows are
    /// right-padded: a row's tokens end at its last real one.
    pub fn furthest_row(&self, front: impl Fn(usize) -> usize) -> Option<(usize, usize, usize)> {
        (0..self.b)
            .rev()
            .map(|bi| (bi, front(bi), self.extent(bi)))
            .max_by_key(|&(_, f, n)| f + n)
    }

    /// Positions row `bi`'s tokens take, up to its last real one (right padding after it).
    pub fn extent(&self, bi: usize) -> usize {
        let row = self.mask.get(bi * self.t..(bi + 1) * self.t);
        row.and_then(|r| r.iter().rposition(|&m| m != 0))
            .map_or(0, |i| i + 1)
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

/// Rows that mix prompts, on the host: row b reads prompt `idx[b]` of a table of `k` (K, P, C)
/// and, when lengths differ, only its first `lens[b]` <= P rows (the table padded to the
/// longest prompt): the row is then [its P_b prompt rows, its tokens, P - P_b padding rows].
#[derive(Clone, Copy, Debug)]
pub struct MixedPrompts<'a> {
    pub idx: &'a [i32], // (B)
    pub k: usize,
    pub lens: Option<&'a [usize]>, // (B)
}

/// Which prompt of the table each row reads, on the device, as `embedding_fwd` and
/// `prompt_grad_bwd` take it: K = 1 and no index for one prompt.
pub struct PromptRows<B: Backend> {
    pub k: usize,
    pub idx: Option<B::Buf>,  // (B) I32
    pub lens: Option<B::Buf>, // (B) I32
}

impl<B: Backend> PromptRows<B> {
    /// One prompt: every row reads all P rows of prompt 0.
    pub fn one() -> Self {
        PromptRows {
            k: 1,
            idx: None,
            lens: None,
        }
    }

    /// `mix` for a batch of `b` rows and a table of `p` rows, checked (index against K,
    /// lengths against P).
    pub fn upload(be: &B, mix: &MixedPrompts, b: usize, p: usize) -> Result<Self> {
        crate::error::ensure_len("prompt index", b, mix.idx.len())?;
        crate::backend::check_ids("prompt index", mix.idx, mix.k)?;
        let lens = match mix.lens {
            Some(lens) => {
                crate::error::ensure_len("prompt lengths", b, lens.len())?;
                let lens: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
                crate::backend::check_prompt_lens(&lens, p)?;
                Some(be.upload_i32(&lens)?)
            }
            None => None,
        };
        Ok(PromptRows {
            k: mix.k,
            idx: Some(be.upload_i32(mix.idx)?),
            lens,
        })
    }
}

/// The key mask (B, P + T) of rows whose prompts are `lens[b]` <= P rows long: [P_b ones, the
/// row's mask, P - P_b zeros].
pub fn mixed_key_mask(mask: &[i32], t: usize, p: usize, lens: &[usize]) -> Vec<i32> {
    let mut key_mask = Vec::with_capacity(lens.len() * (p + t));
    for (bi, &pb) in lens.iter().enumerate() {
        key_mask.extend(std::iter::repeat_n(1, pb));
        let row = mask.get(bi * t..(bi + 1) * t).unwrap_or_default();
        key_mask.extend(row.iter().map(|&m| (m != 0) as i32));
        key_mask.extend(std::iter::repeat_n(0, p.saturating_sub(pb)));
    }
    key_mask
}

/// The trained table's gradient `grad` of a one-method step, as the (d prompt, d prefix) pair
/// a split backward fills (`Bert::encoder_bwd_split`, `Decoder::stack_bwd_split`): under
/// prefix tuning (`prefix`) the table is the prefix, else the prompt.
pub(crate) fn prompt_or_prefix<T>(prefix: bool, grad: T) -> (Option<T>, Option<T>) {
    match prefix {
        true => (None, Some(grad)),
        false => (Some(grad), None),
    }
}

/// The first P rows of each of B batch rows of (B, S): where a stack with the prompt in front
/// wants its first layer's input gradient (every other row's input is a frozen token
/// embedding, so its gradient is read by nothing). P = 0 (prefix tuning, or no row reading a
/// prompt): the input gradient is wanted nowhere.
pub(crate) struct FrontRows<B: Backend> {
    /// M = B·P, the rows it holds
    pub(crate) m: usize,
    /// (M) I32 their flat rows of (B, S), in order; None when M = 0
    idx: Option<B::Buf>,
}

impl<B: Backend> FrontRows<B> {
    /// Rows 0..P of each of the B rows of S positions.
    pub(crate) fn new(be: &B, b: usize, s: usize, p: usize) -> Result<Self> {
        let rows: Vec<i32> = (0..b)
            .flat_map(|bi| (bi * s..bi * s + p.min(s)).map(|r| r as i32))
            .collect();
        Ok(FrontRows {
            m: rows.len(),
            idx: (!rows.is_empty())
                .then(|| be.upload_i32(&rows))
                .transpose()?,
        })
    }

    /// out (M, C) = x (B·S, C) at the front rows, activations.
    pub(crate) fn gather(&self, be: &B, x: &B::Buf, c: usize) -> Result<B::Buf> {
        let mut out = output(be, be.act_dtype(), self.m * c)?;
        if let Some(idx) = &self.idx {
            be.gather_rows(&mut out, x, idx, self.m, c)?;
        }
        Ok(out)
    }
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
