//! Attention stem: fused attention forward and backward with key padding, an optional causal
//! mask, grouped-query attention (Hkv key/value heads read in place by H/Hkv query heads each,
//! never repeated), and a position bias computed inside the op: T5's relative bias read from
//! the frozen (buckets, H) table, or ALiBi from the head index alone; nothing of size Tq×Tk
//! is stored. Also the KV-cache decode step of generation. Reference src/cpu/attention.rs,
//! kernels kernels/attention.cu (and its headers) and attention_decode.cu, launchers
//! src/cuda/attention.rs.
//!
//! Positions: query i and key j of a (Tq, Tk) attention sit at i + (Tk − Tq) and j, aligned at
//! the end (the last query is the last key). With Tq = Tk that is i and j; with Tk > Tq the
//! queries are the last Tq of the sequence (a KV cache, prefix keys). `causal` hides key j
//! from query i when j > i + (Tk − Tq).

use crate::error::Result;

/// q, out, dq: (B, Tq, H, D); k, v, dk, dv: (B, Tk, Hkv, D); lse: (B, H, Tq); key_mask:
/// (B, Tk). Query head h reads key/value head h / (H / Hkv); Hkv divides H (Hkv = H: plain
/// multi-head attention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
}

impl AttnDims {
    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.h / self.hkv.max(1)
    }

    /// Checks that Hkv divides H, naming the two.
    pub fn check_heads(&self) -> crate::error::Result<()> {
        if self.hkv == 0 || !self.h.is_multiple_of(self.hkv) {
            return Err(crate::error::Error::shape(
                "attention heads (H query heads over Hkv key/value heads)",
                "Hkv >= 1 dividing H",
                format!("H {} Hkv {}", self.h, self.hkv),
            ));
        }
        Ok(())
    }
}

/// One layer's prefix keys and values (prefix tuning), read in place from the prefix table
/// (P, width) F32 that every layer shares: row r holds this layer's P-th key row, Hkv·D
/// head-major, at `k_off`, and its value row at `v_off` (PEFT's `[k0 v0 k1 v1 …]` blocks). The
/// prefix keys sit in front of the real ones, at positions 0..P-1 (the real keys at
/// P..P+Tk-1, so with the end alignment above query i is at P + i + Tk − Tq); every query
/// sees every prefix key (no key mask, no causal mask), and every batch row reads the same
/// rows. A position bias is computed over the P + Tk keys (a relative bias's bucket lookup is
/// then Tq + P + Tk − 1 long). Nothing is concatenated: the op reads the table directly.
/// With `rows` (batches mixing prefixes) each batch row reads its own prefix of a stack.
pub struct PrefixKv<'a, Buf> {
    pub table: &'a Buf,
    /// prefix rows
    pub p: usize,
    /// the table's row length (N·2·Hkv·D for N blocks)
    pub width: usize,
    pub k_off: usize,
    pub v_off: usize,
    /// rows mixing prefixes; None: every batch row reads the one (P, width) table
    pub rows: Option<PrefixRows<'a>>,
}

/// Batch rows mixing prefixes (mixed-prompt batches): the table stacks `prefixes` prefixes
/// of P rows each, (K·P, width); batch row b reads prefix `slot[b]` and hides its first
/// `hidden[b]` rows (a prefix of P − hidden[b] rows sits left-padded at the end of its P, so
/// its keys keep their distance to the real ones: relative biases and ALiBi read them as
/// that prefix's own batch does; a row without a prefix hides all P). The backward adds
/// each row's gradient into its own prefix's rows (the hidden ones get 0). The CPU reference
/// and the CUDA kernels (`prefix_slot`, `prefix_hidden`; kernels/ATTENTION.md) both read them.
#[derive(Clone, Copy, Debug)]
pub struct PrefixRows<'a> {
    /// (B) the prefix each batch row reads
    pub slot: &'a [usize],
    /// (B) the leading rows of that prefix hidden from it, <= P
    pub hidden: &'a [usize],
    /// K, the prefixes stacked in the table
    pub prefixes: usize,
}

// by hand: a derive would ask `Buf: Clone`, and only the reference is copied
impl<Buf> Clone for PrefixKv<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Buf> Copy for PrefixKv<'_, Buf> {}

impl<Buf> PrefixKv<'_, Buf> {
    /// Checks that this layer's key and value rows (`kv_width` = Hkv·D each) lie inside a
    /// table row.
    pub fn check(&self, kv_width: usize) -> crate::error::Result<()> {
        if self.k_off + kv_width > self.width || self.v_off + kv_width > self.width {
            return Err(crate::error::Error::shape(
                "attention prefix (key and value offsets in a prefix row)",
                format!("offsets + {kv_width} <= the row width {}", self.width),
                format!("k_off {} v_off {}", self.k_off, self.v_off),
            ));
        }
        Ok(())
    }

    /// The table's element count, K·P × width (K = 1 without `rows`).
    pub fn table_len(&self) -> usize {
        self.rows.map_or(1, |r| r.prefixes) * self.p * self.width
    }

    /// Checks `rows` against a batch of `b` rows: one slot and hidden count a row, each slot
    /// below K, each hidden count at most P.
    pub fn check_rows(&self, b: usize) -> crate::error::Result<()> {
        let Some(r) = self.rows else { return Ok(()) };
        let bad = r.slot.len() != b
            || r.hidden.len() != b
            || r.slot.iter().any(|&s| s >= r.prefixes)
            || r.hidden.iter().any(|&h| h > self.p);
        if bad {
            return Err(crate::error::Error::shape(
                "attention prefix rows (slot and hidden rows of each batch row)",
                format!("{b} of each, slots < {}, hidden <= {}", r.prefixes, self.p),
                format!("{} slots, {} hidden", r.slot.len(), r.hidden.len()),
            ));
        }
        Ok(())
    }
}

/// The prefix rows in front of Tk real keys: P, or 0 without a prefix.
pub fn prefix_rows<Buf>(prefix: Option<&PrefixKv<'_, Buf>>) -> usize {
    prefix.map_or(0, |p| p.p)
}

/// The position bias an attention adds to its scores.
pub enum AttnBias<'a, Buf> {
    /// T5's relative position bias, from its frozen table.
    Relative(BiasRef<'a, Buf>),
    /// ALiBi (Press et al., as BLOOM applies it): slope_h · (key position − query position),
    /// the slopes computed from H alone (`alibi_slope`), no table and no (H, Tq, Tk) tensor.
    Alibi,
}

// by hand: a derive would ask `Buf: Clone`, and only references are copied
impl<Buf> Clone for AttnBias<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Buf> Copy for AttnBias<'_, Buf> {}

/// ALiBi's slope of head `h` of `heads`, BLOOM's rule: with n the largest power of two up to
/// `heads`, 2^(−8(h+1)/n) for the first n heads, then 2^(−4(2(h−n)+1)/n) (every other slope of
/// the 2n-head sequence) for the rest.
pub fn alibi_slope(h: usize, heads: usize) -> f64 {
    let n = 1usize << (usize::BITS - 1 - heads.max(1).leading_zeros());
    if h < n {
        (-8.0 * (h + 1) as f64 / n as f64).exp2()
    } else {
        (-4.0 * (2 * (h - n) + 1) as f64 / n as f64).exp2()
    }
}

/// T5's relative position bias as the kernels read it: the frozen (buckets, H) table and the
/// (Tq + Tk - 1) lookup from relative position to bucket (`bucket_lookup`). No (H, Tq, Tk)
/// tensor exists.
pub struct BiasRef<'a, Buf> {
    pub table: &'a Buf,
    pub buckets: &'a Buf,
}

// by hand: a derive would ask `Buf: Clone`, and only the references are copied
impl<Buf> Clone for BiasRef<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Buf> Copy for BiasRef<'_, Buf> {}

/// T5's bucketing of a relative position (memory position minus query position), exactly as
/// transformers' `T5Attention._relative_position_bucket`, including its float32 logarithm.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = num_buckets / 2;
    if distance < max_exact {
        return (bucket + distance) as usize;
    }
    // float32 throughout, as torch computes it on a float tensor with Python scalars
    let ratio = (distance as f32 / max_exact as f32).ln();
    let scale = (max_distance as f64 / max_exact as f64).ln() as f32;
    let large = max_exact + (ratio / scale * (num_buckets - max_exact) as f32) as i64;
    (bucket + large.min(num_buckets - 1)) as usize
}

/// The (Tq + Tk - 1) bucket lookup that `BiasRef::buckets` holds: the bucket of relative
/// position j - i at index j - i + Tq - 1.
pub fn bucket_lookup(
    tq: usize,
    tk: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<i32> {
    shifted_lookup(tq, tk, 0, bidirectional, num_buckets, max_distance)
}

/// The bucket lookup of T queries over P prefix keys and T real ones (prefix tuning): with
/// the positions aligned at the end, key j sits at j and query i at P + i, so index
/// j - i + T - 1 holds the bucket of relative position j - i - P (as transformers 5 gives it
/// behind a cache of P rows).
pub fn prefix_bucket_lookup(
    t: usize,
    p: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<i32> {
    shifted_lookup(t, p + t, p, bidirectional, num_buckets, max_distance)
}

fn shifted_lookup(
    tq: usize,
    tk: usize,
    shift: usize,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> Vec<i32> {
    (0..tq + tk - 1)
        .map(|idx| {
            let rel = idx as i64 - (tq as i64 - 1) - shift as i64;
            relative_position_bucket(rel, bidirectional, num_buckets, max_distance) as i32
        })
        .collect()
}

/// The decode step's own limits: one query, a cache that holds Tk rows.
pub fn check_decode(dims: &AttnDims, tmax: usize) -> crate::error::Result<()> {
    dims.check_heads()?;
    if dims.tq != 1 || dims.tk == 0 || dims.tk > tmax {
        return Err(crate::error::Error::shape(
            "attention_decode (Tq, Tk, Tmax)",
            "Tq = 1 and 1 <= Tk <= Tmax",
            format!("Tq {} Tk {} Tmax {tmax}", dims.tq, dims.tk),
        ));
    }
    Ok(())
}

/// The length of the bucket lookup the decode step reads with a relative bias: that of a
/// (Tmax, Tmax) attention, 2·Tmax − 1, whose query row Tk − 1 the step is (key j at index
/// j − (Tk − 1) + Tmax − 1), so one lookup serves every step of a generation.
pub fn decode_lookup_len(tmax: usize) -> usize {
    (2 * tmax).saturating_sub(1)
}

op_family! {
    /// Fused multi-head attention.
    pub trait AttentionOps {
        /// out (B, Tq, H, D) = softmax(scale · q kᵀ + bias, masked) v; lse (B, H, Tq) F32
        /// saved for backward. A query row that sees no key gets out 0 and lse -inf. With a
        /// `prefix`, its P keys and values come before the Tk real ones (`PrefixKv`).
        fn attention_fwd(
            &self,
            out: &mut Self::Buf,
            lse: &mut Self::Buf,
            q: &Self::Buf,
            k: &Self::Buf,
            v: &Self::Buf,
            prefix: Option<PrefixKv<'_, Self::Buf>>,
            key_mask: &Self::Buf,
            bias: Option<AttnBias<'_, Self::Buf>>,
            causal: bool,
            scale: f64,
            dims: AttnDims,
        ) -> Result<()>;
        /// dq, dk, dv += the gradients of q, k, v, recomputing the probabilities from lse,
        /// with `accumulate`; else dq, dk, dv = them, written whole (bit for bit what adding
        /// into zeros gives). With a `prefix`, dprefix (the prefix table's shape, F32) += the
        /// gradient of this layer's prefix keys and values, summed over the batch, at the
        /// prefix's offsets (always added: every layer's block shares the table).
        fn attention_bwd(
            &self,
            dq: &mut Self::Buf,
            dk: &mut Self::Buf,
            dv: &mut Self::Buf,
            dprefix: Option<&mut Self::Buf>,
            dout: &Self::Buf,
            q: &Self::Buf,
            k: &Self::Buf,
            v: &Self::Buf,
            prefix: Option<PrefixKv<'_, Self::Buf>>,
            lse: &Self::Buf,
            key_mask: &Self::Buf,
            bias: Option<AttnBias<'_, Self::Buf>>,
            causal: bool,
            scale: f64,
            dims: AttnDims,
            accumulate: bool,
        ) -> Result<()>;
        /// The KV-cache decode step: out (B, H, D) = attention of one new query per row,
        /// q (B, H, D), over the first Tk = `dims.tk` entries of the caches k, v (B, Tmax,
        /// Hkv, D) (`dims.tq` must be 1; the query sits at position Tk − 1 and so sees them
        /// all), keys whose key_mask (B, Tmax) is 0 hidden. ALiBi as in attention_fwd; T5's
        /// relative bias reads its lookup as query row Tk − 1 of a (Tmax, Tmax) attention
        /// (`decode_lookup_len`: the cache index is the position). Forward only.
        fn attention_decode(
            &self,
            out: &mut Self::Buf,
            q: &Self::Buf,
            k: &Self::Buf,
            v: &Self::Buf,
            key_mask: &Self::Buf,
            bias: Option<AttnBias<'_, Self::Buf>>,
            scale: f64,
            dims: AttnDims,
            tmax: usize,
        ) -> Result<()>;
    }
}
