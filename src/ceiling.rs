//! `softprompt bench --ceiling`: what this machine can do, to judge the engine against.
//!
//! - The float32 FMA peak: every rayon thread at once runs independent fused multiply-adds on
//!   the widest registers the CPU has (`device::simd::fma_loop`); the best of three runs.
//! - Each GEMM path of this build (`device::gemm_path`) on the frozen-weight products of one
//!   step of a preset (`step_gemms`), forward (out = x·Wᵀ) and backward (dx += dy·W), the
//!   best of a few runs each; and the step's rate over all of them, FLOP-weighted (total
//!   FLOPs over total time), as a share of the peak.
//!
//! `softprompt profile` reports the step's measured GEMM rate against the same peak.

use crate::backend::IGNORE_INDEX;
use crate::bench::{Preset, Workload};
use crate::device::cpu_model;
use crate::device::gemm_path::{self, GemmPath};
use crate::device::simd::{self, Isa};
use crate::rng::Rng;
use serde_json::{json, Value};
use std::time::Instant;

/// The measured float32 FMA peak.
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    pub isa: Isa,
    pub threads: usize,
    /// all threads together
    pub gflops: f64,
}

/// Runs the FMA loop on every rayon thread at once for about `secs` seconds, three times,
/// and keeps the best rate.
pub fn fma_peak(secs: f64) -> Peak {
    let isa = simd::isa();
    let threads = rayon::current_num_threads();
    // calibrate: iterations per thread that take about `secs`
    let mut iters = 1 << 16;
    loop {
        let start = Instant::now();
        std::hint::black_box(simd::fma_loop(isa, iters));
        let took = start.elapsed().as_secs_f64();
        if took > secs / 8.0 || iters > 1 << 34 {
            iters = ((iters as f64) * secs / took.max(1e-9)) as usize;
            break;
        }
        iters *= 4;
    }
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let flops: f64 = rayon::broadcast(|_| std::hint::black_box(simd::fma_loop(isa, iters)).0)
            .iter()
            .sum();
        best = best.max(flops / start.elapsed().as_secs_f64() / 1e9);
    }
    Peak {
        isa,
        threads,
        gflops: best,
    }
}

/// One frozen-weight product of a step: out (M, N) = x (M, K) · Wᵀ, `calls` times forward and
/// `bwd_calls` times backward (dx = dy·W, at the same M).
#[derive(Clone, Debug, PartialEq)]
pub struct StepGemm {
    pub name: &'static str,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub calls: usize,
    pub bwd_calls: usize,
}

impl StepGemm {
    /// Its FLOPs in one step, forward and backward: 2 per multiply-add.
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64 * (self.calls + self.bwd_calls) as f64
    }
}

/// The linear layers one step of `preset` at `w` runs, as the steps run them (presets have at
/// least two layers): the heads at the rows the loss reads; the first layer's query, key and
/// value input-gradient products at the prompt rows only, none under prefix tuning
/// (`Spans::front`); T5's encoder forward only under PEFT's placement; the decoder-only
/// models' last layer's row-wise products at the target rows' tail, BERT's at the rows its
/// head reads. `tests/ceiling_flops.rs` checks the sum against the profiling backend's count.
pub fn step_gemms(preset: &Preset, w: &Workload) -> Vec<StepGemm> {
    let s = crate::bench_method::spans(preset, w);
    // B·(P+T), B·T under prefix tuning (its prefix is in the keys only)
    let (rows, front) = (w.batch * s.rows, w.batch * s.front);
    let g = |name, m, k, n, (calls, bwd_calls)| StepGemm {
        name,
        m,
        k,
        n,
        calls,
        bwd_calls,
    };
    let all = match preset {
        Preset::Bert(c) => bert_gemms(c, preset, w, rows, front),
        Preset::T5(c) => {
            let (d, a, f) = (c.d_model, c.inner_dim(), c.d_ff);
            let (el, dl) = (c.num_layers, c.num_decoder_layers);
            let dec = w.batch * w.target_len;
            let wi = if c.is_gated_act { 2 } else { 1 };
            let dec_self_o = (s.decoder_prefix == 0) as usize;
            // the encoder's backward (none under PEFT's placement), less its first block's
            // q, k and v (at the prompt rows)
            let enc = |calls: usize| (calls, calls * s.encoder_backward as usize);
            let first = 3 * s.encoder_backward as usize;
            // the CPU folds the cross-attention's k and v products into its queries where
            // that pays (models/t5/cross.rs): per head, (B·L, D)·(D, C) and back, forward and
            // backward (the decoder rows' gradient needs them whether or not the encoder's
            // does)
            let cross = match crate::models::t5::fold_pays(w.target_len, s.rows, c.d_kv) {
                true => {
                    let calls = 2 * dl * c.num_heads;
                    let name = "decoder cross k, v folded, per head";
                    g(name, dec, c.d_kv, d, (calls, calls))
                }
                false => g("decoder cross k, v", rows, d, a, enc(2 * dl)),
            };
            vec![
                g(
                    "encoder q, k, v",
                    rows,
                    d,
                    a,
                    (3 * el, enc(3 * el).1 - first),
                ),
                g("encoder first q, k, v dx", front, d, a, (0, first)),
                g("encoder o", rows, a, d, enc(el)),
                g("encoder wi", rows, d, f, enc(wi * el)),
                g("encoder wo", rows, f, d, enc(el)),
                // the first block's self-attention wants no input gradient (its input is
                // the labels' frozen embeddings), and its o product runs backward for a
                // prefix alone
                g("decoder q, k, v, cross q", dec, d, a, (4 * dl, 4 * dl - 3)),
                g(
                    "decoder o, cross o",
                    dec,
                    a,
                    d,
                    (2 * dl, 2 * dl - dec_self_o),
                ),
                cross,
                g("decoder wi", dec, d, f, (wi * dl, wi * dl)),
                g("decoder wo", dec, f, d, (dl, dl)),
                g("lm head", dec, d, c.vocab_size, (1, 1)),
            ]
        }
        Preset::Decoder(c) => {
            let (d, f, l) = (c.hidden_size, c.intermediate_size, c.num_layers);
            let (q, kv) = (c.q_width(), c.kv_width());
            let up = if c.is_bloom() { 1 } else { 2 };
            // the step runs the last layer's row-wise products at the target rows' tail only
            // (models/decoder/layer.rs `Tail`: from the row that predicts the first label to
            // the row's end, L + 1 rows); its keys and values at every row
            let labelled = w.target_len.min(w.seq);
            let tail = w.batch * (labelled + 1).min(s.rows);
            let (n, last) = (l.saturating_sub(1), 1);
            let both = |calls| (calls, calls);
            vec![
                g("q", rows, d, q, (n, n.saturating_sub(1))),
                g("first layer q dx", front, d, q, (0, 1)),
                g("o", rows, q, d, both(n)),
                g("mlp up (and gate)", rows, d, f, both(up * n)),
                g("mlp down", rows, f, d, both(n)),
                g("last layer q", tail, d, q, both(last)),
                g("last layer o", tail, q, d, both(last)),
                g("last layer mlp up (and gate)", tail, d, f, both(up * last)),
                g("last layer mlp down", tail, f, d, both(last)),
                g("k, v", rows, d, kv, (2 * l, (2 * l).saturating_sub(2))),
                g("first layer k, v dx", front, d, kv, (0, 2)),
                g("lm head", w.batch * labelled, d, c.vocab_size, both(1)),
            ]
        }
    };
    (all.into_iter())
        .filter(|p| p.m > 0 && p.calls + p.bwd_calls > 0)
        .collect()
}

/// BERT's products (`step_gemms`): `rows` B·(P+T) (B·T under prefix tuning), `front` B·P.
fn bert_gemms(
    c: &crate::config::BertConfig,
    preset: &Preset,
    w: &Workload,
    rows: usize,
    front: usize,
) -> Vec<StepGemm> {
    let (h, i, l) = (c.hidden_size, c.intermediate_size, c.num_hidden_layers);
    let g = |name, m, k, n, calls, bwd_calls| StepGemm {
        name,
        m,
        k,
        n,
        calls,
        bwd_calls,
    };
    // the last layer's queries, output projection and FFN at the rows the head reads
    // (models/bert/tail.rs), its keys and values at every row
    let tail = w.batch * bert_tail_rows(preset, w).min(rows / w.batch.max(1));
    let (n, last) = (l.saturating_sub(1), 1);
    let mut out = vec![
        g(
            "q, attention out",
            rows,
            h,
            h,
            2 * n,
            (2 * n).saturating_sub(1),
        ),
        g("first layer q, k, v dx", front, h, h, 0, 3),
        g("intermediate", rows, h, i, n, n),
        g("output", rows, i, h, n, n),
        g(
            "last layer q, attention out",
            tail,
            h,
            h,
            2 * last,
            2 * last,
        ),
        g("last layer intermediate", tail, h, i, last, last),
        g("last layer output", tail, i, h, last, last),
        g("k, v", rows, h, h, 2 * l, (2 * l).saturating_sub(2)),
    ];
    // the masked-LM head at its rows: `pet`'s [MASK] rows over the verbalizer's two rows,
    // `mlm`'s labelled rows over the vocabulary (the `cls` head is no linear layer)
    let head = match w.objective.as_str() {
        "pet" => Some((w.batch, crate::bench::PET_VERBALIZER.len())),
        "mlm" => Some((mlm_labelled(preset, w), c.vocab_size)),
        _ => None,
    };
    if let Some((m, v)) = head {
        out.push(g("head dense", m, h, h, 1, 1));
        out.push(g("head decoder", m, h, v, 1, 1));
    }
    out
}

/// The labelled positions of the batch the bench draws for `mlm`, all rows together.
fn mlm_labelled(preset: &Preset, w: &Workload) -> usize {
    let batch = crate::bench::bench_batch(preset, w, 3);
    (batch.labels.iter())
        .filter(|&&l| l != IGNORE_INDEX)
        .count()
}

/// R, the rows per example BERT's last layer runs at in the bench's batch: `pet`'s one
/// [MASK] row, `mlm`'s most labelled positions in one row of the batch the bench draws, the
/// `cls` head's pooled rows (every real token's).
fn bert_tail_rows(preset: &Preset, w: &Workload) -> usize {
    match w.objective.as_str() {
        "mlm" => {
            let batch = crate::bench::bench_batch(preset, w, 3);
            (batch.labels.chunks(w.seq.max(1)))
                .map(|row| row.iter().filter(|&&l| l != IGNORE_INDEX).count())
                .max()
                .unwrap_or(0)
        }
        "cls" => w.seq,
        _ => 1,
    }
}

/// Seconds of the best of `reps` runs of `f`, after one warm-up run.
fn best_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// (forward seconds, backward seconds) of one product on `path`, random operands.
fn time_gemm(path: GemmPath, g: &StepGemm, reps: usize) -> (f64, f64) {
    let mut rng = Rng::new(5);
    let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let (x, w, dy) = (rand(g.m * g.k), rand(g.n * g.k), rand(g.m * g.n));
    let (mut out, mut dx) = (vec![0f32; g.m * g.n], vec![0f32; g.m * g.k]);
    let fwd = best_secs(reps, || {
        gemm_path::fwd(path, &mut out, &x, &w, g.m, g.k, g.n, false)
    });
    let bwd = best_secs(reps, || {
        gemm_path::bwd(path, &mut dx, &dy, &w, g.m, g.k, g.n, true)
    });
    std::hint::black_box((&out, &dx));
    (fwd, bwd)
}

/// A rate as a share of the measured peak, capped at 1, and whether the rate was above the
/// peak (`noisy`): that is impossible on a quiet machine, and means the peak's run lost the
/// CPU to other work (a loaded machine printed 162% for a small product), so the share is
/// not to be trusted. A peak that is not a positive number gives share 0, noisy.
pub fn share_of_peak(gflops: f64, peak: f64) -> (f64, bool) {
    if !(peak > 0.0 && peak.is_finite()) {
        return (0.0, true);
    }
    let share = gflops / peak;
    (share.min(1.0), share > 1.0)
}

/// The ceiling report of `preset` at `w`: the peak, then every GEMM path on the step's
/// products, as JSON. The peak is measured before and after the products and the better of
/// the two kept, so that a burst of other work during one run does not lower it.
pub fn run(preset_name: &str, w: &Workload, reps: usize) -> crate::error::Result<Value> {
    let preset = Preset::by_name(preset_name)?;
    check(&preset, w)?;
    let before = fma_peak(0.3);
    let gemms = step_gemms(&preset, w);
    // (path, [(forward seconds, backward seconds)] in the order of `gemms`)
    let timed: Vec<(GemmPath, Vec<(f64, f64)>)> = (GemmPath::available().into_iter())
        .map(|path| {
            (
                path,
                gemms.iter().map(|g| time_gemm(path, g, reps)).collect(),
            )
        })
        .collect();
    let after = fma_peak(0.3);
    let peak = if after.gflops > before.gflops {
        after
    } else {
        before
    };
    let paths: Vec<Value> = (timed.iter())
        .map(|(path, times)| path_report(*path, &gemms, times, peak.gflops))
        .collect();
    let noisy = paths.iter().any(|p| p["noisy"] == true);
    Ok(json!({
        "preset": preset_name, "batch": w.batch, "seq": w.seq, "prompt": w.prompt,
        "target_len": w.target_len,
        "cpu": cpu_model(),
        "isa": peak.isa.name(), "threads": peak.threads, "fma_peak_gflops": peak.gflops,
        "noisy": noisy,
        "selected_path": gemm_path::selected().name(),
        "paths": paths,
    }))
}

/// One GEMM path's rows of the report: each product's rates and shares of `peak` (GFLOP/s),
/// and the step's rate over all of them, FLOP-weighted.
fn path_report(path: GemmPath, gemms: &[StepGemm], times: &[(f64, f64)], peak: f64) -> Value {
    let (mut flops, mut secs, mut noisy) = (0.0, 0.0, false);
    let mut rows = Vec::new();
    for (g, &(tf, tb)) in gemms.iter().zip(times) {
        let f = 2.0 * (g.m * g.k * g.n) as f64;
        flops += g.flops();
        secs += tf * g.calls as f64 + tb * g.bwd_calls as f64;
        let (fwd, bwd) = (f / tf / 1e9, f / tb / 1e9);
        let ((fwd_share, fwd_noisy), (bwd_share, bwd_noisy)) =
            (share_of_peak(fwd, peak), share_of_peak(bwd, peak));
        noisy |= fwd_noisy || bwd_noisy;
        rows.push(json!({
            "name": g.name, "m": g.m, "k": g.k, "n": g.n, "calls": g.calls,
            "bwd_calls": g.bwd_calls,
            "fwd_gflops": fwd, "bwd_gflops": bwd,
            "fwd_of_peak": fwd_share, "bwd_of_peak": bwd_share,
            "noisy": fwd_noisy || bwd_noisy,
        }));
    }
    let rate = flops / secs / 1e9;
    let (share, step_noisy) = share_of_peak(rate, peak);
    json!({
        "path": path.name(), "shapes": rows,
        "step_gemm_gflops": rate, "step_gemm_of_peak": share,
        "step_gemm_ms": secs * 1e3, "noisy": noisy || step_noisy,
    })
}

/// The timed bench's checks of `w` (flags in range, a step within the host's memory by the
/// same estimate), before anything is allocated or timed: --batch 1000000 aborted on an
/// allocation, --seq 1000000 ran for minutes, --batch 0 printed a table of zeros.
fn check(preset: &Preset, w: &Workload) -> crate::error::Result<()> {
    crate::bench::check_workload(preset, w)?;
    let tokens = w.prompt.saturating_add(w.seq);
    let need = crate::models::step_bytes_of(&preset.config(), 4, w.batch, tokens, w.target_len);
    crate::bench::check_host_bytes(need, w)
}

/// The ceiling report as text.
pub fn text(r: &Value) -> String {
    let mut s = format!(
        "{} ({} threads, {}): float32 FMA peak {:.1} GFLOP/s\n",
        r["cpu"].as_str().unwrap_or("?"),
        r["threads"].as_u64().unwrap_or(0),
        r["isa"].as_str().unwrap_or("?"),
        r["fma_peak_gflops"].as_f64().unwrap_or(0.0)
    );
    for p in r["paths"].as_array().into_iter().flatten() {
        s += &format!(
            "\nGEMM path {}: {} step's frozen-weight products at {:.1} GFLOP/s ({:.0}% of the peak), {:.0} ms\n",
            p["path"].as_str().unwrap_or("?"),
            r["preset"].as_str().unwrap_or("?"),
            p["step_gemm_gflops"].as_f64().unwrap_or(0.0),
            100.0 * p["step_gemm_of_peak"].as_f64().unwrap_or(0.0),
            p["step_gemm_ms"].as_f64().unwrap_or(0.0),
        );
        s += &format!(
            "  {:<28} {:>6} {:>6} {:>6} {:>7} {:>14} {:>14}\n",
            "product", "M", "K", "N", "fwd/bwd", "fwd GFLOP/s", "bwd GFLOP/s"
        );
        for g in p["shapes"].as_array().into_iter().flatten() {
            s += &format!(
                "  {:<28} {:>6} {:>6} {:>6} {:>7} {:>8.1} ({:>2.0}%) {:>8.1} ({:>2.0}%)\n",
                g["name"].as_str().unwrap_or("?"),
                g["m"].as_u64().unwrap_or(0),
                g["k"].as_u64().unwrap_or(0),
                g["n"].as_u64().unwrap_or(0),
                format!(
                    "{}/{}",
                    g["calls"].as_u64().unwrap_or(0),
                    g["bwd_calls"].as_u64().unwrap_or(0)
                ),
                g["fwd_gflops"].as_f64().unwrap_or(0.0),
                100.0 * g["fwd_of_peak"].as_f64().unwrap_or(0.0),
                g["bwd_gflops"].as_f64().unwrap_or(0.0),
                100.0 * g["bwd_of_peak"].as_f64().unwrap_or(0.0),
            );
            if g["noisy"] == true {
                s += "    (noisy: faster than the measured peak; its share is capped at 100%)\n";
            }
        }
    }
    if r["noisy"] == true {
        s += "\nnoisy: a product ran faster than the FMA peak, which the CPU cannot do: other \
              work took the CPU while the peak (or that product) was timed, so the shares are \
              not to be trusted; run again on a quiet machine\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Recompute;
    use crate::train::ptuning::Method;

    fn workload(prompt: usize, seq: usize, target_len: usize) -> Workload {
        Workload {
            batch: 4,
            seq,
            target_len,
            prompt,
            recompute: Recompute::None,
            objective: String::new(),
            method: Method::Prompt,
        }
    }

    /// A rate above the peak is impossible: its share is capped at 1 and flagged noisy; one
    /// below is its plain ratio; a peak of 0 or NaN gives no share, flagged.
    #[test]
    fn shares_of_the_peak_are_at_most_one_and_flag_impossible_rates() {
        assert_eq!(share_of_peak(50.0, 200.0), (0.25, false));
        assert_eq!(share_of_peak(200.0, 200.0), (1.0, false));
        assert_eq!(share_of_peak(324.0, 200.0), (1.0, true));
        assert_eq!(share_of_peak(10.0, 0.0), (0.0, true));
        assert_eq!(share_of_peak(10.0, f64::NAN), (0.0, true));
        // the report: a product faster than the peak is flagged, in its row and the text
        let gemms = [StepGemm {
            name: "tiny",
            m: 10,
            k: 10,
            n: 10,
            calls: 1,
            bwd_calls: 1,
        }];
        // 2000 FLOP in 1 µs = 2 GFLOP/s forward, 0.5 backward, against a peak of 1
        let p = path_report(GemmPath::available()[0], &gemms, &[(1e-6, 4e-6)], 1.0);
        let row = &p["shapes"][0];
        assert_eq!(
            (row["fwd_of_peak"].as_f64(), row["bwd_of_peak"].as_f64()),
            (Some(1.0), Some(0.5))
        );
        assert_eq!(
            (row["noisy"].as_bool(), p["noisy"].as_bool()),
            (Some(true), Some(true))
        );
        let r = json!({"noisy": true, "paths": [p]});
        assert!(text(&r).contains("capped at 100%"), "{}", text(&r));
        assert!(text(&r).contains("not to be trusted"), "{}", text(&r));
        let quiet = path_report(GemmPath::available()[0], &gemms, &[(1e-6, 4e-6)], 10.0);
        assert_eq!(quiet["noisy"].as_bool(), Some(false));
    }

    /// t5-base (12 decoder layers, C 768, 12 heads of 64) at B 4, P 20, T 128: 8 target rows
    /// fold the cross-attention's k and v products into per-head ones at the 32 decoder rows
    /// (2·8·212 <= 148·64); 64 do not (2·64·212 > 148·64), and run them at the 592 rows.
    #[test]
    fn t5_cross_products_are_folded_where_the_step_folds() {
        let preset = Preset::by_name("t5-base").unwrap();
        let cross = |l: usize| {
            let gemms = step_gemms(&preset, &workload(20, 128, l));
            let g = gemms
                .into_iter()
                .find(|g| g.name.starts_with("decoder cross k, v"));
            let g = g.unwrap();
            (g.name, g.m * g.k * g.n * g.calls, g.bwd_calls == g.calls)
        };
        let folded = (
            "decoder cross k, v folded, per head",
            4 * 8 * 64 * 768 * 2 * 12 * 12,
            true,
        );
        assert_eq!(cross(8), folded);
        assert_eq!(
            cross(64),
            ("decoder cross k, v", 4 * 148 * 768 * 768 * 2 * 12, true)
        );
    }

    /// (forward, backward) multiply-adds of the products named `name`, and of all of them.
    fn macs(gemms: &[StepGemm], name: &str) -> (usize, usize) {
        let g = gemms.iter().find(|g| g.name == name).unwrap();
        (g.m * g.k * g.n * g.calls, g.m * g.k * g.n * g.bwd_calls)
    }

    fn total(gemms: &[StepGemm]) -> (usize, usize) {
        (gemms.iter()).fold((0, 0), |(f, b), g| {
            let mkn = g.m * g.k * g.n;
            (f + mkn * g.calls, b + mkn * g.bwd_calls)
        })
    }

    /// llama-3.2-1b (16 layers, C 2048, q 2048, k/v 512 each, MLP 8192, vocabulary 128256) at
    /// B 4, P 20, T 128, 8 target rows: 15 layers' row-wise products at the 592 rows, the last
    /// one's at the 36 rows of the tail (from the row that predicts the first target on), keys
    /// and values of all 16 at every row, the LM head at the 32 target rows; backward the same
    /// less the first layer's q, k and v at the 512 rows that are not the prompt's.
    #[test]
    fn decoder_products_count_the_last_layer_at_the_tail() {
        let preset = Preset::by_name("llama-3.2-1b").unwrap();
        let gemms = step_gemms(&preset, &workload(20, 128, 8));
        let (rows, tail, front, targets) = (4 * 148, 4 * 9, 4 * 20, 4 * 8);
        assert_eq!(macs(&gemms, "q").0, rows * 2048 * 2048 * 15);
        assert_eq!(macs(&gemms, "q").1, rows * 2048 * 2048 * 14);
        assert_eq!(macs(&gemms, "first layer q dx"), (0, front * 2048 * 2048));
        let last_up = tail * 2048 * 8192 * 2;
        assert_eq!(
            macs(&gemms, "last layer mlp up (and gate)"),
            (last_up, last_up)
        );
        assert_eq!(macs(&gemms, "k, v").0, rows * 2048 * 512 * 32);
        assert_eq!(
            macs(&gemms, "first layer k, v dx").1,
            front * 2048 * 512 * 2
        );
        assert_eq!(macs(&gemms, "lm head").0, targets * 2048 * 128256);
        let layer = |m: usize| m * (2 * 2048 * 2048 + 3 * 2048 * 8192);
        let head = targets * 2048 * 128256;
        let fwd = 15 * layer(rows) + layer(tail) + 32 * rows * 2048 * 512 + head;
        let skipped = (rows - front) * 2048 * (2048 + 2 * 512);
        assert_eq!(total(&gemms), (fwd, fwd - skipped));
    }

    /// bert-base (12 layers, C 768, FFN 3072) at B 4, P 20, T 128 under `pet`: 11 layers'
    /// products at the 592 rows, the last one's queries, output projection and FFN at the one
    /// [MASK] row of each example, keys and values of all 12 at every row, the head's dense
    /// layer and two verbalizer rows at the [MASK] rows; backward the same less the first
    /// layer's q, k and v at the 512 rows that are not the prompt's (all 592 under prefix
    /// tuning).
    #[test]
    fn bert_products_count_the_last_layer_at_the_head_rows() {
        let preset = Preset::by_name("bert-base").unwrap();
        let mut w = workload(20, 128, 0);
        w.objective = "pet".into();
        let gemms = step_gemms(&preset, &w);
        let (rows, tail, front) = (4 * 148, 4, 4 * 20);
        assert_eq!(macs(&gemms, "q, attention out").0, rows * 768 * 768 * 22);
        assert_eq!(macs(&gemms, "q, attention out").1, rows * 768 * 768 * 21);
        assert_eq!(macs(&gemms, "last layer intermediate").0, tail * 768 * 3072);
        assert_eq!(
            macs(&gemms, "k, v"),
            (rows * 768 * 768 * 24, rows * 768 * 768 * 22)
        );
        assert_eq!(
            macs(&gemms, "first layer q, k, v dx"),
            (0, front * 768 * 768 * 3)
        );
        let layer = |m: usize| m * (2 * 768 * 768 + 2 * 768 * 3072);
        let head = 4 * 768 * (768 + 2);
        let fwd = 11 * layer(rows) + layer(tail) + 24 * rows * 768 * 768 + head;
        let skipped = (rows - front) * 768 * 768 * 3;
        assert_eq!(total(&gemms), (fwd, fwd - skipped));
        // prefix tuning: no prompt rows, no input gradient wanted of the first layer
        w.method = Method::Prefix(crate::PrefixTuning {
            projection: false,
            hidden: None,
            placement: crate::models::Placement::Papers,
        });
        let prefix = step_gemms(&preset, &w);
        assert!(prefix.iter().all(|g| g.name != "first layer q, k, v dx"));
        let rows = 4 * 128;
        assert_eq!(
            macs(&prefix, "k, v"),
            (rows * 768 * 768 * 24, rows * 768 * 768 * 22)
        );
        // mlm: the most labelled positions of one row of the bench's batch
        w.objective = "mlm".into();
        w.method = Method::Prompt;
        let r = bert_tail_rows(&preset, &w);
        assert!(r > 0 && r < 128, "{r}");
        let gemms = step_gemms(&preset, &w);
        let g = gemms
            .iter()
            .find(|g| g.name == "last layer output")
            .unwrap();
        assert_eq!(g.m, 4 * r);
    }
}
