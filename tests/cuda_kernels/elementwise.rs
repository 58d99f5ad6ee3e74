//! The activations (plain and gated), the elementwise adds and scales, and the gradient norm's
//! sum of squares.

use crate::common::assert_close;
use crate::{randn, Pair, Store, F32};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::Act;
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::rng::Rng;

const ACTS: [Act; 4] = [Act::GeluErf, Act::GeluTanh, Act::Relu, Act::Silu];
const LENGTHS: [usize; 5] = [1, 7, 97, 129 * 37, 10_000];

pub(super) fn check_activations(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(13);
    for act in ACTS {
        for n in LENGTHS {
            let x = s.up(st.dt, &randn(&mut rng, n, 2.0));
            let lin = s.up(st.dt, &randn(&mut rng, n, 1.0));
            let dy = s.up(st.dt, &randn(&mut rng, n, 1.0));
            let mut y = s.out(st.dt, n);
            be.act_fwd(&mut y.0, &x.0, act, n).unwrap();
            s.cpu.act_fwd(&mut y.1, &x.1, act, n).unwrap();
            s.check(&format!("act_fwd {act:?} n={n}"), &y, st.out);
            let mut dx = s.grad(st.dt, n, &mut rng);
            be.act_bwd(&mut dx.0, &dy.0, &x.0, act, n, true).unwrap();
            s.cpu.act_bwd(&mut dx.1, &dy.1, &x.1, act, n, true).unwrap();
            s.check(&format!("act_bwd {act:?} n={n}"), &dx, st.out);
            let mut g = s.out(st.dt, n);
            be.gated_act_fwd(&mut g.0, &x.0, &lin.0, act, n).unwrap();
            s.cpu.gated_act_fwd(&mut g.1, &x.1, &lin.1, act, n).unwrap();
            s.check(&format!("gated_act_fwd {act:?} n={n}"), &g, st.out);
            let (mut dg, mut dl) = (s.grad(st.dt, n, &mut rng), s.grad(st.dt, n, &mut rng));
            be.gated_act_bwd(&mut dg.0, &mut dl.0, &dy.0, &x.0, &lin.0, act, n, true)
                .unwrap();
            s.cpu
                .gated_act_bwd(&mut dg.1, &mut dl.1, &dy.1, &x.1, &lin.1, act, n, true)
                .unwrap();
            s.check(&format!("gated_act_bwd dgate {act:?} n={n}"), &dg, st.out);
            s.check(&format!("gated_act_bwd dlin {act:?} n={n}"), &dl, st.out);
        }
    }
}

pub(super) fn check_elementwise(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(14);
    for n in LENGTHS {
        let a = s.up(st.dt, &randn(&mut rng, n, 1.0));
        let b = s.up(st.dt, &randn(&mut rng, n, 1.0));
        let mut out = s.out(st.dt, n);
        be.add_fwd(&mut out.0, &a.0, &b.0, n).unwrap();
        s.cpu.add_fwd(&mut out.1, &a.1, &b.1, n).unwrap();
        s.check(&format!("add_fwd n={n}"), &out, st.out);
        be.add_inplace(&mut out.0, &a.0, n).unwrap();
        s.cpu.add_inplace(&mut out.1, &a.1, n).unwrap();
        s.check(&format!("add_inplace n={n}"), &out, st.out);
        be.scale_inplace(&mut out.0, 0.37, n).unwrap();
        s.cpu.scale_inplace(&mut out.1, 0.37, n).unwrap();
        s.check(&format!("scale_inplace n={n}"), &out, st.out);
        // float32: the prompt gradient
        let af = s.up(F32, &randn(&mut rng, n, 1.0));
        let mut acc = s.up(F32, &randn(&mut rng, n, 1.0));
        be.add_inplace(&mut acc.0, &af.0, n).unwrap();
        s.cpu.add_inplace(&mut acc.1, &af.1, n).unwrap();
        be.scale_inplace(&mut acc.0, -1.5, n).unwrap();
        s.cpu.scale_inplace(&mut acc.1, -1.5, n).unwrap();
        // float32 adds and products, the same on both sides: 1e-6, observed 0
        s.check(
            &format!("add_inplace_f32, scale_inplace_f32 n={n}"),
            &acc,
            1e-6,
        );
        // the gradient norm: one double reduced on the device against the f64 host sum, only
        // the summation order differs: 1e-12, observed 1.7e-16
        let got = be.sum_squares(&acc.0, n).unwrap();
        let want = s.cpu.sum_squares(&acc.1, n).unwrap();
        assert_close(&format!("sum_squares n={n}"), &[got], &[want], 1e-12);
    }
}

test_device!(activation, check_activations);
test_device!(elementwise, check_elementwise);
