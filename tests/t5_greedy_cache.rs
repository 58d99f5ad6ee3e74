//! T5 greedy decoding with a cache (`T5::greedy`, models/t5/generate.rs: the encoder once,
//! cross-attention keys and values once per batch, self-attention keys and values appended
//! one step at a time, the relative bias read by `attention_decode`) decodes what the decoder
//! without a cache gives: one teacher-forced `decoder_fwd` over [start, the decoded ids] (at
//! step s exactly the uncached decoder's input then) picks every decoded token at its step
//! (argmax) and gives their summed log-probability within 1e-5. On the three T5 fixtures,
//! behind a prompt (prompt tuning), a prefix under each placement, and a stack of two
//! prefixes whose rows hide leading rows (mixed batches); three rows of different lengths,
//! each under its own limit, then stopping at an end token met along the way, then rows long
//! enough that the cache (P + `FIRST_STEPS` rows at first) doubles twice.

mod common;

use common::fixture;
use softprompt::internals::backend::{Backend, DType};
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::prefix::{MixedPrefix, PrefixInputs};
use softprompt::internals::models::t5::{self, T5Inputs, FIRST_STEPS, T5};
use softprompt::internals::models::{Model as Net, Placement, Recompute, TokenBatch};
use softprompt::internals::rng::Rng;
use softprompt::internals::train::Model;

/// Scores within this relative error of the uncached decoder's: both sum the same float32
/// log-probabilities, the logits differing only by the order of the attention's sums.
const SCORE_TOL: f64 = 1e-5;

/// What the decoder reads besides the tokens.
#[derive(Clone, Copy, Debug)]
enum Tuning {
    /// P prompt rows in front of the encoder's tokens
    Prompt(usize),
    /// a prefix of P rows under a placement
    Prefix(usize, Placement),
    /// two prefixes of P rows, papers' placement: the rows read slots 0, 1, 0 and hide 0, 1
    /// and all P of their leading rows
    Stack(usize),
}

/// Three rows of 5, 2 and 7 tokens, right-padded.
fn rows(vocab: usize) -> TokenBatch {
    let (lens, t) = ([5usize, 2, 7], 7);
    let mut rng = Rng::new(3);
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for n in lens {
        for j in 0..t {
            let id = 2 + (rng.uniform() * (vocab - 2) as f64) as i32;
            ids.push(if j < n { id } else { 0 });
            mask.push((j < n) as i32);
        }
    }
    TokenBatch {
        b: 3,
        t,
        ids,
        mask,
        type_ids: None,
    }
}

/// The batch's inputs with decoder `labels` (B, L) behind `tuning`'s prefix, if any.
fn inputs<B: Backend>(
    be: &B,
    m: &T5<B>,
    batch: &TokenBatch,
    tuning: Tuning,
    table: &B::Buf,
    labels: &[i32],
    l: usize,
) -> T5Inputs<B> {
    let p = match tuning {
        Tuning::Prompt(p) => p,
        _ => 0,
    };
    let inp = t5::upload_inputs(be, &m.cfg, batch, p, labels, l).unwrap();
    let (le, ld, a) = (
        m.cfg.num_layers,
        m.cfg.num_decoder_layers,
        m.cfg.inner_dim(),
    );
    let pre = match tuning {
        Tuning::Prompt(_) => return inp,
        Tuning::Prefix(p, Placement::Papers) => {
            PrefixInputs::new(be, table, p, le + ld, a, Placement::Papers).unwrap()
        }
        Tuning::Prefix(p, Placement::Peft) => {
            PrefixInputs::new(be, table, p, le, a, Placement::Peft).unwrap()
        }
        Tuning::Stack(p) => PrefixInputs::new(be, table, 2 * p, le + ld, a, Placement::Papers)
            .unwrap()
            .with_rows(MixedPrefix {
                slot: vec![0, 1, 0],
                hidden: vec![0, 1, p],
                prefixes: 2,
            })
            .unwrap(),
    };
    inp.with_prefix(be, &m.cfg, pre).unwrap()
}

/// The prompt (P, C) or prefix table `tuning` reads, random.
fn table<B: Backend>(be: &B, m: &T5<B>, tuning: Tuning, seed: u64) -> B::Buf {
    let (le, ld, a) = (
        m.cfg.num_layers,
        m.cfg.num_decoder_layers,
        m.cfg.inner_dim(),
    );
    let n = match tuning {
        Tuning::Prompt(p) => p * m.cfg.d_model,
        Tuning::Prefix(p, Placement::Papers) => p * (le + ld) * 2 * a,
        Tuning::Prefix(p, Placement::Peft) => p * le * 2 * a,
        Tuning::Stack(p) => 2 * p * (le + ld) * 2 * a,
    };
    let mut rng = Rng::new(seed);
    let data: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 0.5).collect();
    be.upload(DType::F32, &data).unwrap()
}

/// Checks `got` (each row's ids and summed log-probability) against the teacher-forced
/// decoder over them; returns the worst relative score error.
#[allow(clippy::too_many_arguments)]
fn check_against_uncached<B: Backend>(
    be: &B,
    m: &T5<B>,
    batch: &TokenBatch,
    tuning: Tuning,
    table: &B::Buf,
    enc: &B::Buf,
    got: &[(Vec<i32>, f32)],
    what: &str,
) -> f64 {
    let (b, v) = (batch.b, m.cfg.vocab_size);
    let l = got.iter().map(|(ids, _)| ids.len()).max().unwrap();
    let labels: Vec<i32> = (got.iter())
        .flat_map(|(ids, _)| (0..l).map(|s| ids.get(s).copied().unwrap_or(0)))
        .collect();
    let inp = inputs(be, m, batch, tuning, table, &labels, l);
    let mut acct = MemoryAccountant::new();
    let (dec, _) = (m.decoder_fwd(be, &mut acct, enc, &inp, Recompute::Layer, None)).unwrap();
    let all: Vec<i32> = (0..(b * l) as i32).collect();
    let logits = m.lm_logits(be, &dec, &all).unwrap();
    let mut worst = 0.0f64;
    for (bi, (ids, score)) in got.iter().enumerate() {
        let mut want = 0.0f64;
        for (s, &id) in ids.iter().enumerate() {
            let row = &logits[(bi * l + s) * v..][..v];
            let best = (0..v).fold(0, |a, j| if row[j] > row[a] { j } else { a });
            assert_eq!(best as i32, id, "{what}: row {bi} step {s}");
            let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
            want += row[id as usize] as f64 - lse;
        }
        let err = Closeness::of(&[*score], &[want as f32], SCALAR_FLOOR).rel_err;
        assert!(
            err <= SCORE_TOL,
            "{what}: row {bi} score {score} vs {want}: {err:.2e}"
        );
        worst = worst.max(err);
    }
    worst
}

/// Every tuning on fixture `name` over `be`: decoded under per-row limits, then with end
/// tokens met along the way (row 0: the token it decoded at step 3; row 2: its first).
fn check_fixture<B: Backend>(be: &B, name: &str) {
    let model = Model::load(be, &fixture(name)).unwrap();
    let Net::T5(m) = &model.net else {
        panic!("{name}: a T5 fixture")
    };
    let batch = rows(m.cfg.vocab_size);
    for (i, tuning) in [
        Tuning::Prompt(4),
        Tuning::Prefix(3, Placement::Papers),
        Tuning::Prefix(2, Placement::Peft),
        Tuning::Stack(3),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{name} {tuning:?}");
        let table = table(be, m, tuning, 10 + i as u64);
        let inp = inputs(be, m, &batch, tuning, &table, &[0; 3], 1);
        let none = be.zeros(DType::F32, 0).unwrap();
        let prompt = if matches!(tuning, Tuning::Prompt(_)) {
            &table
        } else {
            &none
        };
        let mut acct = MemoryAccountant::new();
        let (enc, _) =
            (m.encoder_fwd(be, &mut acct, prompt, &inp, Recompute::Layer, None)).unwrap();
        let limits = [9, 5, 12];
        let free = m.greedy(be, &enc, &inp, &limits, &[-1; 3]).unwrap();
        for (bi, (ids, _)) in free.iter().enumerate() {
            assert_eq!(ids.len(), limits[bi], "{what}: row {bi} runs to its limit");
        }
        let mut worst = check_against_uncached(be, m, &batch, tuning, &table, &enc, &free, &what);
        let ends = [free[0].0[3], -1, free[2].0[0]];
        let stopped = m.greedy(be, &enc, &inp, &limits, &ends).unwrap();
        for (bi, (ids, _)) in stopped.iter().enumerate() {
            let at = free[bi].0.iter().position(|&t| t == ends[bi]);
            let want = &free[bi].0[..at.map_or(limits[bi], |k| k + 1)];
            assert_eq!(ids, want, "{what}: row {bi} stops after its end token");
        }
        let stop_err = check_against_uncached(be, m, &batch, tuning, &table, &enc, &stopped, &what);
        worst = worst.max(stop_err);
        // past 2·FIRST_STEPS + P rows: the cache grows twice (P ≤ 6 here)
        let long = [2 * FIRST_STEPS + 9, 3, 2 * FIRST_STEPS + 1];
        let grown = m.greedy(be, &enc, &inp, &long, &[-1; 3]).unwrap();
        let long_err = check_against_uncached(be, m, &batch, tuning, &table, &enc, &grown, &what);
        worst = worst.max(long_err);
        eprintln!("{what}: worst score rel err {worst:.2e}");
    }
}

/// The cache starts at P + FIRST_STEPS rows and doubles when a step finds it full, up to P +
/// the most tokens a row decodes; the tokens are greedy's.
#[test]
fn t5_decode_cache_grows_on_demand() {
    check_growth(&softprompt::internals::CpuBackend::<f32>::new());
}

fn check_growth<B: Backend>(be: &B) {
    let model = Model::load(be, &fixture("t5_v1_1")).unwrap();
    let Net::T5(m) = &model.net else {
        panic!("a T5 fixture")
    };
    let batch = rows(m.cfg.vocab_size);
    let (p, steps) = (3, 2 * FIRST_STEPS + 9);
    let tuning = Tuning::Stack(p);
    let table = table(be, m, tuning, 7);
    let inp = inputs(be, m, &batch, tuning, &table, &[0; 3], 1);
    let none = be.zeros(DType::F32, 0).unwrap();
    let mut acct = MemoryAccountant::new();
    let (enc, _) = (m.encoder_fwd(be, &mut acct, &none, &inp, Recompute::Layer, None)).unwrap();
    let mut cache = m.decode_start(be, &enc, &inp, steps).unwrap();
    let mut caps = vec![cache.capacity()];
    let mut next = vec![m.cfg.decoder_start_token_id as i32; 3];
    let mut ids = vec![Vec::new(); 3];
    for _ in 0..steps {
        let logits = m.decode_step(be, &mut cache, &next).unwrap();
        for (bi, row) in logits.chunks(m.cfg.vocab_size).enumerate() {
            let best = (0..row.len()).fold(0, |a, j| if row[j] > row[a] { j } else { a });
            next[bi] = best as i32;
            ids[bi].push(best as i32);
        }
        caps.dedup();
        caps.push(cache.capacity());
    }
    caps.dedup();
    let full = p + FIRST_STEPS;
    assert_eq!(
        caps,
        [full, 2 * full, p + steps],
        "the cache's rows per batch row"
    );
    let greedy = m.greedy(be, &enc, &inp, &[steps; 3], &[-1; 3]).unwrap();
    for (bi, (want, _)) in greedy.iter().enumerate() {
        assert_eq!(&ids[bi], want, "row {bi}: the stepped tokens are greedy's");
    }
}

#[test]
fn t5_cached_greedy_equals_the_uncached_decoder() {
    let be = softprompt::internals::CpuBackend::<f32>::new();
    for name in ["t5_flan", "t5_v1_0", "t5_v1_1"] {
        check_fixture(&be, name);
    }
}

/// The same through the kernels (the `emu` device, float32 build): `attention_decode` with
/// the relative bias, against `attention_fwd` in the uncached decoder.
#[cfg(feature = "emu")]
#[test]
fn t5_cached_greedy_equals_the_uncached_decoder_on_the_emu_device() {
    use softprompt::internals::backend::Precision;
    let be = softprompt::internals::cuda::CudaBackend::emu_with(Precision::F32).unwrap();
    for name in ["t5_flan", "t5_v1_0", "t5_v1_1"] {
        check_fixture(&be, name);
    }
    check_growth(&be);
}
