//! Launchers of kernels/embedding.cu (reference: src/cpu/embedding.rs). Forward overwrites
//! `out`; the prompt-row gradient adds into `dprompt`.

use super::kernels::k;
use super::launch::{grid_x, int, row_threads, stride_blocks, Args, Cfg, STRIDE_THREADS};
use super::{arg, ints, opt_arg, CudaBackend, CudaBuf};
use crate::backend::{check_ids, check_prompt_lens, DType, EmbeddingOps};
use crate::error::{Error, Result};

impl EmbeddingOps for CudaBackend {
    // extern "C" __global__ void embedding_fwd(act_t* out, const float* prompt, const w_t* wte,
    //     const w_t* wpe, const w_t* wtt, const int* ids, const int* type_ids,
    //     const int* prompt_idx, const int* prompt_len, int b, int t, int p, int c);
    /// out (B, P+T, C) bf16 = prompt[k_b] (P, C) f32 ⧺ wte[ids] (B, T, C), plus wpe and wtt rows
    /// when given; the prompt table is (K, P, C), k_b = prompt_idx[b] or 0; with prompt_len
    /// (B) row b's prompt has P_b rows, its tokens behind them, zeros at its end. One block
    /// per output row.
    #[allow(clippy::too_many_arguments)]
    fn embedding_fwd(
        &self,
        out: &mut CudaBuf,
        prompt: &CudaBuf,
        wte: &CudaBuf,
        wpe: Option<&CudaBuf>,
        wtt: Option<&CudaBuf>,
        ids: &CudaBuf,
        type_ids: Option<&CudaBuf>,
        prompt_idx: Option<&CudaBuf>,
        prompt_len: Option<&CudaBuf>,
        b: usize,
        t: usize,
        k: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        let dev = &self.dev;
        let (tt, store) = (p + t, dev.store());
        let rows_of = |buf: &CudaBuf| buf.len() / c.max(1);
        let (id_host, id_ptr) = ints(ids, "input_ids", b * t)?;
        check_ids("input_ids", id_host, rows_of(wte))?;
        let idx_ptr = prompt_index(prompt_idx, b, k)?;
        let len_ptr = prompt_lens(prompt_len, b, p)?;
        let type_ptr = match (type_ids, wtt) {
            (Some(types), Some(wtt)) => {
                let (host, ptr) = ints(types, "token_type_ids", b * t)?;
                check_ids("token_type_ids", host, rows_of(wtt))?;
                ptr
            }
            _ => 0,
        };
        if let Some(wpe) = wpe {
            if rows_of(wpe) < tt {
                return Err(Error::shape(
                    "position embeddings (max_position_embeddings must cover P + T)",
                    format!(">= {tt} rows"),
                    rows_of(wpe),
                ));
            }
        }
        if wtt.is_some_and(|w| rows_of(w) == 0) {
            return Err(Error::tensor("token type embeddings", "empty table"));
        }
        let args = Args::new()
            .ptr(arg(out, "embedding out", store, b * tt * c)?)
            .ptr(arg(prompt, "prompt", DType::F32, k * p * c)?)
            .ptr(arg(wte, "word embeddings", dev.weights(), 0)?)
            .ptr(opt_arg(wpe, "position embeddings", dev.weights(), tt * c)?)
            .ptr(opt_arg(wtt, "token type embeddings", dev.weights(), c)?)
            .ptr(id_ptr)
            .ptr(type_ptr)
            .ptr(idx_ptr)
            .ptr(len_ptr)
            .i32(int("batch", b)?)
            .i32(int("tokens", t)?)
            .i32(int("prompt rows", p)?)
            .i32(int("hidden size", c)?);
        if b * tt == 0 || c == 0 {
            return Ok(());
        }
        let cfg = Cfg::linear(grid_x("embedding rows", b * tt)?, row_threads(c));
        dev.launch(k::EMBEDDING_FWD, cfg, args)
    }

    // extern "C" __global__ void prompt_grad_bwd(float* dprompt, const act_t* dout,
    //     const int* prompt_idx, const int* prompt_len, int b, int t, int k, int p, int c);
    /// dprompt (K, P, C) f32 += Σ_{b: k_b = k} dout[b, 0..P_b] with dout (B, P+T, C) bf16,
    /// k_b = prompt_idx[b] or 0, P_b = prompt_len[b] or P. Grid-stride over K*P*C, the rows
    /// summed in order.
    #[allow(clippy::too_many_arguments)]
    fn prompt_grad_bwd(
        &self,
        dprompt: &mut CudaBuf,
        dout: &CudaBuf,
        prompt_idx: Option<&CudaBuf>,
        prompt_len: Option<&CudaBuf>,
        b: usize,
        t: usize,
        k: usize,
        p: usize,
        c: usize,
    ) -> Result<()> {
        let dev = &self.dev;
        let args = Args::new()
            .ptr(arg(dprompt, "prompt grad", DType::F32, k * p * c)?)
            .ptr(arg(dout, "embedding grad", dev.store(), b * (p + t) * c)?)
            .ptr(prompt_index(prompt_idx, b, k)?)
            .ptr(prompt_lens(prompt_len, b, p)?)
            .i32(int("batch", b)?)
            .i32(int("tokens", t)?)
            .i32(int("prompts", k)?)
            .i32(int("prompt rows", p)?)
            .i32(int("hidden size", c)?);
        if k * p * c == 0 {
            return Ok(());
        }
        let cfg = Cfg::linear(stride_blocks(k * p * c), STRIDE_THREADS);
        dev.launch(k::PROMPT_GRAD_BWD, cfg, args)
    }
}

/// The device pointer of the per-row prompt index (B) after checking every entry against the
/// K prompts of the table; 0 (every row prompt 0) without one.
fn prompt_index(prompt_idx: Option<&CudaBuf>, b: usize, k: usize) -> Result<u64> {
    let Some(idx) = prompt_idx else {
        return Ok(0);
    };
    let (host, ptr) = ints(idx, "prompt index", b)?;
    check_ids("prompt index", host, k)?;
    Ok(ptr)
}

/// The device pointer of the per-row prompt lengths (B) after checking each against the
/// table's P rows; 0 (every row P) without them.
fn prompt_lens(prompt_len: Option<&CudaBuf>, b: usize, p: usize) -> Result<u64> {
    let Some(lens) = prompt_len else {
        return Ok(0);
    };
    let (host, ptr) = ints(lens, "prompt lengths", b)?;
    check_prompt_lens(host, p)?;
    Ok(ptr)
}
