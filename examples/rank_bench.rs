//! Rank classification's time with and without the cached prefill (#16 item 2), on the CPU,
//! on a decoder preset's shapes with random frozen weights: B rows of T tokens behind a
//! P-row prompt, K labels of L tokens each. Before: one forward over [prompt][row][label] per
//! label (`target_losses`); after: the rows once (`rank_prefill`), then each label's tokens
//! (`rank_losses`). Checks that both give the same losses first, then prints the medians.
//!     cargo run --release --example rank_bench [PRESET LAYERS B T P K L]
//! (defaults: bloom-560m 4 8 64 20 4 3)
use softprompt::internals::backend::{DType, Storage};
use softprompt::internals::bench::Preset;
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::decoder::Decoder;
use softprompt::internals::models::{Model, TokenBatch};
use softprompt::internals::rng::Rng;
use softprompt::internals::train::causal::joined;
use softprompt::internals::CpuBackend;
use std::time::Instant;

type Cpu = CpuBackend<f32>;

fn main() -> softprompt::internals::error::Result<()> {
    let arg = |i: usize, default: &str| std::env::args().nth(i).unwrap_or(default.into());
    let num = |i: usize, default: &str| arg(i, default).parse::<usize>().expect("a number");
    let preset = Preset::by_name(&arg(1, "bloom-560m"))?.truncated(num(2, "4"));
    let (b, t, p, k, l) = (
        num(3, "8"),
        num(4, "64"),
        num(5, "20"),
        num(6, "4"),
        num(7, "3"),
    );
    let be = Cpu::new();
    let model = Model::random(&be, &preset.config(), 1)?;
    let m = model.decoder().expect("a decoder-only preset");
    let (v, c) = (m.cfg.vocab_size, m.cfg.hidden_size);
    let mut rng = Rng::new(3);
    let mut ids = |n: usize| -> Vec<i32> { (0..n).map(|_| rng.below(v as u64) as i32).collect() };
    let tokens = TokenBatch {
        b,
        t,
        ids: ids(b * t),
        mask: vec![1; b * t],
        type_ids: None,
    };
    let labels: Vec<Vec<i32>> = (0..k).map(|_| ids(l)).collect();
    let prompt: Vec<f32> = (0..p * c).map(|_| 0.02 * rng.normal() as f32).collect();
    let prompt = be.upload(DType::F32, &prompt)?;
    let work = Work {
        be: &be,
        m,
        prompt: &prompt,
        p,
        tokens: &tokens,
        labels: &labels,
    };
    let before = || joined_losses(&work);
    let after = || cached_losses(&work);
    let (want, got) = (before()?, after()?);
    let err = Closeness::of(&got, &want, SCALAR_FLOOR).rel_err;
    println!(
        "B={b} T={t} P={p} K={k} L={l}, {} layers: rel err {err:.1e}",
        m.cfg.num_layers
    );
    assert!(err < 1e-5, "the cached path differs: {err}");
    let (joined_ms, cached_ms) = (median_ms(before)?, median_ms(after)?);
    println!(
        "joined forward per label: {joined_ms:.0} ms; cached prefill: {cached_ms:.0} ms; \
         speed-up {:.2}x",
        joined_ms / cached_ms
    );
    Ok(())
}

/// The median of 3 timed runs after one warm-up, in ms.
fn median_ms<T>(
    mut f: impl FnMut() -> softprompt::internals::error::Result<T>,
) -> softprompt::internals::error::Result<f64> {
    f()?;
    let mut ms = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        f()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[1])
}

/// What both paths score: B rows behind a prompt of P rows, K labels.
struct Work<'a> {
    be: &'a Cpu,
    m: &'a Decoder<Cpu>,
    prompt: &'a <Cpu as Storage>::Buf,
    p: usize,
    tokens: &'a TokenBatch,
    labels: &'a [Vec<i32>],
}

/// Every label's target losses by one forward over the rows joined with it.
fn joined_losses(w: &Work) -> softprompt::internals::error::Result<Vec<f64>> {
    let (be, m, tokens) = (w.be, w.m, w.tokens);
    let mut acct = MemoryAccountant::new();
    let mut out = Vec::new();
    for label in w.labels {
        let targets: Vec<i32> = (0..tokens.b).flat_map(|_| label.iter().copied()).collect();
        let (rows, lab) = joined(tokens, &targets, label.len(), 0);
        let inp = m.upload_inputs(be, &rows, w.p, Some(&lab))?;
        let losses = m.target_losses(be, &mut acct, w.prompt, &inp)?;
        out.extend(losses.iter().map(|&x| x as f64));
    }
    Ok(out)
}

/// Every label's target losses after one prefill of the rows.
fn cached_losses(w: &Work) -> softprompt::internals::error::Result<Vec<f64>> {
    let (m, labels) = (w.m, w.labels);
    let mut acct = MemoryAccountant::new();
    let mut pre = m.rank_prefill(w.be, w.prompt, w.tokens, w.p, None, None)?;
    // (B, K, L), every label L tokens: (row, label) pairs in that order
    let (k, l) = (labels.len(), labels[0].len());
    let targets: Vec<i32> = (0..w.tokens.b).flat_map(|_| labels.concat()).collect();
    let (rows, losses) = m.rank_losses(w.be, &mut acct, &mut pre, &targets, k, l)?;
    // in the joined path's order: label, row, token
    let mut out: Vec<(usize, usize, f64)> = (rows.iter().zip(&losses).enumerate())
        .map(|(i, (&r, &x))| (r as usize % k, i, x as f64))
        .collect();
    out.sort_by_key(|&(ki, i, _)| (ki, i));
    Ok(out.into_iter().map(|(_, _, x)| x).collect())
}
