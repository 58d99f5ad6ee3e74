//! The last layer at the rows the head reads. A head that reads a few rows of the encoder's
//! output (`pet`'s [MASK] rows, `mlm`'s labelled rows, the `cls` head's pooled rows) needs
//! nothing else of the last layer; past its keys and values, which every query reads, a
//! post-LN layer is row-wise, so its queries, the attention's output projection, the
//! residual, both LayerNorms and the FFN run at those rows only. BERT's attention is neither
//! causal nor biased by position, so the queries may sit at any rows of their batch row.
//!
//! The same rows, at the other end: the first layer's input gradient is wanted at the prompt
//! rows only (every other row's input is a frozen token embedding), so its queries', keys'
//! and values' input-gradient products run at those rows alone, and under prefix tuning,
//! where no row is a prompt's, not at all (`Bert::layer_bwd`'s `Wanted`).
//!
//! Prediction's forward (`packed.rs`) and the mixed-prompt step and prediction
//! (`train/mixed.rs`) run the last layer at the same rows; `HeadRows` says where a head finds
//! a row of the (B, P+T) layout in what the encoder gave it.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::models::common::output;
use std::collections::BTreeSet;

/// Where a layer's input gradient is read: the first layer's at the prompt rows, or nowhere
/// (prefix tuning: the gradient stops at the prefix); every other layer's at every row.
pub enum Wanted<'a, B: Backend> {
    All,
    Rows(&'a Tail<B>),
    Nothing,
}

/// R rows of each batch row of the (B, T) hidden states: where the last layer runs, or
/// where the first layer's input gradient is wanted.
pub struct Tail<B: Backend> {
    /// R, the rows per batch row
    pub(super) r: usize,
    /// (B·R) their flat rows of (B, T), ascending within each batch row, all distinct
    rows: Vec<i32>,
    /// (B·R) I32, `rows` on the device
    idx: B::Buf,
}

impl<B: Backend> Tail<B> {
    /// The tail that holds every row of `rows` (flat rows of (B, T)): R is the most rows any
    /// batch row reads, and a batch row that reads fewer is padded with its first unread rows
    /// (computed, their gradient zero). The rows stay distinct, as the scatter of the
    /// backward adds without atomics on a GPU. None when R would be T or no row is read: the
    /// layer then runs at every row.
    pub fn covering(be: &B, rows: &[i32], b: usize, t: usize) -> Result<Option<Tail<B>>> {
        let mut per = vec![BTreeSet::new(); b];
        for &row in rows {
            let at = usize::try_from(row).ok().filter(|&r| r < b * t);
            let at = at.ok_or_else(|| {
                Error::tensor(
                    "head rows",
                    format!("row {row} is outside the {b}·{t} hidden rows"),
                )
            })?;
            per[at / t].insert(at % t);
        }
        let r = per.iter().map(BTreeSet::len).max().unwrap_or(0);
        if r == 0 || r >= t {
            return Ok(None);
        }
        for set in &mut per {
            let mut s = 0;
            while set.len() < r {
                set.insert(s);
                s += 1;
            }
        }
        let rows: Vec<i32> = (per.iter().enumerate())
            .flat_map(|(bi, set)| set.iter().map(move |&s| (bi * t + s) as i32))
            .collect();
        Ok(Some(Tail {
            r,
            idx: be.upload_i32(&rows)?,
            rows,
        }))
    }

    /// Flat rows of (B, T), each in the tail, as rows of its (B·R) output.
    pub fn rows_of(&self, rows: &[i32], t: usize) -> Result<Vec<i32>> {
        let r = self.r;
        (rows.iter())
            .map(|&row| {
                let bi = usize::try_from(row).unwrap_or(usize::MAX) / t.max(1);
                let mine = self.rows.get(bi * r..(bi + 1) * r).unwrap_or(&[]);
                let j = mine.binary_search(&row).map_err(|_| {
                    Error::tensor("head rows", format!("row {row} is not in the last layer's"))
                })?;
                Ok((bi * r + j) as i32)
            })
            .collect()
    }

    /// (B·R) the values of `per_row` (B·T, one per hidden row) at the tail's rows.
    pub fn pick<T: Copy>(&self, name: &str, per_row: &[T]) -> Result<Vec<T>> {
        (self.rows.iter())
            .map(|&r| {
                per_row.get(r as usize).copied().ok_or_else(|| {
                    Error::tensor(name, format!("{} rows hold no row {r}", per_row.len()))
                })
            })
            .collect()
    }

    /// B·R, the rows it holds.
    pub fn count(&self) -> usize {
        self.rows.len()
    }

    /// out (B·R, C) = x (B·T, C) at the tail's rows.
    pub(super) fn gather(&self, be: &B, x: &B::Buf, c: usize) -> Result<B::Buf> {
        let m = self.rows.len();
        let mut out = output(be, be.act_dtype(), m * c)?;
        be.gather_rows(&mut out, x, &self.idx, m, c)?;
        Ok(out)
    }

    /// dx (B·T, C) += d (B·R, C) at the tail's rows.
    pub(super) fn scatter(&self, be: &B, dx: &mut B::Buf, d: &B::Buf, c: usize) -> Result<()> {
        be.scatter_rows_bwd(dx, d, &self.idx, self.rows.len(), c)
    }
}

/// The flat rows of `w` (one weight per hidden row) that a head reads: its nonzero weights.
pub fn weighted_rows(w: &[f32]) -> Vec<i32> {
    (w.iter().enumerate())
        .filter(|(_, &x)| x != 0.0)
        .map(|(r, _)| r as i32)
        .collect()
}

/// Where a head finds the rows of the (B, S) hidden states it reads: S = T, every row, or,
/// past a tail, S = R, the tail's rows.
pub struct HeadRows<'a, B: Backend> {
    tail: Option<&'a Tail<B>>,
    /// T, the rows of each batch row in the full layout
    t: usize,
}

impl<'a, B: Backend> HeadRows<'a, B> {
    pub fn new(tail: Option<&'a Tail<B>>, t: usize) -> Self {
        HeadRows { tail, t }
    }

    /// S, the hidden rows of each batch row: R past a tail, else T.
    pub fn s(&self) -> usize {
        self.tail.map_or(self.t, |tl| tl.r)
    }

    /// Flat rows of (B, T) as rows of the (B, S) hidden states.
    pub fn rows(&self, rows: &[i32]) -> Result<Vec<i32>> {
        match self.tail {
            Some(tl) => tl.rows_of(rows, self.t),
            None => Ok(rows.to_vec()),
        }
    }

    /// (B·S) the values of `per_row` (B·T, one per hidden row) at the hidden states' rows.
    pub fn pick<T: Copy>(&self, name: &str, per_row: Vec<T>) -> Result<Vec<T>> {
        match self.tail {
            Some(tl) => tl.pick(name, &per_row),
            None => Ok(per_row),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;
    use crate::cpu::CpuBackend;

    #[test]
    fn covering_pads_each_batch_row_with_its_first_unread_rows() {
        let be = CpuBackend::<f32>::new();
        // B 3, T 6: row 0 reads positions 4 and 1, row 1 reads 0, row 2 nothing
        let tail = Tail::covering(&be, &[4, 1, 6], 3, 6).unwrap().unwrap();
        assert_eq!(tail.r, 2);
        assert_eq!(tail.rows, vec![1, 4, 6, 7, 12, 13]);
        assert_eq!(tail.rows_of(&[4, 1, 6], 6).unwrap(), vec![1, 0, 2]);
        assert_eq!(
            tail.pick("w", &(0..18).collect::<Vec<_>>()).unwrap(),
            tail.rows
        );
        assert!(tail.rows_of(&[5], 6).is_err());
        assert!(tail.pick("w", &[0.0; 13]).is_err());
    }

    #[test]
    fn covering_every_row_or_none_is_no_tail() {
        let be = CpuBackend::<f32>::new();
        assert!(Tail::covering(&be, &[], 2, 4).unwrap().is_none());
        assert!(Tail::covering(&be, &[0, 1, 2, 3], 2, 4).unwrap().is_none());
        assert!(Tail::covering(&be, &[8], 2, 4).is_err());
        assert!(Tail::covering(&be, &[-1], 2, 4).is_err());
    }
}
