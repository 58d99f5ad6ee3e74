//! Rows: the embedding and the prompt's gradient, `copy_rows` between storage types, gather
//! and scatter of rows, and mean pooling.

use crate::common::assert_close;
use crate::{act_data, bf16_round, randn, Pair, Store, F32, F32_OUT};
use softprompt::internals::backend::traits::*;
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::rng::Rng;

pub(super) fn check_embedding(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(15);
    // (B, T, K, P, C, BERT tables?, per-row prompt lengths?); K > 1: a table of prompts,
    // each row naming its own; lengths: each row's prompt P_b in 0..=P (rows mixing lengths)
    for (b, t, k, p, c, bert, lens) in [
        (2, 1, 1, 3, 12, true, false),
        (3, 7, 1, 5, 36, true, false),
        (2, 97, 1, 0, 40, false, false),
        (1, 129, 1, 20, 64, false, false),
        (2, 7, 1, 3, 36, false, false),
        (5, 7, 3, 5, 36, true, false),
        (7, 13, 4, 3, 40, false, false),
        (6, 11, 3, 8, 36, true, true),
        (9, 5, 4, 7, 40, false, true),
    ] {
        let v = 139;
        let wte = s.up(st.w, &randn(&mut rng, v * c, 1.0));
        let wpe = s.up(st.w, &randn(&mut rng, (p + t + 3) * c, 1.0));
        let wtt = s.up(st.w, &randn(&mut rng, 2 * c, 1.0));
        let prompt = s.up(
            F32,
            &(0..k * p * c)
                .map(|_| rng.normal() as f32)
                .collect::<Vec<_>>(),
        );
        let ids = s.ints(
            &(0..b * t)
                .map(|_| rng.below(v as u64) as i32)
                .collect::<Vec<_>>(),
        );
        let types = s.ints(&(0..b * t).map(|_| rng.below(2) as i32).collect::<Vec<_>>());
        let idx = (k > 1).then(|| {
            s.ints(
                &(0..b)
                    .map(|_| rng.below(k as u64) as i32)
                    .collect::<Vec<_>>(),
            )
        });
        let (idx0, idx1) = (idx.as_ref().map(|x| &x.0), idx.as_ref().map(|x| &x.1));
        let lens = lens.then(|| {
            s.ints(
                &(0..b)
                    .map(|_| rng.below(p as u64 + 1) as i32)
                    .collect::<Vec<_>>(),
            )
        });
        let (len0, len1) = (lens.as_ref().map(|x| &x.0), lens.as_ref().map(|x| &x.1));
        let mut out = s.out(st.dt, b * (p + t) * c);
        let (tab0, tab1) = if bert {
            (
                (Some(&wpe.0), Some(&wtt.0), Some(&types.0)),
                (Some(&wpe.1), Some(&wtt.1), Some(&types.1)),
            )
        } else {
            ((None, None, None), (None, None, None))
        };
        be.embedding_fwd(
            &mut out.0, &prompt.0, &wte.0, tab0.0, tab0.1, &ids.0, tab0.2, idx0, len0, b, t, k, p,
            c,
        )
        .unwrap();
        s.cpu
            .embedding_fwd(
                &mut out.1, &prompt.1, &wte.1, tab1.0, tab1.1, &ids.1, tab1.2, idx1, len1, b, t, k,
                p, c,
            )
            .unwrap();
        s.check(
            &format!(
                "embedding_fwd B{b} T{t} K{k} P{p} C{c} bert={bert} lens={}",
                lens.is_some()
            ),
            &out,
            st.out,
        );
        let dout = s.up(st.dt, &randn(&mut rng, b * (p + t) * c, 1.0));
        let mut dprompt = s.up(
            F32,
            &(0..k * p * c)
                .map(|_| rng.normal() as f32)
                .collect::<Vec<_>>(),
        );
        be.prompt_grad_bwd(&mut dprompt.0, &dout.0, idx0, len0, b, t, k, p, c)
            .unwrap();
        s.cpu
            .prompt_grad_bwd(&mut dprompt.1, &dout.1, idx1, len1, b, t, k, p, c)
            .unwrap();
        if p > 0 {
            s.check(
                &format!(
                    "prompt_grad_bwd B{b} T{t} K{k} P{p} C{c} lens={}",
                    lens.is_some()
                ),
                &dprompt,
                F32_OUT,
            );
        }
    }
}

/// `copy_rows` between every pair of the storage type and float32: the named rows equal the
/// source's rounded to the output's type (float32 data at full precision, so the rounding to
/// bf16 is checked too), every other row keeps its value, and a row named twice is an error.
pub(super) fn check_copy_rows(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(17);
    let full =
        |rng: &mut Rng, n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    for (n, r, m, c) in [
        (129, 140, 7, 1),
        (97, 13, 13, 12),
        (7, 40, 29, 40),
        (3, 5, 2, 2100),
    ] {
        for (out_dt, inp_dt) in [(st.dt, st.dt), (F32, st.dt), (st.dt, F32), (F32, F32)] {
            let data = match inp_dt {
                F32 => full(&mut rng, n * c),
                _ => act_data(&st, &mut rng, n * c),
            };
            let inp = s.up(inp_dt, &data);
            let src: Vec<i32> = (0..m).map(|_| rng.below(n as u64) as i32).collect();
            let mut dst: Vec<i32> = (0..r as i32).collect();
            rng.shuffle(&mut dst);
            dst.truncate(m);
            let (src, dst) = (s.ints(&src), s.ints(&dst));
            let mut out = s.up(out_dt, &randn(&mut rng, r * c, 1.0));
            be.copy_rows(&mut out.0, &inp.0, &src.0, &dst.0, m, c)
                .unwrap();
            s.cpu
                .copy_rows(&mut out.1, &inp.1, &src.1, &dst.1, m, c)
                .unwrap();
            let got = be.download(&out.0).unwrap();
            let want = s.cpu.download(&out.1).unwrap();
            let want = match out_dt {
                F32 => want,
                _ => bf16_round(&want),
            };
            // a copy, rounded once: 1e-7, observed 0
            let what = format!("copy_rows {out_dt:?} <- {inp_dt:?} N{n} R{r} M{m} C{c}");
            assert_close(&what, &got, &want, 1e-7);
        }
    }
    let (inp, mut out) = (s.up(F32, &[1.0; 4]), s.up(st.dt, &[0.0; 4]));
    let (src, dst) = (s.ints(&[0, 1]), s.ints(&[3, 3]));
    let e = be
        .copy_rows(&mut out.0, &inp.0, &src.0, &dst.0, 2, 1)
        .unwrap_err();
    assert!(e.to_string().contains("written twice"), "{e}");
    let e = s
        .cpu
        .copy_rows(&mut out.1, &inp.1, &src.1, &dst.1, 2, 1)
        .unwrap_err();
    assert!(e.to_string().contains("written twice"), "{e}");
}

pub(super) fn check_rows(be: &CudaBackend) {
    let st = Store::of(be);
    let s = Pair::new(be);
    let mut rng = Rng::new(16);
    for (n, m, c) in [(129, 7, 1), (97, 13, 12), (129, 129, 40), (7, 1, 2100)] {
        let inp = s.up(st.dt, &randn(&mut rng, n * c, 1.0));
        let idx: Vec<i32> = (0..m).map(|_| rng.below(n as u64) as i32).collect();
        let idx = s.ints(&idx); // repeats included: scatter must add them all
        let mut out = s.out(st.dt, m * c);
        be.gather_rows(&mut out.0, &inp.0, &idx.0, m, c).unwrap();
        s.cpu.gather_rows(&mut out.1, &inp.1, &idx.1, m, c).unwrap();
        // a copy: 1e-7, observed 0
        s.check(&format!("gather_rows N{n} M{m} C{c}"), &out, 1e-7);
        if st.w != st.dt {
            // rows of a weight (the PET decoder's verbalizer rows): gather_rows_w
            let table = s.up(st.w, &randn(&mut rng, n * c, 1.0));
            let mut rows = s.out(st.w, m * c);
            be.gather_rows(&mut rows.0, &table.0, &idx.0, m, c).unwrap();
            s.cpu
                .gather_rows(&mut rows.1, &table.1, &idx.1, m, c)
                .unwrap();
            s.check(
                &format!("gather_rows (weights) N{n} M{m} C{c}"),
                &rows,
                1e-7,
            );
        }
        let dout = s.up(st.dt, &randn(&mut rng, m * c, 1.0));
        let mut dinp = s.up(st.dt, &randn(&mut rng, n * c, 1.0));
        be.scatter_rows_bwd(&mut dinp.0, &dout.0, &idx.0, m, c)
            .unwrap();
        s.cpu
            .scatter_rows_bwd(&mut dinp.1, &dout.1, &idx.1, m, c)
            .unwrap();
        s.check(&format!("scatter_rows_bwd N{n} M{m} C{c}"), &dinp, st.out);
    }
    // mean pooling over padded rows: weight 1/count on real rows, 0 on padding and prompt
    for (b, t, c) in [(1, 1, 8), (3, 17, 36), (2, 129, 300)] {
        let mut w = vec![0.0f32; b * t];
        for bi in 0..b {
            let len = 1 + rng.below(t as u64) as usize;
            for s in 0..len {
                w[bi * t + s] = 1.0 / len as f32;
            }
        }
        let w = s.up(st.dt, &bf16_round(&w));
        let inp = s.up(st.dt, &randn(&mut rng, b * t * c, 1.0));
        let mut out = s.out(st.dt, b * c);
        be.mean_pool_fwd(&mut out.0, &inp.0, &w.0, b, t, c).unwrap();
        s.cpu
            .mean_pool_fwd(&mut out.1, &inp.1, &w.1, b, t, c)
            .unwrap();
        s.check(&format!("mean_pool_fwd B{b} T{t} C{c}"), &out, st.out);
        let dout = s.up(st.dt, &randn(&mut rng, b * c, 1.0));
        let mut dinp = s.up(st.dt, &randn(&mut rng, b * t * c, 1.0));
        be.mean_pool_bwd(&mut dinp.0, &dout.0, &w.0, b, t, c, true)
            .unwrap();
        s.cpu
            .mean_pool_bwd(&mut dinp.1, &dout.1, &w.1, b, t, c, true)
            .unwrap();
        s.check(&format!("mean_pool_bwd B{b} T{t} C{c}"), &dinp, st.out);
    }
}

test_device!(embedding, check_embedding);
test_device!(rows, check_rows);
test_device!(copy_rows, check_copy_rows);
