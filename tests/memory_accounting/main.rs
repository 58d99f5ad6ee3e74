//! The memory accountant: what BERT and T5 keep for backward, in bytes, against formulas
//! written out from the saved-tensor lists, so that any tensor someone starts saving (a linear
//! input, a T×T matrix, a duplicate) fails here.
//!
//! - `Recompute::None`: only nonlinear state is held, and no held tensor is ever the input of
//!   a linear layer (`saved_linear_inputs()` is empty).
//! - `Recompute::Layer`: after forward only each layer's input and the small embedding / final
//!   norm state are held.
//! - Both policies give bitwise the same loss and prompt gradient, and backward releases
//!   everything (held bytes return to 0, and no backend buffer leaks).
//!
//! Every tensor is accounted at its logical dtype: 4 bytes per element on the CPU (activations
//! F32, statistics F32).
//!
//! One test binary, a module per model family (`bert`, `t5`, `decoder`) and `prefix` (prefix
//! tuning against prompt tuning); the CPU pool's test and the helpers they share live here.

#[path = "../common/mod.rs"]
mod common;

mod bert;
mod decoder;
mod prefix;
mod t5;

use softprompt::internals::backend::traits::*;
use softprompt::internals::backend::DType;
use softprompt::internals::cpu::CpuBackend;
use softprompt::internals::memory::MemoryAccountant;
use std::collections::BTreeSet;

type Be = CpuBackend<f32>;

const F32: usize = 4;

fn live_names(acct: &MemoryAccountant) -> BTreeSet<String> {
    acct.live().map(|(n, _)| n.to_string()).collect()
}

/// The CPU pool keeps a step's freed working set (more than its 64 MiB floor) for the next
/// step's same lengths, within the most ever live at once, so the peak does not grow; a length
/// the pool does not hold makes it drop others rather than stack on top of them.
#[test]
fn cpu_pool_keeps_the_working_set_within_the_high_water_mark() {
    let be = Be::new();
    let len = 10 << 20; // 40 MiB of floats
    let bytes = len * F32;
    let step = |be: &Be| {
        let bufs: Vec<_> = (0..3)
            .map(|_| be.output(DType::F32, len).unwrap())
            .collect();
        drop(bufs);
    };
    step(&be);
    assert_eq!(be.pooled_bytes(), 3 * bytes, "the freed step, all of it");
    be.reset_peak();
    step(&be);
    assert_eq!(be.pooled_bytes(), 3 * bytes);
    assert_eq!(
        be.memory().peak_bytes,
        3 * bytes,
        "reuse adds nothing to the peak"
    );
    // another length: the pool makes room for it within the high-water mark and its floor
    let other = be.output(DType::F32, len + 1).unwrap();
    assert!(be.pooled_bytes() <= 2 * bytes, "{}", be.pooled_bytes());
    assert!(be.memory().peak_bytes <= 3 * bytes + (64 << 20));
    drop(other);
}

/// An uploaded buffer (the prompt, uploaded again on every predict call or served request)
/// comes from the pool it goes back to: the pool held one more copy per call, ~1-30 KB a
/// request, until it reached its 64 MiB (hostile pass 12).
#[test]
fn uploads_reuse_the_pool_instead_of_stacking_copies() {
    let be = Be::new();
    let prompt: Vec<f32> = (0..20 * 384).map(|i| i as f32).collect();
    let call = |be: &Be| {
        let buf = be.upload(DType::F32, &prompt).unwrap();
        assert_eq!(be.download(&buf).unwrap(), prompt);
    };
    call(&be);
    let after_one = be.pooled_bytes();
    assert_eq!(after_one, prompt.len() * F32);
    for _ in 0..100 {
        call(&be);
    }
    assert_eq!(be.pooled_bytes(), after_one, "one copy, reused");
}
