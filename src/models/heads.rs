//! Heads compute only what the loss reads: the masked-LM head runs at the selected rows only
//! (the labelled positions for `mlm`, the [MASK] positions for `pet`), and the PET decoder is
//! restricted to the verbalizer rows. In training each head runs forward and backward in one
//! call, since its gradient is needed at once, and returns the loss and d loss / d hidden;
//! prediction runs its forward alone (`mlm_head_logits`).

use super::bert::Bert;
use super::common::{output, zeros};
use crate::backend::IGNORE_INDEX;
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};

pub struct HeadOutput<B: Backend> {
    /// mean cross-entropy over the rows whose target is not -100
    pub loss: f64,
    /// (M, V') logits of the selected rows, when asked for
    pub logits: Option<Vec<f32>>,
    /// (B, T, C) d loss / d hidden; zero except at the selected rows
    pub dhidden: B::Buf,
}

/// Which output rows the masked-LM decoder computes.
pub enum Decoder<'a> {
    /// all V vocabulary rows
    Vocab,
    /// only these token ids (the verbalizer), in this order
    Rows(&'a [i32]),
}

/// What the masked-LM head's forward keeps for its backward.
struct MlmFwd<B: Backend> {
    /// (M) I32 the rows of the hidden states it read
    idx: B::Buf,
    /// (M, C) the dense layer's output, before the activation
    u: B::Buf,
    /// (M, C) the activation's output, the LayerNorm's input
    g: B::Buf,
    /// (M) F32 the LayerNorm's statistics
    mean: B::Buf,
    rstd: B::Buf,
    /// the decoder restricted to the verbalizer rows, (V', C) and (V'); None: the full one
    restricted: Option<(B::Buf, B::Buf)>,
}

impl<B: Backend> MlmFwd<B> {
    /// The decoder's weight (V', C) and bias (V') the logits come from.
    fn decoder<'a>(&'a self, bert: &'a Bert<B>) -> Result<(&'a B::Buf, &'a B::Buf)> {
        let (head, full_w) = bert.decoder_weight()?;
        Ok(match &self.restricted {
            Some((w, b)) => (w, b),
            None => (full_w, &head.bias),
        })
    }
}

/// The masked-LM head's forward at hidden rows `rows` (M indices into the rows of `hidden`):
/// what its backward reads, and the logits (M, V') F32.
fn mlm_head_fwd<B: Backend>(
    be: &B,
    bert: &Bert<B>,
    hidden: &B::Buf,
    rows: &[i32],
    decoder: Decoder,
) -> Result<(MlmFwd<B>, B::Buf)> {
    let (head, _) = bert.decoder_weight()?;
    let (c, act, eps) = (
        bert.cfg.hidden_size,
        be.act_dtype(),
        bert.cfg.layer_norm_eps,
    );
    let m = rows.len();
    let restricted = match decoder {
        Decoder::Vocab => None,
        Decoder::Rows(ids) => Some(verbalizer_rows(be, bert, ids)?),
    };
    let idx = be.upload_i32(rows)?;
    let mut h = output(be, act, m * c)?;
    be.gather_rows(&mut h, hidden, &idx, m, c)?;
    let mut u = output(be, act, m * c)?;
    be.linear_fwd(&mut u, &h, &head.dense_w, Some(&head.dense_b), m, c, c)?;
    let mut g = output(be, act, m * c)?;
    be.act_fwd(&mut g, &u, bert.cfg.hidden_act, m * c)?;
    let (mut z, mut mean, mut rstd) = (
        output(be, act, m * c)?,
        output(be, DType::F32, m)?,
        output(be, DType::F32, m)?,
    );
    be.layernorm_fwd(
        &mut z, &mut mean, &mut rstd, &g, &head.ln_w, &head.ln_b, m, c, eps,
    )?;
    let fwd = MlmFwd {
        idx,
        u,
        g,
        mean,
        rstd,
        restricted,
    };
    let (dec_w, dec_b) = fwd.decoder(bert)?;
    let v = be.len(dec_b);
    // logits in float32: the softmax over V must not round in bf16
    let mut logits = output(be, DType::F32, m * v)?;
    be.linear_fwd(&mut logits, &z, dec_w, Some(dec_b), m, c, v)?;
    Ok((fwd, logits))
}

/// The masked-LM head's logits (M, V') at hidden rows `rows`, on the host: its forward alone,
/// for prediction (no loss, no backward).
pub fn mlm_head_logits<B: Backend>(
    be: &B,
    bert: &Bert<B>,
    hidden: &B::Buf,
    rows: &[i32],
    decoder: Decoder,
) -> Result<Vec<f32>> {
    be.download(&mlm_head_fwd(be, bert, hidden, rows, decoder)?.1)
}

/// Runs BERT's masked-LM head at hidden rows `rows` (M indices into the B*T rows of `hidden`)
/// against `targets` (M; -100 ignored; for `Decoder::Rows`, an index into the rows).
pub fn mlm_head_fwd_bwd<B: Backend>(
    be: &B,
    bert: &Bert<B>,
    hidden: &B::Buf,
    rows: &[i32],
    targets: &[i32],
    decoder: Decoder,
    keep_logits: bool,
) -> Result<HeadOutput<B>> {
    let (head, _) = bert.decoder_weight()?;
    let (c, act) = (bert.cfg.hidden_size, be.act_dtype());
    let m = rows.len();
    crate::error::ensure_len("head targets", m, targets.len())?;
    let (fwd, mut logits) = mlm_head_fwd(be, bert, hidden, rows, decoder)?;
    let (dec_w, dec_b) = fwd.decoder(bert)?;
    let v = be.len(dec_b);
    let count = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    let kept = if keep_logits {
        Some(be.download(&logits)?)
    } else {
        None
    };
    let mut losses = output(be, DType::F32, m)?;
    let targets_buf = be.upload_i32(targets)?;
    be.cross_entropy_fwd_bwd(
        &mut logits,
        &mut losses,
        &targets_buf,
        m,
        v,
        1.0 / count.max(1) as f64,
    )?;
    let loss = be.download_f64(&losses)?.iter().sum::<f64>() / count.max(1) as f64;
    let dlogits = logits;
    let mut dz = output(be, act, m * c)?;
    be.linear_bwd(&mut dz, &dlogits, dec_w, m, c, v, false)?;
    let mut dg = output(be, act, m * c)?;
    let (mean, rstd) = (&fwd.mean, &fwd.rstd);
    be.layernorm_bwd(&mut dg, &dz, &fwd.g, &head.ln_w, mean, rstd, m, c, false)?;
    let mut du = output(be, act, m * c)?;
    be.act_bwd(&mut du, &dg, &fwd.u, bert.cfg.hidden_act, m * c, false)?;
    let mut dh = output(be, act, m * c)?;
    be.linear_bwd(&mut dh, &du, &head.dense_w, m, c, c, false)?;
    let mut dhidden = zeros(be, act, be.len(hidden))?;
    be.scatter_rows_bwd(&mut dhidden, &dh, &fwd.idx, m, c)?;
    Ok(HeadOutput {
        loss,
        logits: kept,
        dhidden,
    })
}

/// The decoder weight (V', C) and bias (V') restricted to the verbalizer ids (V'), in order.
fn verbalizer_rows<B: Backend>(be: &B, bert: &Bert<B>, ids: &[i32]) -> Result<(B::Buf, B::Buf)> {
    let (head, full_w) = bert.decoder_weight()?;
    let c = bert.cfg.hidden_size;
    if ids.is_empty() {
        return Err(Error::tensor(
            "verbalizer_ids",
            "the verbalizer needs at least one token id",
        ));
    }
    crate::backend::check_ids("verbalizer_ids", ids, bert.cfg.vocab_size)?;
    let idx = be.upload_i32(ids)?;
    let wt = be.weight_dtype();
    // gather_rows writes every row
    let (mut w, mut b) = (output(be, wt, ids.len() * c)?, output(be, wt, ids.len())?);
    be.gather_rows(&mut w, full_w, &idx, ids.len(), c)?;
    be.gather_rows(&mut b, &head.bias, &idx, ids.len(), 1)?;
    Ok((w, b))
}

/// Rows of the (B, P+T) hidden states for real-token position `s` of batch row `b`.
pub fn token_row(b: usize, s: usize, p: usize, t: usize) -> i32 {
    (b * (p + t) + p + s) as i32
}

/// `mlm`: logits at every real-token position (B*T rows), loss over labels != -100.
pub fn mlm_rows(
    labels: &[i32],
    b: usize,
    t: usize,
    p: usize,
    all_rows: bool,
) -> (Vec<i32>, Vec<i32>) {
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for bi in 0..b {
        for s in 0..t {
            let label = labels[bi * t + s];
            if all_rows || label != IGNORE_INDEX {
                rows.push(token_row(bi, s, p, t));
                targets.push(label);
            }
        }
    }
    (rows, targets)
}

/// `pet`: one row per example, at its [MASK] position.
pub fn pet_rows(mask_positions: &[i32], b: usize, t: usize, p: usize) -> Result<Vec<i32>> {
    crate::error::ensure_len("mask_positions", b, mask_positions.len())?;
    mask_positions
        .iter()
        .enumerate()
        .map(|(bi, &s)| {
            if s < 0 || s as usize >= t {
                Err(Error::tensor(
                    "mask_positions",
                    format!("row {bi}: position {s} is outside the {t} real-token positions"),
                ))
            } else {
                Ok(token_row(bi, s as usize, p, t))
            }
        })
        .collect()
}

/// How the `cls` task pools the hidden states of the real tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// the mean over the real (unpadded) tokens, prompt rows excluded
    Mean,
    /// the first real token ([CLS])
    Cls,
}

impl Pooling {
    /// The name `--pooling` and task.json give it.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            _ => Err(Error::arg(
                "--pooling",
                format!("\"{s}\": expected \"mean\" or \"cls\""),
            )),
        }
    }
}

/// (B, P+T) pooling weights: 1/count on the pooled rows, 0 elsewhere.
pub fn pool_weights(mask: &[i32], b: usize, t: usize, p: usize, pooling: Pooling) -> Vec<f32> {
    let mut w = vec![0.0f32; b * (p + t)];
    for bi in 0..b {
        let row = &mask[bi * t..(bi + 1) * t];
        match pooling {
            Pooling::Mean => {
                let count = row.iter().filter(|&&m| m != 0).count().max(1);
                for (s, &m) in row.iter().enumerate() {
                    if m != 0 {
                        w[bi * (p + t) + p + s] = 1.0 / count as f32;
                    }
                }
            }
            Pooling::Cls => w[bi * (p + t) + p] = 1.0,
        }
    }
    w
}
