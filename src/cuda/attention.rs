//! Launchers of kernels/attention.cu and attention_decode.cu (reference: src/cpu/attention.rs),
//! following the launch plan of kernels/ATTENTION.md: 128 threads per block, 64-row tiles, one
//! (batch, head) pair per grid row (key/value heads for `attention_bwd_dkdv`), the D ≤ 64 or
//! the D ≤ 128 entry points, and the dynamic shared memory of `attn_smem_bytes`. The bf16
//! build's forward, bwd_dq and bwd_dkdv are the wmma kernels or, with `AttnKernel::Mma`
//! (`SOFTPROMPT_ATTN_FWD=mma`, `SOFTPROMPT_ATTN_BWD_DQ=mma`, `SOFTPROMPT_ATTN_BWD_DKDV=mma`),
//! `attention_fwd_mma`, `attention_bwd_dq_mma` and `attention_bwd_dkdv_mma` (raw mma.sync, the
//! scores in registers), each chosen on its own. Backward adds into dq, dk, dv:
//! `attention_bwd_dq` (which also writes the `delta` scratch), then `attention_bwd_dkdv`, on
//! the same stream. The decode step, `attention_decode`, takes one block per (key/value
//! head, batch row).
//!
//! Prefix tuning: the kernels read a layer's P prefix keys and values in place from the F32
//! prefix table (`PrefixKv`: a pointer, P, the row width and the two offsets), walking the
//! prefix's key tiles before the real ones; `attention_bwd_dkdv` takes K·ceil(P / 64) more
//! block columns (K prefixes in the table), whose batch-row-0 blocks sum each prefix's gradient
//! over the batch rows that read it and add it to dprefix. Batches mixing prefixes
//! (`PrefixRows`) upload each row's slot and hidden count, (2, B) i32 in one copy (once per
//! batch: `RowsCache`), and pass the two rows as `prefix_slot` and `prefix_hidden`; a single
//! prefix passes 0 for both (and K = 1), so its kernels run as before. Without a prefix the pointers are 0 and P = 0.

use super::kernels::{k, KernelId};
use super::launch::{int, Args, Cfg};
use super::{arg, ints, CudaBackend, CudaBuf};
use crate::backend::{check_ids, AttentionOps, AttnBias, AttnDims, DType, PrefixKv, Storage};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

const THREADS: u32 = 128;
const TILE: usize = 64;

/// The largest dynamic shared memory any attention launch uses (bwd_dkdv at D = 128); the
/// `cuda` device raises each attention kernel's limit to it at start-up (above the default
/// 48 KB; an H200 allows 227 KB).
pub const MAX_DYNAMIC_SMEM: u32 = 124_928;

/// ATTENTION.md's formula: forward (kind 0), bwd_dq (1), bwd_dkdv (2), the mma forward (3), and
/// the mma bwd_dq and bwd_dkdv (4).
fn smem_bytes(kind: usize, d: usize) -> u32 {
    let tile = 64 * (d.div_ceil(16) * 16 + 8) * 2;
    let (stage, ops, small) = (4 * 16 * 68 * 4, 4 * 16 * 72 * 2, 2048);
    (match kind {
        3 => 3 * tile + small,
        4 => 4 * tile + small,
        0 => 3 * tile + stage + ops + small,
        1 => 4 * tile + 2 * stage + ops + small,
        _ => 4 * tile + 2 * stage + 2 * ops + small,
    }) as u32
}

/// Kernels for `d`: (forward, bwd_dq, bwd_dkdv).
fn entry_points(d: usize) -> Result<[KernelId; 3]> {
    match d {
        1..=64 => Ok([k::ATTENTION_FWD, k::ATTENTION_BWD_DQ, k::ATTENTION_BWD_DKDV]),
        65..=128 => Ok([
            k::ATTENTION_FWD_D128,
            k::ATTENTION_BWD_DQ_D128,
            k::ATTENTION_BWD_DKDV_D128,
        ]),
        _ => Err(Error::Unsupported(format!(
            "attention head dim {d}: the fused kernels take 1 ..= 128"
        ))),
    }
}

/// Which kernel runs the bf16 build's attention forward, which its `attention_bwd_dq` and which
/// its `attention_bwd_dkdv`: `Wmma` (`attention_fwd`, `attention_bwd_dq`, `attention_bwd_dkdv`;
/// the default until a device has timed the other) or `Mma` (the same names with `_mma`: raw
/// `mma.sync`, the scores in registers; kernels/ATTENTION.md). The float32 builds have one of
/// each, whatever this says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttnKernel {
    #[default]
    Wmma,
    Mma,
}

impl AttnKernel {
    /// The environment variable that picks the forward: `wmma` or `mma`; unset or empty is `wmma`.
    pub const FWD_ENV: &'static str = crate::env::ATTN_VARS[0];
    /// The same for `attention_bwd_dq`.
    pub const BWD_DQ_ENV: &'static str = crate::env::ATTN_VARS[1];
    /// The same for `attention_bwd_dkdv`.
    pub const BWD_DKDV_ENV: &'static str = crate::env::ATTN_VARS[2];

    /// From the environment variable `var` (read by `env.rs`, which every command checks);
    /// any other value is an error naming it.
    pub fn from_env(var: &str) -> Result<Self> {
        Ok(match crate::env::attn_mma(var)? {
            true => AttnKernel::Mma,
            false => AttnKernel::Wmma,
        })
    }
}

/// The kernel of `wmma` (an entry point of `entry_points`) and its shared-memory kind, or with
/// `Mma` in the bf16 build the raw mma one for `d` (`mma[0]` for D <= 64, `mma[1]` above) with
/// `mma_kind`.
fn pick(
    which: AttnKernel,
    store: DType,
    d: usize,
    wmma: (KernelId, usize),
    mma: [KernelId; 2],
    mma_kind: usize,
) -> (KernelId, usize) {
    if which == AttnKernel::Wmma || store != DType::BF16 {
        return wmma;
    }
    (if d <= 64 { mma[0] } else { mma[1] }, mma_kind)
}

/// The launch configuration over `tiles` tiles of 64 rows (of Tq, or of Tk and then of P for
/// bwd_dkdv), `heads` (H, or Hkv for bwd_dkdv), B.
fn cfg(tiles: usize, heads: usize, dims: &AttnDims, kind: usize) -> Result<Cfg> {
    if heads > 65_535 || dims.b > 65_535 {
        return Err(Error::shape(
            "attention heads and batch (grid y, z)",
            "<= 65535",
            format!("H {} B {}", dims.h, dims.b),
        ));
    }
    Ok(Cfg {
        grid: [
            super::launch::grid_x("attention tiles", tiles)?,
            heads as u32,
            dims.b as u32,
        ],
        block: [THREADS, 1, 1],
        smem: smem_bytes(kind, dims.d),
    })
}

/// Device pointers of the bias table and bucket lookup (0, 0 without a table), with every
/// bucket of the `lookup_len` the kernel reads checked against the table's rows, and the
/// ALiBi flag.
fn bias_args(
    bias: Option<AttnBias<'_, CudaBuf>>,
    weights: DType,
    dims: &AttnDims,
    lookup_len: usize,
) -> Result<(u64, u64, i32)> {
    let bias = match bias {
        None => return Ok((0, 0, 0)),
        Some(AttnBias::Alibi) => return Ok((0, 0, 1)),
        Some(AttnBias::Relative(bias)) => bias,
    };
    let table = arg(bias.table, "relative_attention_bias", weights, dims.h)?;
    let (host, buckets) = ints(bias.buckets, "bias buckets", lookup_len)?;
    check_ids("bias buckets", host, bias.table.len() / dims.h.max(1))?;
    Ok((table, buckets, 0))
}

/// The lookup of a (Tq, Tk) attention behind P prefix keys: it spans them too.
fn lookup_len(dims: &AttnDims, p: usize) -> usize {
    dims.tq + p + dims.tk - 1
}

/// A prefix as the kernels take it: the table's device pointer (0 without one), P, the row
/// width and the key and value offsets, checked against the key/value width; with batch rows
/// mixing prefixes, K and the uploaded slots and hidden counts (held until the launches are
/// queued, as `delta` is).
#[derive(Default)]
struct PrefixArgs {
    table: u64,
    p: usize,
    width: usize,
    k_off: usize,
    v_off: usize,
    /// K, the prefixes stacked in the table (1 without `rows`)
    k: usize,
    /// (2, B) i32: each batch row's slot, then its hidden count; None: one prefix for all
    rows: Option<Arc<CudaBuf>>,
}

impl PrefixArgs {
    /// Device pointers of `prefix_slot` and `prefix_hidden` (0, 0 for one prefix).
    fn rows_ptrs(&self) -> (u64, u64) {
        self.rows.as_ref().map_or((0, 0), |r| {
            (r.ptr(), r.ptr() + (r.len() / 2 * DType::I32.size()) as u64)
        })
    }
}

/// The last (2, B) prefix rows uploaded (each batch row's slot, then its hidden count). A
/// mixed batch runs attention in every layer, forward and backward, with the same rows, and
/// a synchronous upload from pageable memory first waits for the work queued on the stream:
/// once per call it would stall the device at every layer. So the rows go up again only when
/// they change (a new batch). A launcher holds its own reference until its launches are
/// queued, so another thread replacing the rows frees nothing still to be read.
#[derive(Default)]
pub(super) struct RowsCache(Mutex<Option<Arc<CudaBuf>>>);

impl RowsCache {
    /// `host` on the device, uploaded unless the last upload holds the same values.
    fn get(&self, be: &CudaBackend, host: &[i32]) -> Result<Arc<CudaBuf>> {
        let mut last = (self.0.lock()).map_err(|_| {
            Error::Device("attention prefix rows: a thread panicked holding them".into())
        })?;
        match last.as_ref() {
            Some(buf) if buf.host_i32.as_deref() == Some(host) => Ok(Arc::clone(buf)),
            _ => {
                let buf = Arc::new(be.upload_i32(host)?);
                *last = Some(Arc::clone(&buf));
                Ok(buf)
            }
        }
    }
}

fn prefix_args(
    be: &CudaBackend,
    prefix: Option<&PrefixKv<'_, CudaBuf>>,
    dims: &AttnDims,
) -> Result<PrefixArgs> {
    let Some(pr) = prefix else {
        return Ok(PrefixArgs::default());
    };
    pr.check(dims.hkv * dims.d)?;
    pr.check_rows(dims.b)?;
    let rows = match pr.rows {
        None => None,
        Some(r) => {
            let host = (r.slot.iter().chain(r.hidden))
                .map(|&x| int("attention prefix rows (slot, hidden)", x))
                .collect::<Result<Vec<i32>>>()?;
            Some(be.attn_rows.get(be, &host)?)
        }
    };
    Ok(PrefixArgs {
        table: arg(pr.table, "attention prefix", DType::F32, pr.table_len())?,
        p: pr.p,
        width: pr.width,
        k_off: pr.k_off,
        v_off: pr.v_off,
        k: pr.rows.map_or(1, |r| r.prefixes),
        rows,
    })
}

/// The prefix's inputs of every attention kernel: the table, then `prefix_slot` and
/// `prefix_hidden`.
fn prefix_ptrs(args: Args, pre: &PrefixArgs) -> Args {
    let (slot, hidden) = pre.rows_ptrs();
    args.ptr(pre.table).ptr(slot).ptr(hidden)
}

/// The trailing scalars every attention kernel takes: the bias flags and scale, the sizes,
/// then the prefix's P, row width and offsets.
fn sizes(
    args: Args,
    alibi: i32,
    causal: bool,
    scale: f64,
    dims: &AttnDims,
    pre: &PrefixArgs,
) -> Result<Args> {
    Ok(args
        .i32(alibi)
        .i32(causal as i32)
        .f32(scale as f32)
        .i32(int("batch", dims.b)?)
        .i32(int("query length", dims.tq)?)
        .i32(int("key length", dims.tk)?)
        .i32(int("heads", dims.h)?)
        .i32(int("key/value heads", dims.hkv)?)
        .i32(int("head dim", dims.d)?)
        .i32(int("prefix rows", pre.p)?)
        .i32(int("prefix width", pre.width)?)
        .i32(int("prefix key offset", pre.k_off)?)
        .i32(int("prefix value offset", pre.v_off)?))
}

fn check_dims(dims: &AttnDims) -> Result<()> {
    if dims.tq == 0 || dims.tk == 0 || dims.b == 0 || dims.h == 0 {
        return Err(Error::shape(
            "attention (B, Tq, Tk, H)",
            "all >= 1",
            format!("{dims:?}"),
        ));
    }
    dims.check_heads()
}

/// Keys per chunk of `attention_decode` (DEC_KC in kernels/attention_decode.cu).
const DECODE_CHUNK: usize = 64;

/// Dynamic shared memory of `attention_decode`: the G queries and outputs (G, D), a chunk's
/// scores (G, DEC_KC) and three statistics per head, all float.
fn decode_smem_bytes(g: usize, d: usize) -> usize {
    4 * (2 * g * d + g * DECODE_CHUNK + 3 * g)
}

impl AttentionOps for CudaBackend {
    // extern "C" __global__ void attention_fwd(act_t* out, float* lse, const act_t* q,
    //     const act_t* k, const act_t* v, const float* prefix, const int* prefix_slot,
    //     const int* prefix_hidden, const int* key_mask, const w_t* bias_table,
    //     const int* buckets, int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
    //     int Hkv, int D, int P, int width, int k_off, int v_off);
    // (attention_fwd_d128: the same, for 64 < D <= 128)
    /// out (B, Tq, H, D) bf16 and lse (B, H, Tq) f32 from q (B, Tq, H, D), k, v (B, Tk, Hkv, D),
    /// the prefix (P, width) F32 (or a (K·P, width) stack and each row's slot and hidden
    /// rows), key_mask (B, Tk). grid (ceil(Tq/64), H, B), 128 threads.
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(
        &self,
        out: &mut CudaBuf,
        lse: &mut CudaBuf,
        q: &CudaBuf,
        kk: &CudaBuf,
        v: &CudaBuf,
        prefix: Option<PrefixKv<'_, CudaBuf>>,
        key_mask: &CudaBuf,
        bias: Option<AttnBias<'_, CudaBuf>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
    ) -> Result<()> {
        let be = self;
        let AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        } = dims;
        check_dims(&dims)?;
        let store = be.store();
        let [wmma, _, _] = entry_points(d)?;
        let mma = [k::ATTENTION_FWD_MMA, k::ATTENTION_FWD_MMA_D128];
        let (fwd, smem_kind) = pick(be.attn_fwd, store, d, (wmma, 0), mma, 3);
        let pre = prefix_args(be, prefix.as_ref(), &dims)?;
        let (table, buckets, alibi) =
            bias_args(bias, be.weights(), &dims, lookup_len(&dims, pre.p))?;
        let args = Args::new()
            .ptr(arg(out, "attention out", store, b * tq * h * d)?)
            .ptr(arg(lse, "attention lse", DType::F32, b * h * tq)?)
            .ptr(arg(q, "attention q", store, b * tq * h * d)?)
            .ptr(arg(kk, "attention k", store, b * tk * hkv * d)?)
            .ptr(arg(v, "attention v", store, b * tk * hkv * d)?);
        let args = prefix_ptrs(args, &pre)
            .ptr(ints(key_mask, "attention key mask", b * tk)?.1)
            .ptr(table)
            .ptr(buckets);
        let args = sizes(args, alibi, causal, scale, &dims, &pre)?;
        be.dev
            .launch(fwd, cfg(tq.div_ceil(TILE), h, &dims, smem_kind)?, args)
    }

    // extern "C" __global__ void attention_bwd_dq(act_t* dq, float* delta, const act_t* dout,
    //     const act_t* q, const act_t* k, const act_t* v, const float* prefix,
    //     const int* prefix_slot, const int* prefix_hidden, const float* lse,
    //     const int* key_mask, const w_t* bias_table, const int* buckets, int alibi, int causal,
    //     float scale, int B, int Tq, int Tk, int H, int Hkv, int D, int P, int width,
    //     int k_off, int v_off, int accumulate);
    // extern "C" __global__ void attention_bwd_dkdv(act_t* dk, act_t* dv, float* dprefix,
    //     const act_t* dout, const act_t* q, const act_t* k, const act_t* v,
    //     const float* prefix, const int* prefix_slot, const int* prefix_hidden,
    //     const float* lse, const float* delta, const int* key_mask, const w_t* bias_table,
    //     const int* buckets, int alibi, int causal, float scale, int B, int Tq, int Tk, int H,
    //     int Hkv, int D, int P, int width, int k_off, int v_off, int accumulate);
    // (the _d128 entry points: the same, for 64 < D <= 128; the _mma ones of both: the same)
    /// dq (B, Tq, H, D), dk, dv (B, Tk, Hkv, D) += their gradients from dout, q, k, v and the
    /// saved lse with `accumulate`, else = them (each element is stored by one thread once,
    /// so writing is a store in place of a load and an add); dprefix (K·P, width) F32 += each prefix's, summed over the batch rows that
    /// read it (their hidden rows get nothing).
    /// `delta` (B, H, Tq) f32 is scratch written by the first launch and read by the second.
    /// bwd_dkdv's grid is (ceil(Tk/64) + K·ceil(P/64), Hkv, B).
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        dq: &mut CudaBuf,
        dk: &mut CudaBuf,
        dv: &mut CudaBuf,
        dprefix: Option<&mut CudaBuf>,
        dout: &CudaBuf,
        q: &CudaBuf,
        kk: &CudaBuf,
        v: &CudaBuf,
        prefix: Option<PrefixKv<'_, CudaBuf>>,
        lse: &CudaBuf,
        key_mask: &CudaBuf,
        bias: Option<AttnBias<'_, CudaBuf>>,
        causal: bool,
        scale: f64,
        dims: AttnDims,
        accumulate: bool,
    ) -> Result<()> {
        let be = self;
        let AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        } = dims;
        check_dims(&dims)?;
        let [_, wmma_dq, wmma_dkdv] = entry_points(d)?;
        let store = be.store();
        let mma = [k::ATTENTION_BWD_DQ_MMA, k::ATTENTION_BWD_DQ_MMA_D128];
        let (bwd_dq, dq_kind) = pick(be.attn_bwd_dq, store, d, (wmma_dq, 1), mma, 4);
        let mma = [k::ATTENTION_BWD_DKDV_MMA, k::ATTENTION_BWD_DKDV_MMA_D128];
        let (bwd_dkdv, dkdv_kind) = pick(be.attn_bwd_dkdv, store, d, (wmma_dkdv, 2), mma, 4);
        let pre = prefix_args(be, prefix.as_ref(), &dims)?;
        let dprefix = match (dprefix, &prefix) {
            (Some(g), Some(pr)) => arg(g, "attention dprefix", DType::F32, pr.table_len())?,
            (None, _) => 0,
            (Some(_), None) => {
                return Err(Error::tensor(
                    "attention dprefix",
                    "a prefix gradient needs the prefix it belongs to",
                ))
            }
        };
        let (table, buckets, alibi) =
            bias_args(bias, be.weights(), &dims, lookup_len(&dims, pre.p))?;
        let (q_len, kv_len) = (b * tq * h * d, b * tk * hkv * d);
        // every element is written by attention_bwd_dq before attention_bwd_dkdv reads it
        let delta = be.alloc(DType::F32, b * h * tq)?;
        let (dout_p, q_p, k_p, v_p) = (
            arg(dout, "attention dout", store, q_len)?,
            arg(q, "attention q", store, q_len)?,
            arg(kk, "attention k", store, kv_len)?,
            arg(v, "attention v", store, kv_len)?,
        );
        let lse_p = arg(lse, "attention lse", DType::F32, b * h * tq)?;
        let mask_p = ints(key_mask, "attention key mask", b * tk)?.1;
        let args = Args::new()
            .ptr(arg(dq, "attention dq", store, q_len)?)
            .ptr(delta.ptr())
            .ptr(dout_p)
            .ptr(q_p)
            .ptr(k_p)
            .ptr(v_p);
        let args = prefix_ptrs(args, &pre)
            .ptr(lse_p)
            .ptr(mask_p)
            .ptr(table)
            .ptr(buckets);
        be.dev.launch(
            bwd_dq,
            cfg(tq.div_ceil(TILE), h, &dims, dq_kind)?,
            sizes(args, alibi, causal, scale, &dims, &pre)?.i32(accumulate as i32),
        )?;
        let args = Args::new()
            .ptr(arg(dk, "attention dk", store, kv_len)?)
            .ptr(arg(dv, "attention dv", store, kv_len)?)
            .ptr(dprefix)
            .ptr(dout_p)
            .ptr(q_p)
            .ptr(k_p)
            .ptr(v_p);
        let args = prefix_ptrs(args, &pre)
            .ptr(lse_p)
            .ptr(delta.ptr())
            .ptr(mask_p)
            .ptr(table)
            .ptr(buckets);
        // the real keys' tiles, then each prefix's
        let tiles = tk.div_ceil(TILE) + pre.k * pre.p.div_ceil(TILE);
        be.dev.launch(
            bwd_dkdv,
            cfg(tiles, hkv, &dims, dkdv_kind)?,
            sizes(args, alibi, causal, scale, &dims, &pre)?.i32(accumulate as i32),
        )
    }

    // extern "C" __global__ void attention_decode(act_t* out, const act_t* q, const act_t* k,
    //     const act_t* v, const int* key_mask, const w_t* bias_table, const int* buckets,
    //     int alibi, float scale, int B, int Tk, int Tmax, int H, int Hkv, int D);
    /// out (B, H, D) from q (B, H, D) over the first Tk rows of the caches k, v (B, Tmax, Hkv,
    /// D) and key_mask (B, Tmax), a relative bias's lookup (2·Tmax − 1). grid (Hkv, B), 128
    /// threads, `decode_smem_bytes` of dynamic shared memory.
    #[allow(clippy::too_many_arguments)]
    fn attention_decode(
        &self,
        out: &mut CudaBuf,
        q: &CudaBuf,
        kk: &CudaBuf,
        v: &CudaBuf,
        key_mask: &CudaBuf,
        bias: Option<AttnBias<'_, CudaBuf>>,
        scale: f64,
        dims: AttnDims,
        tmax: usize,
    ) -> Result<()> {
        let AttnDims {
            b, tk, h, hkv, d, ..
        } = dims;
        check_dims(&dims)?;
        crate::backend::attention::check_decode(&dims, tmax)?;
        let lookup = crate::backend::attention::decode_lookup_len(tmax);
        let (table, buckets, alibi) = bias_args(bias, self.weights(), &dims, lookup)?;
        let smem = decode_smem_bytes(dims.group(), d);
        if smem > MAX_DYNAMIC_SMEM as usize || hkv > 65_535 || b > 65_535 {
            return Err(Error::shape(
                "attention_decode (H / Hkv query heads of D per block, Hkv, B)",
                format!("(H/Hkv)·D small enough for {MAX_DYNAMIC_SMEM} bytes of shared memory, Hkv and B <= 65535"),
                format!("H/Hkv {} D {d} Hkv {hkv} B {b}", dims.group()),
            ));
        }
        let store = self.store();
        let args = Args::new()
            .ptr(arg(out, "attention_decode out", store, b * h * d)?)
            .ptr(arg(q, "attention_decode q", store, b * h * d)?)
            .ptr(arg(
                kk,
                "attention_decode k cache",
                store,
                b * tmax * hkv * d,
            )?)
            .ptr(arg(
                v,
                "attention_decode v cache",
                store,
                b * tmax * hkv * d,
            )?)
            .ptr(ints(key_mask, "attention_decode key mask", b * tmax)?.1)
            .ptr(table)
            .ptr(buckets)
            .i32(alibi)
            .f32(scale as f32)
            .i32(int("batch", b)?)
            .i32(int("cache length", tk)?)
            .i32(int("cache capacity", tmax)?)
            .i32(int("heads", h)?)
            .i32(int("key/value heads", hkv)?)
            .i32(int("head dim", d)?);
        let cfg = Cfg {
            grid: [hkv as u32, b as u32, 1],
            block: [THREADS, 1, 1],
            smem: smem as u32,
        };
        self.dev.launch(k::ATTENTION_DECODE, cfg, args)
    }
}

#[cfg(test)]
mod tests {
    /// The table of kernels/ATTENTION.md.
    #[test]
    fn shared_memory_matches_the_launch_plan() {
        for (d, want) in [
            (8, [37888, 58368, 67584, 11264, 14336]),
            (12, [37888, 58368, 67584, 11264, 14336]),
            (32, [44032, 66560, 75776, 17408, 22528]),
            (64, [56320, 82944, 92160, 29696, 38912]),
            (128, [80896, 115712, 124928, 54272, 71680]),
        ] {
            let got: Vec<u32> = (0..5).map(|kind| super::smem_bytes(kind, d)).collect();
            assert_eq!(got, want, "D = {d}");
        }
        assert_eq!(super::smem_bytes(2, 128), super::MAX_DYNAMIC_SMEM);
    }

    /// A mixed batch's prefix rows go to the device once: the same rows again (the next layer,
    /// the backward) reuse that upload, other rows (the next batch) replace it, and a caller
    /// still holding the replaced one keeps it.
    #[cfg(feature = "emu")]
    #[test]
    fn prefix_rows_are_uploaded_once_per_batch() {
        use std::sync::Arc;
        let be = super::CudaBackend::emu().unwrap();
        let first = be.attn_rows.get(&be, &[1, 0, 2, 0]).unwrap();
        let again = be.attn_rows.get(&be, &[1, 0, 2, 0]).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let next = be.attn_rows.get(&be, &[0, 1, 0, 3]).unwrap();
        assert!(!Arc::ptr_eq(&first, &next));
        assert_eq!(
            (Arc::strong_count(&first), Arc::strong_count(&next)),
            (2, 2)
        );
    }
}
