//! Launchers of kernels/rows.cu (reference: src/cpu/rows.rs). `gather_rows` overwrites;
//! `scatter_rows_bwd` and `mean_pool_bwd` add into the residual gradient.

use super::kernels::k;
use super::launch::{grid_x, int, row_threads, Args, Cfg};
use super::{arg, ints, CudaBackend, CudaBuf};
use crate::backend::{check_ids, RowOps};
use crate::error::Result;

/// Splits 0..M into consecutive runs whose indices are distinct: each run is one launch in
/// which no two blocks touch the same row, and the runs keep the reference's order of sums.
fn distinct_runs(idx: &[i32]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut start = 0;
    for (i, &r) in idx.iter().enumerate() {
        if !seen.insert(r) {
            runs.push((start, i));
            seen.clear();
            seen.insert(r);
            start = i;
        }
    }
    if start < idx.len() {
        runs.push((start, idx.len()));
    }
    runs
}

impl RowOps for CudaBackend {
    // extern "C" __global__ void gather_rows(act_t* out, const act_t* inp, const int* idx, int m,
    //     int c);
    // extern "C" __global__ void gather_rows_w(w_t* out, const w_t* inp, const int* idx, int m,
    //     int c);
    /// out (M, C) = inp[idx[m]] for inp (N, C), activations or (where their type differs) weights.
    /// One block per output row.
    fn gather_rows(
        &self,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        idx: &CudaBuf,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let dev = &self.dev;
        let (kernel, dtype) = if inp.dtype() == dev.weights() && dev.weights() != dev.store() {
            (k::GATHER_ROWS_W, dev.weights())
        } else {
            (k::GATHER_ROWS, dev.store())
        };
        let (host, idx_ptr) = ints(idx, "row index", m)?;
        check_ids("row index", host, inp.len() / c.max(1))?;
        let args = Args::new()
            .ptr(arg(out, "gather out", dtype, m * c)?)
            .ptr(arg(inp, "gather inp", dtype, 0)?)
            .ptr(idx_ptr)
            .i32(int("rows", m)?)
            .i32(int("row width", c)?);
        if m == 0 || c == 0 {
            return Ok(());
        }
        dev.launch(
            kernel,
            Cfg::linear(grid_x("gather rows", m)?, row_threads(c)),
            args,
        )
    }

    // extern "C" __global__ void scatter_rows_bwd(act_t* dinp, const act_t* dout, const int* idx,
    //     int m, int c);
    /// dinp[idx[m]] += dout[m] for dout (M, C). One block per row of a run of distinct indices.
    fn scatter_rows_bwd(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        idx: &CudaBuf,
        m: usize,
        c: usize,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let (host, idx_ptr) = ints(idx, "row index", m)?;
        check_ids("row index", host, dinp.len() / c.max(1))?;
        let dinp_ptr = arg(dinp, "scatter dinp", store, 0)?;
        let dout_ptr = arg(dout, "scatter dout", store, m * c)?;
        if c == 0 {
            return Ok(());
        }
        for (start, end) in distinct_runs(host) {
            let args = Args::new()
                .ptr(dinp_ptr)
                .ptr(dout_ptr + (start * c * store.size()) as u64)
                .ptr(idx_ptr + (start * 4) as u64)
                .i32(int("rows", end - start)?)
                .i32(int("row width", c)?);
            let cfg = Cfg::linear(grid_x("scatter rows", end - start)?, row_threads(c));
            dev.launch(k::SCATTER_ROWS_BWD, cfg, args)?;
        }
        Ok(())
    }

    // extern "C" __global__ void mean_pool_fwd(act_t* out, const act_t* inp, const act_t* weight,
    //     int b, int t, int c);
    /// out (B, C) = Σ_s weight[b, s] · inp[b, s] for inp (B, T, C), weight (B, T).
    /// grid (B, C/256), one thread per output column.
    fn mean_pool_fwd(
        &self,
        out: &mut CudaBuf,
        inp: &CudaBuf,
        weight: &CudaBuf,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(out, "pool out", store, b * c)?)
            .ptr(arg(inp, "pool inp", store, b * t * c)?)
            .ptr(arg(weight, "pool weight", store, b * t)?)
            .i32(int("batch", b)?)
            .i32(int("rows", t)?)
            .i32(int("hidden size", c)?);
        if b * c == 0 {
            return Ok(());
        }
        let threads = (c.div_ceil(32) * 32).min(256);
        let cfg = Cfg {
            grid: [grid_x("pool batch", b)?, c.div_ceil(threads) as u32, 1],
            block: [threads as u32, 1, 1],
            smem: 0,
        };
        dev.launch(k::MEAN_POOL_FWD, cfg, args)
    }

    // extern "C" __global__ void mean_pool_bwd(act_t* dinp, const act_t* dout, const act_t* weight,
    //     int b, int t, int c, int accumulate);
    /// dinp (B, T, C) += weight[b, s] · dout[b] (B, C), or = with `accumulate` false. One
    /// block per (b, s) row.
    fn mean_pool_bwd(
        &self,
        dinp: &mut CudaBuf,
        dout: &CudaBuf,
        weight: &CudaBuf,
        b: usize,
        t: usize,
        c: usize,
        accumulate: bool,
    ) -> Result<()> {
        let dev = &self.dev;
        let store = dev.store();
        let args = Args::new()
            .ptr(arg(dinp, "pool dinp", store, b * t * c)?)
            .ptr(arg(dout, "pool dout", store, b * c)?)
            .ptr(arg(weight, "pool weight", store, b * t)?)
            .i32(int("batch", b)?)
            .i32(int("rows", t)?)
            .i32(int("hidden size", c)?)
            .i32(accumulate as i32);
        if b * t == 0 || c == 0 {
            return Ok(());
        }
        dev.launch(
            k::MEAN_POOL_BWD,
            Cfg::linear(grid_x("pool rows", b * t)?, row_threads(c)),
            args,
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_of_distinct_indices() {
        assert_eq!(super::distinct_runs(&[3, 1, 2]), vec![(0, 3)]);
        assert_eq!(
            super::distinct_runs(&[3, 1, 3, 3, 2]),
            vec![(0, 2), (2, 3), (3, 5)]
        );
        assert_eq!(super::distinct_runs(&[]), vec![]);
    }
}
