//! Embedding family: the prompt rows concatenated in front of the token embeddings.
//!
//! Forward overwrites `out`. The one backward output, the prompt-row gradient, *adds* into
//! `dprompt`, because it is the only trainable tensor and callers may accumulate over
//! micro-batches.

use super::real::Real;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// out (B, P+T, C) = concat(prompt (P, C), wte[ids] (B, T, C)) along the sequence,
/// plus, for BERT, wpe[position] and wtt[token type] on every row (prompt rows included:
/// they take positions 0..P-1 and token type 0, as PEFT feeds them).
#[allow(clippy::too_many_arguments)]
pub fn embedding_fwd<F: Real>(
    out: &mut [F],
    prompt: &[F],
    wte: &[F],
    wpe: Option<&[F]>,
    wtt: Option<&[F]>,
    ids: &[i32],
    type_ids: Option<&[i32]>,
    b: usize,
    t: usize,
    p: usize,
    c: usize,
) -> Result<()> {
    let tt = p + t;
    debug_assert!(out.len() == b * tt * c && ids.len() == b * t);
    check_ids("input_ids", ids, wte.len() / c.max(1))?;
    if let (Some(types), Some(wtt)) = (type_ids, wtt) {
        check_ids("token_type_ids", types, wtt.len() / c.max(1))?;
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
        let src = if s < p {
            &prompt[s * c..(s + 1) * c]
        } else {
            let id = ids[bi * t + s - p] as usize;
            &wte[id * c..(id + 1) * c]
        };
        dst.copy_from_slice(src);
        if let Some(wpe) = wpe {
            add_row(dst, &wpe[s * c..(s + 1) * c]);
        }
        if let Some(wtt) = wtt {
            let ty = match (s < p, type_ids) {
                (false, Some(types)) => types[bi * t + s - p] as usize,
                _ => 0,
            };
            add_row(dst, &wtt[ty * c..(ty + 1) * c]);
        }
    });
    Ok(())
}

/// dprompt (P, C) += sum over the batch of dout[:, 0..P, :], with dout (B, P+T, C).
pub fn prompt_grad_bwd<F: Real>(
    dprompt: &mut [F],
    dout: &[F],
    b: usize,
    t: usize,
    p: usize,
    c: usize,
) {
    let tt = p + t;
    dprompt
        .par_chunks_mut(c)
        .enumerate()
        .for_each(|(row, acc)| {
            for bi in 0..b {
                add_row(acc, &dout[(bi * tt + row) * c..(bi * tt + row + 1) * c]);
            }
        });
}

fn add_row<F: Real>(dst: &mut [F], src: &[F]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// Every id must index a row of its table; checked on the host before any lookup.
pub fn check_ids(name: &str, ids: &[i32], rows: usize) -> Result<()> {
    match ids.iter().position(|&id| id < 0 || id as usize >= rows) {
        None => Ok(()),
        Some(i) => Err(Error::tensor(
            name,
            format!(
                "id {} at flat index {i} is outside the table of {rows} rows",
                ids[i]
            ),
        )),
    }
}
