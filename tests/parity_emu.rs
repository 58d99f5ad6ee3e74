//! `parity --device emu` on every fixture: the whole model through the CUDA launchers and
//! kernels, run by the emulator, against the float32 PyTorch references.
//!
//! Tolerance, per fixture: max(2e-2, twice PyTorch's own bf16 error), flash-attention's rule.
//! PyTorch's bf16 error (TORCH_BF16 below, from `scripts/bf16_baseline.py --rust`) is the
//! independent implementation of scripts/torch_reference.py run with bf16 weights and
//! activations against the same float32 reference. These fixtures are tiny random models
//! whose prompt gradients are sensitive: rounding only the frozen weights to bf16 (float32
//! everywhere else) already moves prompt_grad by up to 8.7e-2, and PyTorch in bf16 is off by
//! up to 2.6e-1, so 2e-2 alone is below what any bf16 engine reaches on them. The engine must
//! stay within twice PyTorch's error on every fixture, and within 2e-2 wherever PyTorch is.

#![cfg(feature = "emu")]

use softprompt::cuda::CudaBackend;
use softprompt::parity;
use softprompt::reference::Reference;
use std::path::{Path, PathBuf};

/// (fixture, PyTorch bf16 relative error of loss, logits, prompt_grad).
const TORCH_BF16: &[(&str, f64, f64, f64)] = &[
    ("bert_mlm/ref_mlm_random", 2.82e-04, 2.26e-02, 5.40e-02),
    ("bert_mlm/ref_mlm_text", 1.60e-03, 1.59e-02, 3.88e-02),
    ("bert_mlm/ref_pet_random", 2.21e-03, 1.37e-02, 6.55e-02),
    ("bert_mlm/ref_pet_text", 5.28e-03, 2.29e-02, 2.25e-02),
    (
        "bert_mlm_bf16_sharded/ref_mlm_random",
        3.35e-03,
        1.19e-02,
        2.35e-02,
    ),
    (
        "bert_mlm_bf16_sharded/ref_mlm_text",
        8.67e-03,
        1.42e-02,
        1.44e-02,
    ),
    (
        "bert_mlm_bf16_sharded/ref_pet_random",
        2.40e-02,
        3.08e-02,
        6.20e-02,
    ),
    (
        "bert_mlm_bf16_sharded/ref_pet_text",
        1.24e-02,
        1.01e-02,
        1.46e-02,
    ),
    (
        "bert_nohead/ref_cls_random_mean",
        4.40e-03,
        1.43e-02,
        2.93e-02,
    ),
    ("bert_nohead/ref_cls_text_cls", 1.52e-02, 1.93e-02, 3.03e-02),
    ("t5_flan/ref_seq2seq_random", 2.81e-03, 3.08e-02, 1.25e-01),
    ("t5_flan/ref_seq2seq_text", 2.35e-03, 3.68e-02, 1.13e-01),
    ("t5_v1_0/ref_seq2seq_random", 5.05e-03, 1.47e-02, 8.58e-02),
    ("t5_v1_0/ref_seq2seq_text", 8.93e-03, 1.43e-02, 6.27e-02),
    ("t5_v1_1/ref_seq2seq_random", 5.52e-03, 4.87e-02, 1.29e-01),
    ("t5_v1_1/ref_seq2seq_text", 6.34e-03, 6.91e-02, 2.57e-01),
];

fn fixtures() -> Vec<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for model in std::fs::read_dir(&root)
        .expect("fixtures")
        .flatten()
        .map(|e| e.path())
    {
        if !model.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&model)
            .expect("folder")
            .flatten()
            .map(|e| e.path())
        {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if name.starts_with("ref_") && name.ends_with(".safetensors") {
                out.push((model.clone(), f));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn parity_emu_on_every_fixture() {
    let emu = CudaBackend::emu().expect("emu device");
    let mut failed = Vec::new();
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "fixture", "loss", "logits", "prompt_g", "torch_pg", "tol"
    );
    for (model, file) in fixtures() {
        let reference = Reference::read(&file).expect("reference");
        let label = format!(
            "{}/{}",
            model.file_name().unwrap_or_default().to_string_lossy(),
            file.file_stem().unwrap_or_default().to_string_lossy()
        );
        let torch = TORCH_BF16.iter().find(|r| r.0 == label);
        let torch_worst = torch.map_or(0.0, |r| r.1.max(r.2).max(r.3));
        let tol = (2.0 * torch_worst).max(2e-2);
        let report = parity::run(&emu, &model, &reference, tol).expect("parity on emu");
        let err = |name: &str| {
            report
                .rows
                .iter()
                .find(|r| r.name == name)
                .map_or(f64::NAN, |r| r.rel_err)
        };
        println!(
            "{label:<40} {:>9.2e} {:>9.2e} {:>9.2e} {:>10.2e} {:>8.1e} {}",
            err("loss"),
            err("logits"),
            err("prompt_grad"),
            torch.map_or(f64::NAN, |r| r.3),
            tol,
            if report.passed() { "ok" } else { "FAIL" }
        );
        if !report.passed() {
            print!("{}", report.table());
            failed.push(label);
        }
    }
    assert!(
        failed.is_empty(),
        "parity --device emu failed on {failed:?}"
    );
}
