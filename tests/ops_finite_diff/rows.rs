//! The embedding (with the prompt's rows) and its prompt gradient, the embedding's refusals,
//! and the row ops: gather / scatter and mean pooling.

use crate::common::{assert_close, check_gradient, normals};
use crate::{rand_ids, sum_prod, tol, H};
use softprompt::internals::cpu::{embedding, rows};
use softprompt::internals::rng::Rng;

// ---------------------------------------------------------------------------------------------
// embedding / prompt_grad

/// B rows reading P prompt rows each from a table of K prompts (K = 1: no index, the one
/// prompt), T tokens of width C, with BERT's tables or without; with `lens`, each row's
/// prompt of its own random length P_b <= P (a batch mixing prompt lengths).
#[allow(clippy::too_many_arguments)]
fn embedding_case(
    b: usize,
    t: usize,
    k: usize,
    p: usize,
    c: usize,
    bert: bool,
    lens: bool,
    seed: u64,
) {
    let name = format!("embedding B{b} T{t} K{k} P{p} C{c} bert={bert} lens={lens}");
    let mut rng = Rng::new(seed);
    let v = 11;
    let wte = normals(&mut rng, v * c, 1.0);
    let wpe = normals(&mut rng, (p + t + 3) * c, 1.0);
    let wtt = normals(&mut rng, 2 * c, 1.0);
    let ids = rand_ids(&mut rng, b * t, v);
    let types = rand_ids(&mut rng, b * t, 2);
    let prompt = normals(&mut rng, k * p * c, 1.0);
    let r = normals(&mut rng, b * (p + t) * c, 1.0);
    let idx = (k > 1).then(|| rand_ids(&mut rng, b, k));
    let lens = lens.then(|| rand_ids(&mut rng, b, p + 1));
    let (wpe_o, wtt_o, types_o) = if bert {
        (Some(&wpe[..]), Some(&wtt[..]), Some(&types[..]))
    } else {
        (None, None, None)
    };
    let fwd = |prompt: &[f64]| -> Vec<f64> {
        let mut out = vec![f64::NAN; b * (p + t) * c];
        embedding::embedding_fwd(
            &mut out,
            prompt,
            &wte,
            wpe_o,
            wtt_o,
            &ids,
            types_o,
            idx.as_deref(),
            lens.as_deref(),
            b,
            t,
            k,
            p,
            c,
        )
        .expect("embedding_fwd");
        out
    };
    // forward semantics: row b's P_b prompt rows (of prompt idx[b]) take positions
    // 0..P_b-1 and token type 0, its tokens the positions behind them, zeros after
    let out = fwd(&prompt);
    let mut want = vec![0.0; out.len()];
    for bi in 0..b {
        let kb = idx.as_ref().map_or(0, |idx| idx[bi] as usize);
        let pb = lens.as_ref().map_or(p, |lens| lens[bi] as usize);
        for s in 0..pb + t {
            for x in 0..c {
                let mut e = if s < pb {
                    prompt[(kb * p + s) * c + x]
                } else {
                    wte[ids[bi * t + s - pb] as usize * c + x]
                };
                if bert {
                    let ty = if s < pb {
                        0
                    } else {
                        types[bi * t + s - pb] as usize
                    };
                    e += wpe[s * c + x] + wtt[ty * c + x];
                }
                want[(bi * (p + t) + s) * c + x] = e;
            }
        }
    }
    assert_close(&format!("{name}: forward"), &out, &want, tol("forward"));
    // backward adds into dprompt, each row's gradient into its own prompt
    let pre = normals(&mut rng, k * p * c, 1.0);
    let mut dprompt = pre.clone();
    let (idx_o, lens_o) = (idx.as_deref(), lens.as_deref());
    embedding::prompt_grad_bwd(&mut dprompt, &r, idx_o, lens_o, b, t, k, p, c);
    let grad: Vec<f64> = dprompt.iter().zip(&pre).map(|(d, p0)| d - p0).collect();
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
    check_gradient(
        &name,
        &mut f,
        &prompt,
        &grad,
        H,
        tol("embedding"),
        &mut rng,
        400,
    );
}

#[test]
fn embedding_prompt_grad_matches_finite_differences() {
    embedding_case(3, 5, 1, 4, 7, true, false, 1);
    embedding_case(1, 1, 1, 1, 1, true, false, 2);
    embedding_case(2, 7, 1, 3, 13, false, false, 3);
    embedding_case(2, 97, 1, 1, 5, false, false, 4);
    // a table of prompts: 5 rows over 3 prompts (one may be read by none), and 4 over 2
    embedding_case(5, 6, 3, 4, 7, true, false, 5);
    embedding_case(4, 3, 2, 2, 5, false, false, 6);
    // prompts of different lengths in one batch (P_b from 0 to P)
    embedding_case(6, 5, 3, 8, 7, true, true, 7);
    embedding_case(5, 3, 2, 5, 4, false, true, 8);
}

/// A prompt index outside the table, or a row's prompt longer than the table's P rows, is an
/// error naming it (and the row), before any row is written.
#[test]
fn embedding_rejects_a_prompt_index_or_length_outside_the_table() {
    let c = 3;
    let wte = vec![0.0f64; 4 * c];
    let prompt = vec![0.0f64; 2 * 2 * c];
    let mut out = vec![0.0f64; 2 * 4 * c];
    // two rows of two tokens over a table of 2 prompts of 2 rows
    let mut fwd = |idx: &[i32], lens: Option<&[i32]>| {
        let ids = [1, 2, 3, 0];
        embedding::embedding_fwd(
            &mut out,
            &prompt,
            &wte,
            None,
            None,
            &ids,
            None,
            Some(idx),
            lens,
            2,
            2,
            2,
            2,
            c,
        )
    };
    let err = fwd(&[1, 2], None).expect_err("prompt 2 of a 2-prompt table");
    assert!(err.to_string().contains("prompt index"), "{err}");
    let err = fwd(&[1, 0], Some(&[2, 3])).expect_err("a prompt of 3 rows in a table of 2");
    let msg = err.to_string();
    assert!(
        msg.contains("prompt lengths") && msg.contains("row 1"),
        "{msg}"
    );
}

#[test]
fn embedding_rejects_bad_ids_and_short_position_table() {
    let c = 3;
    let wte = vec![0.0f64; 4 * c];
    let wpe = vec![0.0f64; 5 * c];
    let prompt = vec![0.0f64; 2 * c];
    let mut out = vec![0.0f64; 4 * c];
    let err = embedding::embedding_fwd(
        &mut out,
        &prompt,
        &wte,
        None,
        None,
        &[1, 4],
        None,
        None,
        None,
        1,
        2,
        1,
        2,
        c,
    )
    .expect_err("id 4 of a 4-row table");
    assert!(err.to_string().contains("input_ids"), "{err}");
    let err = embedding::embedding_fwd(
        &mut out,
        &prompt,
        &wte,
        None,
        None,
        &[-1, 0],
        None,
        None,
        None,
        1,
        2,
        1,
        2,
        c,
    )
    .expect_err("negative id");
    assert!(err.to_string().contains("-1"), "{err}");
    let mut out = vec![0.0f64; 6 * c];
    let err = embedding::embedding_fwd(
        &mut out,
        &prompt,
        &wte,
        Some(&wpe),
        None,
        &[0, 1, 2, 3],
        None,
        None,
        None,
        1,
        4,
        1,
        2,
        c,
    )
    .expect_err("P + T = 6 > 5 positions");
    assert!(err.to_string().contains("position"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// rows: gather / scatter / mean_pool

#[test]
fn gather_scatter_rows_match_finite_differences() {
    let mut rng = Rng::new(80);
    let (n, c) = (7, 5);
    // repeated and unordered indices: scatter must accumulate
    let idx = [6, 0, 3, 3, 6, 1];
    let m = idx.len();
    let inp = normals(&mut rng, n * c, 1.0);
    let r = normals(&mut rng, m * c, 1.0);
    let fwd = |x: &[f64]| {
        let mut out = vec![f64::NAN; m * c];
        rows::gather_rows(&mut out, x, &idx, c);
        out
    };
    let out = fwd(&inp);
    for (mi, &row) in idx.iter().enumerate() {
        assert_eq!(
            &out[mi * c..(mi + 1) * c],
            &inp[row as usize * c..(row as usize + 1) * c]
        );
    }
    let pre = normals(&mut rng, n * c, 1.0);
    let mut dinp = pre.clone();
    rows::scatter_rows_bwd(&mut dinp, &r, &idx, c);
    let grad: Vec<f64> = dinp.iter().zip(&pre).map(|(d, p)| d - p).collect();
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
    check_gradient(
        "gather/scatter rows",
        &mut f,
        &inp,
        &grad,
        H,
        tol("rows"),
        &mut rng,
        400,
    );
    // rows never indexed get exactly nothing
    for row in [2usize, 4, 5] {
        assert!(
            grad[row * c..(row + 1) * c]
                .iter()
                .all(|&g| g.abs() < 1e-15),
            "row {row}"
        );
    }
}

#[test]
fn mean_pool_matches_finite_differences() {
    let mut rng = Rng::new(81);
    let (b, t, c) = (3, 7, 5);
    // masked means: 1/count on the pooled rows, 0 elsewhere (row 2 pools one row, like cls)
    let lens = [7usize, 3, 1];
    let mut weight = vec![0.0f64; b * t];
    for bi in 0..b {
        for s in 0..lens[bi] {
            weight[bi * t + s] = 1.0 / lens[bi] as f64;
        }
    }
    let inp = normals(&mut rng, b * t * c, 1.0);
    let r = normals(&mut rng, b * c, 1.0);
    let fwd = |x: &[f64]| {
        let mut out = vec![f64::NAN; b * c];
        rows::mean_pool_fwd(&mut out, x, &weight, t, c);
        out
    };
    let out = fwd(&inp);
    let mut want = vec![0.0; b * c];
    for bi in 0..b {
        for s in 0..lens[bi] {
            for x in 0..c {
                want[bi * c + x] += inp[(bi * t + s) * c + x] / lens[bi] as f64;
            }
        }
    }
    assert_close("mean_pool forward", &out, &want, tol("forward"));
    let pre = normals(&mut rng, b * t * c, 1.0);
    let mut dinp = pre.clone();
    rows::mean_pool_bwd(&mut dinp, &r, &weight, t, c, true);
    let grad: Vec<f64> = dinp.iter().zip(&pre).map(|(d, p)| d - p).collect();
    let mut f = |x: &[f64]| sum_prod(&r, &fwd(x));
    check_gradient(
        "mean_pool",
        &mut f,
        &inp,
        &grad,
        H,
        tol("rows"),
        &mut rng,
        400,
    );
}
