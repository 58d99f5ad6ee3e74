//! The GEMMs (`linear_fwd`, `linear_bwd`) and what reads logits: the LM's cross-entropy and
//! the trainable cls head.

use crate::{act_data, randn, Pair, Store, F32, F32_OUT};
use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::rng::Rng;

/// The trainable `cls` head: logits, the softmax cross-entropy gradient and the backward into
/// the head's float32 weight and bias and the pooled states, with K of 1, 2, 3 and 7 and
/// widths that are not multiples of 8.
pub(super) fn check_head(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(20);
    for (b, k, c) in [
        (1, 2, 8),
        (7, 3, 36),
        (32, 2, 384),
        (5, 7, 2100),
        (3, 1, 12),
    ] {
        let pooled = s.up(st.dt, &randn(&mut rng, b * c, 1.0));
        let weight = s.up(F32, &randn(&mut rng, k * c, 0.1));
        let bias = s.up(F32, &randn(&mut rng, k, 0.5));
        let labels: Vec<i32> = (0..b).map(|_| rng.below(k as u64) as i32).collect();
        let labels = s.ints(&labels);
        let name = format!("B{b} K{k} C{c}");
        let mut logits = s.out(F32, b * k);
        be.cls_head_fwd(&mut logits.0, &pooled.0, &weight.0, &bias.0, b, k, c)
            .unwrap();
        s.cpu
            .cls_head_fwd(&mut logits.1, &pooled.1, &weight.1, &bias.1, b, k, c)
            .unwrap();
        s.check(&format!("cls_head_fwd {name}"), &logits, F32_OUT);
        let mut dlogits = s.out(F32, b * k);
        be.cls_xent_grad(&mut dlogits.0, &logits.0, &labels.0, b, k)
            .unwrap();
        // the reference reads the device's logits, so only the softmax is compared: 1e-6,
        // observed 0
        let dev_logits = s.up(F32, &be.download(&logits.0).unwrap());
        s.cpu
            .cls_xent_grad(&mut dlogits.1, &dev_logits.1, &labels.1, b, k)
            .unwrap();
        s.check(&format!("cls_xent_grad {name}"), &dlogits, 1e-6);
        let dl = s.up(F32, &be.download(&dlogits.0).unwrap());
        let (mut dw, mut db) = (s.grad(F32, k * c, &mut rng), s.grad(F32, k, &mut rng));
        let mut dp = s.grad(st.dt, b * c, &mut rng);
        be.cls_head_bwd(
            &mut dw.0, &mut db.0, &mut dp.0, &dl.0, &pooled.0, &weight.0, b, k, c, true,
        )
        .unwrap();
        s.cpu
            .cls_head_bwd(
                &mut dw.1, &mut db.1, &mut dp.1, &dl.1, &pooled.1, &weight.1, b, k, c, true,
            )
            .unwrap();
        s.check(&format!("cls_head_bwd dweight {name}"), &dw, F32_OUT);
        s.check(&format!("cls_head_bwd dbias {name}"), &db, F32_OUT);
        s.check(&format!("cls_head_bwd dpooled {name}"), &dp, st.out);
    }
}

pub(super) fn check_loss(be: &CudaBackend) {
    let s = Pair::new(be);
    let mut rng = Rng::new(17);
    for (m, v) in [(1, 3), (7, 139), (13, 1000), (3, 32128)] {
        let logits: Vec<f32> = (0..m * v).map(|_| rng.normal() as f32 * 3.0).collect();
        let mut targets: Vec<i32> = (0..m).map(|_| rng.below(v as u64) as i32).collect();
        if m > 2 {
            targets[1] = -100; // an ignored (padded) row
        }
        let targets = s.ints(&targets);
        let mut lg = s.up(F32, &logits);
        let mut losses = s.out(F32, m);
        be.cross_entropy_fwd_bwd(&mut lg.0, &mut losses.0, &targets.0, m, v, 0.25)
            .unwrap();
        s.cpu
            .cross_entropy_fwd_bwd(&mut lg.1, &mut losses.1, &targets.1, m, v, 0.25)
            .unwrap();
        s.check(
            &format!("cross_entropy_fwd_bwd losses M{m} V{v}"),
            &losses,
            F32_OUT,
        );
        s.check(
            &format!("cross_entropy_fwd_bwd dlogits M{m} V{v}"),
            &lg,
            F32_OUT,
        );
    }
}

pub(super) fn check_linear(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(18);
    for (m, k, n) in [(1, 8, 12), (7, 36, 40), (97, 64, 139), (129, 40, 36)] {
        // float32 activations keep all their digits, so the mixed build's hi + lo split is
        // tested (bf16-exact ones would leave lo = 0)
        let x = s.up(st.dt, &act_data(&st, &mut rng, m * k));
        let w = s.up(st.w, &randn(&mut rng, n * k, 0.2));
        let bias = s.up(st.w, &randn(&mut rng, n, 1.0));
        for (dtype, with_bias) in [(st.dt, true), (st.dt, false), (F32, true), (F32, false)] {
            let mut out = s.out(dtype, m * n);
            let b = with_bias.then_some(&bias.0);
            be.linear_fwd(&mut out.0, &x.0, &w.0, b, m, k, n).unwrap();
            s.cpu
                .linear_fwd(
                    &mut out.1,
                    &x.1,
                    &w.1,
                    with_bias.then_some(&bias.1),
                    m,
                    k,
                    n,
                )
                .unwrap();
            let tol = if dtype == st.dt { st.out } else { F32_OUT };
            s.check(
                &format!("linear_fwd M{m} K{k} N{n} {dtype:?} bias={with_bias}"),
                &out,
                tol,
            );
        }
        // backward adds (from zeros and from a random gradient) or writes over a random one,
        // which the CPU's side starts from zeros: a write that added would miss it
        for (dtype, start, acc) in [
            (st.dt, 0.0, true),
            (st.dt, 1.0, true),
            (st.dt, 1.0, false),
            (F32, 0.0, true),
            (F32, 1.0, true),
            (F32, 1.0, false),
        ] {
            let dout_data = act_data(&st, &mut rng, m * n);
            let dout = if dtype == st.dt {
                s.up(st.dt, &dout_data)
            } else {
                // float32 d-logits that bf16 cannot hold exactly
                let exact: Vec<f32> = (0..m * n).map(|_| rng.normal() as f32).collect();
                s.up(F32, &exact)
            };
            let mut dx = s.up(st.dt, &randn(&mut rng, m * k, start));
            if !acc {
                dx.1 = s.cpu.zeros(DType::F32, m * k).unwrap();
            }
            be.linear_bwd(&mut dx.0, &dout.0, &w.0, m, k, n, acc)
                .unwrap();
            s.cpu
                .linear_bwd(&mut dx.1, &dout.1, &w.1, m, k, n, true)
                .unwrap();
            let tol = if dtype == st.dt {
                st.out
            } else {
                st.gemm_f32_dout
            };
            s.check(
                &format!("linear_bwd M{m} K{k} N{n} dout {dtype:?} start {start} acc={acc}"),
                &dx,
                tol,
            );
        }
    }
}

/// The per-head linear layers against the CPU: forward, and backward adding (from zeros and a
/// random gradient) or writing over a random one.
pub(super) fn check_linear_heads(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(19);
    for (m, h, k, n) in [
        (1, 1, 8, 12),
        (7, 3, 36, 12),
        (33, 5, 40, 8),
        (64, 12, 72, 64),
    ] {
        let x = s.up(st.dt, &act_data(&st, &mut rng, m * h * k));
        let w = s.up(st.w, &randn(&mut rng, h * n * k, 0.2));
        let mut out = s.out(st.dt, m * h * n);
        be.linear_heads_fwd(&mut out.0, &x.0, &w.0, m, h, k, n)
            .unwrap();
        s.cpu
            .linear_heads_fwd(&mut out.1, &x.1, &w.1, m, h, k, n)
            .unwrap();
        s.check(
            &format!("linear_heads_fwd M{m} H{h} K{k} N{n}"),
            &out,
            st.out,
        );
        for (start, acc) in [(0.0, true), (1.0, true), (1.0, false)] {
            let dout = s.up(st.dt, &act_data(&st, &mut rng, m * h * n));
            let mut dx = s.up(st.dt, &randn(&mut rng, m * h * k, start));
            if !acc {
                dx.1 = s.cpu.zeros(DType::F32, m * h * k).unwrap();
            }
            be.linear_heads_bwd(&mut dx.0, &dout.0, &w.0, m, h, k, n, acc)
                .unwrap();
            s.cpu
                .linear_heads_bwd(&mut dx.1, &dout.1, &w.1, m, h, k, n, true)
                .unwrap();
            let name = format!("linear_heads_bwd M{m} H{h} K{k} N{n} start {start} acc={acc}");
            s.check(&name, &dx, st.out);
        }
    }
}

test_device!(loss, check_loss);
test_device!(head, check_head);
test_device!(matmul, check_linear);
test_device!(matmul_heads, check_linear_heads);
