//! What decoder-only models add around attention: ALiBi's slopes, the KV-cache decode step
//! (against causal attention over the same keys), and RoPE.

use crate::common::{assert_close, check_gradient, normals};
use crate::{sum_prod, tol, H};
use softprompt::internals::backend::attention::{bucket_lookup, relative_position_bucket};
use softprompt::internals::backend::{alibi_slope, AttnDims};
use softprompt::internals::cpu::attention::{attention_fwd, Bias, PositionBias};
use softprompt::internals::rng::Rng;

#[test]
fn alibi_slopes_follow_bloom() {
    // the fixture's 6 heads: 2^-2, 2^-4, 2^-6, 2^-8, then 2^-1, 2^-3 (tests/fixtures/README.md)
    let want = [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125];
    for (h, w) in want.iter().enumerate() {
        assert_eq!(alibi_slope(h, 6), *w, "head {h}");
    }
    // 16 heads (bloom-560m): 2^(-(h+1)/2)
    for h in 0..16 {
        assert!((alibi_slope(h, 16) - 2f64.powf(-(h as f64 + 1.0) / 2.0)).abs() < 1e-15);
    }
}

/// The decode step equals the last row of a causal attention over the same keys: without a
/// bias, with ALiBi, and with T5's relative bias (the decode step reads query row Tk − 1 of a
/// (Tmax, Tmax) attention's lookup, the causal attention over Tk keys its own (1, Tk) one).
#[test]
fn attention_decode_matches_causal_attention() {
    use softprompt::internals::cpu::attention_decode::{attention_decode, DecodeBias};
    let (b, tk, tmax, h, hkv, d) = (2, 9, 13, 6, 3, 8);
    let mut rng = Rng::new(66);
    let k = normals(&mut rng, b * tmax * hkv * d, 1.0);
    let v = normals(&mut rng, b * tmax * hkv * d, 1.0);
    let q = normals(&mut rng, b * h * d, 1.0);
    // row 1 has two padded keys at the front (left padding)
    let mask: Vec<i32> = (0..b * tmax)
        .map(|i| (i / tmax == 0 || i % tmax >= 2) as i32)
        .collect();
    // 8 buckets, max distance 6: distances 0..9 span exact and logarithmic buckets
    let table = normals(&mut rng, 8 * h, 1.0);
    let lookup = bucket_lookup(tmax, tmax, false, 8, 6);
    // the causal attention's own: key j at relative position j − (Tk − 1)
    let own: Vec<i32> = (0..tk)
        .map(|j| relative_position_bucket(j as i64 - (tk as i64 - 1), false, 8, 6) as i32)
        .collect();
    for kind in ["none", "alibi", "relative"] {
        let dims = AttnDims {
            b,
            tq: 1,
            tk,
            h,
            hkv,
            d,
        };
        let (decode_bias, bias) = match kind {
            "alibi" => (Some(DecodeBias::Alibi), Some(Bias::Alibi)),
            "relative" => (
                Some(DecodeBias::Relative(PositionBias {
                    table: &table,
                    buckets: &lookup[tmax - tk..tmax],
                })),
                Some(Bias::Relative(PositionBias {
                    table: &table,
                    buckets: &own,
                })),
            ),
            _ => (None, None),
        };
        let mut out = vec![f64::NAN; b * h * d];
        attention_decode(&mut out, &q, &k, &v, &mask, decode_bias, 0.3, dims, tmax);
        // the same through attention_fwd over the first Tk rows, query at the end
        let take = |x: &[f64]| -> Vec<f64> {
            (0..b)
                .flat_map(|bi| x[bi * tmax * hkv * d..][..tk * hkv * d].to_vec())
                .collect()
        };
        let kmask: Vec<i32> = (0..b)
            .flat_map(|bi| mask[bi * tmax..][..tk].to_vec())
            .collect();
        let mut want = vec![f64::NAN; b * h * d];
        let mut lse = vec![0.0; b * h];
        attention_fwd(
            &mut want,
            &mut lse,
            &q,
            &take(&k),
            &take(&v),
            None,
            &kmask,
            bias,
            true,
            0.3,
            dims,
        );
        assert_close(&format!("decode bias {kind}"), &out, &want, 1e-13);
    }
}

/// RoPE: forward against the rotate_half formula, and backward (the transpose) against finite
/// differences, at positions that are not 0..T (a left-padded row).
#[test]
fn rope_forward_and_backward() {
    use softprompt::internals::backend::rope::{rope_inv_freq, Llama3Scaling};
    use softprompt::internals::cpu::rope::{rope_bwd, rope_fwd};
    let (b, t, h, d) = (2, 5, 3, 8);
    let scaling = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 16.0,
    };
    let inv: Vec<f64> = rope_inv_freq(d, 10000.0, Some(scaling))
        .into_iter()
        .map(f64::from)
        .collect();
    let pos: Vec<i32> = vec![0, 1, 2, 3, 4, 0, 0, 7, 8, 30];
    let mut rng = Rng::new(67);
    let x = normals(&mut rng, b * t * h * d, 1.0);
    let mut y = x.clone();
    rope_fwd(&mut y, &inv, &pos, h, d);
    let half = d / 2;
    let mut want = vec![0.0; x.len()];
    for (r, &p) in pos.iter().enumerate() {
        for hi in 0..h {
            let base = (r * h + hi) * d;
            for i in 0..half {
                let f = p as f64 * inv[i];
                let (a, c) = (x[base + i], x[base + i + half]);
                want[base + i] = a * f.cos() - c * f.sin();
                want[base + i + half] = c * f.cos() + a * f.sin();
            }
        }
    }
    assert_close("rope_fwd", &y, &want, 1e-14);
    let r = normals(&mut rng, x.len(), 1.0);
    let mut grad = r.clone();
    rope_bwd(&mut grad, &inv, &pos, h, d);
    let mut f = |x: &[f64]| {
        let mut y = x.to_vec();
        rope_fwd(&mut y, &inv, &pos, h, d);
        sum_prod(&r, &y)
    };
    check_gradient("rope", &mut f, &x, &grad, H, tol("attention"), &mut rng, 60);
}
