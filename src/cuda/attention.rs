//! Launchers of kernels/attention.cu (reference: src/cpu/attention.rs). The fused attention
//! kernels are written on branch `attn` (kernels/ATTENTION.md gives their launch plan); until
//! they are merged, attention on this backend returns an error saying so.

use super::{CudaBackend, CudaBuf};
use crate::backend::{AttnDims, BiasRef};
use crate::error::{Error, Result};

fn missing() -> Error {
    Error::Unsupported(
        "fused attention kernels (kernels/attention.cu) are not merged into this build yet; \
         use --device cpu"
            .into(),
    )
}

#[allow(clippy::too_many_arguments)]
pub fn attention_fwd(
    _be: &CudaBackend,
    _out: &mut CudaBuf,
    _lse: &mut CudaBuf,
    _q: &CudaBuf,
    _k: &CudaBuf,
    _v: &CudaBuf,
    _key_mask: &CudaBuf,
    _bias: Option<BiasRef<'_, CudaBuf>>,
    _causal: bool,
    _scale: f64,
    _dims: AttnDims,
) -> Result<()> {
    Err(missing())
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    _be: &CudaBackend,
    _dq: &mut CudaBuf,
    _dk: &mut CudaBuf,
    _dv: &mut CudaBuf,
    _dout: &CudaBuf,
    _q: &CudaBuf,
    _k: &CudaBuf,
    _v: &CudaBuf,
    _lse: &CudaBuf,
    _key_mask: &CudaBuf,
    _bias: Option<BiasRef<'_, CudaBuf>>,
    _causal: bool,
    _scale: f64,
    _dims: AttnDims,
) -> Result<()> {
    Err(missing())
}
