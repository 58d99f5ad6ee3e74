//! Embedding family: the prompt rows concatenated in front of the token embeddings.
//!
//! Forward overwrites `out`. The one backward output, the prompt-row gradient, *adds* into
//! `dprompt`, because it is the only trainable tensor and callers may accumulate over
//! micro-batches.

use super::real::Real;
use super::{ints, opt_real, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::{check_ids, check_prompt_lens, EmbeddingOps};
use crate::error::{Error, Result};
use rayon::prelude::*;

/// out (B, P+T, C) = concat(prompt[k_b] (P, C), wte[ids] (B, T, C)) along the sequence,
/// plus, for BERT, wpe[position] and wtt[token type] on every row (prompt rows included:
/// they take positions 0..P-1 and token type 0, as PEFT feeds them). `prompt` is the table
/// (K, P, C); row b reads prompt k_b = prompt_idx[b] (B), prompt 0 without an index. With
/// `prompt_len` (B) row b is [prompt[k_b, 0..P_b], its tokens at positions P_b.., zeros
/// for the last P - P_b rows] (a mixed batch of prompts of different lengths).
#[allow(clippy::too_many_arguments)]
pub fn embedding_fwd<F: Real>(
    out: &mut [F],
    prompt: &[F],
    wte: &[F],
    wpe: Option<&[F]>,
    wtt: Option<&[F]>,
    ids: &[i32],
    type_ids: Option<&[i32]>,
    prompt_idx: Option<&[i32]>,
    prompt_len: Option<&[i32]>,
    b: usize,
    t: usize,
    k: usize,
    p: usize,
    c: usize,
) -> Result<()> {
    let tt = p + t;
    debug_assert!(out.len() == b * tt * c && ids.len() == b * t);
    debug_assert!(prompt.len() >= k * p * c);
    check_ids("input_ids", ids, wte.len() / c.max(1))?;
    if let Some(idx) = prompt_idx {
        check_ids("prompt index", idx, k)?;
    }
    if let Some(lens) = prompt_len {
        check_prompt_lens(lens, p)?;
    }
    if let Some(wtt) = wtt {
        // rows without token types take type 0, so the table needs at least that row
        check_ids(
            "token_type_ids",
            type_ids.unwrap_or(&[0]),
            wtt.len() / c.max(1),
        )?;
    }
    if let Some(wpe) = wpe {
        if wpe.len() / c.max(1) < tt {
            return Err(Error::shape(
                "position embeddings (max_position_embeddings must cover P + T)",
                format!(">= {tt} rows"),
                wpe.len() / c.max(1),
            ));
        }
    }
    out.par_chunks_mut(c).enumerate().for_each(|(row, dst)| {
        let (bi, s) = (row / tt, row % tt);
        let pb = prompt_len.map_or(p, |lens| lens[bi] as usize);
        let src = if s < pb {
            let kb = prompt_idx.map_or(0, |idx| idx[bi] as usize);
            let r = kb * p + s;
            &prompt[r * c..(r + 1) * c]
        } else if s < pb + t {
            let id = ids[bi * t + s - pb] as usize;
            &wte[id * c..(id + 1) * c]
        } else {
            // the row's padding behind a shorter prompt: masked out, kept finite
            dst.fill(F::ZERO);
            return;
        };
        dst.copy_from_slice(src);
        if let Some(wpe) = wpe {
            add_row(dst, &wpe[s * c..(s + 1) * c]);
        }
        if let Some(wtt) = wtt {
            let ty = match (s < pb, type_ids) {
                (false, Some(types)) => types[bi * t + s - pb] as usize,
                _ => 0,
            };
            add_row(dst, &wtt[ty * c..(ty + 1) * c]);
        }
    });
    Ok(())
}

/// dprompt (K, P, C) += for each prompt k, the sum over the batch rows b with k_b = k (in
/// row order) of dout[b, 0..P, :], with dout (B, P+T, C) and k_b = prompt_idx[b] (B), 0
/// without an index; with `prompt_len` (B), of dout[b, 0..P_b, :] only.
#[allow(clippy::too_many_arguments)]
pub fn prompt_grad_bwd<F: Real>(
    dprompt: &mut [F],
    dout: &[F],
    prompt_idx: Option<&[i32]>,
    prompt_len: Option<&[i32]>,
    b: usize,
    t: usize,
    k: usize,
    p: usize,
    c: usize,
) {
    let tt = p + t;
    debug_assert!(dprompt.len() == k * p * c);
    let prompt_of = |bi: usize| prompt_idx.map_or(0, |idx| idx[bi] as usize);
    let len_of = |bi: usize| prompt_len.map_or(p, |lens| lens[bi] as usize);
    dprompt
        .par_chunks_mut(c)
        .enumerate()
        .for_each(|(row, acc)| {
            let (kk, s) = (row / p, row % p);
            for bi in (0..b).filter(|&bi| prompt_of(bi) == kk && s < len_of(bi)) {
                add_row(acc, &dout[(bi * tt + s) * c..(bi * tt + s + 1) * c]);
            }
        });
}

fn add_row<F: Real>(dst: &mut [F], src: &[F]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

impl<F: Real> EmbeddingOps for CpuBackend<F> {
    fn embedding_fwd(
        &self,
        out: &mut CpuBuf<F>,
        prompt: &CpuBuf<F>,
        wte: &CpuBuf<F>,
        wpe: Option<&CpuBuf<F>>,
        wtt: Option<&CpuBuf<F>>,
        ids: &CpuBuf<F>,
        type_ids: Option<&CpuBuf<F>>,
        prompt_idx: Option<&CpuBuf<F>>,
        prompt_len: Option<&CpuBuf<F>>,
        b: usize,
        t: usize,
        k: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        let type_ids = type_ids
            .map(|x| ints(x, "token_type_ids", b * t))
            .transpose()?;
        let prompt_idx = prompt_idx.map(|x| ints(x, "prompt index", b)).transpose()?;
        let prompt_len = (prompt_len.map(|x| ints(x, "prompt lengths", b))).transpose()?;
        embedding_fwd(
            real_mut(out, "embedding out", b * (p + t) * c)?,
            real(prompt, "prompt", k * p * c)?,
            real(wte, "word embeddings", wte.len())?,
            opt_real(wpe, "position embeddings", wpe.map_or(0, |x| x.len()))?,
            opt_real(wtt, "token type embeddings", wtt.map_or(0, |x| x.len()))?,
            ints(ids, "input_ids", b * t)?,
            type_ids,
            prompt_idx,
            prompt_len,
            b,
            t,
            k,
            p,
            c,
        )
    }

    fn prompt_grad_bwd(
        &self,
        dprompt: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        prompt_idx: Option<&CpuBuf<F>>,
        prompt_len: Option<&CpuBuf<F>>,
        b: usize,
        t: usize,
        k: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        let prompt_idx = prompt_idx.map(|x| ints(x, "prompt index", b)).transpose()?;
        if let Some(idx) = prompt_idx {
            check_ids("prompt index", idx, k)?;
        }
        let prompt_len = (prompt_len.map(|x| ints(x, "prompt lengths", b))).transpose()?;
        if let Some(lens) = prompt_len {
            check_prompt_lens(lens, p)?;
        }
        prompt_grad_bwd(
            real_mut(dprompt, "prompt grad", k * p * c)?,
            real(dout, "embedding grad", b * (p + t) * c)?,
            prompt_idx,
            prompt_len,
            b,
            t,
            k,
            p,
            c,
        );
        Ok(())
    }
}
