//! Each CPU op's backward against central finite differences in f64.
//!
//! The op functions of `src/cpu/<op>.rs` are generic over `Real`; here they run at f64, the
//! very code that ships in f32. For every op family a scalar f(x) = Σ r · forward(x) (r a
//! fixed random projection of the output) is differentiated two ways: the op's backward with
//! dout = r, and central differences of f. Shapes are awkward on purpose (T = 1, 7, 97, odd
//! C, head dims 8, 12, 16, odd head counts, padded rows). Each test also checks the op's
//! accumulation contract: outputs documented as `+=` are pre-filled with random values,
//! outputs documented as overwritten are pre-filled with NaN.

mod common;

use common::{assert_close, assert_close_floor, check_gradient, normals, uniforms};
use softprompt::internals::backend::attention::{bucket_lookup, relative_position_bucket};
use softprompt::internals::backend::{alibi_slope, Act, AttnDims, IGNORE_INDEX};
use softprompt::internals::cpu::activation;
use softprompt::internals::cpu::attention::{attention_bwd, attention_fwd, Bias, PositionBias};
use softprompt::internals::cpu::head;
use softprompt::internals::cpu::loss::cross_entropy_fwd_bwd;
use softprompt::internals::cpu::{embedding, layernorm, matmul, rmsnorm, rows};
use softprompt::internals::rng::Rng;

/// Central-difference step. Inputs are O(1), so truncation error ≈ H²·|f'''|/6 ≈ 1e-11 and
/// rounding error ≈ ε·|f|/H ≈ 2e-16 · |f| / 1e-5 ≈ 2e-11·|f| (|f| ≤ ~1e2 here).
const H: f64 = 1e-5;

/// Tolerances on the relative L2 error ‖analytic − FD‖ / ‖FD‖ (`softprompt::internals::closeness`, as
/// `assert_close` measures it), taken over the coordinates checked and again over the 4 random
/// directions. How they were chosen: the FD error budget above is ~1e-9 relative or less for
/// every op. Running this file with SOFTPROMPT_TEST_VERBOSE=1 prints every comparison; the
/// worst observed errors are given per line. Each tolerance is about 100× its op's worst
/// observed error, rounded up to a power of ten: wide enough that FD noise never fails,
/// and still far below what a missing or wrong term produces (1e-3 or more of the largest
/// entry, so at least 1e-3/√n ≥ 4e-5 in relative L2 over n ≤ 500 coordinates).
/// Conversion: the table was first set on max abs error / max |want|, whose worst values
/// follow "was". Re-measured in relative L2, every row keeps its tolerance: for all but two,
/// 100× the new worst rounds up to the same power of ten; embedding and rows keep 1e-8 at
/// 53× and 77× their worst (they stood at 67× and 106×), as nothing measured asks for more.
const TOL: &[(&str, f64)] = &[
    ("embedding", 1e-8),     // observed 1.9e-10, was 1.5e-10 (linear in the prompt)
    ("layernorm", 1e-6),     // observed 2.4e-9, was 2.9e-9
    ("rmsnorm", 1e-5),       // observed 3.1e-8, was 3.3e-8 (C = 1, |x| ~ √eps); else 3.8e-10
    ("linear", 1e-6),        // observed 4.8e-9, was 5.7e-9: M97×N41 outputs, large |f|, ε|f|/H
    ("activation", 1e-7),    // observed 6.6e-10, was 5.8e-10; ReLU sampled away from its kink
    ("gated", 1e-7),         // observed 6.9e-10, was 7.0e-10
    ("attention", 1e-6),     // observed 5.8e-9, was 5.5e-9 (T = 97)
    ("cross_entropy", 1e-5), // observed 1.1e-8, was 1.3e-8, logits offset by 1000 (|f| ~ 1e3)
    ("rows", 1e-8),          // observed 1.3e-10, was 9.4e-11 (gather/scatter/mean: linear)
    ("head", 1e-7),          // observed 2.1e-10, was 2.1e-10 (cls head: weight, bias, pooled)
    ("forward", 1e-12),      // naive f64 forward references, no FD: observed 4.5e-16, was 8.6e-16
];

fn tol(op: &str) -> f64 {
    TOL.iter()
        .find(|(name, _)| *name == op)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no tolerance for {op}"))
}

fn rand_ids(rng: &mut Rng, n: usize, below: usize) -> Vec<i32> {
    (0..n).map(|_| rng.below(below as u64) as i32).collect()
}

fn sum_prod(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------------------------------------
// embedding / prompt_grad

/// B rows reading P prompt rows each from a table of K prompts (K = 1: no index, the one
/// prompt), T tokens of width C, with BERT's tables or without; with `lens`, each row's
/// prompt of its own random length P_b <= P (a batch mixing prompt lengths).
#[allow(clippy::too_many_arguments)]
fn embedding_case(
    b: usize,
    t: usize,
    k: usize,
    p: usize,
    c: usize,
    bert: bool,
    lens: bool,
    seed: u64,
) {
    let name = format!("embedding B{b} T{t} K{k} P{p} C{c} bert={bert} lens={lens}");
    let mut rng = Rng::new(seed);
    let v = 11;
    let wte = normals(&mut rng, v * c, 1.0);
    let wpe = normals(&mut rng, (p + t + 3) * c, 1.0);
    let wtt = normals(&mut rng, 2 * c, 1.0);
    let ids = rand_ids(&mut rng, b * t, v);
    let types = rand_ids(&mut rng, b * t, 2);
    let prompt = normals(&mut rng, k * p * c, 1.0);
    let r = normals(&mut rng, b * (p + t) * c, 1.0);
    let idx = (k > 1).then(|| rand_ids(&mut rng, b, k));
    let lens = lens.then(|| rand_ids(&mut rng, b, p + 1));
    let (wpe_o, wtt_o, types_o) = if bert {
        (Some(&wpe[..]), Some(&wtt[..]), Some(&types[..]))
    } else {
        (None, None, None)
    };
    let fwd = |prompt: &[f64]| -> Vec<f64> {
        let mut out = vec![f64::NAN; b * (p + t) * c];
        embedding::embedding_fwd(
            &mut out,
            prompt,
            &wte,
            wpe_o,
            wtt_o,
            &ids,
            types_o,
            idx.as_deref(),
            lens.as_deref(),
            b,
            t,
            k,
            p,
            c,
        )
        .expect("embedding_fwd");
        out
    };
    // forward semantics: row b's P_b prompt rows (of prompt idx[b]) take positions
    // 0..P_b-1 and token type 0, its tokens the positions behind them, zeros after
    let out = fwd(&prompt);
    let mut want = vec![0.0; out.len()];
    for bi in 0..b {
        let kb = idx.as_ref().map_or(0, |idx| idx[bi] as usize);
        let pb = lens.as_ref().map_or(p, |lens| lens[bi] as usize);
        for s in 0..pb + t {
            for x in 0..c {
                let mut e = if s < pb {
                    prompt[(kb * p + s) * c + x]
                } else {
                    wte[ids[bi * t + s - pb] as usize * c + x]
                };
                if bert {
                    let ty = if s < pb {
                        0
                    } else {
                        types[bi * t + s - pb] as usize
                    };
                    e += wpe[s * c + x] + wtt[ty * c + x];
                }
                want[(bi * (p + t) + s) * c + x] = e;
            }
        }
    }
    assert_close(&format!("{name}: forward"), &out, &want, tol("forward"));
    // backward adds into dprompt, each row's gradient into its own prompt
    let pre = normals(&mut rng, k * p * c, 1.0);
    let mut dprompt = pre.clone();
    let (idx_o, lens_o) = (idx.as_deref(), lens.as_deref());
    embedding::prompt_grad_bwd(&mut dprompt, &r, idx_o, lens_o, b, t, k, p, c);
    let grad: Vec<f64> = dprompt.iter().zip(&pre).map(|(d, p0)| d - p0).collect();
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
    check_gradient(
        &name,
        &mut f,
        &prompt,
        &grad,
        H,
        tol("embedding"),
        &mut rng,
        400,
    );
}

#[test]
fn embedding_prompt_grad_matches_finite_differences() {
    embedding_case(3, 5, 1, 4, 7, true, false, 1);
    embedding_case(1, 1, 1, 1, 1, true, false, 2);
    embedding_case(2, 7, 1, 3, 13, false, false, 3);
    embedding_case(2, 97, 1, 1, 5, false, false, 4);
    // a table of prompts: 5 rows over 3 prompts (one may be read by none), and 4 over 2
    embedding_case(5, 6, 3, 4, 7, true, false, 5);
    embedding_case(4, 3, 2, 2, 5, false, false, 6);
    // prompts of different lengths in one batch (P_b from 0 to P)
    embedding_case(6, 5, 3, 8, 7, true, true, 7);
    embedding_case(5, 3, 2, 5, 4, false, true, 8);
}

/// A prompt index outside the table, or a row's prompt longer than the table's P rows, is an
/// error naming it (and the row), before any row is written.
#[test]
fn embedding_rejects_a_prompt_index_or_length_outside_the_table() {
    let c = 3;
    let wte = vec![0.0f64; 4 * c];
    let prompt = vec![0.0f64; 2 * 2 * c];
    let mut out = vec![0.0f64; 2 * 4 * c];
    // two rows of two tokens over a table of 2 prompts of 2 rows
    let mut fwd = |idx: &[i32], lens: Option<&[i32]>| {
        let ids = [1, 2, 3, 0];
        embedding::embedding_fwd(
            &mut out,
            &prompt,
            &wte,
            None,
            None,
            &ids,
            None,
            Some(idx),
            lens,
            2,
            2,
            2,
            2,
            c,
        )
    };
    let err = fwd(&[1, 2], None).expect_err("prompt 2 of a 2-prompt table");
    assert!(err.to_string().contains("prompt index"), "{err}");
    let err = fwd(&[1, 0], Some(&[2, 3])).expect_err("a prompt of 3 rows in a table of 2");
    let msg = err.to_string();
    assert!(
        msg.contains("prompt lengths") && msg.contains("row 1"),
        "{msg}"
    );
}

#[test]
fn embedding_rejects_bad_ids_and_short_position_table() {
    let c = 3;
    let wte = vec![0.0f64; 4 * c];
    let wpe = vec![0.0f64; 5 * c];
    let prompt = vec![0.0f64; 2 * c];
    let mut out = vec![0.0f64; 4 * c];
    let err = embedding::embedding_fwd(
        &mut out,
        &prompt,
        &wte,
        None,
        None,
        &[1, 4],
        None,
        None,
        None,
        1,
        2,
        1,
        2,
        c,
    )
    .expect_err("id 4 of a 4-row table");
    assert!(err.to_string().contains("input_ids"), "{err}");
    let err = embedding::embedding_fwd(
        &mut out,
        &prompt,
        &wte,
        None,
        None,
        &[-1, 0],
        None,
        None,
        None,
        1,
        2,
        1,
        2,
        c,
    )
    .expect_err("negative id");
    assert!(err.to_string().contains("-1"), "{err}");
    let mut out = vec![0.0f64; 6 * c];
    let err = embedding::embedding_fwd(
        &mut out,
        &prompt,
        &wte,
        Some(&wpe),
        None,
        &[0, 1, 2, 3],
        None,
        None,
        None,
        1,
        4,
        1,
        2,
        c,
    )
    .expect_err("P + T = 6 > 5 positions");
    assert!(err.to_string().contains("position"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// layernorm

fn layernorm_case(n: usize, c: usize, eps: f64, seed: u64) {
    let name = format!("layernorm N{n} C{c} eps{eps:e}");
    let mut rng = Rng::new(seed);
    let x: Vec<f64> = normals(&mut rng, n * c, 2.0)
        .iter()
        .map(|v| v + 0.5)
        .collect();
    let w: Vec<f64> = normals(&mut rng, c, 0.2).iter().map(|v| 1.0 + v).collect();
    let bias = normals(&mut rng, c, 0.1);
    let r = normals(&mut rng, n * c, 1.0);
    let fwd = |x: &[f64]| {
        let (mut out, mut mean, mut rstd) =
            (vec![f64::NAN; n * c], vec![f64::NAN; n], vec![f64::NAN; n]);
        layernorm::layernorm_fwd(&mut out, &mut mean, &mut rstd, x, &w, &bias, c, eps);
        (out, mean, rstd)
    };
    let (out, mean, rstd) = fwd(&x);
    // forward against the textbook formula
    let mut want = vec![0.0; n * c];
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let mu = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / c as f64;
        for j in 0..c {
            want[i * c + j] = (row[j] - mu) / (var + eps).sqrt() * w[j] + bias[j];
        }
    }
    assert_close(&format!("{name}: forward"), &out, &want, tol("forward"));
    // backward adds into its input gradient (src/backend/mod.rs)
    let mut dinp = vec![0.0; n * c];
    layernorm::layernorm_bwd(&mut dinp, &r, &x, &w, &mean, &rstd, c, true);
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x).0);
    check_gradient(&name, &mut f, &x, &dinp, H, tol("layernorm"), &mut rng, 300);
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    layernorm_case(5, 7, 1e-12, 10);
    layernorm_case(3, 37, 1e-3, 11);
    layernorm_case(2, 97, 1e-5, 12);
    layernorm_case(1, 48, 1e-12, 13);
}

#[test]
fn layernorm_single_channel_is_constant() {
    // C = 1: x - mean is exactly 0, so out = bias and the gradient is exactly 0
    let (x, w, b) = ([3.0f64, -2.0], [1.5f64], [0.25f64]);
    let (mut out, mut mean, mut rstd) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    layernorm::layernorm_fwd(&mut out, &mut mean, &mut rstd, &x, &w, &b, 1, 1e-12);
    assert_eq!(out, [0.25, 0.25]);
    let mut dinp = [0.0; 2];
    layernorm::layernorm_bwd(&mut dinp, &[1.0, -4.0], &x, &w, &mean, &rstd, 1, true);
    assert_eq!(dinp, [0.0, 0.0]);
}

// ---------------------------------------------------------------------------------------------
// rmsnorm

fn rmsnorm_case(n: usize, c: usize, eps: f64, std: f64, seed: u64) {
    let name = format!("rmsnorm N{n} C{c} eps{eps:e}");
    let mut rng = Rng::new(seed);
    let x = normals(&mut rng, n * c, std);
    let w: Vec<f64> = normals(&mut rng, c, 0.2).iter().map(|v| 1.0 + v).collect();
    let r = normals(&mut rng, n * c, 1.0);
    let fwd = |x: &[f64]| {
        let (mut out, mut rstd) = (vec![f64::NAN; n * c], vec![f64::NAN; n]);
        rmsnorm::rmsnorm_fwd(&mut out, &mut rstd, x, &w, c, eps);
        (out, rstd)
    };
    let (out, rstd) = fwd(&x);
    let mut want = vec![0.0; n * c];
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let ms = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
        for j in 0..c {
            want[i * c + j] = w[j] * row[j] / (ms + eps).sqrt();
        }
    }
    assert_close(&format!("{name}: forward"), &out, &want, tol("forward"));
    // backward adds into dinp (the residual stream)
    let pre = normals(&mut rng, n * c, 1.0);
    let mut dinp = pre.clone();
    rmsnorm::rmsnorm_bwd(&mut dinp, &r, &x, &w, &rstd, c, true);
    let grad: Vec<f64> = dinp.iter().zip(&pre).map(|(d, p)| d - p).collect();
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x).0);
    check_gradient(&name, &mut f, &x, &grad, H, tol("rmsnorm"), &mut rng, 300);
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    rmsnorm_case(5, 7, 1e-6, 1.5, 20);
    rmsnorm_case(3, 40, 1e-3, 1.5, 21);
    rmsnorm_case(2, 97, 1e-6, 1.5, 22);
    // C = 1: out = w·x/sqrt(x² + eps), whose slope is only visible for |x| ~ sqrt(eps)
    rmsnorm_case(4, 1, 1e-3, 0.05, 23);
}

// ---------------------------------------------------------------------------------------------
// linear (matmul)

fn linear_case(m: usize, k: usize, n: usize, seed: u64) {
    let name = format!("linear M{m} K{k} N{n}");
    let mut rng = Rng::new(seed);
    let x = normals(&mut rng, m * k, 1.0);
    let w = normals(&mut rng, n * k, 1.0 / (k as f64).sqrt());
    let bias = normals(&mut rng, n, 0.1);
    let r = normals(&mut rng, m * n, 1.0);
    let fwd = |x: &[f64], bias: Option<&[f64]>| {
        let mut out = vec![f64::NAN; m * n];
        matmul::linear_fwd(&mut out, x, &w, bias, m, k, n);
        out
    };
    for with_bias in [false, true] {
        let b = with_bias.then_some(&bias[..]);
        let out = fwd(&x, b);
        let mut want = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let acc: f64 = (0..k).map(|l| x[i * k + l] * w[j * k + l]).sum();
                want[i * n + j] = acc + if with_bias { bias[j] } else { 0.0 };
            }
        }
        assert_close(
            &format!("{name}: forward bias={with_bias}"),
            &out,
            &want,
            tol("forward"),
        );
    }
    // backward adds: from zeros, and from a random gradient
    let mut dinp = vec![0.0; m * k];
    matmul::linear_bwd(&mut dinp, &r, &w, m, k, n, true);
    let pre = normals(&mut rng, m * k, 1.0);
    let mut acc = pre.clone();
    matmul::linear_bwd(&mut acc, &r, &w, m, k, n, true);
    // without `accumulate` it writes over what was there, the same bits as adding to zeros
    let mut written = pre.clone();
    matmul::linear_bwd(&mut written, &r, &w, m, k, n, false);
    assert_eq!(written, dinp, "{name}: written");
    let added: Vec<f64> = acc.iter().zip(&pre).map(|(a, p)| a - p).collect();
    assert_close(
        &format!("{name}: accumulate"),
        &added,
        &dinp,
        tol("forward"),
    );
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x, Some(&bias)));
    check_gradient(&name, &mut f, &x, &dinp, H, tol("linear"), &mut rng, 200);
}

#[test]
fn linear_backward_matches_finite_differences() {
    linear_case(1, 1, 1, 30);
    linear_case(7, 13, 5, 31);
    // above the threading threshold of 32^3: the parallel GEMM path
    linear_case(97, 37, 41, 32);
    linear_case(3, 96, 1, 33);
}

// ---------------------------------------------------------------------------------------------
// activation

const ACTS: [Act; 4] = [Act::GeluErf, Act::GeluTanh, Act::Relu, Act::Silu];

/// Inputs spread over [-6, 6] (GELU's tails included), kept 0.01 away from ReLU's kink.
fn act_inputs(rng: &mut Rng, n: usize) -> Vec<f64> {
    uniforms(rng, n, -6.0, 6.0)
        .into_iter()
        .map(|x| {
            if x.abs() < 0.01 {
                x.signum() * 0.01 + x
            } else {
                x
            }
        })
        .collect()
}

#[test]
fn activation_backward_matches_finite_differences() {
    let mut rng = Rng::new(40);
    let n = 101;
    for act in ACTS {
        let x = act_inputs(&mut rng, n);
        let r = normals(&mut rng, n, 1.0);
        let fwd = |x: &[f64]| {
            let mut out = vec![f64::NAN; n];
            activation::act_fwd(&mut out, x, act);
            out
        };
        let mut dinp = vec![0.0; n];
        activation::act_bwd(&mut dinp, &r, &x, act, true);
        let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
        check_gradient(
            &format!("act {act:?}"),
            &mut f,
            &x,
            &dinp,
            H,
            tol("activation"),
            &mut rng,
            200,
        );
    }
}

#[test]
fn activation_forward_matches_closed_forms() {
    // values from the defining formulas (transformers' ACT2FN), computed independently here
    let xs = [-3.0f64, -0.5, 0.0, 0.7, 2.5];
    for &x in &xs {
        let gelu = 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt()));
        let gelu_new = 0.5
            * x
            * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh());
        let relu = x.max(0.0);
        let silu = x / (1.0 + (-x).exp());
        for (act, want) in [
            (Act::GeluErf, gelu),
            (Act::GeluTanh, gelu_new),
            (Act::Relu, relu),
            (Act::Silu, silu),
        ] {
            let got = act.value(x);
            assert!(
                (got - want).abs() <= 1e-14,
                "{act:?}({x}) = {got}, want {want}"
            );
        }
    }
    // erf and tanh GELU differ: an engine that mixes them up must fail the fixtures
    assert!((Act::GeluErf.value(1.5f64) - Act::GeluTanh.value(1.5f64)).abs() > 1e-4);
}

#[test]
fn gated_activation_backward_matches_finite_differences() {
    let mut rng = Rng::new(41);
    let n = 57;
    for act in ACTS {
        let gate = act_inputs(&mut rng, n);
        let lin = normals(&mut rng, n, 1.0);
        let r = normals(&mut rng, n, 1.0);
        let fwd = |gl: &[f64]| {
            let mut out = vec![f64::NAN; n];
            activation::gated_act_fwd(&mut out, &gl[..n], &gl[n..], act);
            out
        };
        let gl: Vec<f64> = gate.iter().chain(&lin).copied().collect();
        let out = fwd(&gl);
        let want: Vec<f64> = (0..n).map(|i| act.value(gate[i]) * lin[i]).collect();
        assert_close(
            &format!("gated {act:?}: forward"),
            &out,
            &want,
            tol("forward"),
        );
        let (mut dgate, mut dlin) = (vec![0.0; n], vec![0.0; n]);
        activation::gated_act_bwd(&mut dgate, &mut dlin, &r, &gate, &lin, act, true);
        let grad: Vec<f64> = dgate.iter().chain(&dlin).copied().collect();
        let mut f = |gl: &[f64]| sum_prod(&r, &fwd(gl));
        check_gradient(
            &format!("gated {act:?}"),
            &mut f,
            &gl,
            &grad,
            H,
            tol("gated"),
            &mut rng,
            200,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// attention

/// Relative-position bias setup: (num_buckets, max_distance, bidirectional).
#[derive(Clone, Copy)]
struct BiasCfg {
    nb: usize,
    md: usize,
    bidir: bool,
}

/// AttnDims (B, Tq, Tk, H, Hkv, D) in one line, for the cases below.
fn attn_dims(b: usize, tq: usize, tk: usize, h: usize, hkv: usize, d: usize) -> AttnDims {
    AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    }
}

struct AttnCase {
    name: &'static str,
    dims: AttnDims,
    /// real keys per batch row (the rest are padding); 0 = a fully masked row
    key_len: Vec<usize>,
    causal: bool,
    scale: f64,
    bias: Option<BiasCfg>,
    /// ALiBi instead of a table (`bias` None)
    alibi: bool,
    max_coords: usize,
}

/// out, lse by the textbook formula, one (b, h, i) at a time, with the bias looked up through
/// `relative_position_bucket` directly (not through `bucket_lookup`).
#[allow(clippy::too_many_arguments)]
fn naive_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: &[i32],
    table: &[f64],
    case: &AttnCase,
) -> (Vec<f64>, Vec<f64>) {
    let AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    } = case.dims;
    let off = tk as i64 - tq as i64;
    let mut out = vec![0.0; b * tq * h * d];
    let mut lse = vec![0.0; b * h * tq];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..tq {
                let mut scores = Vec::new();
                for j in 0..tk {
                    // key j and query i sit at positions j and i + Tk - Tq
                    let rel = j as i64 - i as i64 - off;
                    if mask[bi * tk + j] == 0 || (case.causal && rel > 0) {
                        continue;
                    }
                    let kvh = hi / (h / hkv);
                    let qi = &q[((bi * tq + i) * h + hi) * d..][..d];
                    let kj = &k[((bi * tk + j) * hkv + kvh) * d..][..d];
                    let mut s = case.scale * sum_prod(qi, kj);
                    if let Some(bc) = case.bias {
                        let bucket =
                            relative_position_bucket(j as i64 - i as i64, bc.bidir, bc.nb, bc.md);
                        s += table[bucket * h + hi];
                    }
                    if case.alibi {
                        s += alibi_slope(hi, h) * rel as f64;
                    }
                    scores.push((j, s));
                }
                if scores.is_empty() {
                    lse[(bi * h + hi) * tq + i] = f64::NEG_INFINITY;
                    continue;
                }
                let m = scores
                    .iter()
                    .map(|&(_, s)| s)
                    .fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|&(_, s)| (s - m).exp()).sum();
                lse[(bi * h + hi) * tq + i] = m + z.ln();
                for &(j, s) in &scores {
                    let p = (s - m).exp() / z;
                    for x in 0..d {
                        out[((bi * tq + i) * h + hi) * d + x] +=
                            p * v[((bi * tk + j) * hkv + hi / (h / hkv)) * d + x];
                    }
                }
            }
        }
    }
    (out, lse)
}

fn attention_case(case: AttnCase, seed: u64) {
    let AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    } = case.dims;
    let name = format!(
        "attention {} B{b} Tq{tq} Tk{tk} H{h} Hkv{hkv} D{d}",
        case.name
    );
    let mut rng = Rng::new(seed);
    let (nq, nk) = (b * tq * h * d, b * tk * hkv * d);
    let qkv = normals(&mut rng, nq + 2 * nk, 1.0);
    let mask: Vec<i32> = (0..b * tk)
        .map(|i| ((i % tk) < case.key_len[i / tk]) as i32)
        .collect();
    let table = case
        .bias
        .map(|bc| normals(&mut rng, bc.nb * h, 1.0))
        .unwrap_or_default();
    let buckets = case
        .bias
        .map(|bc| bucket_lookup(tq, tk, bc.bidir, bc.nb, bc.md))
        .unwrap_or_default();
    let bias = || {
        if case.alibi {
            return Some(Bias::Alibi);
        }
        case.bias.map(|_| {
            Bias::Relative(PositionBias {
                table: &table[..],
                buckets: &buckets[..],
            })
        })
    };
    let fwd = |qkv: &[f64]| {
        let (mut out, mut lse) = (vec![f64::NAN; nq], vec![f64::NAN; b * h * tq]);
        let (q, kv) = qkv.split_at(nq);
        let (k, v) = kv.split_at(nk);
        attention_fwd(
            &mut out,
            &mut lse,
            q,
            k,
            v,
            None,
            &mask,
            bias(),
            case.causal,
            case.scale,
            case.dims,
        );
        (out, lse)
    };
    let (out, lse) = fwd(&qkv);
    let (q, kv) = qkv.split_at(nq);
    let (k, v) = kv.split_at(nk);
    let (want_out, want_lse) = naive_attention(q, k, v, &mask, &table, &case);
    assert_close(
        &format!("{name}: forward out"),
        &out,
        &want_out,
        tol("forward"),
    );
    // -inf rows (no visible key) must match exactly; compare the finite ones numerically
    for (i, (&g, &w)) in lse.iter().zip(&want_lse).enumerate() {
        assert_eq!(
            g.is_finite(),
            w.is_finite(),
            "{name}: lse[{i}] = {g}, want {w}"
        );
    }
    let fin = |x: &[f64]| {
        x.iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect::<Vec<_>>()
    };
    assert_close(
        &format!("{name}: forward lse"),
        &fin(&lse),
        &fin(&want_lse),
        tol("forward"),
    );
    // backward overwrites dq, dk, dv
    let r = normals(&mut rng, nq, 1.0);
    let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nk], vec![0.0; nk]);
    attention_bwd(
        &mut dq,
        &mut dk,
        &mut dv,
        None,
        &r,
        q,
        k,
        v,
        None,
        &lse,
        &mask,
        bias(),
        case.causal,
        case.scale,
        case.dims,
        true,
    );
    let grad: Vec<f64> = dq.iter().chain(&dk).chain(&dv).copied().collect();
    // rows with no visible key produce zeros, never NaN
    for bi in 0..b {
        if case.key_len[bi] == 0 {
            assert!(
                out[bi * tq * h * d..(bi + 1) * tq * h * d]
                    .iter()
                    .all(|&x| x == 0.0),
                "{name}: masked row output"
            );
            assert!(
                dq[bi * tq * h * d..(bi + 1) * tq * h * d]
                    .iter()
                    .all(|&x| x == 0.0),
                "{name}: masked row dq"
            );
            assert!(
                dk[bi * tk * hkv * d..(bi + 1) * tk * hkv * d]
                    .iter()
                    .all(|&x| x == 0.0),
                "{name}: masked row dk"
            );
        }
    }
    // padded keys receive no gradient
    for bi in 0..b {
        for j in case.key_len[bi]..tk {
            let range = (bi * tk + j) * hkv * d..(bi * tk + j + 1) * hkv * d;
            assert!(
                dk[range.clone()]
                    .iter()
                    .chain(&dv[range])
                    .all(|&x| x == 0.0),
                "{name}: padded key {bi},{j} got a gradient"
            );
        }
    }
    let mut f = |qkv: &[f64]| sum_prod(&r, &fwd(qkv).0);
    check_gradient(
        &name,
        &mut f,
        &qkv,
        &grad,
        H,
        tol("attention"),
        &mut rng,
        case.max_coords,
    );
}

#[test]
fn attention_bert_key_padding() {
    let dims = attn_dims(2, 7, 7, 3, 3, 12);
    attention_case(
        AttnCase {
            name: "bert padding",
            dims,
            key_len: vec![7, 4],
            causal: false,
            scale: 1.0 / 12f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 600,
        },
        50,
    );
}

#[test]
fn attention_single_token() {
    let dims = attn_dims(2, 1, 1, 2, 2, 8);
    attention_case(
        AttnCase {
            name: "T=1",
            dims,
            key_len: vec![1, 1],
            causal: false,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 600,
        },
        51,
    );
    attention_case(
        AttnCase {
            name: "T=1 causal bias",
            dims,
            key_len: vec![1, 1],
            causal: true,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 8,
                md: 20,
                bidir: false,
            }),
            alibi: false,
            max_coords: 600,
        },
        52,
    );
}

#[test]
fn attention_long_sequence_with_padding() {
    let dims = attn_dims(1, 97, 97, 1, 1, 16);
    attention_case(
        AttnCase {
            name: "T=97 padded",
            dims,
            key_len: vec![87],
            causal: false,
            scale: 0.25,
            bias: None,
            alibi: false,
            max_coords: 150,
        },
        53,
    );
}

#[test]
fn attention_t5_relative_bias_bidirectional() {
    // T = 29 with 16 buckets / max distance 12 reaches the logarithmic and saturated buckets
    let dims = attn_dims(2, 29, 29, 3, 3, 8);
    attention_case(
        AttnCase {
            name: "t5 encoder bias",
            dims,
            key_len: vec![29, 17],
            causal: false,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 16,
                md: 12,
                bidir: true,
            }),
            alibi: false,
            max_coords: 250,
        },
        54,
    );
}

#[test]
fn attention_t5_causal_with_bias() {
    let dims = attn_dims(2, 9, 9, 3, 3, 12);
    attention_case(
        AttnCase {
            name: "t5 decoder causal bias",
            dims,
            key_len: vec![9, 9],
            causal: true,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 8,
                md: 16,
                bidir: false,
            }),
            alibi: false,
            max_coords: 400,
        },
        55,
    );
    // causal without bias, long, odd head count
    let dims = attn_dims(1, 97, 97, 3, 3, 8);
    attention_case(
        AttnCase {
            name: "causal T=97",
            dims,
            key_len: vec![97],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 150,
        },
        56,
    );
}

#[test]
fn attention_cross_tq_ne_tk() {
    // T5 cross-attention: decoder queries over padded encoder keys, no bias
    let dims = attn_dims(3, 5, 13, 3, 3, 12);
    attention_case(
        AttnCase {
            name: "cross",
            dims,
            key_len: vec![13, 8, 1],
            causal: false,
            scale: 1.0,
            bias: None,
            alibi: false,
            max_coords: 500,
        },
        57,
    );
    // the op also supports a bias with Tq != Tk (lookup of Tq + Tk - 1 buckets)
    let dims = attn_dims(1, 7, 12, 2, 2, 16);
    attention_case(
        AttnCase {
            name: "cross with bias",
            dims,
            key_len: vec![10],
            causal: false,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 13,
                md: 20,
                bidir: true,
            }),
            alibi: false,
            max_coords: 500,
        },
        58,
    );
}

#[test]
fn attention_fully_masked_keys() {
    // batch row 1 has no visible key at all: out = 0, lse = -inf, gradients 0, no NaN
    let dims = attn_dims(2, 7, 7, 3, 3, 8);
    attention_case(
        AttnCase {
            name: "fully masked row",
            dims,
            key_len: vec![5, 0],
            causal: false,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 8,
                md: 20,
                bidir: true,
            }),
            alibi: false,
            max_coords: 500,
        },
        59,
    );
    // causal with the first key padded: query 0 sees nothing, the others see keys 1..i
    let dims = attn_dims(1, 6, 6, 2, 2, 8);
    let mut rng = Rng::new(60);
    let (n, tq) = (6 * 2 * 8, 6);
    let q = normals(&mut rng, n, 1.0);
    let k = normals(&mut rng, n, 1.0);
    let v = normals(&mut rng, n, 1.0);
    let mask = [0, 1, 1, 1, 1, 1];
    let (mut out, mut lse) = (vec![f64::NAN; n], vec![f64::NAN; 2 * tq]);
    attention_fwd(
        &mut out, &mut lse, &q, &k, &v, None, &mask, None, true, 1.0, dims,
    );
    assert!(
        out[..16].iter().all(|&x| x == 0.0),
        "query 0 has no visible key: out must be 0"
    );
    assert!(lse[0] == f64::NEG_INFINITY && lse[tq] == f64::NEG_INFINITY);
    assert!(out.iter().all(|x| x.is_finite()) && lse[1..tq].iter().all(|x| x.is_finite()));
    // query 1 sees key 1 only: its output is exactly v[1]
    assert_close("query 1 = v[key 1]", &out[16..32], &v[16..32], 1e-15);
    let r = normals(&mut rng, n, 1.0);
    let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    attention_bwd(
        &mut dq, &mut dk, &mut dv, None, &r, &q, &k, &v, None, &lse, &mask, None, true, 1.0, dims,
        true,
    );
    assert!(
        dq.iter().chain(&dk).chain(&dv).all(|x| x.is_finite()),
        "no NaN in the gradients"
    );
    assert!(
        dq[..16].iter().all(|&x| x == 0.0)
            && dk[..16].iter().all(|&x| x == 0.0)
            && dv[..16].iter().all(|&x| x == 0.0)
    );
}

#[test]
fn attention_grouped_query_heads() {
    // 6 query heads over 2 key/value heads (Llama's GQA), causal, padded keys; and one
    // key/value head for 5 query heads (Qwen2 fixture's multi-query attention)
    let dims = attn_dims(2, 9, 9, 6, 2, 8);
    attention_case(
        AttnCase {
            name: "gqa causal",
            dims,
            key_len: vec![9, 6],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 400,
        },
        61,
    );
    let dims = attn_dims(1, 7, 7, 5, 1, 8);
    attention_case(
        AttnCase {
            name: "mqa",
            dims,
            key_len: vec![7],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 400,
        },
        62,
    );
}

#[test]
fn attention_alibi() {
    // BLOOM: 6 heads (not a power of two: the slopes of 4 heads, then every other of 8)
    let dims = attn_dims(2, 11, 11, 6, 6, 8);
    attention_case(
        AttnCase {
            name: "alibi causal",
            dims,
            key_len: vec![11, 7],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: true,
            max_coords: 400,
        },
        63,
    );
}

#[test]
fn attention_causal_with_more_keys_than_queries() {
    // positions aligned at the end: the 5 queries are the last 5 of 12 keys (a cache, prefix
    // keys), with ALiBi over grouped heads; and more queries than keys (early rows see nothing)
    let dims = attn_dims(2, 5, 12, 4, 2, 8);
    attention_case(
        AttnCase {
            name: "causal Tk > Tq alibi",
            dims,
            key_len: vec![12, 9],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: true,
            max_coords: 400,
        },
        64,
    );
    let dims = attn_dims(1, 8, 5, 2, 2, 8);
    attention_case(
        AttnCase {
            name: "causal Tq > Tk",
            dims,
            key_len: vec![5],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 400,
        },
        65,
    );
}

#[test]
fn alibi_slopes_follow_bloom() {
    // the fixture's 6 heads: 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1, 2^-3 (tests/fixtures/README.md)
    let want = [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125];
    for (h, w) in want.iter().enumerate() {
        assert_eq!(alibi_slope(h, 6), *w, "head {h}");
    }
    // 16 heads (bloom-560m): 2^(-(h+1)/2)
    for h in 0..16 {
        assert!((alibi_slope(h, 16) - 2f64.powf(-(h as f64 + 1.0) / 2.0)).abs() < 1e-15);
    }
}

/// The decode step equals the last row of a causal attention over the same keys: without a
/// bias, with ALiBi, and with T5's relative bias (the decode step reads query row Tk − 1 of a
/// (Tmax, Tmax) attention's lookup, the causal attention over Tk keys its own (1, Tk) one).
#[test]
fn attention_decode_matches_causal_attention() {
    use softprompt::internals::cpu::attention_decode::{attention_decode, DecodeBias};
    let (b, tk, tmax, h, hkv, d) = (2, 9, 13, 6, 3, 8);
    let mut rng = Rng::new(66);
    let k = normals(&mut rng, b * tmax * hkv * d, 1.0);
    let v = normals(&mut rng, b * tmax * hkv * d, 1.0);
    let q = normals(&mut rng, b * h * d, 1.0);
    // row 1 has two padded keys at the front (left padding)
    let mask: Vec<i32> = (0..b * tmax)
        .map(|i| (i / tmax == 0 || i % tmax >= 2) as i32)
        .collect();
    // 8 buckets, max distance 6: distances 0..9 span exact and logarithmic buckets
    let table = normals(&mut rng, 8 * h, 1.0);
    let lookup = bucket_lookup(tmax, tmax, false, 8, 6);
    // the causal attention's own: key j at relative position j − (Tk − 1)
    let own: Vec<i32> = (0..tk)
        .map(|j| relative_position_bucket(j as i64 - (tk as i64 - 1), false, 8, 6) as i32)
        .collect();
    for kind in ["none", "alibi", "relative"] {
        let dims = AttnDims {
            b,
            tq: 1,
            tk,
            h,
            hkv,
            d,
        };
        let (decode_bias, bias) = match kind {
            "alibi" => (Some(DecodeBias::Alibi), Some(Bias::Alibi)),
            "relative" => (
                Some(DecodeBias::Relative(PositionBias {
                    table: &table,
                    buckets: &lookup[tmax - tk..tmax],
                })),
                Some(Bias::Relative(PositionBias {
                    table: &table,
                    buckets: &own,
                })),
            ),
            _ => (None, None),
        };
        let mut out = vec![f64::NAN; b * h * d];
        attention_decode(&mut out, &q, &k, &v, &mask, decode_bias, 0.3, dims, tmax);
        // the same through attention_fwd over the first Tk rows, query at the end
        let take = |x: &[f64]| -> Vec<f64> {
            (0..b)
                .flat_map(|bi| x[bi * tmax * hkv * d..][..tk * hkv * d].to_vec())
                .collect()
        };
        let kmask: Vec<i32> = (0..b)
            .flat_map(|bi| mask[bi * tmax..][..tk].to_vec())
            .collect();
        let mut want = vec![f64::NAN; b * h * d];
        let mut lse = vec![0.0; b * h];
        attention_fwd(
            &mut want,
            &mut lse,
            &q,
            &take(&k),
            &take(&v),
            None,
            &kmask,
            bias,
            true,
            0.3,
            dims,
        );
        assert_close(&format!("decode bias {kind}"), &out, &want, 1e-13);
    }
}

/// RoPE: forward against the rotate_half formula, and backward (the transpose) against finite
/// differences, at positions that are not 0..T (a left-padded row).
#[test]
fn rope_forward_and_backward() {
    use softprompt::internals::backend::rope::{rope_inv_freq, Llama3Scaling};
    use softprompt::internals::cpu::rope::{rope_bwd, rope_fwd};
    let (b, t, h, d) = (2, 5, 3, 8);
    let scaling = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16.0,
    };
    let inv: Vec<f64> = rope_inv_freq(d, 10000.0, Some(scaling))
        .into_iter()
        .map(f64::from)
        .collect();
    let pos: Vec<i32> = vec![0, 1, 2, 3, 4, 0, 0, 7, 8, 30];
    let mut rng = Rng::new(67);
    let x = normals(&mut rng, b * t * h * d, 1.0);
    let mut y = x.clone();
    rope_fwd(&mut y, &inv, &pos, h, d);
    let half = d / 2;
    let mut want = vec![0.0; x.len()];
    for (r, &p) in pos.iter().enumerate() {
        for hi in 0..h {
            let base = (r * h + hi) * d;
            for i in 0..half {
                let f = p as f64 * inv[i];
                let (a, c) = (x[base + i], x[base + i + half]);
                want[base + i] = a * f.cos() - c * f.sin();
                want[base + i + half] = c * f.cos() + a * f.sin();
            }
        }
    }
    assert_close("rope_fwd", &y, &want, 1e-14);
    let r = normals(&mut rng, x.len(), 1.0);
    let mut grad = r.clone();
    rope_bwd(&mut grad, &inv, &pos, h, d);
    let mut f = |x: &[f64]| {
        let mut y = x.to_vec();
        rope_fwd(&mut y, &inv, &pos, h, d);
        sum_prod(&r, &y)
    };
    check_gradient("rope", &mut f, &x, &grad, H, tol("attention"), &mut rng, 60);
}

// ---------------------------------------------------------------------------------------------
// cross-entropy

fn cross_entropy_case(m: usize, v: usize, ignored: &[usize], offset: f64, seed: u64) {
    let name = format!("cross_entropy M{m} V{v} ignored{ignored:?} offset{offset}");
    let mut rng = Rng::new(seed);
    let logits: Vec<f64> = normals(&mut rng, m * v, 2.0)
        .iter()
        .map(|x| x + offset)
        .collect();
    let targets: Vec<i32> = (0..m)
        .map(|i| {
            if ignored.contains(&i) {
                IGNORE_INDEX
            } else {
                rng.below(v as u64) as i32
            }
        })
        .collect();
    let count = m - ignored.len();
    let scale = 1.0 / count.max(1) as f64;
    let run = |x: &[f64]| {
        let mut buf = x.to_vec();
        let mut losses = vec![f64::NAN; m];
        cross_entropy_fwd_bwd(&mut buf, &mut losses, &targets, v, scale).expect("cross_entropy");
        (buf, losses)
    };
    let (grad, losses) = run(&logits);
    for i in 0..m {
        let row = &logits[i * v..(i + 1) * v];
        if targets[i] == IGNORE_INDEX {
            assert_eq!(losses[i], 0.0, "{name}: ignored row {i} loss");
            assert!(
                grad[i * v..(i + 1) * v].iter().all(|&g| g == 0.0),
                "{name}: ignored row {i} gradient"
            );
            continue;
        }
        let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln();
        let want = lse - row[targets[i] as usize];
        // relative to max(|loss|, 1): losses near 0 are measured absolutely
        assert_close_floor(
            &format!("{name}: row {i} loss"),
            &[losses[i]],
            &[want],
            1e-12,
            1.0,
        );
    }
    let mut f = |x: &[f64]| run(x).1.iter().sum::<f64>() * scale;
    check_gradient(
        &name,
        &mut f,
        &logits,
        &grad,
        H,
        tol("cross_entropy"),
        &mut rng,
        300,
    );
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    cross_entropy_case(7, 13, &[2, 5], 0.0, 70);
    cross_entropy_case(1, 1, &[], 0.0, 71);
    cross_entropy_case(5, 97, &[0], 0.0, 72);
    // large logits: the max-shift keeps it finite
    cross_entropy_case(3, 11, &[], 1000.0, 73);
    // every row ignored: loss 0 and gradient 0
    cross_entropy_case(3, 5, &[0, 1, 2], 0.0, 74);
}

#[test]
fn cross_entropy_rejects_labels_outside_vocab() {
    for bad in [5, -1, -99, i32::MAX] {
        let mut logits = vec![0.0f64; 2 * 5];
        let mut losses = vec![0.0f64; 2];
        let err = cross_entropy_fwd_bwd(&mut logits, &mut losses, &[0, bad], 5, 1.0)
            .expect_err("bad label");
        let msg = err.to_string();
        assert!(
            msg.contains("labels") && msg.contains(&bad.to_string()),
            "{msg}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// rows: gather / scatter / mean_pool

#[test]
fn gather_scatter_rows_match_finite_differences() {
    let mut rng = Rng::new(80);
    let (n, c) = (7, 5);
    // repeated and unordered indices: scatter must accumulate
    let idx = [6, 0, 3, 3, 6, 1];
    let m = idx.len();
    let inp = normals(&mut rng, n * c, 1.0);
    let r = normals(&mut rng, m * c, 1.0);
    let fwd = |x: &[f64]| {
        let mut out = vec![f64::NAN; m * c];
        rows::gather_rows(&mut out, x, &idx, c);
        out
    };
    let out = fwd(&inp);
    for (mi, &row) in idx.iter().enumerate() {
        assert_eq!(
            &out[mi * c..(mi + 1) * c],
            &inp[row as usize * c..(row as usize + 1) * c]
        );
    }
    let pre = normals(&mut rng, n * c, 1.0);
    let mut dinp = pre.clone();
    rows::scatter_rows_bwd(&mut dinp, &r, &idx, c);
    let grad: Vec<f64> = dinp.iter().zip(&pre).map(|(d, p)| d - p).collect();
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
    check_gradient(
        "gather/scatter rows",
        &mut f,
        &inp,
        &grad,
        H,
        tol("rows"),
        &mut rng,
        400,
    );
    // rows never indexed get exactly nothing
    for row in [2usize, 4, 5] {
        assert!(
            grad[row * c..(row + 1) * c]
                .iter()
                .all(|&g| g.abs() < 1e-15),
            "row {row}"
        );
    }
}

#[test]
fn mean_pool_matches_finite_differences() {
    let mut rng = Rng::new(81);
    let (b, t, c) = (3, 7, 5);
    // masked means: 1/count on the pooled rows, 0 elsewhere (row 2 pools one row, like cls)
    let lens = [7usize, 3, 1];
    let mut weight = vec![0.0f64; b * t];
    for bi in 0..b {
        for s in 0..lens[bi] {
            weight[bi * t + s] = 1.0 / lens[bi] as f64;
        }
    }
    let inp = normals(&mut rng, b * t * c, 1.0);
    let r = normals(&mut rng, b * c, 1.0);
    let fwd = |x: &[f64]| {
        let mut out = vec![f64::NAN; b * c];
        rows::mean_pool_fwd(&mut out, x, &weight, t, c);
        out
    };
    let out = fwd(&inp);
    let mut want = vec![0.0; b * c];
    for bi in 0..b {
        for s in 0..lens[bi] {
            for x in 0..c {
                want[bi * c + x] += inp[(bi * t + s) * c + x] / lens[bi] as f64;
            }
        }
    }
    assert_close("mean_pool forward", &out, &want, tol("forward"));
    let pre = normals(&mut rng, b * t * c, 1.0);
    let mut dinp = pre.clone();
    rows::mean_pool_bwd(&mut dinp, &r, &weight, t, c);
    let grad: Vec<f64> = dinp.iter().zip(&pre).map(|(d, p)| d - p).collect();
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
    check_gradient(
        "mean_pool",
        &mut f,
        &inp,
        &grad,
        H,
        tol("rows"),
        &mut rng,
        400,
    );
}

// ---------------------------------------------------------------------------------------------
// the cls head: cls_head_fwd, cls_xent_grad, cls_head_bwd against finite differences of the
// mean cross-entropy in f64, for the weight, the bias and the pooled states

fn head_case(b: usize, k: usize, c: usize, seed: u64) {
    let name = format!("cls head B{b} K{k} C{c}");
    let mut rng = Rng::new(seed);
    let pooled = normals(&mut rng, b * c, 1.0);
    let weight = normals(&mut rng, k * c, 1.0 / (c as f64).sqrt());
    let bias = normals(&mut rng, k, 0.5);
    let labels = rand_ids(&mut rng, b, k);
    let loss = |pooled: &[f64], weight: &[f64], bias: &[f64]| {
        let mut logits = vec![0.0; b * k];
        head::cls_head_fwd(&mut logits, pooled, weight, bias, k, c);
        let mut total = 0.0;
        for (row, &t) in logits.chunks(k).zip(&labels) {
            let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|x| (x - m).exp()).sum();
            total += sum.ln() + m - row[t as usize];
        }
        total / b as f64
    };
    let mut logits = vec![0.0; b * k];
    head::cls_head_fwd(&mut logits, &pooled, &weight, &bias, k, c);
    let mut dlogits = vec![f64::NAN; b * k];
    head::cls_xent_grad(&mut dlogits, &logits, &labels, k);
    let (mut dw, mut db, mut dp) = (vec![0.0; k * c], vec![0.0; k], vec![0.0; b * c]);
    head::cls_head_bwd(&mut dw, &mut db, &mut dp, &dlogits, &pooled, &weight, k, c);
    let t = tol("head");
    check_gradient(
        &format!("{name} dweight"),
        &mut |w| loss(&pooled, w, &bias),
        &weight,
        &dw,
        H,
        t,
        &mut rng,
        100,
    );
    check_gradient(
        &format!("{name} dbias"),
        &mut |bb| loss(&pooled, &weight, bb),
        &bias,
        &db,
        H,
        t,
        &mut rng,
        100,
    );
    check_gradient(
        &format!("{name} dpooled"),
        &mut |p| loss(p, &weight, &bias),
        &pooled,
        &dp,
        H,
        t,
        &mut rng,
        100,
    );
}

#[test]
fn cls_head_matches_finite_differences() {
    head_case(1, 2, 5, 60);
    head_case(7, 3, 13, 61);
    head_case(4, 5, 9, 62);
}
