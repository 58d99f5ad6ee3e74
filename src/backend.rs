//! The one trait the models are written against. Three implementations: `cpu` (the float32
//! reference), `cuda` (NVRTC kernels and cuBLAS on a GPU) and `emu` (the same launchers and
//! `.cu` sources, run on the host by the CUDA emulator, for tests).
//!
//! Buffers are opaque: frozen weights are stored in `weight_dtype()` and activations in
//! `act_dtype()` (f32 on the CPU; on a GPU as its `Precision` says, bf16 for both by
//! default); the prompt, its gradient, optimizer state, norm statistics and attention
//! log-sum-exps are always float32 (`DType::F32`); token ids, masks and labels are `I32`.
//!
//! Every op takes outputs first, then gradients, then inputs, then saved state, then sizes.
//! Which backward outputs add (`+=`) and which overwrite is documented per family in
//! `src/cpu/<op>.rs`; the trait follows the same contract.

use crate::cpu::activation::Act;
use crate::cpu::optimizer::{AdafactorHyper, AdamWHyper};
use crate::error::Result;

pub use crate::cpu::attention::AttnDims;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    I32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 => 2,
        }
    }
}

/// How a CUDA device (`cuda`, `emu`) stores frozen weights and activations, and so which build
/// of the kernels it runs (`--precision`; kernels/common.cuh, kernels/PRECISION.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// bf16 weights and activations, tensor cores everywhere: the engine.
    Bf16,
    /// float32 weights and activations, no tensor cores: exact checks of the whole CUDA path.
    F32,
    /// bf16 weights, float32 activations; each GEMM runs twice on bf16 tensor cores (the
    /// activation split into bf16 hi + lo), attention in float32 loops. A forward pass that
    /// accurate keeps ReLU masks where float32 puts them.
    Mixed,
}

impl Precision {
    /// The storage type of frozen weights.
    pub fn weights(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 | Precision::Mixed => DType::BF16,
        }
    }

    /// The storage type of activations and their gradients.
    pub fn acts(self) -> DType {
        match self {
            Precision::Bf16 => DType::BF16,
            Precision::F32 | Precision::Mixed => DType::F32,
        }
    }
}

/// Bytes the backend's allocator holds now and at its peak since the last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemStats {
    pub live_bytes: usize,
    pub peak_bytes: usize,
}

/// T5's relative position bias as the kernels read it: the frozen (buckets, H) table and the
/// (Tq + Tk - 1) lookup from relative position to bucket. No (H, Tq, Tk) tensor exists.
pub struct BiasRef<'a, Buf> {
    pub table: &'a Buf,
    pub buckets: &'a Buf,
}

/// Device time of one kernel (or GEMM) summed over a profiled region.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub name: String,
    pub calls: u64,
    pub ms: f64,
}

pub trait Backend: Send + Sync {
    type Buf: Send + Sync;

    /// A name for reports: "cpu", "emu", "cuda:0 NVIDIA H200".
    fn name(&self) -> String;
    /// The storage type of activations.
    fn act_dtype(&self) -> DType;
    /// The storage type of frozen weights. Required, with no default: a wrapper that forgot
    /// to pass it on would upload weights in the activations' type, which only the mixed
    /// build tells apart.
    fn weight_dtype(&self) -> DType;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn dtype(&self, buf: &Self::Buf) -> DType;
    /// A stable identity of the storage, used by the memory accountant's checks.
    fn buf_id(&self, buf: &Self::Buf) -> usize;

    fn zeros(&self, dtype: DType, len: usize) -> Result<Self::Buf>;
    fn upload(&self, dtype: DType, data: &[f32]) -> Result<Self::Buf>;
    fn upload_i32(&self, data: &[i32]) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Like `download`, at the backend's full precision (the f64 reference keeps its digits).
    fn download_f64(&self, buf: &Self::Buf) -> Result<Vec<f64>> {
        Ok(self.download(buf)?.into_iter().map(f64::from).collect())
    }
    fn copy(&self, dst: &mut Self::Buf, src: &Self::Buf) -> Result<()>;
    fn memory(&self) -> MemStats;
    fn reset_peak(&self);
    fn synchronize(&self) -> Result<()>;
    /// Starts timing every kernel launch (CUDA events on a GPU). Backends without kernels
    /// ignore it.
    fn kernel_profile_start(&self) -> Result<()> {
        Ok(())
    }
    /// Ends the region started by `kernel_profile_start`: time per kernel, largest first
    /// (empty where there are no kernels).
    fn kernel_profile_stop(&self) -> Result<Vec<KernelTime>> {
        Ok(Vec::new())
    }

    // embedding (src/cpu/embedding.rs)
    #[allow(clippy::too_many_arguments)]
    fn embedding_fwd(
        &self,
        out: &mut Self::Buf,
        prompt: &Self::Buf,
        wte: &Self::Buf,
        wpe: Option<&Self::Buf>,
        wtt: Option<&Self::Buf>,
        ids: &Self::Buf,
        type_ids: Option<&Self::Buf>,
        b: usize,
        t: usize,
        p: usize,
        c: usize,
    ) -> Result<()>;
    fn prompt_grad_bwd(
        &self,
        dprompt: &mut Self::Buf,
        dout: &Self::Buf,
        b: usize,
        t: usize,
        p: usize,
        c: usize,
    ) -> Result<()>;

    // layernorm (src/cpu/layernorm.rs)
    #[allow(clippy::too_many_arguments)]
    fn layernorm_fwd(
        &self,
        out: &mut Self::Buf,
        mean: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        bias: &Self::Buf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn layernorm_bwd(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        n: usize,
        c: usize,
    ) -> Result<()>;

    // rmsnorm (src/cpu/rmsnorm.rs)
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_fwd(
        &self,
        out: &mut Self::Buf,
        rstd: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        n: usize,
        c: usize,
        eps: f64,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_bwd(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        n: usize,
        c: usize,
    ) -> Result<()>;

    // matmul (src/cpu/matmul.rs): W is (N, K), as checkpoints store it
    #[allow(clippy::too_many_arguments)]
    fn linear_fwd(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        w: &Self::Buf,
        bias: Option<&Self::Buf>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn linear_bwd(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        w: &Self::Buf,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()>;

    // activation (src/cpu/activation.rs)
    fn act_fwd(&self, out: &mut Self::Buf, inp: &Self::Buf, act: Act, n: usize) -> Result<()>;
    fn act_bwd(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        inp: &Self::Buf,
        act: Act,
        n: usize,
    ) -> Result<()>;
    fn gated_act_fwd(
        &self,
        out: &mut Self::Buf,
        gate: &Self::Buf,
        lin: &Self::Buf,
        act: Act,
        n: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn gated_act_bwd(
        &self,
        dgate: &mut Self::Buf,
        dlin: &mut Self::Buf,
        dout: &Self::Buf,
        gate: &Self::Buf,
        lin: &Self::Buf,
        act: Act,
        n: usize,
    ) -> Result<()>;

    // attention (src/cpu/attention.rs)
    #[allow(clippy::too_many_arguments)]
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
    #[allow(clippy::too_many_arguments)]
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

    // loss (src/cpu/loss.rs): logits (M, V) in, d loss/d logits out, in place
    fn cross_entropy_fwd_bwd(
        &self,
        logits: &mut Self::Buf,
        losses: &mut Self::Buf,
        targets: &Self::Buf,
        m: usize,
        v: usize,
        grad_scale: f64,
    ) -> Result<()>;

    // rows (src/cpu/rows.rs)
    fn gather_rows(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        idx: &Self::Buf,
        m: usize,
        c: usize,
    ) -> Result<()>;
    fn scatter_rows_bwd(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        idx: &Self::Buf,
        m: usize,
        c: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn mean_pool_fwd(
        &self,
        out: &mut Self::Buf,
        inp: &Self::Buf,
        weight: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn mean_pool_bwd(
        &self,
        dinp: &mut Self::Buf,
        dout: &Self::Buf,
        weight: &Self::Buf,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()>;

    // elementwise (src/cpu/elementwise.rs)
    fn add_fwd(&self, out: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, n: usize) -> Result<()>;
    fn add_inplace(&self, acc: &mut Self::Buf, a: &Self::Buf, n: usize) -> Result<()>;
    fn scale_inplace(&self, x: &mut Self::Buf, s: f64, n: usize) -> Result<()>;

    // optimizer (src/cpu/optimizer.rs): all buffers F32
    #[allow(clippy::too_many_arguments)]
    fn adamw_update(
        &self,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        m: &mut Self::Buf,
        v: &mut Self::Buf,
        hp: &AdamWHyper,
        step: u64,
    ) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn adafactor_update(
        &self,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        row: &mut Self::Buf,
        col: &mut Self::Buf,
        hp: &AdafactorHyper,
        step: u64,
    ) -> Result<()>;
}
