//! LayerNorm and RMSNorm: forward against the textbook formulas, backward against finite
//! differences.

use crate::common::{assert_close, check_gradient, normals};
use crate::{sum_prod, tol, H};
use softprompt::internals::cpu::{layernorm, rmsnorm};
use softprompt::internals::rng::Rng;

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
