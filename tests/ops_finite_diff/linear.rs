//! The GEMM (`linear`) and what reads logits: the cross-entropy loss and the cls head.

use crate::common::{assert_close, assert_close_floor, check_gradient, normals};
use crate::{rand_ids, sum_prod, tol, H};
use softprompt::internals::backend::IGNORE_INDEX;
use softprompt::internals::cpu::head;
use softprompt::internals::cpu::loss::cross_entropy_fwd_bwd;
use softprompt::internals::cpu::matmul;
use softprompt::internals::rng::Rng;

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

/// linear_heads_fwd/bwd (a linear layer per head, W (H·N, K)): forward against the naive sum,
/// backward as the adjoint by finite differences, written = added to zeros bit for bit.
fn linear_heads_case(m: usize, h: usize, k: usize, n: usize, seed: u64) {
    let name = format!("linear_heads M{m} H{h} K{k} N{n}");
    let mut rng = Rng::new(seed);
    let x = normals(&mut rng, m * h * k, 1.0);
    let w = normals(&mut rng, h * n * k, 1.0 / (k as f64).sqrt());
    let r = normals(&mut rng, m * h * n, 1.0);
    let fwd = |x: &[f64]| {
        let mut out = vec![f64::NAN; m * h * n];
        matmul::linear_heads_fwd(&mut out, x, &w, m, h, k, n);
        out
    };
    let mut want = vec![0.0; m * h * n];
    for (i, hi, j) in
        (0..m).flat_map(|i| (0..h).flat_map(move |hi| (0..n).map(move |j| (i, hi, j))))
    {
        let wrow = &w[(hi * n + j) * k..][..k];
        want[(i * h + hi) * n + j] = (0..k).map(|l| x[(i * h + hi) * k + l] * wrow[l]).sum();
    }
    assert_close(&format!("{name}: forward"), &fwd(&x), &want, tol("forward"));
    let mut dinp = vec![0.0; m * h * k];
    matmul::linear_heads_bwd(&mut dinp, &r, &w, m, h, k, n, true);
    let mut written = vec![f64::NAN; m * h * k];
    matmul::linear_heads_bwd(&mut written, &r, &w, m, h, k, n, false);
    assert_eq!(written, dinp, "{name}: written");
    let pre = normals(&mut rng, m * h * k, 1.0);
    let mut acc = pre.clone();
    matmul::linear_heads_bwd(&mut acc, &r, &w, m, h, k, n, true);
    let added: Vec<f64> = acc.iter().zip(&pre).map(|(a, p)| a - p).collect();
    assert_close(
        &format!("{name}: accumulate"),
        &added,
        &dinp,
        tol("forward"),
    );
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
    check_gradient(&name, &mut f, &x, &dinp, H, tol("linear"), &mut rng, 200);
}

#[test]
fn linear_heads_backward_matches_finite_differences() {
    linear_heads_case(1, 1, 1, 1, 34);
    linear_heads_case(7, 3, 13, 5, 35);
    // T5's fold: K = C > N = D, and the other way round
    linear_heads_case(9, 5, 40, 8, 36);
    linear_heads_case(9, 5, 8, 40, 37);
}

/// Sizes whose element counts overflow (M·H = 2^64 wrapped to 0) are refused naming
/// the operand, where a zero length passed every buffer check and the product ran over rows
/// no buffer holds (here K 0 forward and N 0 backward: each wrote nothing and said Ok).
#[test]
fn linear_sizes_that_overflow_are_refused() {
    use softprompt::internals::backend::{DType, MatmulOps, Storage};
    use softprompt::internals::CpuBackend;
    let be = CpuBackend::<f32>::new();
    let (m, h, k, n) = (1usize << 62, 4, 0, 1);
    let mut y = be.zeros(DType::F32, 4).unwrap();
    let (x, w) = (
        be.zeros(DType::F32, 4).unwrap(),
        be.zeros(DType::F32, 4).unwrap(),
    );
    let e = be.linear_heads_fwd(&mut y, &x, &w, m, h, k, n).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("linear_heads inp") && e.contains("4611686018427387904 · 4 · 0"),
        "{e}"
    );
    let e = be
        .linear_heads_bwd(&mut y, &x, &w, m, h, n, k, false)
        .unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("linear_heads dinp") && e.contains("4611686018427387904 · 4 · 1"),
        "{e}"
    );
    // the plain products the same way: M·K = 2^64 forward (N 0: nothing to write), M·N
    // backward (K 0)
    let e = be
        .linear_fwd(&mut y, &x, &w, None, m, 4, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear inp") && e.contains("4611686018427387904 · 1 · 4"),
        "{e}"
    );
    let e = be
        .linear_bwd(&mut y, &x, &w, m, 0, 4, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear dout") && e.contains("4611686018427387904 · 1 · 4"),
        "{e}"
    );
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
    // write mode over NaN: every element the op leaves unwritten (or reads) fails below
    let (mut dw, mut db, mut dp) = (
        vec![f64::NAN; k * c],
        vec![f64::NAN; k],
        vec![f64::NAN; b * c],
    );
    head::cls_head_bwd(
        &mut dw, &mut db, &mut dp, &dlogits, &pooled, &weight, k, c, false,
    );
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
