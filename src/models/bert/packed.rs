//! Prediction's forward over the real positions only. A batch padded to its longest row (and,
//! mixing prompts of different lengths, to the longest prompt) spends most of its time in the
//! position-wise layers (the linear layers, LayerNorms, the activation) on padding that the
//! key mask then hides: in arrival order, 16 served rows of MiniLM pad 41 real positions a row
//! to 67. Here those layers run on the N real positions packed together, (N, C) instead of
//! (B·T, C); only attention, which mixes positions, sees the padded layout, its queries, keys
//! and values unpacked before it and its output packed after. A pad position's hidden row is
//! then a copy of a real one: the key mask hides it from attention and no head reads it.
//! With a `Tail`, the last layer runs past its keys and values at the rows the head reads
//! only, as the training step's does (`tail.rs`).
//! Sizes: B batch, T = P + tokens, N real positions (key mask 1), C hidden, R the tail's rows.

use super::inputs::BertInputs;
use super::tail::Tail;
use super::weights::Bert;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::memory::MemoryAccountant;
use crate::models::common::output;

/// Where a padded batch's real positions are.
pub struct Packing<B: Backend> {
    /// N, the real positions
    pub n: usize,
    /// (N) I32: each real position's index in the padded (B·T) layout
    pack: B::Buf,
    /// (B·T) I32: each padded position's packed row (a pad position reads row 0)
    unpack: B::Buf,
    /// (B·T) `unpack` on the host
    unpack_rows: Vec<i32>,
}

impl<B: Backend> Packing<B> {
    /// The real positions of `inp` (its key mask); None when every position is real.
    pub fn of(be: &B, inp: &BertInputs<B>) -> Result<Option<Packing<B>>> {
        let key_mask = be.download(&inp.key_mask)?;
        let (pack, unpack) = packed_index(&key_mask);
        if pack.len() == key_mask.len() || pack.is_empty() {
            return Ok(None);
        }
        Ok(Some(Packing {
            n: pack.len(),
            pack: be.upload_i32(&pack)?,
            unpack: be.upload_i32(&unpack)?,
            unpack_rows: unpack,
        }))
    }

    /// (N, C) the real rows of `x` (B·T, C).
    pub fn pack(&self, be: &B, x: &B::Buf, c: usize) -> Result<B::Buf> {
        let mut out = output(be, be.act_dtype(), self.n * c)?;
        be.gather_rows(&mut out, x, &self.pack, self.n, c)?;
        Ok(out)
    }

    /// (B·R, C) the rows of `x` (N, C) at the tail's rows of the padded layout (a pad
    /// position's is a copy of a real one, as `unpack` gives it).
    pub(super) fn gather_tail(
        &self,
        be: &B,
        x: &B::Buf,
        tail: &Tail<B>,
        c: usize,
    ) -> Result<B::Buf> {
        let rows = tail.pick("packed rows", &self.unpack_rows)?;
        let mut out = output(be, be.act_dtype(), rows.len() * c)?;
        be.gather_rows(&mut out, x, &be.upload_i32(&rows)?, rows.len(), c)?;
        Ok(out)
    }

    /// (B·T, C) `x` (N, C) in the padded layout.
    pub fn unpack(&self, be: &B, x: &B::Buf, c: usize) -> Result<B::Buf> {
        let padded = be.len(&self.unpack);
        let mut out = output(be, be.act_dtype(), padded * c)?;
        be.gather_rows(&mut out, x, &self.unpack, padded, c)?;
        Ok(out)
    }
}

/// The packed index (N) of the nonzero positions of `key_mask` (B·T), and the padded
/// layout's index (B·T) into the packed rows (0 at a masked position).
fn packed_index(key_mask: &[f32]) -> (Vec<i32>, Vec<i32>) {
    let mut pack = Vec::with_capacity(key_mask.len());
    let mut unpack = Vec::with_capacity(key_mask.len());
    for (i, &m) in key_mask.iter().enumerate() {
        if m != 0.0 {
            unpack.push(pack.len() as i32);
            pack.push(i as i32);
        } else {
            unpack.push(0);
        }
    }
    (pack, unpack)
}

impl<B: Backend> Bert<B> {
    /// hidden (B, T, C) over `inp` behind `prompt` (P, C) or the table (K, P, C) `inp`
    /// indexes, forward only, the position-wise layers on the real positions alone. Equals
    /// `encoder_fwd`'s hidden at every real position (the GEMMs' rounding aside); a pad
    /// position holds a copy of a real one.
    pub fn encoder_hidden(&self, be: &B, prompt: &B::Buf, inp: &BertInputs<B>) -> Result<B::Buf> {
        Ok(self.encoder_hidden_at(be, prompt, inp, None)?.0)
    }

    /// `encoder_hidden` with the last layer at the `tail`'s rows only: hidden (B·R, C), the
    /// full forward's rows there (a head reads them through `HeadRows`), and the tail it ran
    /// at. A tail of no fewer rows than the N real positions is dropped (its rows would cost
    /// more than the packed layer's): hidden is then (B·T, C) and the tail None.
    pub fn encoder_hidden_at(
        &self,
        be: &B,
        prompt: &B::Buf,
        inp: &BertInputs<B>,
        tail: Option<Tail<B>>,
    ) -> Result<(B::Buf, Option<Tail<B>>)> {
        let c = self.cfg.hidden_size;
        let last = self.w.layers.len().saturating_sub(1);
        let mut acct = MemoryAccountant::new();
        let packing = Packing::of(be, inp)?;
        let tail = tail.filter(|tl| packing.as_ref().is_none_or(|pk| tl.count() < pk.n));
        // the embeddings' statistics, and the padded embeddings once packed, go at once:
        // nothing reads them again
        let padded = self.embed(be, &mut acct, prompt, inp)?.x;
        let mut x = match &packing {
            Some(pk) => {
                let packed = pk.pack(be, &padded, c)?;
                drop(padded);
                packed
            }
            None => padded,
        };
        for l in 0..self.w.layers.len() {
            let at = tail.as_ref().filter(|_| l == last);
            let (out, _) =
                self.layer_fwd(be, &mut acct, l, &x, inp, false, packing.as_ref(), at)?;
            x = out;
        }
        match (&packing, &tail) {
            (Some(pk), None) => Ok((pk.unpack(be, &x, c)?, tail)),
            _ => Ok((x, tail)),
        }
    }
}

/// Refuses a saved forward over packed rows: backward reads the padded layout.
pub(super) fn check_unsaved<B: Backend>(save: bool, packing: Option<&Packing<B>>) -> Result<()> {
    match (save, packing) {
        (true, Some(_)) => Err(Error::Device(
            "BERT: a forward over packed rows keeps nothing for backward".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::packed_index;

    #[test]
    fn packed_index_maps_real_positions_both_ways() {
        let (pack, unpack) = packed_index(&[1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
        assert_eq!(pack, vec![0, 1, 3, 6]);
        assert_eq!(unpack, vec![0, 1, 0, 2, 0, 0, 3]);
    }
}
