//! Attention against the textbook formula and finite differences: BERT's key padding, T5's
//! relative bias (encoder, decoder, cross), fully masked rows, grouped-query heads, ALiBi, and
//! causal attention with more keys than queries and the reverse.

use crate::common::{assert_close, check_gradient, normals};
use crate::{sum_prod, tol, H};
use softprompt::internals::backend::attention::{bucket_lookup, relative_position_bucket};
use softprompt::internals::backend::{alibi_slope, AttnDims};
use softprompt::internals::cpu::attention::{attention_bwd, attention_fwd, Bias, PositionBias};
use softprompt::internals::rng::Rng;

// ---------------------------------------------------------------------------------------------
// attention

/// Relative-position bias setup: (num_buckets, max_distance, bidirectional).
#[derive(Clone, Copy)]
struct BiasCfg {
    nb: usize,
    md: usize,
    bidir: bool,
}

/// AttnDims (B, Tq, Tk, H, Hkv, D) in one line, for the cases below.
fn attn_dims(b: usize, tq: usize, tk: usize, h: usize, hkv: usize, d: usize) -> AttnDims {
    AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    }
}

struct AttnCase {
    name: &'static str,
    dims: AttnDims,
    /// real keys per batch row (the rest are padding); 0 = a fully masked row
    key_len: Vec<usize>,
    causal: bool,
    scale: f64,
    bias: Option<BiasCfg>,
    /// ALiBi instead of a table (`bias` None)
    alibi: bool,
    max_coords: usize,
}

/// out, lse by the textbook formula, one (b, h, i) at a time, with the bias looked up through
/// `relative_position_bucket` directly (not through `bucket_lookup`).
#[allow(clippy::too_many_arguments)]
fn naive_attention(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: &[i32],
    table: &[f64],
    case: &AttnCase,
) -> (Vec<f64>, Vec<f64>) {
    let AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    } = case.dims;
    let off = tk as i64 - tq as i64;
    let mut out = vec![0.0; b * tq * h * d];
    let mut lse = vec![0.0; b * h * tq];
    for bi in 0..b {
        for hi in 0..h {
            for i in 0..tq {
                let mut scores = Vec::new();
                for j in 0..tk {
                    // key j and query i sit at positions j and i + Tk - Tq
                    let rel = j as i64 - i as i64 - off;
                    if mask[bi * tk + j] == 0 || (case.causal && rel > 0) {
                        continue;
                    }
                    let kvh = hi / (h / hkv);
                    let qi = &q[((bi * tq + i) * h + hi) * d..][..d];
                    let kj = &k[((bi * tk + j) * hkv + kvh) * d..][..d];
                    let mut s = case.scale * sum_prod(qi, kj);
                    if let Some(bc) = case.bias {
                        let bucket =
                            relative_position_bucket(j as i64 - i as i64, bc.bidir, bc.nb, bc.md);
                        s += table[bucket * h + hi];
                    }
                    if case.alibi {
                        s += alibi_slope(hi, h) * rel as f64;
                    }
                    scores.push((j, s));
                }
                if scores.is_empty() {
                    lse[(bi * h + hi) * tq + i] = f64::NEG_INFINITY;
                    continue;
                }
                let m = scores
                    .iter()
                    .map(|&(_, s)| s)
                    .fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = scores.iter().map(|&(_, s)| (s - m).exp()).sum();
                lse[(bi * h + hi) * tq + i] = m + z.ln();
                for &(j, s) in &scores {
                    let p = (s - m).exp() / z;
                    for x in 0..d {
                        out[((bi * tq + i) * h + hi) * d + x] +=
                            p * v[((bi * tk + j) * hkv + hi / (h / hkv)) * d + x];
                    }
                }
            }
        }
    }
    (out, lse)
}

fn attention_case(case: AttnCase, seed: u64) {
    let AttnDims {
        b,
        tq,
        tk,
        h,
        hkv,
        d,
    } = case.dims;
    let name = format!(
        "attention {} B{b} Tq{tq} Tk{tk} H{h} Hkv{hkv} D{d}",
        case.name
    );
    let mut rng = Rng::new(seed);
    let (nq, nk) = (b * tq * h * d, b * tk * hkv * d);
    let qkv = normals(&mut rng, nq + 2 * nk, 1.0);
    let mask: Vec<i32> = (0..b * tk)
        .map(|i| ((i % tk) < case.key_len[i / tk]) as i32)
        .collect();
    let table = case
        .bias
        .map(|bc| normals(&mut rng, bc.nb * h, 1.0))
        .unwrap_or_default();
    let buckets = case
        .bias
        .map(|bc| bucket_lookup(tq, tk, bc.bidir, bc.nb, bc.md))
        .unwrap_or_default();
    let bias = || {
        if case.alibi {
            return Some(Bias::Alibi);
        }
        case.bias.map(|_| {
            Bias::Relative(PositionBias {
                table: &table[..],
                buckets: &buckets[..],
            })
        })
    };
    let fwd = |qkv: &[f64]| {
        let (mut out, mut lse) = (vec![f64::NAN; nq], vec![f64::NAN; b * h * tq]);
        let (q, kv) = qkv.split_at(nq);
        let (k, v) = kv.split_at(nk);
        attention_fwd(
            &mut out,
            &mut lse,
            q,
            k,
            v,
            None,
            &mask,
            bias(),
            case.causal,
            case.scale,
            case.dims,
        );
        (out, lse)
    };
    let (out, lse) = fwd(&qkv);
    let (q, kv) = qkv.split_at(nq);
    let (k, v) = kv.split_at(nk);
    let (want_out, want_lse) = naive_attention(q, k, v, &mask, &table, &case);
    assert_close(
        &format!("{name}: forward out"),
        &out,
        &want_out,
        tol("forward"),
    );
    // -inf rows (no visible key) must match exactly; compare the finite ones numerically
    for (i, (&g, &w)) in lse.iter().zip(&want_lse).enumerate() {
        assert_eq!(
            g.is_finite(),
            w.is_finite(),
            "{name}: lse[{i}] = {g}, want {w}"
        );
    }
    let fin = |x: &[f64]| {
        x.iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect::<Vec<_>>()
    };
    assert_close(
        &format!("{name}: forward lse"),
        &fin(&lse),
        &fin(&want_lse),
        tol("forward"),
    );
    // backward overwrites dq, dk, dv
    let r = normals(&mut rng, nq, 1.0);
    let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nk], vec![0.0; nk]);
    attention_bwd(
        &mut dq,
        &mut dk,
        &mut dv,
        None,
        &r,
        q,
        k,
        v,
        None,
        &lse,
        &mask,
        bias(),
        case.causal,
        case.scale,
        case.dims,
        true,
    );
    let grad: Vec<f64> = dq.iter().chain(&dk).chain(&dv).copied().collect();
    // rows with no visible key produce zeros, never NaN
    for bi in 0..b {
        if case.key_len[bi] == 0 {
            assert!(
                out[bi * tq * h * d..(bi + 1) * tq * h * d]
                    .iter()
                    .all(|&x| x == 0.0),
                "{name}: masked row output"
            );
            assert!(
                dq[bi * tq * h * d..(bi + 1) * tq * h * d]
                    .iter()
                    .all(|&x| x == 0.0),
                "{name}: masked row dq"
            );
            assert!(
                dk[bi * tk * hkv * d..(bi + 1) * tk * hkv * d]
                    .iter()
                    .all(|&x| x == 0.0),
                "{name}: masked row dk"
            );
        }
    }
    // padded keys receive no gradient
    for bi in 0..b {
        for j in case.key_len[bi]..tk {
            let range = (bi * tk + j) * hkv * d..(bi * tk + j + 1) * hkv * d;
            assert!(
                dk[range.clone()]
                    .iter()
                    .chain(&dv[range])
                    .all(|&x| x == 0.0),
                "{name}: padded key {bi},{j} got a gradient"
            );
        }
    }
    let mut f = |qkv: &[f64]| sum_prod(&r, &fwd(qkv).0);
    check_gradient(
        &name,
        &mut f,
        &qkv,
        &grad,
        H,
        tol("attention"),
        &mut rng,
        case.max_coords,
    );
}

#[test]
fn attention_bert_key_padding() {
    let dims = attn_dims(2, 7, 7, 3, 3, 12);
    attention_case(
        AttnCase {
            name: "bert padding",
            dims,
            key_len: vec![7, 4],
            causal: false,
            scale: 1.0 / 12f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 600,
        },
        50,
    );
}

#[test]
fn attention_single_token() {
    let dims = attn_dims(2, 1, 1, 2, 2, 8);
    attention_case(
        AttnCase {
            name: "T=1",
            dims,
            key_len: vec![1, 1],
            causal: false,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 600,
        },
        51,
    );
    attention_case(
        AttnCase {
            name: "T=1 causal bias",
            dims,
            key_len: vec![1, 1],
            causal: true,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 8,
                md: 20,
                bidir: false,
            }),
            alibi: false,
            max_coords: 600,
        },
        52,
    );
}

#[test]
fn attention_long_sequence_with_padding() {
    let dims = attn_dims(1, 97, 97, 1, 1, 16);
    attention_case(
        AttnCase {
            name: "T=97 padded",
            dims,
            key_len: vec![87],
            causal: false,
            scale: 0.25,
            bias: None,
            alibi: false,
            max_coords: 150,
        },
        53,
    );
}

#[test]
fn attention_t5_relative_bias_bidirectional() {
    // T = 29 with 16 buckets / max distance 12 reaches the logarithmic and saturated buckets
    let dims = attn_dims(2, 29, 29, 3, 3, 8);
    attention_case(
        AttnCase {
            name: "t5 encoder bias",
            dims,
            key_len: vec![29, 17],
            causal: false,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 16,
                md: 12,
                bidir: true,
            }),
            alibi: false,
            max_coords: 250,
        },
        54,
    );
}

#[test]
fn attention_t5_causal_with_bias() {
    let dims = attn_dims(2, 9, 9, 3, 3, 12);
    attention_case(
        AttnCase {
            name: "t5 decoder causal bias",
            dims,
            key_len: vec![9, 9],
            causal: true,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 8,
                md: 16,
                bidir: false,
            }),
            alibi: false,
            max_coords: 400,
        },
        55,
    );
    // causal without bias, long, odd head count
    let dims = attn_dims(1, 97, 97, 3, 3, 8);
    attention_case(
        AttnCase {
            name: "causal T=97",
            dims,
            key_len: vec![97],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 150,
        },
        56,
    );
}

#[test]
fn attention_cross_tq_ne_tk() {
    // T5 cross-attention: decoder queries over padded encoder keys, no bias
    let dims = attn_dims(3, 5, 13, 3, 3, 12);
    attention_case(
        AttnCase {
            name: "cross",
            dims,
            key_len: vec![13, 8, 1],
            causal: false,
            scale: 1.0,
            bias: None,
            alibi: false,
            max_coords: 500,
        },
        57,
    );
    // the op also supports a bias with Tq != Tk (lookup of Tq + Tk - 1 buckets)
    let dims = attn_dims(1, 7, 12, 2, 2, 16);
    attention_case(
        AttnCase {
            name: "cross with bias",
            dims,
            key_len: vec![10],
            causal: false,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 13,
                md: 20,
                bidir: true,
            }),
            alibi: false,
            max_coords: 500,
        },
        58,
    );
}

#[test]
fn attention_fully_masked_keys() {
    // batch row 1 has no visible key at all: out = 0, lse = -inf, gradients 0, no NaN
    let dims = attn_dims(2, 7, 7, 3, 3, 8);
    attention_case(
        AttnCase {
            name: "fully masked row",
            dims,
            key_len: vec![5, 0],
            causal: false,
            scale: 1.0,
            bias: Some(BiasCfg {
                nb: 8,
                md: 20,
                bidir: true,
            }),
            alibi: false,
            max_coords: 500,
        },
        59,
    );
    // causal with the first key padded: query 0 sees nothing, the others see keys 1..i
    let dims = attn_dims(1, 6, 6, 2, 2, 8);
    let mut rng = Rng::new(60);
    let (n, tq) = (6 * 2 * 8, 6);
    let q = normals(&mut rng, n, 1.0);
    let k = normals(&mut rng, n, 1.0);
    let v = normals(&mut rng, n, 1.0);
    let mask = [0, 1, 1, 1, 1, 1];
    let (mut out, mut lse) = (vec![f64::NAN; n], vec![f64::NAN; 2 * tq]);
    attention_fwd(
        &mut out, &mut lse, &q, &k, &v, None, &mask, None, true, 1.0, dims,
    );
    assert!(
        out[..16].iter().all(|&x| x == 0.0),
        "query 0 has no visible key: out must be 0"
    );
    assert!(lse[0] == f64::NEG_INFINITY && lse[tq] == f64::NEG_INFINITY);
    assert!(out.iter().all(|x| x.is_finite()) && lse[1..tq].iter().all(|x| x.is_finite()));
    // query 1 sees key 1 only: its output is exactly v[1]
    assert_close("query 1 = v[key 1]", &out[16..32], &v[16..32], 1e-15);
    let r = normals(&mut rng, n, 1.0);
    let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    attention_bwd(
        &mut dq, &mut dk, &mut dv, None, &r, &q, &k, &v, None, &lse, &mask, None, true, 1.0, dims,
        true,
    );
    assert!(
        dq.iter().chain(&dk).chain(&dv).all(|x| x.is_finite()),
        "no NaN in the gradients"
    );
    assert!(
        dq[..16].iter().all(|&x| x == 0.0)
            && dk[..16].iter().all(|&x| x == 0.0)
            && dv[..16].iter().all(|&x| x == 0.0)
    );
}

#[test]
fn attention_grouped_query_heads() {
    // 6 query heads over 2 key/value heads (Llama's GQA), causal, padded keys; and one
    // key/value head for 5 query heads (Qwen2 fixture's multi-query attention)
    let dims = attn_dims(2, 9, 9, 6, 2, 8);
    attention_case(
        AttnCase {
            name: "gqa causal",
            dims,
            key_len: vec![9, 6],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 400,
        },
        61,
    );
    let dims = attn_dims(1, 7, 7, 5, 1, 8);
    attention_case(
        AttnCase {
            name: "mqa",
            dims,
            key_len: vec![7],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 400,
        },
        62,
    );
}

#[test]
fn attention_alibi() {
    // BLOOM: 6 heads (not a power of two: the slopes of 4 heads, then every other of 8)
    let dims = attn_dims(2, 11, 11, 6, 6, 8);
    attention_case(
        AttnCase {
            name: "alibi causal",
            dims,
            key_len: vec![11, 7],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: true,
            max_coords: 400,
        },
        63,
    );
}

#[test]
fn attention_causal_with_more_keys_than_queries() {
    // positions aligned at the end: the 5 queries are the last 5 of 12 keys (a cache, prefix
    // keys), with ALiBi over grouped heads; and more queries than keys (early rows see nothing)
    let dims = attn_dims(2, 5, 12, 4, 2, 8);
    attention_case(
        AttnCase {
            name: "causal Tk > Tq alibi",
            dims,
            key_len: vec![12, 9],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: true,
            max_coords: 400,
        },
        64,
    );
    let dims = attn_dims(1, 8, 5, 2, 2, 8);
    attention_case(
        AttnCase {
            name: "causal Tq > Tk",
            dims,
            key_len: vec![5],
            causal: true,
            scale: 1.0 / 8f64.sqrt(),
            bias: None,
            alibi: false,
            max_coords: 400,
        },
        65,
    );
}
