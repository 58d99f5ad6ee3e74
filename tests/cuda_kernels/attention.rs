//! Fused attention against the CPU reference (also on the mma kernels), the KV-cache decode
//! step, and RoPE.

use crate::common::assert_close;
use crate::{act_data, randn, Pair, Store, F32, F32_OUT};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::{AttnBias, BiasRef};
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::rng::Rng;

/// The attention bias of kind 0 (none), 1 (T5's table through the bucket lookup) or 2 (ALiBi).
pub(super) fn bias_of<'a, Buf>(
    kind: usize,
    table: &'a Buf,
    lookup: &'a Buf,
) -> Option<AttnBias<'a, Buf>> {
    match kind {
        1 => Some(AttnBias::Relative(BiasRef {
            table,
            buckets: lookup,
        })),
        2 => Some(AttnBias::Alibi),
        _ => None,
    }
}

/// Fused attention (kernels/attention.cu, both entry-point sets) against the CPU reference:
/// T of 1, 7, 97, 129 with head dims 8, 12, 16, 64 (and 128 for the `_d128` kernels), batch
/// row 1 padded, T5's bias from the table, ALiBi, grouped-query heads (Hkv < H), causal (with
/// Tk > Tq: the queries at the end), and cross attention with Tq != Tk.
/// Tolerance BF16_ATTN: ATTENTION.md measured at most 2.7e-3 against float64 (bf16 outputs, and P
/// and dS as bf16 tensor-core operands); 5e-3 as there. Observed here on the emulator: 2.8e-3
/// (attention_bwd dq), 2.1e-3 forward; lse (F32_OUT) 8.8e-8.
pub(super) fn check_attention(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(20);
    // bias: 0 none, 1 T5's table, 2 ALiBi
    let cases = [
        // (B, Tq, Tk, H, Hkv, D, bias, causal)
        (2, 1, 1, 3, 3, 8, 0, false),
        (2, 7, 7, 3, 3, 12, 1, false),
        (2, 97, 97, 2, 2, 16, 0, true),
        (2, 129, 129, 2, 2, 64, 1, false),
        (2, 7, 7, 2, 2, 64, 1, true),
        (2, 97, 97, 3, 3, 12, 1, true),
        (2, 7, 129, 3, 3, 12, 0, false),
        (2, 129, 7, 2, 2, 64, 0, false),
        (1, 33, 33, 2, 2, 128, 1, false),
        // bias with a scale other than 1; batch row 1 sees no key at all (out 0, lse -inf)
        (2, 7, 7, 3, 3, 16, 1, false),
        (2, 97, 65, 2, 2, 64, 0, false),
        // decoder-only models: ALiBi over 6 heads (BLOOM), grouped-query heads (Llama, Qwen2),
        // causal with the queries at the end of more keys (prefix keys, a cache), D 128
        (2, 97, 97, 6, 6, 8, 2, true),
        (2, 129, 129, 4, 2, 12, 0, true),
        (2, 7, 7, 5, 1, 16, 0, true),
        (2, 33, 97, 4, 2, 64, 2, true),
        (1, 65, 130, 4, 1, 128, 0, true),
        (2, 70, 7, 2, 1, 8, 2, true),
    ];
    for (case, (b, tq, tk, h, hkv, d, bias_kind, causal)) in cases.into_iter().enumerate() {
        let with_bias = bias_kind == 1;
        let (extra_scale, row1_blind) = match case {
            9 => (0.5, false),
            10 => (1.0, true),
            _ => (1.0, false),
        };
        let dims = softprompt::internals::backend::AttnDims {
            b,
            tq,
            tk,
            h,
            hkv,
            d,
        };
        let q = s.up(st.dt, &randn(&mut rng, b * tq * h * d, 1.0));
        let k = s.up(st.dt, &randn(&mut rng, b * tk * hkv * d, 1.0));
        let v = s.up(st.dt, &randn(&mut rng, b * tk * hkv * d, 1.0));
        // batch row 1 keeps only its first half of the keys (at least one), or none
        let mask: Vec<i32> = (0..b * tk)
            .map(|i| (i / tk == 0 || (!row1_blind && i % tk <= tk / 2)) as i32)
            .collect();
        let mask = s.ints(&mask);
        let buckets = 8;
        let table = s.up(st.w, &randn(&mut rng, buckets * h, 1.0));
        let lookup =
            softprompt::internals::backend::attention::bucket_lookup(tq, tk, !causal, buckets, 20);
        let lookup = s.ints(&lookup);
        let bias = bias_of(bias_kind, &table.0, &lookup.0);
        let cpu_bias = bias_of(bias_kind, &table.1, &lookup.1);
        let scale = extra_scale
            * if with_bias {
                1.0
            } else {
                1.0 / (d as f64).sqrt()
            };
        let name = format!(
            "B{b} Tq{tq} Tk{tk} H{h} Hkv{hkv} D{d} bias={bias_kind} causal={causal} scale={scale:.3} blind={row1_blind}"
        );
        let (mut out, mut lse) = (s.out(st.dt, b * tq * h * d), s.out(F32, b * h * tq));
        be.attention_fwd(
            &mut out.0, &mut lse.0, &q.0, &k.0, &v.0, None, &mask.0, bias, causal, scale, dims,
        )
        .unwrap();
        s.cpu
            .attention_fwd(
                &mut out.1, &mut lse.1, &q.1, &k.1, &v.1, None, &mask.1, cpu_bias, causal, scale,
                dims,
            )
            .unwrap();
        s.check(&format!("attention_fwd out {name}"), &out, st.attn);
        // a query row that sees no key has lse -inf on both sides; the rest is compared
        let (got, want) = (
            s.gpu.download(&lse.0).unwrap(),
            s.cpu.download(&lse.1).unwrap(),
        );
        let blind = |x: &f32| *x == f32::NEG_INFINITY;
        assert_eq!(
            got.iter().map(blind).collect::<Vec<_>>(),
            want.iter().map(blind).collect::<Vec<_>>(),
            "attention_fwd lse {name}: rows without a visible key"
        );
        // rows blind by the causal mask: queries before the first key (Tq > Tk)
        let early = if causal { tq.saturating_sub(tk) } else { 0 };
        assert_eq!(
            got.iter().filter(|x| blind(x)).count(),
            if row1_blind { h * tq } else { b * h * early },
            "{name}"
        );
        let finite = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| if x == f32::NEG_INFINITY { 0.0 } else { x })
                .collect()
        };
        assert_close(
            &format!("attention_fwd lse {name}"),
            &finite(got),
            &finite(want),
            F32_OUT,
        );
        let dout = s.up(st.dt, &randn(&mut rng, b * tq * h * d, 1.0));
        let (mut dq, mut dk, mut dv) = (
            s.grad(st.dt, b * tq * h * d, &mut rng),
            s.grad(st.dt, b * tk * hkv * d, &mut rng),
            s.grad(st.dt, b * tk * hkv * d, &mut rng),
        );
        be.attention_bwd(
            &mut dq.0, &mut dk.0, &mut dv.0, None, &dout.0, &q.0, &k.0, &v.0, None, &lse.0,
            &mask.0, bias, causal, scale, dims, true,
        )
        .unwrap();
        s.cpu
            .attention_bwd(
                &mut dq.1, &mut dk.1, &mut dv.1, None, &dout.1, &q.1, &k.1, &v.1, None, &lse.1,
                &mask.1, cpu_bias, causal, scale, dims, true,
            )
            .unwrap();
        s.check(&format!("attention_bwd dq {name}"), &dq, st.attn);
        s.check(&format!("attention_bwd dk {name}"), &dk, st.attn);
        s.check(&format!("attention_bwd dv {name}"), &dv, st.attn);
    }
}

/// The KV-cache decode step (kernels/attention_decode.cu `attention_decode`) against the CPU
/// reference: caches longer than the keys read (Tk < Tmax), left padding in row 1, one and
/// several chunks of 64 keys, grouped heads, head dims 8 to 128, and each bias (`bias_of`'s
/// kinds: none, T5's relative bias through the (Tmax, Tmax) lookup, ALiBi).
pub(super) fn check_attention_decode(be: &CudaBackend) {
    use softprompt::internals::backend::attention::bucket_lookup;
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(21);
    // (B, Tk, Tmax, H, Hkv, D, bias kind)
    for (b, tk, tmax, h, hkv, d, bias_kind) in [
        (2, 1, 4, 3, 3, 8, 0),
        (2, 29, 40, 6, 6, 8, 2),
        (3, 97, 97, 4, 2, 12, 0),
        (2, 130, 150, 5, 1, 64, 2),
        (1, 65, 70, 8, 2, 128, 0),
        (2, 1, 4, 3, 3, 8, 1),
        (2, 29, 40, 4, 4, 8, 1),
        (3, 130, 150, 6, 6, 64, 1),
    ] {
        let dims = softprompt::internals::backend::AttnDims {
            b,
            tq: 1,
            tk,
            h,
            hkv,
            d,
        };
        let q = s.up(st.dt, &randn(&mut rng, b * h * d, 1.0));
        let k = s.up(st.dt, &randn(&mut rng, b * tmax * hkv * d, 1.0));
        let v = s.up(st.dt, &randn(&mut rng, b * tmax * hkv * d, 1.0));
        // row 1 starts with 3 padded keys (left padding), min(3, Tk - 1) of them
        let pads = 3.min(tk - 1);
        let mask: Vec<i32> = (0..b * tmax)
            .map(|i| (i / tmax != 1 || i % tmax >= pads) as i32)
            .collect();
        let mask = s.ints(&mask);
        // 32 buckets over a max distance of 128, as T5's decoder
        let table = s.up(st.w, &randn(&mut rng, 32 * h, 1.0));
        let lookup = s.ints(&bucket_lookup(tmax, tmax, false, 32, 128));
        let mut out = s.out(st.dt, b * h * d);
        let scale = 1.0 / (d as f64).sqrt();
        let bias = bias_of(bias_kind, &table.0, &lookup.0);
        be.attention_decode(
            &mut out.0, &q.0, &k.0, &v.0, &mask.0, bias, scale, dims, tmax,
        )
        .unwrap();
        let bias = bias_of(bias_kind, &table.1, &lookup.1);
        s.cpu
            .attention_decode(
                &mut out.1, &q.1, &k.1, &v.1, &mask.1, bias, scale, dims, tmax,
            )
            .unwrap();
        s.check(
            &format!("attention_decode B{b} Tk{tk} Tmax{tmax} H{h} Hkv{hkv} D{d} bias {bias_kind}"),
            &out,
            st.attn,
        );
    }
}

/// RoPE forward and backward in place (kernels/rope.cu): head dims 8 to 128, positions that
/// start late (left padding) and reach 700, Llama 3's frequencies.
pub(super) fn check_rope(be: &CudaBackend) {
    use softprompt::internals::backend::rope::{rope_inv_freq, Llama3Scaling};
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(22);
    let scaling = Llama3Scaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    for (b, t, h, d, llama3) in [
        (1, 1, 1, 8, false),
        (2, 7, 3, 12, true),
        (2, 97, 2, 64, false),
        (1, 129, 4, 128, true),
    ] {
        let inv = rope_inv_freq(d, 500000.0, llama3.then_some(scaling));
        let inv = s.up(F32, &inv);
        let pos: Vec<i32> = (0..b * t)
            .map(|r| ((r % t) * (1 + r / t) * 5) as i32)
            .collect();
        let pos = s.ints(&pos);
        let name = format!("B{b} T{t} H{h} D{d} llama3={llama3}");
        let mut x = s.up(st.dt, &act_data(&st, &mut rng, b * t * h * d));
        be.rope_fwd(&mut x.0, &inv.0, &pos.0, b, t, h, d).unwrap();
        s.cpu
            .rope_fwd(&mut x.1, &inv.1, &pos.1, b, t, h, d)
            .unwrap();
        s.check(&format!("rope_fwd {name}"), &x, st.out);
        let mut dx = s.up(st.dt, &act_data(&st, &mut rng, b * t * h * d));
        be.rope_bwd(&mut dx.0, &inv.0, &pos.0, b, t, h, d).unwrap();
        s.cpu
            .rope_bwd(&mut dx.1, &inv.1, &pos.1, b, t, h, d)
            .unwrap();
        s.check(&format!("rope_bwd {name}"), &dx, st.out);
    }
}

test_device!(attention, check_attention);
test_device!(attention_decode, check_attention_decode);
test_device!(rope, check_rope);
test_mma!(attention_mma, check_attention);
