//! The vectorised float32 ops (src/cpu/simd.rs) on every instruction set this CPU has, against
//! the scalar reference code of their stems, on lengths that leave every kind of tail (1, 7,
//! 15, 16, 17, 97, 1000), inputs spread over the activations' working range plus the edges
//! (0, ±1e-6, ±9, ±40, ±100) where the exponentials saturate.
//!
//! Tolerances (relative L2, `assert_close`): 2e-6 for one elementwise function (the vector
//! exponential is within 2 ulp of libm's, erf and the polynomial are the same formula, so a
//! few ulp at most; measured ≤ 9.3e-7, SiLU's backward on one value), 1e-5 for row reductions
//! of up to 1000 terms summed in another order (measured ≤ 3.3e-6, a cancelling Σ dy·w·(x-μ));
//! the exponential alone is held to 1e-6 per value over [-87, 88].

use softprompt::internals::backend::Act;
use softprompt::internals::cpu::simd::{self, Isa};
use softprompt::internals::cpu::{activation, layernorm, rmsnorm};
use softprompt::internals::rng::Rng;

mod common;
use common::assert_close;

const LENS: [usize; 7] = [1, 7, 15, 16, 17, 97, 1000];
const ACTS: [Act; 4] = [Act::GeluErf, Act::GeluTanh, Act::Relu, Act::Silu];

fn data(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    let edges = [0.0, 1e-6, -1e-6, 9.0, -9.0, 40.0, -40.0, 100.0, -100.0];
    (0..n)
        .map(|i| {
            if i % 13 == 5 {
                edges[(i / 13) % edges.len()]
            } else {
                (rng.normal() * std) as f32
            }
        })
        .collect()
}

fn vector_isas() -> Vec<Isa> {
    let v: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .collect();
    if v.is_empty() {
        println!("no vector instruction set on this CPU: only the scalar path runs");
    }
    v
}

#[test]
fn exp_matches_libm() {
    for isa in Isa::available() {
        let x: Vec<f32> = (0..4001)
            .map(|i| -87.0 + i as f32 * (175.0 / 4000.0))
            .collect();
        let mut got = x.clone();
        simd::exp_slice(isa, &mut got);
        let want: Vec<f64> = x.iter().map(|&v| (v as f64).exp()).collect();
        // per element: the relative error of each value, not the vector's
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let rel = (g as f64 - w).abs() / w;
            assert!(
                rel < 1e-6,
                "{isa:?} exp({}) = {g}, want {w}: rel {rel:.2e}",
                x[i]
            );
        }
        let mut edge = vec![f32::NEG_INFINITY, -1000.0, -87.5, 0.0];
        simd::exp_slice(isa, &mut edge);
        let below = if isa == Isa::Scalar { 2 } else { 3 }; // libm keeps e^-87.5's denormal
        assert!(edge[..below].iter().all(|&v| v == 0.0), "{isa:?}: {edge:?}");
        assert_eq!(edge[3], 1.0, "{isa:?}: e^0");
    }
}

#[test]
fn activations_match_the_scalar_reference() {
    let mut rng = Rng::new(11);
    for isa in vector_isas() {
        for act in ACTS {
            for n in LENS {
                let (x, dy, lin) = (
                    data(&mut rng, n, 2.0),
                    data(&mut rng, n, 1.0),
                    data(&mut rng, n, 1.0),
                );
                let d0 = data(&mut rng, n, 1.0);
                let name = format!("{isa:?} {act:?} n={n}");

                let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
                activation::act_fwd(&mut want, &x, act);
                simd::act_fwd(isa, &mut got, &x, act);
                assert_close(&format!("act_fwd {name}"), &got, &want, 2e-6);

                let (mut want, mut got) = (d0.clone(), d0.clone());
                activation::act_bwd(&mut want, &dy, &x, act, true);
                simd::act_bwd(isa, &mut got, &dy, &x, act, true);
                assert_close(&format!("act_bwd {name}"), &got, &want, 2e-6);

                let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
                activation::gated_act_fwd(&mut want, &x, &lin, act);
                simd::gated_fwd(isa, &mut got, &x, &lin, act);
                assert_close(&format!("gated_act_fwd {name}"), &got, &want, 2e-6);

                let (mut wg, mut wl, mut gg, mut gl) =
                    (d0.clone(), d0.clone(), d0.clone(), d0.clone());
                activation::gated_act_bwd(&mut wg, &mut wl, &dy, &x, &lin, act, true);
                simd::gated_bwd(isa, &mut gg, &mut gl, &dy, &x, &lin, act, true);
                assert_close(&format!("gated_act_bwd dgate {name}"), &gg, &wg, 2e-6);
                assert_close(&format!("gated_act_bwd dlin {name}"), &gl, &wl, 2e-6);
            }
        }
    }
}

#[test]
fn norms_match_the_scalar_reference() {
    let mut rng = Rng::new(12);
    let rows = 3;
    for c in LENS {
        let n = rows * c;
        let x: Vec<f32> = (0..n).map(|_| (rng.normal() * 3.0 + 0.5) as f32).collect();
        let (w, b) = (data(&mut rng, c, 1.0), data(&mut rng, c, 1.0));
        let (dy, d0) = (data(&mut rng, n, 1.0), data(&mut rng, n, 1.0));
        let eps = 1e-6;

        let (mut y0, mut m0, mut r0) = (vec![0f32; n], vec![0f32; rows], vec![0f32; rows]);
        layernorm::layernorm_fwd(&mut y0, &mut m0, &mut r0, &x, &w, &b, c, eps);
        let (mut y1, mut m1, mut r1) = (vec![0f32; n], vec![0f32; rows], vec![0f32; rows]);
        layernorm::fast::layernorm_fwd(&mut y1, &mut m1, &mut r1, &x, &w, &b, c, eps);
        assert_close(&format!("layernorm_fwd out c={c}"), &y1, &y0, 1e-5);
        assert_close(&format!("layernorm_fwd mean c={c}"), &m1, &m0, 1e-5);
        assert_close(&format!("layernorm_fwd rstd c={c}"), &r1, &r0, 1e-5);

        let (mut dx0, mut dx1) = (d0.clone(), d0.clone());
        layernorm::layernorm_bwd(&mut dx0, &dy, &x, &w, &m0, &r0, c, true);
        layernorm::fast::layernorm_bwd(&mut dx1, &dy, &x, &w, &m0, &r0, c, true);
        assert_close(&format!("layernorm_bwd c={c}"), &dx1, &dx0, 1e-5);

        let (mut y0, mut r0) = (vec![0f32; n], vec![0f32; rows]);
        rmsnorm::rmsnorm_fwd(&mut y0, &mut r0, &x, &w, c, eps);
        let (mut y1, mut r1) = (vec![0f32; n], vec![0f32; rows]);
        rmsnorm::fast::rmsnorm_fwd(&mut y1, &mut r1, &x, &w, c, eps);
        assert_close(&format!("rmsnorm_fwd out c={c}"), &y1, &y0, 1e-5);
        assert_close(&format!("rmsnorm_fwd rstd c={c}"), &r1, &r0, 1e-5);

        let (mut dx0, mut dx1) = (d0.clone(), d0.clone());
        rmsnorm::rmsnorm_bwd(&mut dx0, &dy, &x, &w, &r0, c, true);
        rmsnorm::fast::rmsnorm_bwd(&mut dx1, &dy, &x, &w, &r0, c, true);
        assert_close(&format!("rmsnorm_bwd c={c}"), &dx1, &dx0, 1e-5);
    }
}

#[test]
fn row_ops_match_the_scalar_reference() {
    let mut rng = Rng::new(13);
    for isa in vector_isas() {
        for n in LENS {
            let mut x = data(&mut rng, n, 3.0);
            if n > 1 {
                x[n / 2] = f32::NEG_INFINITY; // a masked key (attention skips fully masked rows)
            }
            let m = simd::row_max(Isa::Scalar, &x);
            assert_eq!(simd::row_max(isa, &x), m, "{isa:?} row_max n={n}");

            let (mut want, mut got) = (x.clone(), x.clone());
            let s0 = simd::exp_sub(Isa::Scalar, &mut want, m);
            let s1 = simd::exp_sub(isa, &mut got, m);
            assert_close(&format!("{isa:?} exp_sub n={n}"), &got, &want, 2e-6);
            assert_close(&format!("{isa:?} exp_sub sum n={n}"), &[s1], &[s0], 1e-5);
            if n > 1 {
                assert_eq!(got[n / 2], 0.0, "{isa:?}: a masked key gets probability 0");
            }

            let p: Vec<f32> = want.iter().map(|v| v / s0).collect();
            let dp = data(&mut rng, n, 1.0);
            let (mut want, mut got) = (dp.clone(), dp.clone());
            simd::softmax_bwd_row(Isa::Scalar, &mut want, &p, 0.125);
            simd::softmax_bwd_row(isa, &mut got, &p, 0.125);
            assert_close(&format!("{isa:?} softmax_bwd_row n={n}"), &got, &want, 1e-5);

            // the norms' row pieces, which tests above see only on the detected set
            let (w, b, dy) = (
                data(&mut rng, n, 1.0),
                data(&mut rng, n, 1.0),
                data(&mut rng, n, 1.0),
            );
            let x: Vec<f32> = x
                .iter()
                .map(|v| if v.is_finite() { *v } else { 1.0 })
                .collect();
            let s = [
                simd::sum(Isa::Scalar, &x),
                simd::sum_sq_dev(Isa::Scalar, &x, 0.3),
            ];
            let t = [simd::sum(isa, &x), simd::sum_sq_dev(isa, &x, 0.3)];
            assert_close(&format!("{isa:?} sums n={n}"), &t, &s, 1e-5);
            for bias in [Some(&b[..]), None] {
                let (mut want, mut got) = (vec![0f32; n], vec![0f32; n]);
                simd::norm_row(Isa::Scalar, &mut want, &x, &w, bias, 0.3, 0.7);
                simd::norm_row(isa, &mut got, &x, &w, bias, 0.3, 0.7);
                assert_close(&format!("{isa:?} norm_row n={n}"), &got, &want, 2e-6);
            }
            let (a0, b0) = simd::norm_bwd_sums(Isa::Scalar, &dy, &x, &w, 0.3);
            let (a1, b1) = simd::norm_bwd_sums(isa, &dy, &x, &w, 0.3);
            assert_close(
                &format!("{isa:?} norm_bwd_sums n={n}"),
                &[a1, b1],
                &[a0, b0],
                1e-5,
            );
            let (mut want, mut got) = (b.clone(), b.clone());
            simd::norm_bwd_row(
                Isa::Scalar,
                &mut want,
                &dy,
                &x,
                &w,
                0.3,
                0.7,
                0.2,
                0.1,
                true,
            );
            simd::norm_bwd_row(isa, &mut got, &dy, &x, &w, 0.3, 0.7, 0.2, 0.1, true);
            assert_close(&format!("{isa:?} norm_bwd_row n={n}"), &got, &want, 2e-6);
        }
    }
}

/// Attention's score row: scaled, plus the bias, plus the 0 / -inf padding mask. A multiply
/// and two adds, unfused on every instruction set, so the result equals the scalar one bit for
/// bit, and a masked key is -inf whatever its score.
#[test]
fn scale_add_row_equals_the_scalar_reference() {
    let mut rng = Rng::new(17);
    for isa in vector_isas() {
        for n in LENS {
            let x = data(&mut rng, n, 3.0);
            let bias = data(&mut rng, n, 1.0);
            let mask: Vec<f32> = (0..n)
                .map(|j| if j % 5 == 3 { f32::NEG_INFINITY } else { 0.0 })
                .collect();
            for b in [Some(&bias[..]), None] {
                let (mut want, mut got) = (x.clone(), x.clone());
                simd::scale_add_row(Isa::Scalar, &mut want, 0.125, &mask, b);
                simd::scale_add_row(isa, &mut got, 0.125, &mask, b);
                assert_eq!(
                    got,
                    want,
                    "{isa:?} scale_add_row n={n} bias {}",
                    b.is_some()
                );
                for (j, v) in got.iter().enumerate() {
                    let want = 0.125 * x[j] + b.map_or(0.0, |b| b[j]);
                    match j % 5 {
                        3 => assert_eq!(*v, f32::NEG_INFINITY, "{isa:?} masked key {j}"),
                        _ => assert_eq!(*v, want, "{isa:?} visible key {j}"),
                    }
                }
            }
        }
    }
}

/// Softmax's normalisation, row·s: one multiply a value on every instruction set, so the
/// result equals the scalar reference bit for bit on every tail length.
#[test]
fn scale_row_equals_the_scalar_reference() {
    let mut rng = Rng::new(23);
    for isa in vector_isas() {
        for n in LENS {
            let x = data(&mut rng, n, 3.0);
            let (mut want, mut got) = (x.clone(), x.clone());
            simd::scale_row(Isa::Scalar, &mut want, 0.37);
            simd::scale_row(isa, &mut got, 0.37);
            assert_eq!(got, want, "{isa:?} scale_row n={n}");
            for (v, &x) in got.iter().zip(&x) {
                assert_eq!(*v, x * 0.37, "{isa:?} scale_row n={n}");
            }
        }
    }
}
