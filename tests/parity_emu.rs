//! `parity --device emu` on every fixture: the whole model through the CUDA launchers and
//! kernels, run by the emulator, against the float32 PyTorch references.
//!
//! Two sets, three rules:
//! - `tests/fixtures/realistic/`: unseen random configs from `torch_reference.py
//!   --random-configs --weights realistic` (variance-preserving layers, bf16-exact weights as
//!   bf16 checkpoints hold them). Every tensor passes at 2e-2 (reference-format.md's bf16 bar),
//!   with one exception: the prompt gradient of a ReLU model, held to 2e-2 or twice PyTorch's
//!   own bf16 error. A ReLU's gradient is a step function of its input, so bf16 forward
//!   rounding flips a few masks and moves the prompt gradient by several percent; PyTorch in
//!   bf16 misses 2e-2 on these as well (kernels/PRECISION.md). Here: the ReLU T5 t5_rand_0, 5.4%
//!   and 2.1% (PyTorch: 5.1% and 3.7%); the other ten files are within 2e-2.
//! - the harsh fixtures (`tests/fixtures/<model>/`): gains of 1.5-1.6 per layer, built to make
//!   float32 parity at 1e-4 catch small semantic slips. Rounding only their weights to bf16
//!   already moves prompt_grad by up to 8.7e-2, and PyTorch in bf16 is off by up to 2.6e-1, so
//!   each is held to max(2e-2, twice PyTorch's own bf16 error), flash-attention's rule.
//! - every file of both sets with `--precision mixed` (bf16 weights, float32 activations,
//!   GEMMs on bf16 operands split into hi + lo): files whose weights are bf16-exact (the
//!   realistic set and bert_mlm_bf16_sharded) at 1e-3 on every tensor, ReLU prompt gradients
//!   included (measured: at most 5.4e-5, where the bf16 build reaches 5.4e-2); the other harsh
//!   fixtures, whose float32 weights lose digits in bf16, by the harsh rule above (measured:
//!   at most 8.7e-2, t5_v1_1; PyTorch bf16 2.6e-1), and at 1e-3 against the float32 CPU
//!   engine on the same bf16-rounded weights (measured: at most 8.5e-5).
//! - every file of both sets with `--precision f32` (the float32 build of every kernel and
//!   float32 GEMMs, through the same launchers): reference-format.md's float32 bar, 1e-4, the
//!   whole CUDA path checked as tightly as the CPU backend. Measured: at most 4.3e-6.
//! - the decoder-only fixtures (bloom, llama, qwen2, mistral) follow the harsh rules: `causal`
//!   files in all three builds as above (llama and qwen2 ship bf16 checkpoints, so the mixed
//!   build holds them at 1e-3; bloom's f16 and mistral's f32 weights lose digits in bf16).
//!   `generate` files (greedy tokens, compared exactly, and each step's logits): in the float32
//!   build at 1e-4, in the mixed build at 1e-3 on the bf16 checkpoints, and against the CPU
//!   engine on the same bf16-rounded weights for the others. Not in the bf16 build: the
//!   fixtures' greedy choices are decided by logit gaps down to 6e-3 while bf16 moves the
//!   logits by about 1.4e-2 (PyTorch in bf16 by 2.3e-2), so a token may flip and everything
//!   after it differs; the causal files check the same kernels there.
//!
//! PyTorch's bf16 error (the tables below, from `scripts/bf16_baseline.py --rust`, `--dir
//! tests/fixtures/realistic` for the second) is the independent implementation of
//! scripts/torch_reference.py run with bf16 weights and activations against the same float32
//! reference. `kernels/PRECISION.md` measures where the bf16 error comes from.

#![cfg(feature = "emu")]

mod common;

use common::{realistic_reference_files, reference_files};
use softprompt::internals::backend::Precision;
use softprompt::internals::cuda::CudaBackend;
use softprompt::internals::parity::{self, ParityReport};
use softprompt::internals::reference::Reference;
use std::path::Path;

/// (fixture, PyTorch bf16 relative error of loss, logits, prompt_grad), harsh fixtures.
const TORCH_BF16: &[TorchRow] = &[
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
    ("bloom/ref_causal_random", 3.77e-03, 1.73e-02, 2.76e-02),
    ("bloom/ref_causal_text", 1.66e-03, 1.50e-02, 3.19e-02),
    ("llama/ref_causal_random", 1.38e-03, 2.31e-02, 5.25e-02),
    ("llama/ref_causal_text", 2.75e-04, 2.01e-02, 3.91e-02),
    ("mistral/ref_causal_random", 7.92e-03, 2.76e-02, 6.53e-02),
    ("qwen2/ref_causal_random", 6.47e-03, 2.62e-02, 4.44e-02),
    ("qwen2/ref_causal_text", 3.38e-03, 2.59e-02, 4.58e-02),
    ("t5_flan/ref_seq2seq_random", 2.81e-03, 3.08e-02, 1.25e-01),
    ("t5_flan/ref_seq2seq_text", 2.35e-03, 3.68e-02, 1.13e-01),
    ("t5_v1_0/ref_seq2seq_random", 5.05e-03, 1.47e-02, 8.58e-02),
    ("t5_v1_0/ref_seq2seq_text", 8.93e-03, 1.43e-02, 6.27e-02),
    ("t5_v1_1/ref_seq2seq_random", 5.52e-03, 4.87e-02, 1.29e-01),
    ("t5_v1_1/ref_seq2seq_text", 6.34e-03, 6.91e-02, 2.57e-01),
];

/// The same for the realistic-weight-scale set.
const TORCH_BF16_REALISTIC: &[TorchRow] = &[
    ("bert_rand_0/ref_mlm_random", 2.95e-03, 7.65e-03, 1.50e-02),
    ("bert_rand_0/ref_pet_text", 1.37e-03, 1.04e-02, 5.87e-03),
    ("bert_rand_1/ref_mlm_random", 3.52e-03, 8.20e-03, 1.36e-02),
    ("bert_rand_1/ref_pet_text", 7.50e-04, 3.30e-03, 1.50e-02),
    ("bert_rand_2/ref_mlm_random", 4.37e-04, 8.57e-03, 1.97e-02),
    ("bert_rand_2/ref_pet_text", 6.05e-03, 1.10e-02, 1.99e-02),
    ("t5_rand_0/ref_seq2seq_random", 1.38e-03, 8.73e-03, 5.06e-02),
    ("t5_rand_0/ref_seq2seq_text", 2.85e-03, 8.83e-03, 3.73e-02),
    ("t5_rand_1/ref_seq2seq_random", 2.57e-03, 7.93e-03, 1.88e-02),
    ("t5_rand_1/ref_seq2seq_text", 2.06e-03, 7.71e-03, 1.94e-02),
    ("t5_rand_2/ref_seq2seq_random", 1.64e-03, 1.29e-02, 3.16e-02),
    ("t5_rand_2/ref_seq2seq_text", 3.90e-04, 1.40e-02, 3.00e-02),
];

type TorchRow = (&'static str, f64, f64, f64);

/// The greedy-generation references (objective `generate`), which have no loss and so no
/// PyTorch bf16 row.
fn is_generate(file: &Path) -> bool {
    file.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ref_generate"))
}

/// Model folders whose checkpoint stores bf16 values: the mixed build loads them unchanged.
fn bf16_checkpoint(model: &Path) -> bool {
    ["bert_mlm_bf16_sharded", "llama", "qwen2"]
        .iter()
        .any(|n| model.ends_with(n))
}

/// The PyTorch bf16 row of a file, from either table.
fn torch_row(label: &str) -> &'static TorchRow {
    TORCH_BF16
        .iter()
        .chain(TORCH_BF16_REALISTIC)
        .find(|r| r.0 == label)
        .unwrap_or_else(|| panic!("{label}: no PyTorch bf16 row"))
}

/// The harsh fixtures' rule: max(2e-2, twice PyTorch's worst bf16 error).
fn harsh_tol(torch: &TorchRow) -> f64 {
    (2.0 * torch.1.max(torch.2).max(torch.3)).max(2e-2)
}

/// "model/ref_stem" of a reference file, as the tables name it.
fn label(model: &Path, file: &Path) -> String {
    format!(
        "{}/{}",
        model.file_name().unwrap_or_default().to_string_lossy(),
        file.file_stem().unwrap_or_default().to_string_lossy()
    )
}

fn rel_err(report: &ParityReport, name: &str) -> f64 {
    report
        .rows
        .iter()
        .find(|r| r.name == name)
        .map_or(f64::NAN, |r| r.rel_err)
}

fn print_header() {
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "fixture", "loss", "logits", "prompt_g", "torch_pg", "tol"
    );
}

fn print_row(label: &str, report: &ParityReport, torch_pg: f64, tol: f64, ok: bool) {
    println!(
        "{label:<40} {:>9.2e} {:>9.2e} {:>9.2e} {:>10.2e} {:>8.1e} {}",
        rel_err(report, "loss"),
        rel_err(report, "logits"),
        rel_err(report, "prompt_grad"),
        torch_pg,
        tol,
        if ok { "ok" } else { "FAIL" }
    );
    if !ok {
        print!("{}", report.table());
    }
}

#[test]
fn parity_emu_on_every_fixture() {
    let emu = CudaBackend::emu().expect("emu device");
    let files: Vec<_> = reference_files()
        .into_iter()
        .filter(|(_, f)| !is_generate(f))
        .collect();
    assert_eq!(files.len(), TORCH_BF16.len());
    let mut failed = Vec::new();
    print_header();
    for (model, file) in files {
        let reference = Reference::read(&file).expect("reference");
        let label = label(&model, &file);
        let torch = torch_row(&label);
        let tol = harsh_tol(torch);
        let report = parity::run(&emu, &model, &reference, tol).expect("parity on emu");
        print_row(&label, &report, torch.3, tol, report.passed());
        if !report.passed() {
            failed.push(label);
        }
    }
    assert!(
        failed.is_empty(),
        "parity --device emu failed on {failed:?}"
    );
}

/// Activation of each realistic-weight-scale model, from the generator's random_configs.json.
fn realistic_activations() -> Vec<(String, String)> {
    let path = common::fixtures().join("realistic/random_configs.json");
    let text = std::fs::read_to_string(&path).expect("realistic/random_configs.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("random_configs.json");
    doc["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| {
            let act = c
                .get("act")
                .or_else(|| c.get("ff"))
                .and_then(|a| a.as_str());
            (
                c["name"].as_str().unwrap_or_default().to_string(),
                act.unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn parity_emu_at_2e2_on_the_realistic_scale_set() {
    let emu = CudaBackend::emu().expect("emu device");
    let files = realistic_reference_files();
    assert_eq!(files.len(), TORCH_BF16_REALISTIC.len());
    let acts = realistic_activations();
    let mut failed = Vec::new();
    print_header();
    for (model, file) in files {
        let reference = Reference::read(&file).expect("reference");
        let label = label(&model, &file);
        let torch = torch_row(&label);
        let name = model.file_name().unwrap_or_default().to_string_lossy();
        let act = &acts
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{name}: not in random_configs.json"))
            .1;
        let report = parity::run(&emu, &model, &reference, 2e-2).expect("parity on emu");
        assert!(
            report.skipped.is_empty(),
            "{label}: skipped {:?}",
            report.skipped
        );
        // a ReLU's gradient is a step of its input: PyTorch's bf16 run misses too (module doc)
        let pg_tol = if act.contains("relu") {
            (2.0 * torch.3).max(2e-2)
        } else {
            2e-2
        };
        let ok = report
            .rows
            .iter()
            .all(|r| r.passed() || (r.name == "prompt_grad" && r.rel_err <= pg_tol));
        print_row(&label, &report, torch.3, pg_tol, ok);
        if !ok {
            failed.push(label);
        }
    }
    assert!(
        failed.is_empty(),
        "parity --device emu failed on {failed:?}"
    );
}

#[test]
fn parity_emu_f32_at_1e4_on_every_fixture() {
    let emu = CudaBackend::emu_with(Precision::F32).expect("emu device, float32 build");
    let files: Vec<_> = reference_files()
        .into_iter()
        .chain(realistic_reference_files())
        .collect();
    // every loss file of the tables, and the 4 generation files
    assert_eq!(
        files.len(),
        TORCH_BF16.len() + TORCH_BF16_REALISTIC.len() + 4
    );
    let mut failed = Vec::new();
    for (model, file) in files {
        let reference = Reference::read(&file).expect("reference");
        let report = parity::run(&emu, &model, &reference, 1e-4).expect("parity on emu f32");
        let worst = report
            .rows
            .iter()
            .max_by(|a, b| a.rel_err.total_cmp(&b.rel_err))
            .map_or(String::new(), |r| format!("{} {:.2e}", r.name, r.rel_err));
        println!("{:<40} worst {worst}", label(&model, &file));
        assert!(report.skipped.is_empty(), "{}", file.display());
        if !report.passed() {
            print!("{}", report.table());
            failed.push(label(&model, &file));
        }
    }
    assert!(
        failed.is_empty(),
        "parity --device emu --precision f32 failed on {failed:?}"
    );
}

/// The mixed build's bar on bf16-exact weights: its activations are float32 and every GEMM
/// operand keeps them to 2^-16, so it lands near float32 (measured here: 5.4e-5; on the 128
/// files of kernels/PRECISION.md's sweeps: 3.2e-4, a 4x-wide ReLU T5), far under the bf16 bar;
/// 1e-3 leaves room for that and still fails a single bf16 rounding of the activations (which
/// costs 5.4e-2 on t5_rand_0).
const MIXED_REALISTIC_TOL: f64 = 1e-3;

#[test]
fn parity_emu_mixed_on_every_fixture() {
    let emu = CudaBackend::emu_with(Precision::Mixed).expect("emu device, mixed build");
    // generation on weights that lose digits in bf16 is checked against the CPU engine on
    // the same rounded weights (mixed_matches_the_cpu_engine_on_the_same_bf16_weights)
    let harsh = reference_files()
        .into_iter()
        .filter(|(model, file)| bf16_checkpoint(model) || !is_generate(file))
        .map(|f| {
            let exact = bf16_checkpoint(&f.0);
            (f, exact)
        });
    let realistic = realistic_reference_files().into_iter().map(|f| (f, true));
    let mut failed = Vec::new();
    print_header();
    for ((model, file), bf16_exact) in harsh.chain(realistic) {
        let reference = Reference::read(&file).expect("reference");
        let label = label(&model, &file);
        let (tol, torch_pg) = if bf16_exact {
            (MIXED_REALISTIC_TOL, f64::NAN)
        } else {
            let row = torch_row(&label);
            (harsh_tol(row), row.3)
        };
        let report = parity::run(&emu, &model, &reference, tol).expect("parity on emu mixed");
        assert!(report.skipped.is_empty(), "{}", file.display());
        print_row(&label, &report, torch_pg, tol, report.passed());
        if !report.passed() {
            failed.push(label);
        }
    }
    assert!(
        failed.is_empty(),
        "parity --device emu --precision mixed failed on {failed:?}"
    );
}

/// `parity --device emu` as a user types it, on the unseen realistic configs: the default
/// precision is the mixed build (bf16 weights, float32 activations), and every file passes at
/// the default 2e-2 with every tensor checked, the ReLU T5 included.
#[test]
fn binary_parity_emu_with_the_default_precision_passes_at_2e2() {
    for (model, file) in realistic_reference_files() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
            .args(["parity", "--device", "emu", "--model"])
            .arg(&model)
            .arg("--reference")
            .arg(&file)
            .output()
            .expect("run softprompt");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("{}\n{stdout}", label(&model, &file));
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(
            stdout.contains("PASS") && stdout.contains("2e-2") && stdout.contains("(mixed build)"),
            "{stdout}"
        );
    }
}

/// `dir`'s model with every weight rounded to bf16 (kept as float32; f16 and bf16 checkpoints
/// converted first), in a folder of its own under the target directory: the weights the
/// mixed build loads, for an engine that does not round them. A model whose checkpoint is not
/// one file is returned as it is.
fn bf16_rounded_copy(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("model.safetensors");
    let Ok(bytes) = std::fs::read(&path) else {
        return dir.to_path_buf();
    };
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("model.safetensors");
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let data = softprompt::internals::weights::to_f32(t.dtype(), t.data())
                .unwrap_or_else(|| panic!("{name}: not a float tensor"))
                .into_iter()
                .map(|x| half::bf16::from_f32(x).to_f32())
                .collect();
            (name, t.shape().to_vec(), data)
        })
        .collect();
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bf16_rounded_{name}"));
    std::fs::create_dir_all(&out).expect("bf16-rounded model folder");
    std::fs::copy(dir.join("config.json"), out.join("config.json")).expect("config.json");
    let views: Vec<(&str, Vec<usize>, &[f32])> = tensors
        .iter()
        .map(|(n, shape, d)| (n.as_str(), shape.clone(), d.as_slice()))
        .collect();
    softprompt::internals::weights::write_safetensors(&out.join("model.safetensors"), &views, None)
        .expect("write the bf16-rounded model");
    out
}

/// What the mixed build may differ from the float32 engine by on the same weights: its split
/// GEMM operands (2^-16 each), amplified by the harsh fixtures' gains of 1.5-1.6 per layer.
/// Measured: at most 8.5e-5 (a t5_flan prompt gradient); 1e-3 as for the bf16-exact files.
const MIXED_VS_CPU_TOL: f64 = 1e-3;

/// The harsh fixtures' float32 weights lose digits in bf16, so against PyTorch the mixed build
/// is only held to the harsh rule above. Against the float32 CPU engine on the same
/// bf16-rounded weights it must agree closely: every output of every harsh fixture (every
/// head, pooling and T5 variant).
#[test]
fn mixed_matches_the_cpu_engine_on_the_same_bf16_weights() {
    let emu = CudaBackend::emu_with(Precision::Mixed).expect("emu device, mixed build");
    let cpu = softprompt::internals::CpuBackend::<f32>::new();
    let mut failed = Vec::new();
    for (model, file) in reference_files() {
        let reference = Reference::read(&file).expect("reference");
        let rounded = bf16_rounded_copy(&model);
        let want = parity::outputs(&cpu, &rounded, &reference).expect("cpu on bf16 weights");
        let got = parity::outputs(&emu, &model, &reference).expect("emu mixed");
        assert_eq!(got.len(), want.len(), "{}", file.display());
        for (name, w) in &want {
            let expected = softprompt::internals::weights::HostTensor {
                shape: vec![w.len()],
                data: w.clone(),
            };
            let row =
                parity::compare(name, &got[name], &expected, MIXED_VS_CPU_TOL).expect("compare");
            println!(
                "{:<40} {name:<24} {:.2e}",
                label(&model, &file),
                row.rel_err
            );
            if !row.passed() {
                failed.push(format!(
                    "{} {name} {:.2e}",
                    label(&model, &file),
                    row.rel_err
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "mixed vs cpu on bf16 weights: {failed:?}"
    );
}

/// P-tuning through the CUDA kernels in the float32 build: the host encoder's prompt, the
/// emulated step's prompt gradient, and the encoder's gradients from it, at 1e-4 against PEFT.
#[test]
fn parity_emu_f32_ptuning() {
    let emu = CudaBackend::emu_with(Precision::F32).expect("emu device, float32 build");
    let fixtures = common::fixtures();
    for (model, reference) in [
        ("bert_mlm", "bert_mlm/ref_pet_ptuning_lstm.safetensors"),
        ("qwen2", "qwen2/ref_causal_ptuning_mlp.safetensors"),
        ("t5_v1_1", "t5_v1_1/ref_seq2seq_ptuning_lstm.safetensors"),
    ] {
        let r = Reference::read(&fixtures.join("deep").join(reference)).unwrap();
        let report = parity::run(&emu, &fixtures.join(model), &r, 1e-4).unwrap();
        assert!(report.passed(), "{reference}\n{}", report.table());
        let encoder_rows = (report.rows.iter())
            .filter(|row| row.name.starts_with("grad.encoder."))
            .count();
        assert!(
            encoder_rows >= 7,
            "{reference}: {encoder_rows} encoder rows"
        );
    }
}

/// Prefix tuning through the CUDA kernels in the float32 build: every committed prefix
/// reference (BERT, T5 under both placements, BLOOM, Llama, Qwen2, with and without
/// `prefix_projection`) at 1e-4 against PyTorch, the prefix read in place by the attention
/// kernels and its gradient written by their backward (tests/prefix.rs runs the same files on
/// the CPU).
#[test]
fn parity_emu_f32_prefix() {
    let emu = CudaBackend::emu_with(Precision::F32).expect("emu device, float32 build");
    let fixtures = common::fixtures();
    let mut failed = Vec::new();
    for (model, reference) in common::PREFIX_REFERENCES {
        let r = Reference::read(&fixtures.join("deep").join(reference)).unwrap();
        let report = parity::run(&emu, &fixtures.join(model), &r, 1e-4)
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        let worst = report
            .rows
            .iter()
            .max_by(|a, b| a.rel_err.total_cmp(&b.rel_err))
            .map_or(String::new(), |r| format!("{} {:.2e}", r.name, r.rel_err));
        println!("{reference:<52} worst {worst}");
        assert!(
            report.skipped.is_empty(),
            "{reference}: skipped {:?}",
            report.skipped
        );
        assert!(
            report.rows.iter().any(|row| row.name == "prefix_grad"),
            "{reference}: no prefix_grad row"
        );
        if !report.passed() {
            print!("{}", report.table());
            failed.push(reference);
        }
    }
    assert!(
        failed.is_empty(),
        "parity --device emu --precision f32 failed on {failed:?}"
    );
}
