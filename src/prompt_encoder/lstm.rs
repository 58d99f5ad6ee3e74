//! One layer of PEFT's bidirectional LSTM head (PyTorch's `nn.LSTM`, gates in the order
//! input, forget, cell, output), forward beside backward (backpropagation through time, in the
//! reverse of the forward's order). Batch 1: PEFT runs the encoder on one row of indices.

use super::PromptEncoder;
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Gates per hidden unit: input, forget, cell, output.
pub(super) const LSTM_GATES: usize = 4;

/// One direction's states, indexed by position t: the gates after their activations (P, 4h),
/// the cell (P, h) and the hidden state (P, h).
struct DirTape {
    gates: Vec<f64>,
    c: Vec<f64>,
    h: Vec<f64>,
}

/// A layer's input (P, n_in) and both directions' states.
pub(super) struct LstmTape {
    x: Vec<f32>,
    n_in: usize,
    dirs: Vec<DirTape>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// PEFT's names of layer `l`'s tensors in direction `dir` (0 forward, 1 reverse).
fn names(l: usize, dir: usize) -> [String; 4] {
    let s = if dir == 1 { "_reverse" } else { "" };
    ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].map(|w| format!("lstm_head.{w}_l{l}{s}"))
}

/// Positions in the order direction `dir` visits them.
fn order(p: usize, dir: usize) -> Vec<usize> {
    if dir == 0 {
        (0..p).collect()
    } else {
        (0..p).rev().collect()
    }
}

/// The state before position t in direction `dir`: None at the start.
fn before(t: usize, p: usize, dir: usize) -> Option<usize> {
    if dir == 0 {
        t.checked_sub(1)
    } else {
        (t + 1 < p).then_some(t + 1)
    }
}

fn at(v: &[f64], i: usize) -> f64 {
    v.get(i).copied().unwrap_or(0.0)
}

fn at32(v: &[f32], i: usize) -> f64 {
    v.get(i).copied().unwrap_or(0.0) as f64
}

/// Layer `l` over x (P, n_in): the output (P, 2h), forward then reverse hidden states side by
/// side, and its tape.
pub(super) fn layer_fwd(
    enc: &PromptEncoder,
    l: usize,
    x: &[f32],
    p: usize,
    n_in: usize,
) -> Result<(Vec<f32>, LstmTape)> {
    let h = enc.cfg.hidden;
    let g4 = LSTM_GATES * h;
    crate::error::ensure_len("lstm input", p * n_in, x.len())?;
    let mut out = vec![0.0f32; p * 2 * h];
    let mut dirs = Vec::with_capacity(2);
    for dir in 0..2 {
        let [wih, whh, bih, bhh] = names(l, dir).map(|n| enc.get(&n));
        let (wih, whh, bih, bhh) = (wih?, whh?, bih?, bhh?);
        let mut tape = DirTape {
            gates: vec![0.0; p * g4],
            c: vec![0.0; p * h],
            h: vec![0.0; p * h],
        };
        for t in order(p, dir) {
            let prev = before(t, p, dir);
            let mut a = vec![0.0f64; g4];
            for (j, aj) in a.iter_mut().enumerate() {
                let mut s = at32(bih, j) + at32(bhh, j);
                for k in 0..n_in {
                    s += at32(wih, j * n_in + k) * at32(x, t * n_in + k);
                }
                if let Some(q) = prev {
                    for k in 0..h {
                        s += at32(whh, j * h + k) * at(&tape.h, q * h + k);
                    }
                }
                *aj = s;
            }
            for k in 0..h {
                let (i, f) = (sigmoid(at(&a, k)), sigmoid(at(&a, h + k)));
                let (g, o) = (at(&a, 2 * h + k).tanh(), sigmoid(at(&a, 3 * h + k)));
                let c_prev = prev.map_or(0.0, |q| at(&tape.c, q * h + k));
                let c = f * c_prev + i * g;
                let hh = o * c.tanh();
                for (slot, v) in [(k, i), (h + k, f), (2 * h + k, g), (3 * h + k, o)] {
                    if let Some(s) = tape.gates.get_mut(t * g4 + slot) {
                        *s = v;
                    }
                }
                if let (Some(cs), Some(hs)) = (tape.c.get_mut(t * h + k), tape.h.get_mut(t * h + k))
                {
                    (*cs, *hs) = (c, hh);
                }
                if let Some(o) = out.get_mut(t * 2 * h + dir * h + k) {
                    *o = hh as f32;
                }
            }
        }
        dirs.push(tape);
    }
    Ok((
        out,
        LstmTape {
            x: x.to_vec(),
            n_in,
            dirs,
        },
    ))
}

/// From d_out (P, 2h): adds layer `l`'s weight and bias gradients to `grads` and returns
/// d_x (P, n_in).
pub(super) fn layer_bwd(
    enc: &PromptEncoder,
    l: usize,
    tape: &LstmTape,
    d_out: &[f32],
    grads: &mut BTreeMap<String, Vec<f32>>,
) -> Result<Vec<f32>> {
    let (p, h, n_in) = (enc.cfg.p, enc.cfg.hidden, tape.n_in);
    let g4 = LSTM_GATES * h;
    crate::error::ensure_len("lstm output gradient", p * 2 * h, d_out.len())?;
    let mut dx = vec![0.0f64; p * n_in];
    for (dir, st) in tape.dirs.iter().enumerate() {
        let [n_wih, n_whh, n_bih, n_bhh] = names(l, dir);
        let (wih, whh) = (enc.get(&n_wih)?, enc.get(&n_whh)?);
        let mut dwih = vec![0.0f64; g4 * n_in];
        let mut dwhh = vec![0.0f64; g4 * h];
        let mut db = vec![0.0f64; g4];
        let (mut dh_next, mut dc_next) = (vec![0.0f64; h], vec![0.0f64; h]);
        for t in order(p, dir).into_iter().rev() {
            let prev = before(t, p, dir);
            let mut da = vec![0.0f64; g4];
            for k in 0..h {
                let g = |slot: usize| at(&st.gates, t * g4 + slot * h + k);
                let (i, f, gc, o) = (g(0), g(1), g(2), g(3));
                let tc = at(&st.c, t * h + k).tanh();
                let dh = at32(d_out, t * 2 * h + dir * h + k) + at(&dh_next, k);
                let dc = dh * o * (1.0 - tc * tc) + at(&dc_next, k);
                let c_prev = prev.map_or(0.0, |q| at(&st.c, q * h + k));
                let d_gates = [
                    dc * gc * i * (1.0 - i),
                    dc * c_prev * f * (1.0 - f),
                    dc * i * (1.0 - gc * gc),
                    dh * tc * o * (1.0 - o),
                ];
                for (slot, v) in d_gates.into_iter().enumerate() {
                    if let Some(s) = da.get_mut(slot * h + k) {
                        *s = v;
                    }
                }
                if let Some(s) = dc_next.get_mut(k) {
                    *s = dc * f;
                }
            }
            dh_next.iter_mut().for_each(|v| *v = 0.0);
            for (j, &a) in da.iter().enumerate() {
                if let Some(s) = db.get_mut(j) {
                    *s += a;
                }
                for k in 0..n_in {
                    if let Some(s) = dwih.get_mut(j * n_in + k) {
                        *s += a * at32(&tape.x, t * n_in + k);
                    }
                    if let Some(s) = dx.get_mut(t * n_in + k) {
                        *s += a * at32(wih, j * n_in + k);
                    }
                }
                if let Some(q) = prev {
                    for k in 0..h {
                        if let Some(s) = dwhh.get_mut(j * h + k) {
                            *s += a * at(&st.h, q * h + k);
                        }
                        if let Some(s) = dh_next.get_mut(k) {
                            *s += a * at32(whh, j * h + k);
                        }
                    }
                }
            }
        }
        let f = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
        grads.insert(n_wih, f(dwih));
        grads.insert(n_whh, f(dwhh));
        grads.insert(n_bih, f(db.clone()));
        grads.insert(n_bhh, f(db));
    }
    if dx.len() != p * n_in {
        return Err(Error::Unsupported("lstm input gradient size".into()));
    }
    Ok(dx.into_iter().map(|x| x as f32).collect())
}
