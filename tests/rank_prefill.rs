//! Rank classification with a cached prefill (#16 item 2): the rows run once
//! (`Decoder::rank_prefill`) and each label's target then reads their keys and values
//! (`rank_losses`); every target token's loss equals the full forward over the row joined
//! with the target (`target_losses`, the path rank scoring took before) within 1e-5 relative,
//! on ALiBi (BLOOM) and RoPE (Llama, Qwen2), behind a prompt-tuning prompt and behind a
//! prefix-tuning prefix, with labels of 1, 2, 3 and 5 tokens; the same for a batch mixing
//! prompts of a table and prefixes of a stack (`mixed_stack`), every row against its own
//! joined forward alone. The continuation's chunks (one target at a time, two, all at once)
//! change no score.

mod common;

use common::fixture;
use softprompt::internals::backend::Backend;
use softprompt::internals::backend::DType;
use softprompt::internals::closeness::{Closeness, SCALAR_FLOOR};
use softprompt::internals::memory::MemoryAccountant;
use softprompt::internals::models::decoder::{Decoder, RankPrefill};
use softprompt::internals::models::prefix::{MixedPrefix, PrefixInputs};
use softprompt::internals::models::{MixedPrompts, Placement, TokenBatch};
use softprompt::internals::rng::Rng;
use softprompt::internals::train::causal::joined;
use softprompt::internals::train::Model;
use softprompt::internals::CpuBackend;

const REL_TOL: f64 = 1e-5;
/// How far chunking the continuation may move the losses (relative L2): a target's row is
/// computed as alone whatever the rows beside it, but a GEMM over fewer rows may sum in
/// another order. Measured: 1.6e-7 at most on the CPU and in the emulator's float32 build, so
/// 1e-6; 4.8e-6 in its bf16 build (an activation rounded to the neighbouring bf16), so 1e-4.
const CHUNK_TOL: f64 = 1e-6;
const BF16_CHUNK_TOL: f64 = 1e-4;

/// The chunks' tolerance beside a check at `tol`: bf16's past float32's.
fn chunk_tol(tol: f64) -> f64 {
    if tol > REL_TOL {
        BF16_CHUNK_TOL
    } else {
        CHUNK_TOL
    }
}

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
    right_padded(&rows)
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
    let (rows, got) = chunked(be, m, &mut pre, &targets, k, l, what, tol);
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

/// `rank_losses` after the prefill `pre` with its default chunks, checked against chunks of
/// 1 target, 2 and all B·K (one continuation batch) over the same prefill: the same rows,
/// and losses within `chunk_tol(tol)`.
#[allow(clippy::too_many_arguments)]
fn chunked<B: Backend>(
    be: &B,
    m: &Decoder<B>,
    pre: &mut RankPrefill<B>,
    targets: &[i32],
    k: usize,
    l: usize,
    what: &str,
    tol: f64,
) -> (Vec<i32>, Vec<f32>) {
    let mut acct = MemoryAccountant::new();
    let (rows, got) = m.rank_losses(be, &mut acct, pre, targets, k, l).unwrap();
    for chunk in [1, 2, usize::MAX] {
        pre.set_chunk_rows(chunk);
        let (r, x) = m.rank_losses(be, &mut acct, pre, targets, k, l).unwrap();
        assert_eq!(r, rows, "{what}: chunks of {chunk}");
        let f64s = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
        let err = Closeness::of(&f64s(&x), &f64s(&got), SCALAR_FLOOR).rel_err;
        let chunk = (chunk < usize::MAX).then_some(chunk);
        eprintln!("{what}: chunks of {chunk:?} targets (None: all): rel err {err:.1e}");
        assert!(
            err <= chunk_tol(tol),
            "{what}: chunks of {chunk:?} move the losses by {err:.1e}"
        );
    }
    (rows, got)
}

#[test]
fn cached_rank_losses_equal_the_joined_forward() {
    on(&CpuBackend::<f32>::new(), "cpu", REL_TOL);
}

/// Through the kernels (the `emu` device): the continuation reads the stack of the rows'
/// caches as the attention kernels read a stack of prefixes. The float32 build at 1e-5; the
/// bf16 build (the stack cast to F32 on the device, as the op reads a prefix) at bf16's parity
/// tolerance, 2e-2 (measured: 1.7e-3 at most, the two paths rounding the activations apart;
/// float32: 0, the emulator's float32 sums being the same in both paths).
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

/// What a row of the mixed batch reads: the first `len` rows of prompt `k` of the table, or
/// prefix `slot` of the stack, its last `len` rows.
#[derive(Clone, Copy)]
enum Reads {
    Prompt { k: usize, len: usize },
    Prefix { slot: usize, len: usize },
}

/// One batch mixing the prompts of a (2, 3, C) table (all 3 rows, and 2 of one) and the
/// prefixes of a (2·4, N·2·Hkv·D) stack (4 rows, and 2 left-padded), with a row reading
/// neither, each row scoring its own targets (one of them empty): every row's losses equal
/// its joined forward alone, behind its own prompt or prefix, within `tol`.
fn mixed_stack<B: Backend>(be: &B, model: &Model<B>, what: &str, tol: f64) -> f64 {
    let m = model.net.decoder().unwrap();
    let (blocks, kvw, c) = (m.cfg.num_layers, m.cfg.kv_width(), m.cfg.hidden_size);
    let reads = [
        Reads::Prefix { slot: 0, len: 2 },
        Reads::Prompt { k: 0, len: 3 },
        Reads::Prefix { slot: 1, len: 4 },
        Reads::Prompt { k: 1, len: 2 },
        Reads::Prompt { k: 0, len: 0 },
    ];
    let texts = [
        "a dull plot",
        "a",
        "the story was slow",
        "lovely music . Label :",
        "ok",
    ];
    let rows: Vec<Vec<i32>> = (texts.iter())
        .map(|t| model.tokenizer.encode(t, true).unwrap())
        .collect();
    let tokens = right_padded(&rows);
    let (p, lp, width) = (3, 4, blocks * 2 * kvw);
    let mut rng = Rng::new(9);
    let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| 0.5 * rng.normal() as f32).collect() };
    let (table, stack) = (random(2 * p * c), random(2 * lp * width));
    let idx: Vec<i32> = (reads.iter())
        .map(|r| match *r {
            Reads::Prompt { k, .. } => k as i32,
            Reads::Prefix { .. } => 0,
        })
        .collect();
    let lens: Vec<usize> = (reads.iter())
        .map(|r| match *r {
            Reads::Prompt { len, .. } => len,
            Reads::Prefix { .. } => 0,
        })
        .collect();
    let (slot, hidden): (Vec<usize>, Vec<usize>) = (reads.iter())
        .map(|r| match *r {
            Reads::Prefix { slot, len } => (slot, lp - len),
            Reads::Prompt { .. } => (0, lp),
        })
        .unzip();
    let mix = MixedPrompts {
        idx: &idx,
        k: 2,
        lens: Some(&lens),
    };
    let stack_buf = be.upload(DType::F32, &stack).unwrap();
    let pre = PrefixInputs::new(be, &stack_buf, 2 * lp, blocks, kvw, Placement::Peft).unwrap();
    let pre = pre
        .with_rows(MixedPrefix {
            slot,
            hidden,
            prefixes: 2,
        })
        .unwrap();
    // (B, K, L): row b's labels, its third empty for row 2
    let labels: [&[i32]; 4] = [&[7], &[11, 3], &[5, 9, 2], &[4, 4, 8, 1]];
    let (b, k, l) = (reads.len(), 3, 4);
    let label = |bi: usize, ki: usize| -> &[i32] {
        match (bi, ki) {
            (2, 2) => &[],
            _ => labels[(bi + ki) % labels.len()],
        }
    };
    let mut targets = vec![-100; b * k * l];
    for (r, row) in targets.chunks_mut(l).enumerate() {
        let lab = label(r / k, r % k);
        row[..lab.len()].copy_from_slice(lab);
    }
    let table_buf = be.upload(DType::F32, &table).unwrap();
    let mut prefill = (m.rank_prefill(be, &table_buf, &tokens, p, Some(&mix), Some(pre))).unwrap();
    let (got_rows, got) = chunked(be, m, &mut prefill, &targets, k, l, what, tol);
    // each row alone, joined with each of its labels
    let mut acct = MemoryAccountant::new();
    let (mut want_rows, mut want) = (Vec::new(), Vec::new());
    for (bi, read) in reads.iter().enumerate() {
        let alone = right_padded(&rows[bi..bi + 1]);
        for ki in 0..k {
            let lab = label(bi, ki);
            let (joined_rows, labs) = joined(&alone, lab, lab.len(), 0);
            let (prompt, p, prefix) = match *read {
                Reads::Prompt { k, len } => (&table[k * p * c..][..len * c], len, None),
                Reads::Prefix { slot, len } => {
                    let own = &stack[(slot * lp + lp - len) * width..][..len * width];
                    let own = be.upload(DType::F32, own).unwrap();
                    let pre = PrefixInputs::new(be, &own, len, blocks, kvw, Placement::Peft);
                    (&[][..], 0, Some(pre.unwrap()))
                }
            };
            let inp = m.upload_inputs(be, &joined_rows, p, Some(&labs)).unwrap();
            let inp = match prefix {
                Some(pre) => m.with_prefix(be, inp, pre).unwrap(),
                None => inp,
            };
            let prompt = be.upload(DType::F32, prompt).unwrap();
            let losses = m.target_losses(be, &mut acct, &prompt, &inp).unwrap();
            assert_eq!(losses.len(), lab.len(), "{what}: row {bi} label {ki}");
            want_rows.extend(std::iter::repeat_n((bi * k + ki) as i32, lab.len()));
            want.extend(losses.iter().map(|&x| x as f64));
        }
    }
    assert_eq!(got_rows, want_rows, "{what}: the (row, label) of each loss");
    let got: Vec<f64> = got.iter().map(|&x| x as f64).collect();
    let err = Closeness::of(&got, &want, SCALAR_FLOOR).rel_err;
    assert!(err < tol, "{what}: {got:?} vs {want:?} ({err:.1e})");
    err
}

/// Right-padded rows.
fn right_padded(rows: &[Vec<i32>]) -> TokenBatch {
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

#[test]
fn mixed_stack_rows_equal_each_row_alone() {
    let be = CpuBackend::<f32>::new();
    for name in ["bloom", "llama", "qwen2"] {
        let model = Model::load(&be, &fixture(name)).unwrap();
        let what = format!("{name} cpu mixed stack");
        let worst = mixed_stack(&be, &model, &what, REL_TOL);
        eprintln!("{what}: worst rel err {worst:.2e}");
    }
}

/// `mixed_stack` through the kernels, BLOOM's ALiBi and Llama's RoPE, at the tolerances of
/// `cached_rank_losses_equal_the_joined_forward_on_the_emu_device` (measured: 1.1e-7 in the
/// float32 build, 1.3e-3 in bf16; on the CPU 2.8e-7).
#[cfg(feature = "emu")]
#[test]
fn mixed_stack_rows_equal_each_row_alone_on_the_emu_device() {
    use softprompt::internals::backend::{Precision, Storage};
    use softprompt::internals::cuda::CudaBackend;
    let f32_build = CudaBackend::emu_with(Precision::F32).unwrap();
    let bf16 = CudaBackend::emu_with(Precision::Bf16).unwrap();
    for (be, tag, tol) in [
        (&f32_build, "emu f32", REL_TOL),
        (&bf16, "emu bf16", bf16.device().default_tol()),
    ] {
        for name in ["bloom", "llama"] {
            let model = Model::load(be, &fixture(name)).unwrap();
            let what = format!("{name} {tag} mixed stack");
            let worst = mixed_stack(be, &model, &what, tol);
            eprintln!("{what}: worst rel err {worst:.2e}");
        }
    }
}
