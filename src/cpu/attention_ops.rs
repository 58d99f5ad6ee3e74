//! `AttentionOps` on the CPU backend: each buffer checked against the shapes it must have
//! (named in the error), the bias and the prefix resolved, then the fused attention of
//! attention.rs (forward and backward) or the decode step of attention_decode.rs.

use super::attention::{attention_bwd, attention_fwd, Prefix};
use super::attention_mask::cpu_bias;
use super::real::Real;
use super::{ints, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::{prefix_rows, AttentionOps, AttnBias, AttnDims, PrefixKv};
use crate::error::Result;

impl<F: Real> AttentionOps for CpuBackend<F> {
    fn attention_fwd(
        &self,
        out: &mut CpuBuf<F>,
        lse: &mut CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        prefix: Option<PrefixKv<'_, CpuBuf<F>>>,
        key_mask: &CpuBuf<F>,
        bias: Option<AttnBias<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        } = dims;
        dims.check_heads()?;
        let bias = cpu_bias(bias, &dims, prefix_rows(prefix.as_ref()))?;
        attention_fwd(
            real_mut(out, "attention out", b * tq * h * d)?,
            real_mut(lse, "attention lse", b * h * tq)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * hkv * d)?,
            real(v, "attention v", b * tk * hkv * d)?,
            cpu_prefix(prefix, &dims)?,
            ints(key_mask, "attention key mask", b * tk)?,
            bias,
            causal,
            scale,
            dims,
        );
        Ok(())
    }

    fn attention_bwd(
        &self,
        dq: &mut CpuBuf<F>,
        dk: &mut CpuBuf<F>,
        dv: &mut CpuBuf<F>,
        dprefix: Option<&mut CpuBuf<F>>,
        dout: &CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        prefix: Option<PrefixKv<'_, CpuBuf<F>>>,
        lse: &CpuBuf<F>,
        key_mask: &CpuBuf<F>,
        bias: Option<AttnBias<'_, CpuBuf<F>>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
        accumulate: bool,
    ) -> Result<()> {
        let AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        } = dims;
        dims.check_heads()?;
        let bias = cpu_bias(bias, &dims, prefix_rows(prefix.as_ref()))?;
        let dprefix = match (dprefix, &prefix) {
            (Some(g), Some(pr)) => Some(real_mut(g, "attention dprefix", pr.table_len())?),
            (None, _) => None,
            (Some(_), None) => {
                return Err(crate::error::Error::tensor(
                    "attention dprefix",
                    "a prefix gradient needs the prefix it belongs to",
                ))
            }
        };
        attention_bwd(
            real_mut(dq, "attention dq", b * tq * h * d)?,
            real_mut(dk, "attention dk", b * tk * hkv * d)?,
            real_mut(dv, "attention dv", b * tk * hkv * d)?,
            dprefix,
            real(dout, "attention dout", b * tq * h * d)?,
            real(q, "attention q", b * tq * h * d)?,
            real(k, "attention k", b * tk * hkv * d)?,
            real(v, "attention v", b * tk * hkv * d)?,
            cpu_prefix(prefix, &dims)?,
            real(lse, "attention lse", b * h * tq)?,
            ints(key_mask, "attention key mask", b * tk)?,
            bias,
            causal,
            scale,
            dims,
            accumulate,
        );
        Ok(())
    }

    fn attention_decode(
        &self,
        out: &mut CpuBuf<F>,
        q: &CpuBuf<F>,
        k: &CpuBuf<F>,
        v: &CpuBuf<F>,
        key_mask: &CpuBuf<F>,
        bias: Option<AttnBias<'_, CpuBuf<F>>>,
        scale: f64,
        dims: AttnDims,
        tmax: usize,
    ) -> Result<()> {
        super::attention_decode::cpu_attention_decode(
            out, q, k, v, key_mask, bias, scale, dims, tmax,
        )
    }
}

/// The prefix's table as a slice, its offsets checked against the key/value width.
fn cpu_prefix<'a, F: Real>(
    prefix: Option<PrefixKv<'a, CpuBuf<F>>>,
    dims: &AttnDims,
) -> Result<Option<Prefix<'a, F>>> {
    let Some(pr) = prefix else { return Ok(None) };
    pr.check(dims.hkv * dims.d)?;
    pr.check_rows(dims.b)?;
    Ok(Some(Prefix {
        table: real(pr.table, "attention prefix", pr.table_len())?,
        p: pr.p,
        width: pr.width,
        k_off: pr.k_off,
        v_off: pr.v_off,
        rows: pr.rows,
    }))
}
