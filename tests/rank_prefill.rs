//! Rank classification with a cached prefill (#16 item 2): the rows run once
//! (`Decoder::rank_prefill`) and each label's target then reads their keys and values
//! (`rank_losses`); every target token's loss equals the full forward over the row joined
//! with the target (`target_losses`, the path rank scoring took before) within 1e-5 relative,
//! on ALiBi (BLOOM) and RoPE (Llama, Qwen2), behind a prompt-tuning prompt and behind a
//! prefix-tuning prefix, with labels of 1, 2, 3 and 5 tokens.

mod common;

use common::fixture;
use softprompt::internals::backend::Backend;
use softprompt::internals::backend::DType;
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::decoder::Decoder;
use softprompt::internals::models::prefix::PrefixInputs;
use softprompt::internals::models::{Placement, TokenBatch};
use softprompt::internals::rng::Rng;
use softprompt::internals::train::causal::joined;
use softprompt::internals::train::Model;
use softprompt::internals::CpuBackend;

const REL_TOL: f64 = 1e-5;

/// Right-padded rows of 1, 12 and 5 tokens.
fn batch<B: Backend>(model: &Model<B>) -> TokenBatch {
    let rows: Vec<Vec<i32>> = [
        "a",
        "Tweet : the music was lovely and the story slow. Label :",
        "a dull plot",
    ]
    .iter()
    .map(|t| model.tokenizer.encode(t, true).unwrap())
    .collect();
    let t = rows.iter().map(Vec::len).max().unwrap();
    let mut b = TokenBatch {
        b: rows.len(),
        t,
        ids: vec![0; rows.len() * t],
        mask: vec![0; rows.len() * t],
        type_ids: None,
    };
    for (bi, r) in rows.iter().enumerate() {
        b.ids[bi * t..][..r.len()].copy_from_slice(r);
        b.mask[bi * t..][..r.len()].fill(1);
    }
    b
}

/// Behind a prompt (P rows, `prefix` None) or a prefix: every label's losses both ways, the
/// cached path scoring all labels of all rows in one call.
#[allow(clippy::too_many_arguments)]
fn check<B: Backend>(
    be: &B,
    m: &Decoder<B>,
    tokens: &TokenBatch,
    prompt: &B::Buf,
    p: usize,
    prefix: Option<&dyn Fn() -> PrefixInputs<B>>,
    what: &str,
    tol: f64,
) -> f64 {
    let labels: [&[i32]; 4] = [&[7], &[11, 3], &[5, 9, 2], &[4, 4, 8, 1, 6]];
    let (b, k, l) = (tokens.b, labels.len(), 5);
    // (B, K, L): every row's labels, -100 padded
    let mut targets = vec![-100; b * k * l];
    for (row, label) in targets.chunks_mut(l).zip(labels.iter().cycle()) {
        row[..label.len()].copy_from_slice(label);
    }
    let mut acct = MemoryAccountant::new();
    let mut pre = (m.rank_prefill(be, prompt, tokens, p, None, prefix.map(|f| f()))).unwrap();
    let (rows, got) = m
        .rank_losses(be, &mut acct, &mut pre, &targets, k, l)
        .unwrap();
    let (mut want_rows, mut want) = (Vec::new(), Vec::new());
    for (ki, label) in labels.iter().enumerate() {
        let targets: Vec<i32> = (0..b).flat_map(|_| label.iter().copied()).collect();
        let (joined_rows, labels) = joined(tokens, &targets, label.len(), 0);
        let inp = m.upload_inputs(be, &joined_rows, p, Some(&labels)).unwrap();
        let inp = match prefix {
            Some(f) => m.with_prefix(be, inp, f()).unwrap(),
            None => inp,
        };
        let losses = m.target_losses(be, &mut acct, prompt, &inp).unwrap();
        // every row has a token, so every target token is scored, in row order
        assert_eq!(losses.len(), b * label.len(), "{what}");
        for (bi, row) in losses.chunks(label.len()).enumerate() {
            want_rows.push(((bi * k + ki) as i32, row.to_vec()));
        }
    }
    want_rows.sort_by_key(|(r, _)| *r);
    for (r, row) in want_rows {
        want.extend(row.iter().map(|&x| (r, x as f64)));
    }
    let want_r: Vec<i32> = want.iter().map(|&(r, _)| r).collect();
    assert_eq!(rows, want_r, "{what}: the (row, label) of each loss");
    let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
    let want: Vec<f64> = want.iter().map(|&(_, x)| x).collect();
    let err = Closeness::of(&got, &want, SCALAR_FLOOR).rel_err;
    assert!(err < tol, "{what}: {got:?} vs {want:?} ({err:.1e})");
    err
}

#[test]
fn cached_rank_losses_equal_the_joined_forward() {
    on(&CpuBackend::<f32>::new(), "cpu", REL_TOL);
}

/// Through the kernels (the `emu` device): the continuation reads the stack of the rows'
/// caches as the attention kernels read a stack of prefixes. The float32 build at 1e-5; the
/// bf16 build (the stack through the host, F32 as the op reads a prefix) at bf16's parity
/// tolerance, 2e-2 (measured: 2.5e-3 at most, the two paths rounding the activations apart).
#[cfg(feature = "emu")]
#[test]
fn cached_rank_losses_equal_the_joined_forward_on_the_emu_device() {
    use softprompt::internals::backend::{Precision, Storage};
    use softprompt::internals::cuda::CudaBackend;
    on(
        &CudaBackend::emu_with(Precision::F32).unwrap(),
        "emu f32",
        REL_TOL,
    );
    let bf16 = CudaBackend::emu_with(Precision::Bf16).unwrap();
    on(&bf16, "emu bf16", bf16.device().default_tol());
}

/// Both tunings on every decoder fixture, on `be`, within `tol`.
fn on<B: Backend>(be: &B, tag: &str, tol: f64) {
    for name in ["bloom", "llama", "qwen2"] {
        let model = Model::load(be, &fixture(name)).unwrap();
        let m = model.net.decoder().unwrap();
        let (blocks, kvw, c) = (m.cfg.num_layers, m.cfg.kv_width(), m.cfg.hidden_size);
        let tokens = batch(&model);
        let mut rng = Rng::new(5);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| 0.5 * rng.normal() as f32).collect() };
        let p = 3;
        let prompt = be.upload(DType::F32, &random(p * c)).unwrap();
        let what = format!("{name} {tag} prompt");
        let worst = check(be, m, &tokens, &prompt, p, None, &what, tol);
        eprintln!("{what} tuning: worst rel err {worst:.2e}");
        let table = be
            .upload(DType::F32, &random(4 * blocks * 2 * kvw))
            .unwrap();
        let prefix = || PrefixInputs::new(be, &table, 4, blocks, kvw, Placement::Peft).unwrap();
        let none = be.upload(DType::F32, &[]).unwrap();
        let what = format!("{name} {tag} prefix");
        let worst = check(be, m, &tokens, &none, 0, Some(&prefix), &what, tol);
        eprintln!("{what} tuning: worst rel err {worst:.2e}");
    }
}
