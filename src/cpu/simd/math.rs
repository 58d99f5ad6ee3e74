//! The math of each op, written once over [`Lanes`], and the slice drivers that walk a row
//! register by register.

use super::lanes::Lanes;
use crate::backend::Act;

// ---- the math, generic over the register ----

/// e^x (Cephes expf): 0 below -87.3, e^88 above 88.
#[inline(always)]
pub(crate) unsafe fn exp<S: Lanes>(x: S::V) -> S::V {
    let lo = S::splat(-87.3);
    let xc = S::max(S::min(x, S::splat(88.0)), lo);
    let n = S::round(S::mul(xc, S::splat(std::f32::consts::LOG2_E)));
    let r = S::fma(n, S::splat(-0.693_359_4), xc);
    let r = S::fma(n, S::splat(2.121_944_4e-4), r);
    let mut p = S::splat(1.987_569_1e-4);
    p = S::fma(p, r, S::splat(1.398_199_9e-3));
    p = S::fma(p, r, S::splat(8.333_452e-3));
    p = S::fma(p, r, S::splat(4.166_579_6e-2));
    p = S::fma(p, r, S::splat(0.166_666_65));
    p = S::fma(p, r, S::splat(0.5));
    let r2 = S::mul(r, r);
    let y = S::add(S::fma(p, r2, r), S::splat(1.0));
    S::select_lt(x, lo, S::splat(0.0), S::mul(y, S::pow2i(n)))
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044715;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// (erf(z), e^(-z²)) by Abramowitz-Stegun 7.1.26, the scalar reference's formula.
#[inline(always)]
pub(super) unsafe fn erf_and_gauss<S: Lanes>(z: S::V) -> (S::V, S::V) {
    let one = S::splat(1.0);
    let t = S::div(one, S::fma(S::splat(0.327_591_1), S::abs(z), one));
    let mut p = S::splat(1.061_405_4);
    p = S::fma(p, t, S::splat(-1.453_152));
    p = S::fma(p, t, S::splat(1.421_413_8));
    p = S::fma(p, t, S::splat(-0.284_496_74));
    p = S::fma(p, t, S::splat(0.254_829_6));
    p = S::mul(p, t);
    let gauss = exp::<S>(S::sub(S::splat(0.0), S::mul(z, z)));
    let erf = S::copysign(S::sub(one, S::mul(p, gauss)), z);
    (erf, gauss)
}

/// sigmoid(2u) for GELU's tanh form, u = √(2/π)(x + a x³), and d(2u)/dx.
#[inline(always)]
pub(super) unsafe fn gelu_tanh_parts<S: Lanes>(x: S::V) -> (S::V, S::V) {
    let x2 = S::mul(x, x);
    let k2 = S::splat(2.0 * SQRT_2_OVER_PI);
    let two_u = S::mul(S::mul(k2, x), S::fma(S::splat(GELU_A), x2, S::splat(1.0)));
    let e = exp::<S>(S::sub(S::splat(0.0), two_u));
    let s = S::div(S::splat(1.0), S::add(S::splat(1.0), e));
    let d_two_u = S::mul(k2, S::fma(S::splat(3.0 * GELU_A), x2, S::splat(1.0)));
    (s, d_two_u)
}

/// sigmoid(x).
#[inline(always)]
pub(super) unsafe fn sigmoid<S: Lanes>(x: S::V) -> S::V {
    let e = exp::<S>(S::sub(S::splat(0.0), x));
    S::div(S::splat(1.0), S::add(S::splat(1.0), e))
}

/// act(x).
#[inline(always)]
pub(super) unsafe fn act_value<S: Lanes>(act: Act, x: S::V) -> S::V {
    match act {
        Act::GeluErf => {
            let (erf, _) = erf_and_gauss::<S>(S::mul(x, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
            S::mul(S::mul(S::splat(0.5), x), S::add(S::splat(1.0), erf))
        }
        Act::GeluTanh => S::mul(x, gelu_tanh_parts::<S>(x).0),
        Act::Relu => S::relu(x),
        Act::Silu => S::mul(x, sigmoid::<S>(x)),
    }
}

/// (act(x), act'(x)).
#[inline(always)]
pub(super) unsafe fn act_value_grad<S: Lanes>(act: Act, x: S::V) -> (S::V, S::V) {
    let one = S::splat(1.0);
    match act {
        Act::GeluErf => {
            let (erf, gauss) =
                erf_and_gauss::<S>(S::mul(x, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
            let cdf = S::mul(S::splat(0.5), S::add(one, erf));
            let grad = S::fma(S::mul(x, gauss), S::splat(FRAC_1_SQRT_2PI), cdf);
            (S::mul(x, cdf), grad)
        }
        Act::GeluTanh => {
            let (s, d_two_u) = gelu_tanh_parts::<S>(x);
            // d/dx x·s(2u) = s + x·s(1 - s)·d(2u)/dx
            let ds = S::mul(S::mul(s, S::sub(one, s)), d_two_u);
            (S::mul(x, s), S::fma(x, ds, s))
        }
        Act::Relu => (S::relu(x), S::step(x)),
        Act::Silu => {
            let s = sigmoid::<S>(x);
            let grad = S::mul(s, S::fma(x, S::sub(one, s), one));
            (S::mul(x, s), grad)
        }
    }
}

// ---- slice drivers ----

/// Runs `$body` over register-sized blocks of `$len` elements with each `$i` (read) and `$o`
/// (read and written) pointing at the block, then once over the tail padded to a register
/// (zeros after the inputs' values, the padding's results dropped). A macro, not a closure:
/// a closure would be compiled without the instruction set of the function it sits in.
macro_rules! blocks {
    ($S:ty, $len:expr, [$($i:ident = $ip:expr),*], [$($o:ident = $op:expr),*], $body:block) => {{
        let len: usize = $len;
        let full = len / <$S>::N * <$S>::N;
        let mut at = 0;
        while at < full {
            $(let $i: *const f32 = ($ip).add(at);)*
            $(let $o: *mut f32 = ($op).add(at);)*
            $body
            at += <$S>::N;
        }
        let rest = len - full;
        if rest > 0 {
            $(let $i = {
                let mut t = [0f32; 16];
                std::ptr::copy_nonoverlapping(($ip).add(full), t.as_mut_ptr(), rest);
                t
            };)*
            $(let mut $o = {
                let mut t = [0f32; 16];
                std::ptr::copy_nonoverlapping(($op).add(full) as *const f32, t.as_mut_ptr(), rest);
                t
            };)*
            {
                $(let $i: *const f32 = $i.as_ptr();)*
                $(let $o: *mut f32 = $o.as_mut_ptr();)*
                $body
            }
            $(std::ptr::copy_nonoverlapping($o.as_ptr(), ($op).add(full), rest);)*
        }
    }};
}

/// What a backward op adds its gradient to: the register at `p` with `acc`, else zeros (the
/// bits adding into a zeroed buffer gives, without reading it).
#[inline(always)]
unsafe fn base_v<S: Lanes>(acc: bool, p: *const f32) -> S::V {
    if acc {
        S::load(p)
    } else {
        S::splat(0.0)
    }
}

#[inline(always)]
pub(super) unsafe fn act_fwd_g<S: Lanes>(out: &mut [f32], inp: &[f32], act: Act) {
    let (xp, yp) = (inp.as_ptr(), out.as_mut_ptr());
    blocks!(S, out.len(), [x = xp], [y = yp], {
        S::store(y, act_value::<S>(act, S::load(x)));
    });
}

#[inline(always)]
pub(super) unsafe fn act_bwd_g<S: Lanes>(
    dinp: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    act: Act,
    acc: bool,
) {
    let (dyp, xp, dxp) = (dout.as_ptr(), inp.as_ptr(), dinp.as_mut_ptr());
    blocks!(S, dinp.len(), [dy = dyp, x = xp], [dx = dxp], {
        let (_, g) = act_value_grad::<S>(act, S::load(x));
        S::store(dx, S::fma(S::load(dy), g, base_v::<S>(acc, dx)));
    });
}

#[inline(always)]
pub(super) unsafe fn gated_fwd_g<S: Lanes>(out: &mut [f32], gate: &[f32], lin: &[f32], act: Act) {
    let (gp, lp, yp) = (gate.as_ptr(), lin.as_ptr(), out.as_mut_ptr());
    blocks!(S, out.len(), [g = gp, l = lp], [y = yp], {
        S::store(y, S::mul(act_value::<S>(act, S::load(g)), S::load(l)));
    });
}

#[inline(always)]
pub(super) unsafe fn gated_bwd_g<S: Lanes>(
    dgate: &mut [f32],
    dlin: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    lin: &[f32],
    act: Act,
    acc: bool,
) {
    let (dyp, gp, lp) = (dout.as_ptr(), gate.as_ptr(), lin.as_ptr());
    let (dgp, dlp) = (dgate.as_mut_ptr(), dlin.as_mut_ptr());
    blocks!(
        S,
        dgate.len(),
        [dy = dyp, g = gp, l = lp],
        [dg = dgp, dl = dlp],
        {
            let dy = S::load(dy);
            let (v, grad) = act_value_grad::<S>(act, S::load(g));
            S::store(
                dg,
                S::fma(S::mul(dy, grad), S::load(l), base_v::<S>(acc, dg)),
            );
            S::store(dl, S::fma(dy, v, base_v::<S>(acc, dl)));
        }
    );
}

/// Σ x in lane order, then across the lanes; padding adds zeros.
#[inline(always)]
pub(super) unsafe fn sum_g<S: Lanes>(x: &[f32]) -> f32 {
    let mut acc = S::splat(0.0);
    let xp = x.as_ptr();
    blocks!(S, x.len(), [p = xp], [], {
        acc = S::add(acc, S::load(p));
    });
    S::sum(acc)
}

/// Σ (x - c)² (layer norm's variance about the mean, RMS norm's mean square with c = 0).
#[inline(always)]
pub(super) unsafe fn sum_sq_dev_g<S: Lanes>(x: &[f32], c: f32) -> f32 {
    let (mut acc, cv) = (S::splat(0.0), S::splat(c));
    let full = x.len() / S::N * S::N;
    let mut i = 0;
    while i < full {
        let d = S::sub(S::load(x.as_ptr().add(i)), cv);
        acc = S::fma(d, d, acc);
        i += S::N;
    }
    let mut s = S::sum(acc);
    for &v in &x[full..] {
        s += (v - c) * (v - c);
    }
    s
}

/// y = (x - mu)·rs·w + b (b None: no shift, as RMS norm).
#[inline(always)]
pub(super) unsafe fn norm_row_g<S: Lanes>(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    mu: f32,
    rs: f32,
) {
    let (muv, rsv) = (S::splat(mu), S::splat(rs));
    let (xp, wp, yp) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
    match b {
        Some(b) => {
            let bp = b.as_ptr();
            blocks!(S, y.len(), [x = xp, w = wp, b = bp], [y = yp], {
                let xh = S::mul(S::sub(S::load(x), muv), rsv);
                S::store(y, S::fma(xh, S::load(w), S::load(b)));
            })
        }
        None => blocks!(S, y.len(), [x = xp, w = wp], [y = yp], {
            S::store(y, S::mul(S::mul(S::sub(S::load(x), muv), rsv), S::load(w)));
        }),
    }
}

/// (Σ dy·w, Σ dy·w·(x - mu)) over one row.
#[inline(always)]
pub(super) unsafe fn norm_bwd_sums_g<S: Lanes>(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    mu: f32,
) -> (f32, f32) {
    let (mut a, mut b, muv) = (S::splat(0.0), S::splat(0.0), S::splat(mu));
    let (dyp, xp, wp) = (dy.as_ptr(), x.as_ptr(), w.as_ptr());
    blocks!(S, dy.len(), [dy = dyp, x = xp, w = wp], [], {
        let g = S::mul(S::load(dy), S::load(w));
        a = S::add(a, g);
        b = S::fma(g, S::sub(S::load(x), muv), b);
    });
    (S::sum(a), S::sum(b))
}

/// dx += dy·w·rs - ((x - mu)·k + c0): layer norm's backward row (c0 = mean_g·rs,
/// k = mean_gx·rs²) and RMS norm's (mu = c0 = 0).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn norm_bwd_row_g<S: Lanes>(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    mu: f32,
    rs: f32,
    k: f32,
    c0: f32,
    acc: bool,
) {
    let (muv, rsv, kv, c0v) = (S::splat(mu), S::splat(rs), S::splat(k), S::splat(c0));
    let (dyp, xp, wp, dxp) = (dy.as_ptr(), x.as_ptr(), w.as_ptr(), dx.as_mut_ptr());
    blocks!(S, dx.len(), [dy = dyp, x = xp, w = wp], [dx = dxp], {
        let g = S::mul(S::mul(S::load(dy), S::load(w)), rsv);
        let t = S::fma(S::sub(S::load(x), muv), kv, c0v);
        S::store(dx, S::add(base_v::<S>(acc, dx), S::sub(g, t)));
    });
}

/// row = e^(row - m); returns the sum. -inf entries give 0.
#[inline(always)]
pub(super) unsafe fn exp_sub_g<S: Lanes>(row: &mut [f32], m: f32) -> f32 {
    let (mut acc, mv) = (S::splat(0.0), S::splat(m));
    let full = row.len() / S::N * S::N;
    let rp = row.as_mut_ptr();
    blocks!(S, row.len(), [], [p = rp], {
        S::store(p, exp::<S>(S::sub(S::load(p), mv)));
    });
    let mut i = 0;
    while i < full {
        acc = S::add(acc, S::load(row.as_ptr().add(i)));
        i += S::N;
    }
    let mut s = S::sum(acc);
    for &v in &row[full..] {
        s += v;
    }
    s
}

/// row = row·s.
#[inline(always)]
pub(super) unsafe fn scale_row_g<S: Lanes>(row: &mut [f32], s: f32) {
    let (sv, rp) = (S::splat(s), row.as_mut_ptr());
    blocks!(S, row.len(), [], [x = rp], {
        S::store(x, S::mul(S::load(x), sv));
    });
}

/// max over the row (-inf when empty).
#[inline(always)]
pub(super) unsafe fn max_g<S: Lanes>(row: &[f32]) -> f32 {
    let mut acc = S::splat(f32::NEG_INFINITY);
    let full = row.len() / S::N * S::N;
    let mut i = 0;
    while i < full {
        acc = S::max(acc, S::load(row.as_ptr().add(i)));
        i += S::N;
    }
    let mut m = S::hmax(acc);
    for &v in &row[full..] {
        m = m.max(v);
    }
    m
}

/// ds = p·(ds - Σ p·ds)·scale over one row: attention backward's dS from dP.
#[inline(always)]
pub(super) unsafe fn softmax_bwd_row_g<S: Lanes>(ds: &mut [f32], p: &[f32], scale: f32) {
    let mut acc = S::splat(0.0);
    let full = p.len() / S::N * S::N;
    let mut i = 0;
    while i < full {
        acc = S::fma(S::load(p.as_ptr().add(i)), S::load(ds.as_ptr().add(i)), acc);
        i += S::N;
    }
    let mut d = S::sum(acc);
    for j in full..p.len() {
        d += p[j] * ds[j];
    }
    let (dv, sv) = (S::splat(d), S::splat(scale));
    let (pp, xp) = (p.as_ptr(), ds.as_mut_ptr());
    blocks!(S, p.len(), [p = pp], [x = xp], {
        S::store(x, S::mul(S::mul(S::load(p), S::sub(S::load(x), dv)), sv));
    });
}

/// row = row·scale + bias + add: attention's masked, biased scores.
#[inline(always)]
pub(super) unsafe fn scale_add_row_g<S: Lanes>(
    row: &mut [f32],
    scale: f32,
    add: &[f32],
    bias: Option<&[f32]>,
) {
    // as the scalar code's zip: the shortest slice's length (the callers pass equal ones)
    let n = row
        .len()
        .min(add.len())
        .min(bias.map_or(usize::MAX, |b| b.len()));
    let (sv, ap, rp) = (S::splat(scale), add.as_ptr(), row.as_mut_ptr());
    match bias {
        Some(b) => {
            let bp = b.as_ptr();
            blocks!(S, n, [a = ap, b = bp], [x = rp], {
                let y = S::add(S::mul(S::load(x), sv), S::load(b));
                S::store(x, S::add(y, S::load(a)));
            })
        }
        None => blocks!(S, n, [a = ap], [x = rp], {
            S::store(x, S::add(S::mul(S::load(x), sv), S::load(a)));
        }),
    }
}
