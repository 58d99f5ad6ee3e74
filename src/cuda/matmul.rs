//! Launchers of the linear layers (reference: src/cpu/matmul.rs): W (N, K) as checkpoints
//! store it, bf16 operands, float32 compute, through cuBLAS on a GPU and the CPU GEMM under
//! `emu`; the helper kernels of kernels/matmul.cu fill the bias and round a float32 gradient.
//!
//! Row-major X (r, c) is column-major Xᵀ, so out = inp·Wᵀ is the column-major
//! outᵀ (N, M) = op_T(W) · inp, and dinp = dout·W is dinpᵀ (K, M) = W · doutᵀ.

use super::gemm::Gemm;
use super::kernels::k;
use super::launch::{int, stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, opt_arg, CudaBackend, CudaBuf};
use crate::backend::{Backend, DType};
use crate::error::{Error, Result};

// extern "C" __global__ void linear_bias_fill(store_t* out, const store_t* bias, int m, int n);
// extern "C" __global__ void linear_bias_fill_f32(float* out, const store_t* bias, int m, int n);
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

/// out (M, N) = inp (M, K) · Wᵀ (+ bias (N)); inp, W, bias in the storage type (bf16, or
/// float32 in the float32 build); out in the storage type, or float32 for the heads' logits.
#[allow(clippy::too_many_arguments)]
pub fn linear_fwd(
    be: &CudaBackend,
    out: &mut CudaBuf,
    inp: &CudaBuf,
    w: &CudaBuf,
    bias: Option<&CudaBuf>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    let store = be.store();
    let out_type = out.dtype();
    if out_type != store && out_type != DType::F32 {
        let want = if store == DType::F32 {
            "F32"
        } else {
            "BF16 or F32"
        };
        return Err(Error::tensor(
            "linear out",
            format!("expected {want}, got {out_type:?}"),
        ));
    }
    let out_ptr = arg(out, "linear out", out_type, m * n)?;
    let inp_ptr = arg(inp, "linear inp", store, m * k)?;
    let w_ptr = arg(w, "linear weight", store, n * k)?;
    let bias_ptr = opt_arg(bias, "linear bias", store, n)?;
    if m * n == 0 {
        return Ok(());
    }
    if bias.is_some() {
        bias_fill(be, out_ptr, out_type, bias_ptr, m, n)?;
    }
    let g = Gemm {
        trans_a: true,
        trans_b: false,
        m: n,
        n: m,
        k,
        a: w_ptr,
        lda: k.max(1),
        b: inp_ptr,
        ldb: k.max(1),
        c: out_ptr,
        ldc: n,
        beta: if bias.is_some() { 1.0 } else { 0.0 },
        ab_type: store,
        c_type: out_type,
    };
    check_int_sizes(&g)?;
    // SAFETY: every operand was checked against its span above.
    unsafe { be.dev.gemm(&g, "linear_fwd") }
}

// extern "C" __global__ void cast_f32_bf16(store_t* out, const float* inp, long long n);
/// dinp (M, K) (+)= dout (M, N) · W (N, K); dinp and W in the storage type; dout in the
/// storage type, or float32 (d logits, rounded to bf16 first, as a bf16 GEMM operand; used as
/// it is in the float32 build).
#[allow(clippy::too_many_arguments)]
pub fn linear_bwd(
    be: &CudaBackend,
    dinp: &mut CudaBuf,
    dout: &CudaBuf,
    w: &CudaBuf,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) -> Result<()> {
    let store = be.store();
    let dinp_ptr = arg(dinp, "linear dinp", store, m * k)?;
    let w_ptr = arg(w, "linear weight", store, n * k)?;
    let rounded;
    let dout_ptr = match float_type(dout, "linear dout")? {
        DType::F32 if store != DType::F32 => {
            let src = arg(dout, "linear dout", DType::F32, m * n)?;
            rounded = be.zeros(store, m * n)?;
            let args = Args::new().ptr(rounded.ptr()).ptr(src).i64((m * n) as i64);
            if m * n > 0 {
                be.dev.launch(
                    k::CAST_F32_BF16,
                    Cfg::linear(stride_blocks(m * n), STRIDE_THREADS),
                    args,
                )?;
            }
            rounded.ptr()
        }
        _ => arg(dout, "linear dout", store, m * n)?,
    };
    if m * k == 0 {
        return Ok(());
    }
    let g = Gemm {
        trans_a: false,
        trans_b: false,
        m: k,
        n: m,
        k: n,
        a: w_ptr,
        lda: k,
        b: dout_ptr,
        ldb: n.max(1),
        c: dinp_ptr,
        ldc: k,
        beta: if accumulate { 1.0 } else { 0.0 },
        ab_type: store,
        c_type: store,
    };
    check_int_sizes(&g)?;
    // SAFETY: every operand was checked against its span above.
    unsafe { be.dev.gemm(&g, "linear_bwd") }
}

fn float_type(buf: &CudaBuf, what: &str) -> Result<DType> {
    match buf.dtype() {
        DType::I32 => Err(Error::tensor(what, "expected BF16 or F32, got I32")),
        d => Ok(d),
    }
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
