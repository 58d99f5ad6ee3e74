//! The prompt encoder's dense layers on the host: y = x Wᵀ + b and ReLU, forward beside
//! backward. Sums run in f64: the encoder is a few rows, and its gradient is compared with
//! PyTorch's at 1e-4.

use crate::error::{ensure_len, Result};

/// y (n, out) = x (n, in) · w (out, in)ᵀ + b (out).
pub(super) fn linear_fwd(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    n: usize,
    n_in: usize,
    n_out: usize,
) -> Result<Vec<f32>> {
    ensure_len("linear input", n * n_in, x.len())?;
    ensure_len("linear weight", n_out * n_in, w.len())?;
    ensure_len("linear bias", n_out, b.len())?;
    let mut y = Vec::with_capacity(n * n_out);
    for row in x.chunks_exact(n_in) {
        for (w_row, &bias) in w.chunks_exact(n_in).zip(b) {
            let dot: f64 = row
                .iter()
                .zip(w_row)
                .map(|(&a, &c)| a as f64 * c as f64)
                .sum();
            y.push((dot + bias as f64) as f32);
        }
    }
    Ok(y)
}

/// From dy (n, out): dx (n, in) = dy · w, dw (out, in) = dyᵀ · x, db (out) = Σ_rows dy.
pub(super) fn linear_bwd(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    n_in: usize,
    n_out: usize,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    ensure_len("linear output gradient", n * n_out, dy.len())?;
    ensure_len("linear input", n * n_in, x.len())?;
    ensure_len("linear weight", n_out * n_in, w.len())?;
    let mut dx = vec![0.0f64; n * n_in];
    let mut dw = vec![0.0f64; n_out * n_in];
    let mut db = vec![0.0f64; n_out];
    for ((dy_row, x_row), dx_row) in dy
        .chunks_exact(n_out)
        .zip(x.chunks_exact(n_in))
        .zip(dx.chunks_exact_mut(n_in))
    {
        for (((&g, w_row), dw_row), db_o) in dy_row
            .iter()
            .zip(w.chunks_exact(n_in))
            .zip(dw.chunks_exact_mut(n_in))
            .zip(db.iter_mut())
        {
            let g = g as f64;
            *db_o += g;
            for ((dxi, &wi), (dwi, &xi)) in dx_row
                .iter_mut()
                .zip(w_row)
                .zip(dw_row.iter_mut().zip(x_row))
            {
                *dxi += g * wi as f64;
                *dwi += g * xi as f64;
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    Ok((f(dx), f(dw), f(db)))
}

/// ReLU in place.
pub(super) fn relu_fwd(y: &mut [f32]) {
    y.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// dy *= [pre > 0], `pre` the ReLU's input.
pub(super) fn relu_bwd(dy: &mut [f32], pre: &[f32]) {
    dy.iter_mut()
        .zip(pre)
        .for_each(|(g, &x)| *g = if x > 0.0 { *g } else { 0.0 });
}
