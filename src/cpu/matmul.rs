//! Linear layers against frozen weights, stored as checkpoints store them: W (N, K), i.e.
//! (out_features, in_features). Because no weight gradient exists, backward is dX only, and
//! the forward input is never needed again.

use super::real::Real;
use super::{gemm_path, opt_real, real, real_mut, CpuBackend, CpuBuf};
use crate::backend::matmul::{check_heads, check_linear, HeadsOperands};
use crate::backend::MatmulOps;
use crate::error::Result;
use gemm::Parallelism;
use rayon::prelude::*;

fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    // Threading tiny products costs more than it saves.
    if m * n * k < 32 * 32 * 32 {
        Parallelism::None
    } else {
        Parallelism::Rayon(rayon::current_num_threads())
    }
}

/// out (M, N) = inp (M, K) · W^T + bias (N).
pub fn linear_fwd<F: Real>(
    out: &mut [F],
    inp: &[F],
    w: &[F],
    bias: Option<&[F]>,
    m: usize,
    k: usize,
    n: usize,
) {
    debug_assert!(out.len() >= m * n && inp.len() >= m * k && w.len() >= n * k);
    if let Some(bias) = bias {
        for row in out[..m * n].chunks_mut(n) {
            row.copy_from_slice(&bias[..n]);
        }
    }
    crate_gemm(
        m,
        n,
        k,
        out,
        (inp, k as isize, 1),
        (w, 1, k as isize),
        bias.is_some(),
    );
}

/// dinp (M, K) += dout (M, N) · W (N, K), or = without `accumulate`.
pub fn linear_bwd<F: Real>(
    dinp: &mut [F],
    dout: &[F],
    w: &[F],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    debug_assert!(dinp.len() >= m * k && dout.len() >= m * n && w.len() >= n * k);
    // W read row-major (N, K) as the right operand
    crate_gemm(
        m,
        k,
        n,
        dinp,
        (dout, n as isize, 1),
        (w, k as isize, 1),
        accumulate,
    );
}

/// out (M, H, N) = inp (M, H, K) · W_hᵀ for every head h, W (H·N, K): head h reads W's rows
/// h·N..(h+1)·N. One single-threaded product per head, the heads spread over rayon's threads
/// (each writes its own N columns of every row).
pub fn linear_heads_fwd<F: Real>(
    out: &mut [F],
    inp: &[F],
    w: &[F],
    m: usize,
    h: usize,
    k: usize,
    n: usize,
) {
    debug_assert!(out.len() >= m * h * n && inp.len() >= m * h * k && w.len() >= h * n * k);
    if k == 0 {
        out[..m * h * n].fill(F::ZERO);
        return;
    }
    let dst = SendPtr(out.as_mut_ptr());
    (0..h).into_par_iter().for_each(|hi| {
        // inp_h (M, K) at row stride H·K; W_hᵀ (K, N) read in place from W_h (N, K)
        let lhs = Mat {
            ptr: inp.as_ptr().wrapping_add(hi * k),
            rs: (h * k) as isize,
            cs: 1,
        };
        let rhs = Mat {
            ptr: w.as_ptr().wrapping_add(hi * n * k),
            rs: 1,
            cs: k as isize,
        };
        // SAFETY: head hi alone writes columns hi·N..(hi+1)·N of out's M rows; the views
        // address inp's and W's elements of head hi only, inside the lengths checked above.
        unsafe {
            let dst = dst.get().wrapping_add(hi * n);
            gemm_strided(m, n, k, dst, (h * n) as isize, lhs, rhs, false)
        };
    });
}

/// dinp (M, H, K) (+)= dout (M, H, N) · W_h for every head h, W (H·N, K), written whole
/// without `accumulate`; parallel over heads as `linear_heads_fwd`.
#[allow(clippy::too_many_arguments)]
pub fn linear_heads_bwd<F: Real>(
    dinp: &mut [F],
    dout: &[F],
    w: &[F],
    m: usize,
    h: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    debug_assert!(dinp.len() >= m * h * k && dout.len() >= m * h * n && w.len() >= h * n * k);
    if n == 0 {
        // an empty sum: the GEMM may skip writing it
        if !accumulate {
            dinp[..m * h * k].fill(F::ZERO);
        }
        return;
    }
    let dst = SendPtr(dinp.as_mut_ptr());
    (0..h).into_par_iter().for_each(|hi| {
        let lhs = Mat {
            ptr: dout.as_ptr().wrapping_add(hi * n),
            rs: (h * n) as isize,
            cs: 1,
        };
        let rhs = Mat {
            ptr: w.as_ptr().wrapping_add(hi * n * k),
            rs: k as isize,
            cs: 1,
        };
        // SAFETY: head hi alone writes columns hi·K..(hi+1)·K of dinp's M rows; the views
        // address dout's and W's elements of head hi only, inside the lengths checked above.
        unsafe {
            let dst = dst.get().wrapping_add(hi * k);
            gemm_strided(m, k, n, dst, (h * k) as isize, lhs, rhs, accumulate)
        };
    });
}

/// dst (M, N) (+)= lhs (M, K) · rhs (K, N) through the `gemm` crate, threaded on rayon for
/// all but tiny products; each operand is (slice, row stride, column stride), dst row-major.
pub(crate) fn crate_gemm<F: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [F],
    lhs: (&[F], isize, isize),
    rhs: (&[F], isize, isize),
    accumulate: bool,
) {
    // SAFETY: the callers pass slices that hold every element the strides address: dst
    // M·N row-major, lhs and rhs their M·K and K·N operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            F::ONE,
            F::ONE,
            false,
            false,
            false,
            parallelism(m, n, k),
        );
    }
}

/// out (M, N) (+)= inp (M, K) · Wᵀ, W (N, K) row-major, through the `gemm` crate, the
/// columns split across rayon's threads, each block a single-threaded product.
///
/// Why not the crate's own threading: the crate packs row-major W as its left operand, and
/// for N up to about 2·768 it packs all of it on the calling thread before its threads start
/// (`do_prepack_lhs`), the other core idle meanwhile. That pack is 5% of a 1184×768×768
/// product's single-thread time and 15% of a 1184×3072×768 one's (bench/history.md). Split
/// by columns, each thread packs its own block of W, in parallel. Each output element is
/// summed as before: the results are bit for bit the crate's.
pub(crate) fn crate_gemm_wt<F: Real>(
    out: &mut [F],
    inp: &[F],
    w: &[F],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    // blocks of whole micro-panels (the AVX-512 kernel's 4 × 16 rows); every thread gets a
    // block of at least 128 columns, else the crate's own threading (over M) keeps all busy
    let per = n.div_ceil(threads.max(1)).next_multiple_of(64);
    if threads < 2 || n < 128 * threads || m * n * k < 64 * 64 * 64 || per >= n {
        let (lhs, rhs) = ((inp, k as isize, 1), (w, 1, k as isize));
        return crate_gemm(m, n, k, out, lhs, rhs, accumulate);
    }
    debug_assert!(out.len() >= m * n && inp.len() >= m * k && w.len() >= n * k);
    let dst = SendPtr(out.as_mut_ptr());
    (0..n.div_ceil(per)).into_par_iter().for_each(|j| {
        let (c0, cols) = (j * per, per.min(n - j * per));
        let lhs = Mat {
            ptr: inp.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        let rhs = Mat {
            ptr: w[c0 * k..].as_ptr(),
            rs: 1,
            cs: k as isize,
        };
        // SAFETY: block j alone writes out's columns c0..c0+cols of every row; out, inp and
        // w hold M·N, M·K and N·K elements (the callers' checks), rhs reads W's rows c0.. only.
        unsafe {
            gemm_strided(
                m,
                cols,
                k,
                dst.get().add(c0),
                n as isize,
                lhs,
                rhs,
                accumulate,
            )
        };
    });
}

/// A raw pointer that may cross threads: every task writes a disjoint region.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<F>(pub *mut F);
unsafe impl<F> Send for SendPtr<F> {}
unsafe impl<F> Sync for SendPtr<F> {}

impl<F> SendPtr<F> {
    // a method, so closures capture the wrapper rather than its raw field
    pub fn get(self) -> *mut F {
        self.0
    }
}

/// A strided matrix operand: element (r, c) at `ptr[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<F> {
    pub ptr: *const F,
    pub rs: isize,
    pub cs: isize,
}

/// dst (M, N) (+)= lhs (M, K) · rhs (K, N), single-threaded: the callers parallelise over
/// independent problems. dst is row-major with row stride `dst_rs`.
///
/// SAFETY: the caller guarantees every addressed element lies inside a live allocation and
/// that no other thread writes the addressed part of `dst` concurrently.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided<F: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut F,
    dst_rs: isize,
    lhs: Mat<F>,
    rhs: Mat<F>,
    accumulate: bool,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        F::ONE,
        F::ONE,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// A product's buffers checked against `ops` (`check_heads`, `check_linear`): the written operand,
/// the read one and W, each cut to its length.
fn heads_slices<'a, F: Real>(
    dst: &'a mut CpuBuf<F>,
    src: &'a CpuBuf<F>,
    w: &'a CpuBuf<F>,
    ops: HeadsOperands,
) -> Result<(&'a mut [F], &'a [F], &'a [F])> {
    Ok((
        real_mut(dst, ops.dst.0, ops.dst.1)?,
        real(src, ops.src.0, ops.src.1)?,
        real(w, ops.w.0, ops.w.1)?,
    ))
}

impl<F: Real> MatmulOps for CpuBackend<F> {
    fn linear_fwd(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        bias: Option<&CpuBuf<F>>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let (out, inp, w) = heads_slices(out, inp, w, check_linear(false, m, k, n)?)?;
        let bias = opt_real(bias, "linear bias", n)?;
        match (F::as_f32(inp), F::as_f32(w), F::as_f32_mut(out)) {
            (Some(x), Some(w32), Some(y)) => {
                if let Some(bias) = bias.and_then(F::as_f32) {
                    for row in y.chunks_mut(n) {
                        row.copy_from_slice(bias);
                    }
                }
                gemm_path::fwd(gemm_path::selected(), y, x, w32, m, k, n, bias.is_some());
            }
            _ => linear_fwd(out, inp, w, bias, m, k, n),
        }
        Ok(())
    }

    fn linear_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        w: &CpuBuf<F>,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let (dinp, dout, w) = heads_slices(dinp, dout, w, check_linear(true, m, k, n)?)?;
        if n == 0 {
            // an empty sum: the GEMMs may skip writing it
            if !accumulate {
                dinp.fill(F::ZERO);
            }
            return Ok(());
        }
        match (F::as_f32(dout), F::as_f32(w), F::as_f32_mut(dinp)) {
            (Some(dy), Some(w32), Some(dx)) => {
                gemm_path::bwd(gemm_path::selected(), dx, dy, w32, m, k, n, accumulate)
            }
            _ => linear_bwd(dinp, dout, w, m, k, n, accumulate),
        }
        Ok(())
    }

    fn linear_heads_fwd(
        &self,
        out: &mut CpuBuf<F>,
        inp: &CpuBuf<F>,
        w: &CpuBuf<F>,
        m: usize,
        h: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let (out, inp, w) = heads_slices(out, inp, w, check_heads(false, m, h, k, n)?)?;
        linear_heads_fwd(out, inp, w, m, h, k, n);
        Ok(())
    }

    fn linear_heads_bwd(
        &self,
        dinp: &mut CpuBuf<F>,
        dout: &CpuBuf<F>,
        w: &CpuBuf<F>,
        m: usize,
        h: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let (dinp, dout, w) = heads_slices(dinp, dout, w, check_heads(true, m, h, k, n)?)?;
        linear_heads_bwd(dinp, dout, w, m, h, k, n, accumulate);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{crate_gemm, crate_gemm_wt};

    /// Values in [-5.2, 5.2] that no two neighbours share.
    fn values(len: usize, prime: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * prime % 1009) as f32 - 504.0) / 97.0)
            .collect()
    }

    /// The column split sums every output as the crate's own product does: bit for bit, for
    /// widths that split unevenly (300 on 2 threads: 192 + 108; 1000 on 3: 384 + 384 + 232) or
    /// not at all (255 on 2, anything on 1 or 8), written or accumulated.
    #[test]
    fn column_split_equals_the_crate_bit_for_bit() {
        let (m, k) = (37, 200);
        let inp = values(m * k, 7919);
        for n in [255, 300, 1000] {
            let w = values(n * k, 104_729);
            let base = values(m * n, 613);
            for accumulate in [false, true] {
                let mut want = base.clone();
                let (lhs, rhs) = ((&inp[..], k as isize, 1), (&w[..], 1, k as isize));
                crate_gemm(m, n, k, &mut want, lhs, rhs, accumulate);
                for threads in [1, 2, 3, 8] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut got = base.clone();
                    pool.install(|| crate_gemm_wt(&mut got, &inp, &w, m, k, n, accumulate));
                    let differ =
                        (got.iter().zip(&want)).filter(|(g, w)| g.to_bits() != w.to_bits());
                    assert_eq!(
                        differ.count(),
                        0,
                        "n {n}, {threads} threads, accumulate {accumulate}"
                    );
                }
            }
        }
    }
}
