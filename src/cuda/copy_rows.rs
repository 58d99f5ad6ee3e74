//! Launchers of kernels/copy_rows.cu (reference: src/cpu/copy_rows.rs): rows copied by index,
//! cast between the activations' type and float32 on the device.

use super::kernels::{k, KernelId};
use super::launch::{grid_x, int, row_threads, Args, Cfg};
use super::{ints, store_or_f32, CudaBackend, CudaBuf};
use crate::backend::copy_rows::check_distinct;
use crate::backend::{check_ids, CopyRowsOps, DType};
use crate::error::{Error, Result};

/// The kernel for `out` and `inp` of these types: each the storage type or float32 (where
/// activations are float32 both are the storage type, and the storage-typed kernel runs).
fn pick(store: DType, out: DType, inp: DType) -> Option<KernelId> {
    // Some(true): float32 apart from the storage type; None: neither
    let f32_apart = |dt: DType| match dt {
        _ if dt == store => Some(false),
        DType::F32 => Some(true),
        _ => None,
    };
    Some(match (f32_apart(out)?, f32_apart(inp)?) {
        (false, false) => k::COPY_ROWS,
        (true, false) => k::COPY_ROWS_TO_F32,
        (false, true) => k::COPY_ROWS_FROM_F32,
        (true, true) => k::COPY_ROWS_F32,
    })
}

impl CopyRowsOps for CudaBackend {
    // extern "C" __global__ void copy_rows(act_t* out, const act_t* inp, const int* src,
    //     const int* dst, int m, int c);
    // extern "C" __global__ void copy_rows_to_f32(float* out, const act_t* inp, const int* src,
    //     const int* dst, int m, int c);
    // extern "C" __global__ void copy_rows_from_f32(act_t* out, const float* inp, const int* src,
    //     const int* dst, int m, int c);
    // extern "C" __global__ void copy_rows_f32(float* out, const float* inp, const int* src,
    //     const int* dst, int m, int c);
    /// out[dst[m]] = inp[src[m]] for inp (N, C), out (R, C), each in the activations' type or
    /// float32. One block per copied row.
    fn copy_rows(
        &self,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        src: &CudaBuf,
        dst: &CudaBuf,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let store = self.store();
        let Some(kernel) = pick(store, out.dtype(), inp.dtype()) else {
            return Err(Error::tensor(
                "copy out, copy inp",
                format!(
                    "expected {} each, got {:?} and {:?}",
                    store_or_f32(store),
                    out.dtype(),
                    inp.dtype()
                ),
            ));
        };
        let (src_host, src_ptr) = ints(src, "copy source rows", m)?;
        check_ids("copy source rows", src_host, inp.len() / c.max(1))?;
        let (dst_host, dst_ptr) = ints(dst, "copy rows", m)?;
        check_distinct("copy rows", dst_host, out.len() / c.max(1))?;
        let args = Args::new()
            .ptr(out.ptr())
            .ptr(inp.ptr())
            .ptr(src_ptr)
            .ptr(dst_ptr)
            .i32(int("rows", m)?)
            .i32(int("row width", c)?);
        if m == 0 || c == 0 {
            return Ok(());
        }
        let cfg = Cfg::linear(grid_x("copy rows", m)?, row_threads(c));
        self.dev.launch(kernel, cfg, args)
    }
}
