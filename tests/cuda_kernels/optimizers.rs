//! The optimizers' updates (AdamW, Adafactor) over a few steps.

use crate::{randn, Pair, F32, F64_STATE};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::{AdafactorHyper, AdamWHyper};
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::rng::Rng;

pub(super) fn check_optimizers(be: &CudaBackend) {
    let s = Pair::new(be);
    let mut rng = Rng::new(19);
    let hp = AdamWHyper {
        lr: 0.3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let n = 7 * 129;
    let mut param = s.up(F32, &randn(&mut rng, n, 1.0));
    let (mut m, mut v) = (s.up(F32, &vec![0.0; n]), s.up(F32, &vec![0.0; n]));
    for step in 1..=3 {
        let g = s.up(
            F32,
            &(0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>(),
        );
        be.adamw_update(&mut param.0, &g.0, &mut m.0, &mut v.0, &hp, step)
            .unwrap();
        s.cpu
            .adamw_update(&mut param.1, &g.1, &mut m.1, &mut v.1, &hp, step)
            .unwrap();
    }
    s.check("adamw_update param", &param, F64_STATE);
    s.check("adamw_update m", &m, F64_STATE);
    s.check("adamw_update v", &v, F64_STATE);
    let hp = AdafactorHyper {
        lr: 0.3,
        decay_rate: -0.8,
        eps: 1e-30,
        clip_threshold: 1.0,
        weight_decay: 1e-5,
    };
    for (r, c) in [(1, 8), (7, 36), (20, 1030)] {
        let mut param = s.up(F32, &randn(&mut rng, r * c, 1.0));
        let (mut row, mut col) = (s.up(F32, &vec![0.0; r]), s.up(F32, &vec![0.0; c]));
        for step in 1..=3 {
            let g = s.up(
                F32,
                &(0..r * c).map(|_| rng.normal() as f32).collect::<Vec<_>>(),
            );
            be.adafactor_update(&mut param.0, &g.0, &mut row.0, &mut col.0, &hp, step)
                .unwrap();
            s.cpu
                .adafactor_update(&mut param.1, &g.1, &mut row.1, &mut col.1, &hp, step)
                .unwrap();
        }
        s.check(
            &format!("adafactor_update param {r}x{c}"),
            &param,
            F64_STATE,
        );
        s.check(&format!("adafactor_update row {r}x{c}"), &row, F64_STATE);
        s.check(&format!("adafactor_update col {r}x{c}"), &col, F64_STATE);
    }
}

test_device!(optimizer, check_optimizers);
