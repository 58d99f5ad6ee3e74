//! LayerNorm and RMSNorm, forward (output and statistics) and backward.

use crate::{bf16_round, randn, Pair, Store, F32, F32_OUT};
use softprompt::internals::backend::traits::*;
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::rng::Rng;

/// (rows, width) of the row kernels: T of 1, 7, 97, 129; widths not multiples of 8, an
/// inner width (36, 40) unlike d_model, and one wider than a block's 256 x 8 elements.
const ROW_SHAPES: [(usize, usize); 6] = [(1, 8), (7, 12), (97, 36), (129, 40), (3, 64), (2, 2100)];

pub(super) fn check_layernorm(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(11);
    for (n, c) in ROW_SHAPES {
        // shifted, so the mean is not ~0; rounded again so both sides see the same values
        let x = s.up(
            st.dt,
            &bf16_round(
                &randn(&mut rng, n * c, 2.0)
                    .iter()
                    .map(|v| v + 0.5)
                    .collect::<Vec<_>>(),
            ),
        );
        let w = s.up(st.w, &randn(&mut rng, c, 1.0));
        let bias = s.up(st.w, &randn(&mut rng, c, 1.0));
        let (mut out, mut mean, mut rstd) = (s.out(st.dt, n * c), s.out(F32, n), s.out(F32, n));
        be.layernorm_fwd(
            &mut out.0,
            &mut mean.0,
            &mut rstd.0,
            &x.0,
            &w.0,
            &bias.0,
            n,
            c,
            1e-5,
        )
        .unwrap();
        s.cpu
            .layernorm_fwd(
                &mut out.1,
                &mut mean.1,
                &mut rstd.1,
                &x.1,
                &w.1,
                &bias.1,
                n,
                c,
                1e-5,
            )
            .unwrap();
        s.check(&format!("layernorm_fwd out {n}x{c}"), &out, st.out);
        // the mean of zero-mean-ish data cancels: measured against the inputs' scale (2),
        // floor 2·√n under ‖want‖; observed 2.5e-8
        s.check_scaled(&format!("layernorm_fwd mean {n}x{c}"), &mean, F32_OUT, 2.0);
        s.check(&format!("layernorm_fwd rstd {n}x{c}"), &rstd, F32_OUT);
        let dy = s.up(st.dt, &randn(&mut rng, n * c, 1.0));
        let mut dx = s.grad(st.dt, n * c, &mut rng);
        be.layernorm_bwd(&mut dx.0, &dy.0, &x.0, &w.0, &mean.0, &rstd.0, n, c, true)
            .unwrap();
        s.cpu
            .layernorm_bwd(&mut dx.1, &dy.1, &x.1, &w.1, &mean.1, &rstd.1, n, c, true)
            .unwrap();
        s.check(&format!("layernorm_bwd {n}x{c}"), &dx, st.out);
    }
}

pub(super) fn check_rmsnorm(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(12);
    for (n, c) in ROW_SHAPES {
        let x = s.up(st.dt, &randn(&mut rng, n * c, 2.0));
        let w = s.up(st.w, &randn(&mut rng, c, 1.0));
        let (mut out, mut rstd) = (s.out(st.dt, n * c), s.out(F32, n));
        be.rmsnorm_fwd(&mut out.0, &mut rstd.0, &x.0, &w.0, n, c, 1e-6)
            .unwrap();
        s.cpu
            .rmsnorm_fwd(&mut out.1, &mut rstd.1, &x.1, &w.1, n, c, 1e-6)
            .unwrap();
        s.check(&format!("rmsnorm_fwd out {n}x{c}"), &out, st.out);
        s.check(&format!("rmsnorm_fwd rstd {n}x{c}"), &rstd, F32_OUT);
        let dy = s.up(st.dt, &randn(&mut rng, n * c, 1.0));
        // backward adds: start from a random residual gradient
        let mut dx = s.up(st.dt, &randn(&mut rng, n * c, 1.0));
        be.rmsnorm_bwd(&mut dx.0, &dy.0, &x.0, &w.0, &rstd.0, n, c, true)
            .unwrap();
        s.cpu
            .rmsnorm_bwd(&mut dx.1, &dy.1, &x.1, &w.1, &rstd.1, n, c, true)
            .unwrap();
        s.check(&format!("rmsnorm_bwd {n}x{c}"), &dx, st.out);
    }
}

test_device!(layernorm, check_layernorm);
test_device!(rmsnorm, check_rmsnorm);
