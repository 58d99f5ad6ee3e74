//! Attention stem: fused attention forward and backward with key padding, an optional causal
//! mask and T5's relative position bias read from the frozen (buckets, H) table; nothing of
//! size Tq×Tk is stored. Reference src/cpu/attention.rs, kernels kernels/attention.cu (and
//! attention_f32.cuh), launchers src/cuda/attention.rs.

use crate::error::Result;

/// q, out, dq: (B, Tq, H, D); k, v, dk, dv: (B, Tk, H, D); lse: (B, H, Tq); key_mask: (B, Tk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub h: usize,
    pub d: usize,
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
    (0..tq + tk - 1)
        .map(|idx| {
            let rel = idx as i64 - (tq as i64 - 1);
            relative_position_bucket(rel, bidirectional, num_buckets, max_distance) as i32
        })
        .collect()
}

op_family! {
    /// Fused multi-head attention.
    pub trait AttentionOps {
        /// out (B, Tq, H, D) = softmax(scale · q kᵀ + bias, masked) v; lse (B, H, Tq) F32
        /// saved for backward. A query row that sees no key gets out 0 and lse -inf.
        fn attention_fwd(
            &self,
            out: &mut Self::Buf,
            lse: &mut Self::Buf,
            q: &Self::Buf,
            k: &Self::Buf,
            v: &Self::Buf,
            key_mask: &Self::Buf,
            bias: Option<BiasRef<'_, Self::Buf>>,
            causal: bool,
            scale: f64,
            dims: AttnDims,
        ) -> Result<()>;
        /// dq, dk, dv += the gradients of q, k, v, recomputing the probabilities from lse.
        fn attention_bwd(
            &self,
            dq: &mut Self::Buf,
            dk: &mut Self::Buf,
            dv: &mut Self::Buf,
            dout: &Self::Buf,
            q: &Self::Buf,
            k: &Self::Buf,
            v: &Self::Buf,
            lse: &Self::Buf,
            key_mask: &Self::Buf,
            bias: Option<BiasRef<'_, Self::Buf>>,
            causal: bool,
            scale: f64,
            dims: AttnDims,
        ) -> Result<()>;
    }
}
