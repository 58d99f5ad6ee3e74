//! Prefix tuning's attention: one prefix table, a stack of prefixes mixed across batch rows
//! (`PrefixRows`), and that the rows' hiding is visible to the comparison; also on the mma
//! kernels.

use crate::attention::bias_of;
use crate::common::{self, assert_close};
use crate::{randn, Pair, Store, F32, F32_OUT};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::{AttnBias, PrefixKv, PrefixRows};
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::rng::Rng;

/// Prefix tuning's attention (kernels/attention.cu and attention_f32.cuh with a prefix table)
/// against the CPU reference: P prefix keys and values read in place from a (P, width) F32
/// table holding 3 layers' blocks (this layer's the middle one), in front of T real keys.
/// P of 1, 5, 20, 70 and 130 (one, two and three key tiles, straddling a tile boundary), the
/// papers' placements: BERT (no bias), T5's encoder and decoder (the bucket lookup over
/// P + T keys, `prefix_bucket_lookup`, bidirectional and causal), BLOOM (ALiBi, causal), Llama
/// (grouped-query heads, causal, P = 1), D 128; batch row 1 padded. dprefix starts random (the
/// backward adds the batch's sum into it). Tolerances as check_attention (BF16_ATTN in the
/// bf16 build, F32_OUT in the others).
pub(super) fn check_attention_prefix(be: &CudaBackend) {
    let mut rng = Rng::new(23);
    for case in [
        (2, 7, 5, 3, 3, 12, 0, false),
        (2, 33, 20, 2, 2, 64, 1, false),
        (2, 7, 3, 2, 2, 16, 1, true),
        (2, 97, 70, 6, 6, 8, 2, true),
        (3, 65, 1, 4, 2, 64, 0, true),
        (1, 29, 9, 4, 1, 128, 0, true),
        (2, 7, 130, 3, 3, 16, 1, false),
    ] {
        for (name, got, want, tol) in prefix_case(be, &mut rng, case, None, None) {
            assert_close(&name, &got, &want, tol);
        }
    }
}

/// Batch rows mixing prefixes (`PrefixRows`, kernels/ATTENTION.md): a (K·P, width) stack,
/// batch row b reading prefix slot[b] and hiding its first hidden[b] rows (a shorter prefix,
/// or none at hidden = P), against the CPU reference: out, lse, dq, dk, dv and the stack's
/// gradient, which each prefix gets from its own rows only (a prefix no row reads keeps its
/// random start). Slots out of batch order, shared and unread; hidden counts of 0, inside the
/// first key tile, a whole key tile (P = 70, hidden 65) and all of P; no bias, T5's bias,
/// ALiBi, grouped-query heads, causal, D 8 to 128 (both entry point sets), K above and below
/// B. Tolerances as check_attention; observed on the emulator: bf16 2.4e-3 (dq), out 2.0e-3,
/// dprefix 1.5e-3, lse 7.3e-8; float32 and mixed builds 1.0e-6 (dk).
pub(super) fn check_attention_prefix_rows(be: &CudaBackend) {
    let mut rng = Rng::new(29);
    for (case, k, slot, hidden) in prefix_rows_cases() {
        let mix = Mix { k, slot, hidden };
        for (name, got, want, tol) in prefix_case(be, &mut rng, case, Some(&mix), Some(&mix)) {
            assert_close(&name, &got, &want, tol);
        }
    }
}

/// (B, T, P, H, Hkv, D, bias, causal), K, slots, hidden rows.
type PrefixRowsCase = (PrefixCase, usize, Vec<usize>, Vec<usize>);

fn prefix_rows_cases() -> Vec<PrefixRowsCase> {
    vec![
        (
            (3, 7, 5, 3, 3, 12, 0, false),
            2,
            vec![1, 0, 1],
            vec![0, 2, 5],
        ),
        (
            (4, 33, 20, 2, 2, 64, 1, false),
            3,
            vec![2, 0, 2, 1],
            vec![3, 0, 20, 7],
        ),
        (
            (3, 7, 3, 2, 2, 16, 1, true),
            2,
            vec![1, 1, 0],
            vec![1, 0, 2],
        ),
        (
            (3, 97, 70, 6, 6, 8, 2, true),
            2,
            vec![0, 1, 0],
            vec![65, 0, 3],
        ),
        (
            (3, 65, 4, 4, 2, 64, 0, true),
            2,
            vec![1, 0, 1],
            vec![2, 1, 0],
        ),
        ((2, 29, 9, 4, 1, 128, 2, true), 3, vec![2, 0], vec![4, 0]),
        ((2, 7, 130, 3, 3, 16, 1, false), 2, vec![1, 0], vec![0, 100]),
    ]
}

/// Switching the hiding off (the reference told hidden = 0 while the kernel hides) must fail
/// the comparison of out and of the stack's gradient in every case: the mixed-row test above
/// can tell hiding from not hiding.
fn check_attention_prefix_hiding_matters(be: &CudaBackend) {
    let mut rng = Rng::new(29);
    for (case, k, slot, hidden) in prefix_rows_cases() {
        let blind = Mix {
            k,
            slot: slot.clone(),
            hidden: vec![0; slot.len()],
        };
        let mix = Mix { k, slot, hidden };
        let results = prefix_case(be, &mut rng, case, Some(&mix), Some(&blind));
        for (name, got, want, tol) in results {
            if name.contains(" out ") || name.contains(" dprefix ") {
                let err = common::rel_err(&got, &want);
                assert!(
                    err > 10.0 * tol,
                    "{name}: {err:.3e} with the reference not hiding"
                );
            }
        }
    }
}

/// The attention's scalars and sizes.
#[derive(Clone, Copy)]
struct AttnArgs {
    causal: bool,
    scale: f64,
    dims: softprompt::internals::backend::AttnDims,
}

/// On one backend: out, lse = attention_fwd(q, k, v, mask) behind `prefix`, then dq, dk, dv,
/// dprefix += attention_bwd of dout.
fn attend<B: AttentionOps>(
    be: &B,
    [out, lse, dq, dk, dv, dprefix]: [&mut B::Buf; 6],
    [q, k, v, dout, mask]: [&B::Buf; 5],
    prefix: PrefixKv<'_, B::Buf>,
    bias: Option<AttnBias<'_, B::Buf>>,
    AttnArgs {
        causal,
        scale,
        dims,
    }: AttnArgs,
) {
    be.attention_fwd(
        out,
        lse,
        q,
        k,
        v,
        Some(prefix),
        mask,
        bias,
        causal,
        scale,
        dims,
    )
    .unwrap();
    be.attention_bwd(
        dq,
        dk,
        dv,
        Some(dprefix),
        dout,
        q,
        k,
        v,
        Some(prefix),
        lse,
        mask,
        bias,
        causal,
        scale,
        dims,
        true,
    )
    .unwrap();
}

/// (B, T, P, H, Hkv, D, bias, causal): bias 0 none, 1 T5's table, 2 ALiBi.
type PrefixCase = (usize, usize, usize, usize, usize, usize, usize, bool);

/// Batch rows mixing the K prefixes of a stack: each row's slot and hidden rows.
struct Mix {
    k: usize,
    slot: Vec<usize>,
    hidden: Vec<usize>,
}

impl Mix {
    fn rows(&self) -> PrefixRows<'_> {
        PrefixRows {
            slot: &self.slot,
            hidden: &self.hidden,
            prefixes: self.k,
        }
    }
}

/// One prefix case run on the device (`gpu_mix`) and the CPU reference (`cpu_mix`): (name,
/// got, want, tolerance) of out, lse, dq, dk, dv and dprefix.
fn prefix_case(
    be: &CudaBackend,
    rng: &mut Rng,
    (b, t, p, h, hkv, d, bias_kind, causal): PrefixCase,
    gpu_mix: Option<&Mix>,
    cpu_mix: Option<&Mix>,
) -> Vec<(String, Vec<f32>, Vec<f32>, f64)> {
    use softprompt::internals::backend::attention::prefix_bucket_lookup;
    let st = Store::of(be);
    let s = Pair::new(be);
    let dims = softprompt::internals::backend::AttnDims {
        b,
        tq: t,
        tk: t,
        h,
        hkv,
        d,
    };
    let kvw = hkv * d;
    // 3 layers' blocks [k0 v0 k1 v1 k2 v2]; this layer reads block 1
    let (width, k_off, v_off) = (6 * kvw, 2 * kvw, 3 * kvw);
    let stack = gpu_mix.map_or(1, |m| m.k);
    let q = s.up(st.dt, &randn(rng, b * t * h * d, 1.0));
    let k = s.up(st.dt, &randn(rng, b * t * kvw, 1.0));
    let v = s.up(st.dt, &randn(rng, b * t * kvw, 1.0));
    let table = s.up(F32, &randn(rng, stack * p * width, 1.0));
    let gpu_prefix = PrefixKv {
        table: &table.0,
        p,
        width,
        k_off,
        v_off,
        rows: gpu_mix.map(Mix::rows),
    };
    let cpu_prefix = PrefixKv {
        table: &table.1,
        p,
        width,
        k_off,
        v_off,
        rows: cpu_mix.map(Mix::rows),
    };
    // batch row 1 keeps only its first half of the keys
    let mask: Vec<i32> = (0..b * t)
        .map(|i| (i / t != 1 || i % t <= t / 2) as i32)
        .collect();
    let mask = s.ints(&mask);
    let buckets = 8;
    let bias_table = s.up(st.w, &randn(rng, buckets * h, 1.0));
    let lookup = s.ints(&prefix_bucket_lookup(t, p, !causal, buckets, 20));
    let gpu_bias = bias_of(bias_kind, &bias_table.0, &lookup.0);
    let cpu_bias = bias_of(bias_kind, &bias_table.1, &lookup.1);
    let scale = if bias_kind == 1 {
        1.0
    } else {
        1.0 / (d as f64).sqrt()
    };
    let name = format!(
        "B{b} T{t} P{p} K{stack} H{h} Hkv{hkv} D{d} bias={bias_kind} causal={causal} rows={:?}",
        gpu_mix.map(|m| (&m.slot, &m.hidden))
    );
    let (mut out, mut lse) = (s.out(st.dt, b * t * h * d), s.out(F32, b * h * t));
    let dout = s.up(st.dt, &randn(rng, b * t * h * d, 1.0));
    let (mut dq, mut dk, mut dv) = (
        s.grad(st.dt, b * t * h * d, rng),
        s.grad(st.dt, b * t * kvw, rng),
        s.grad(st.dt, b * t * kvw, rng),
    );
    let mut dprefix = s.grad(F32, stack * p * width, rng);
    let attn = AttnArgs {
        causal,
        scale,
        dims,
    };
    attend(
        be,
        [
            &mut out.0,
            &mut lse.0,
            &mut dq.0,
            &mut dk.0,
            &mut dv.0,
            &mut dprefix.0,
        ],
        [&q.0, &k.0, &v.0, &dout.0, &mask.0],
        gpu_prefix,
        gpu_bias,
        attn,
    );
    attend(
        &s.cpu,
        [
            &mut out.1,
            &mut lse.1,
            &mut dq.1,
            &mut dk.1,
            &mut dv.1,
            &mut dprefix.1,
        ],
        [&q.1, &k.1, &v.1, &dout.1, &mask.1],
        cpu_prefix,
        cpu_bias,
        attn,
    );
    // a row hiding its whole prefix sees its real keys only: no row of these cases is blind
    [
        ("attention_fwd prefix out", &out, st.attn),
        ("attention_fwd prefix lse", &lse, F32_OUT),
        ("attention_bwd prefix dq", &dq, st.attn),
        ("attention_bwd prefix dk", &dk, st.attn),
        ("attention_bwd prefix dv", &dv, st.attn),
        ("attention_bwd prefix dprefix", &dprefix, st.attn),
    ]
    .into_iter()
    .map(|(what, bufs, tol)| {
        let got = s.gpu.download(&bufs.0).expect("download");
        let want = s.cpu.download(&bufs.1).expect("download");
        (format!("{what} {name}"), got, want, tol)
    })
    .collect()
}

test_device!(attention_prefix, check_attention_prefix);
test_device!(attention_prefix_rows, check_attention_prefix_rows);
test_device!(
    attention_prefix_hiding_matters,
    check_attention_prefix_hiding_matters
);
test_mma!(attention_prefix_mma, check_attention_prefix);
test_mma!(attention_prefix_rows_mma, check_attention_prefix_rows);
test_mma!(
    attention_prefix_hiding_matters_mma,
    check_attention_prefix_hiding_matters
);
