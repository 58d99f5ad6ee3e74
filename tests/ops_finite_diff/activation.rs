//! The activations, plain and gated: closed forms and finite differences.

use crate::common::{assert_close, check_gradient, normals, uniforms};
use crate::{sum_prod, tol, H};
use softprompt::internals::backend::Act;
use softprompt::internals::cpu::activation;
use softprompt::internals::rng::Rng;

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
