//! Launchers of the linear layers (reference: src/cpu/matmul.rs): W (N, K) as checkpoints
//! store it, operands in the weights' type (bf16, or float32 in the float32 build), float32
//! compute, through cuBLAS on a GPU and the CPU GEMM under `emu`; the helper kernels of
//! kernels/matmul.cu fill the bias and turn float32 activations into bf16 operands.
//!
//! Row-major X (r, c) is column-major Xᵀ, so out = inp·Wᵀ is the column-major
//! outᵀ (N, M) = op_T(W) · inp, and dinp = dout·W is dinpᵀ (K, M) = W · doutᵀ.

use super::gemm::Gemm;
use super::kernels::k;
use super::launch::{int, stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, opt_arg, store_or_f32, CudaBackend, CudaBuf};
use crate::backend::matmul::{check_heads, check_linear, HeadsOperands};
use crate::backend::{DType, MatmulOps, Precision};
use crate::error::{Error, Result};

// extern "C" __global__ void linear_bias_fill(act_t* out, const w_t* bias, int m, int n);
// extern "C" __global__ void linear_bias_fill_f32(float* out, const w_t* bias, int m, int n);
/// out (M, N) = bias (N) on every row. Grid-stride.
fn bias_fill(
    be: &CudaBackend,
    out: u64,
    out_type: DType,
    bias: u64,
    m: usize,
    n: usize,
) -> Result<()> {
    let kernel = if out_type == be.store() {
        k::LINEAR_BIAS_FILL
    } else {
        k::LINEAR_BIAS_FILL_F32
    };
    let args = Args::new()
        .ptr(out)
        .ptr(bias)
        .i32(int("rows", m)?)
        .i32(int("out features", n)?);
    be.dev.launch(
        kernel,
        Cfg::linear(stride_blocks(m * n), STRIDE_THREADS),
        args,
    )
}

/// The GEMM operand that stands for `len` activations (or gradients) at `ptr` of type
/// `dtype`, as one or more parts in the weights' type whose sum is the operand: one part when
/// the types already agree; a float32 gradient rounded to bf16 in the bf16 build (d logits);
/// float32 split into bf16 hi + lo in the mixed build, so that the product keeps about 16
/// bits of the activations' mantissa rather than 8 (kernels/matmul.cu `split_bf16`).
struct Operand {
    parts: Vec<u64>,
    _scratch: Vec<CudaBuf>,
}

// extern "C" __global__ void cast_f32_bf16(bf16* out, const float* inp, long long n);
// extern "C" __global__ void split_bf16(bf16* hi, bf16* lo, const float* inp, long long n);
fn operand(be: &CudaBackend, ptr: u64, dtype: DType, len: usize) -> Result<Operand> {
    let weights = be.weights();
    if dtype == weights {
        return Ok(Operand {
            parts: vec![ptr],
            _scratch: Vec::new(),
        });
    }
    let cfg = Cfg::linear(stride_blocks(len), STRIDE_THREADS);
    let scratch = if be.precision() == Precision::Mixed {
        // both written whole by the kernel: no memset
        let (hi, lo) = (be.alloc(weights, len)?, be.alloc(weights, len)?);
        if len > 0 {
            let args = Args::new()
                .ptr(hi.ptr())
                .ptr(lo.ptr())
                .ptr(ptr)
                .i64(len as i64);
            be.dev.launch(k::SPLIT_BF16, cfg, args)?;
        }
        vec![hi, lo]
    } else {
        let rounded = be.alloc(weights, len)?;
        if len > 0 {
            let args = Args::new().ptr(rounded.ptr()).ptr(ptr).i64(len as i64);
            be.dev.launch(k::CAST_F32_BF16, cfg, args)?;
        }
        vec![rounded]
    };
    Ok(Operand {
        parts: scratch.iter().map(CudaBuf::ptr).collect(),
        _scratch: scratch,
    })
}

/// Runs `g` once per part of `b`: C = A·part0 (+ beta·C), then C += A·part for the rest.
fn gemm_parts(be: &CudaBackend, g: Gemm, b: &Operand, name: &str) -> Result<()> {
    check_int_sizes(&g)?;
    for (i, &part) in b.parts.iter().enumerate() {
        let g = Gemm {
            b: part,
            beta: if i == 0 { g.beta } else { 1.0 },
            ..g
        };
        // SAFETY: the launcher checked every operand against its span, and each part has
        // the length of the operand it stands for.
        unsafe { be.dev.gemm(&g, name)? };
    }
    Ok(())
}

/// `g` once per head h < `heads`: A, B and C moved on by h times their step in bytes (B's
/// in every part of `b`), the sizes and leading dimensions as `g` gives them.
fn gemm_heads(
    be: &CudaBackend,
    g: Gemm,
    b: &Operand,
    heads: usize,
    steps: [usize; 3],
    name: &str,
) -> Result<()> {
    for hi in 0..heads as u64 {
        let [sa, sb, sc] = steps.map(|s| s as u64 * hi);
        let part = Operand {
            parts: b.parts.iter().map(|p| p + sb).collect(),
            _scratch: Vec::new(),
        };
        let g = Gemm {
            a: g.a + sa,
            c: g.c + sc,
            ..g
        };
        gemm_parts(be, g, &part, name)?;
    }
    Ok(())
}

/// Outputs and gradients of the linear layers come in the activations' type or in float32.
fn check_store_or_f32(dtype: DType, store: DType, what: &str) -> Result<()> {
    if dtype == store || dtype == DType::F32 {
        return Ok(());
    }
    Err(Error::tensor(
        what,
        format!("expected {}, got {dtype:?}", store_or_f32(store)),
    ))
}

/// A per-head product's buffers checked against `ops` (`check_heads`): the written and the
/// read operand in the activations' type, W in the weights'; their pointers in that order.
fn heads_args(
    be: &CudaBackend,
    dst: &CudaBuf,
    src: &CudaBuf,
    w: &CudaBuf,
    ops: HeadsOperands,
) -> Result<[u64; 3]> {
    let store = be.store();
    Ok([
        arg(dst, ops.dst.0, store, ops.dst.1)?,
        arg(src, ops.src.0, store, ops.src.1)?,
        arg(w, ops.w.0, be.weights(), ops.w.1)?,
    ])
}

/// cuBLAS takes int sizes.
fn check_int_sizes(g: &Gemm) -> Result<()> {
    for (what, v) in [
        ("m", g.m),
        ("n", g.n),
        ("k", g.k),
        ("lda", g.lda),
        ("ldb", g.ldb),
        ("ldc", g.ldc),
    ] {
        int(&format!("GEMM {what}"), v)?;
    }
    Ok(())
}

impl MatmulOps for CudaBackend {
    /// out (M, N) = inp (M, K) · Wᵀ (+ bias (N)); inp in the activations' type, W and bias in
    /// the weights' type; out in the activations' type, or float32 for the heads' logits.
    #[allow(clippy::too_many_arguments)]
    fn linear_fwd(
        &self,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        w: &CudaBuf,
        bias: Option<&CudaBuf>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let be = self;
        let (store, weights) = (be.store(), be.weights());
        let out_type = out.dtype();
        check_store_or_f32(out_type, store, "linear out")?;
        let ops = check_linear(false, m, k, n)?;
        let out_ptr = arg(out, ops.dst.0, out_type, ops.dst.1)?;
        let inp_ptr = arg(inp, ops.src.0, store, ops.src.1)?;
        let w_ptr = arg(w, ops.w.0, weights, ops.w.1)?;
        let bias_ptr = opt_arg(bias, "linear bias", weights, n)?;
        if m * n == 0 {
            return Ok(());
        }
        if bias.is_some() {
            bias_fill(be, out_ptr, out_type, bias_ptr, m, n)?;
        }
        let inp_parts = operand(be, inp_ptr, store, m * k)?;
        let g = Gemm {
            trans_a: true,
            trans_b: false,
            m: n,
            n: m,
            k,
            a: w_ptr,
            lda: k.max(1),
            b: 0,
            ldb: k.max(1),
            c: out_ptr,
            ldc: n,
            beta: if bias.is_some() { 1.0 } else { 0.0 },
            ab_type: weights,
            c_type: out_type,
        };
        gemm_parts(be, g, &inp_parts, "linear_fwd")
    }

    /// dinp (M, K) (+)= dout (M, N) · W (N, K) (beta 1 with `accumulate`, else 0); dinp in the activations' type, W in the weights'
    /// type; dout in the activations' type, or float32 (d logits). A dout of another type than
    /// W becomes a GEMM operand as `operand` says.
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        w: &CudaBuf,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let be = self;
        let (store, weights) = (be.store(), be.weights());
        let ops = check_linear(true, m, k, n)?;
        let dinp_ptr = arg(dinp, ops.dst.0, store, ops.dst.1)?;
        let w_ptr = arg(w, ops.w.0, weights, ops.w.1)?;
        let dout_type = dout.dtype();
        check_store_or_f32(dout_type, store, "linear dout")?;
        let dout_ptr = arg(dout, ops.src.0, dout_type, ops.src.1)?;
        if m * k == 0 {
            return Ok(());
        }
        if n == 0 {
            // an empty sum: cuBLAS need not write it
            if !accumulate {
                // SAFETY: `arg` checked that dinp holds M·K elements of the store type.
                unsafe { be.dev.memset0(dinp_ptr, m * k * store.size())? };
            }
            return Ok(());
        }
        let dout_parts = operand(be, dout_ptr, dout_type, m * n)?;
        let g = Gemm {
            trans_a: false,
            trans_b: false,
            m: k,
            n: m,
            k: n,
            a: w_ptr,
            lda: k,
            b: 0,
            ldb: n.max(1),
            c: dinp_ptr,
            ldc: k,
            beta: if accumulate { 1.0 } else { 0.0 },
            ab_type: weights,
            c_type: store,
        };
        gemm_parts(be, g, &dout_parts, "linear_bwd")
    }

    /// out (M, H, N) = inp (M, H, K) · W_hᵀ, W (H·N, K): one cuBLAS product per head, each
    /// linear_fwd's over row strides of H·K and H·N; out and inp in the activations' type.
    fn linear_heads_fwd(
        &self,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        w: &CudaBuf,
        m: usize,
        h: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let be = self;
        let (store, weights) = (be.store(), be.weights());
        let [out_ptr, inp_ptr, w_ptr] =
            heads_args(be, out, inp, w, check_heads(false, m, h, k, n)?)?;
        if m * h * n == 0 {
            return Ok(());
        }
        let inp_parts = operand(be, inp_ptr, store, m * h * k)?;
        let g = Gemm {
            trans_a: true,
            trans_b: false,
            m: n,
            n: m,
            k,
            a: w_ptr,
            lda: k.max(1),
            b: 0,
            ldb: (h * k).max(1),
            c: out_ptr,
            ldc: h * n,
            beta: 0.0,
            ab_type: weights,
            c_type: store,
        };
        let (ws, ss) = (weights.size(), store.size());
        let steps = [n * k * ws, k * ws, n * ss];
        gemm_heads(be, g, &inp_parts, h, steps, "linear_heads_fwd")
    }

    /// dinp (M, H, K) (+)= dout (M, H, N) · W_h, W (H·N, K): one cuBLAS product per head, each
    /// linear_bwd's over row strides of H·N and H·K; dinp and dout in the activations' type.
    fn linear_heads_bwd(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        w: &CudaBuf,
        m: usize,
        h: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        let be = self;
        let (store, weights) = (be.store(), be.weights());
        let ops = check_heads(true, m, h, k, n)?;
        let [dinp_ptr, dout_ptr, w_ptr] = heads_args(be, dinp, dout, w, ops)?;
        if m * h * k == 0 {
            return Ok(());
        }
        if n == 0 {
            // an empty sum: cuBLAS need not write it
            if !accumulate {
                // SAFETY: `arg` checked that dinp holds M·H·K elements of the store type.
                unsafe { be.dev.memset0(dinp_ptr, m * h * k * store.size())? };
            }
            return Ok(());
        }
        let dout_parts = operand(be, dout_ptr, store, m * h * n)?;
        let g = Gemm {
            trans_a: false,
            trans_b: false,
            m: k,
            n: m,
            k: n,
            a: w_ptr,
            lda: k,
            b: 0,
            ldb: h * n,
            c: dinp_ptr,
            ldc: h * k,
            beta: if accumulate { 1.0 } else { 0.0 },
            ab_type: weights,
            c_type: store,
        };
        let (ws, ss) = (weights.size(), store.size());
        let steps = [n * k * ws, n * ws, k * ss];
        gemm_heads(be, g, &dout_parts, h, steps, "linear_heads_bwd")
    }
}
