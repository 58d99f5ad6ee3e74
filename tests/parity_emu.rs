//! `parity --device emu` on every fixture: the whole model through the CUDA launchers and
//! kernels, run by the emulator, against the PyTorch references, in bf16.
//!
//! Tolerance: 2e-2 (the bf16 target), or twice the "bf16-weight floor" when that is
//! larger. The floor is the error of the float32 CPU engine run with the checkpoint's weights
//! rounded to bf16 (the storage type of weights on a GPU): the error that rounding the frozen
//! weights alone causes, before any kernel runs. The fixtures' weights are float32 random
//! draws, and their prompt gradients are sensitive enough that this floor is above 2e-2 for
//! several of them (up to 8.7e-2); no engine that stores weights in bf16 can beat it. Twice
//! the floor is flash-attention's rule (at most twice the reference's own error). The
//! bf16_sharded fixture's weights are bf16-exact, so its floor is ~1e-6 and it is held to 2e-2.

#![cfg(feature = "emu")]

use softprompt::cuda::CudaBackend;
use softprompt::parity;
use softprompt::reference::Reference;
use softprompt::weights::{write_safetensors, WeightSource, WeightStore};
use softprompt::CpuBackend;
use std::path::{Path, PathBuf};

/// A copy of the model folder (config.json and one model.safetensors) with every float
/// tensor rounded to bf16.
fn bf16_copy(model: &Path, tmp: &Path) -> PathBuf {
    let dir = tmp.join(model.file_name().expect("folder name"));
    std::fs::create_dir_all(&dir).expect("temp folder");
    std::fs::copy(model.join("config.json"), dir.join("config.json")).expect("config");
    let store = WeightStore::open(model).expect("weights");
    let mut tensors = Vec::new();
    for name in store.names() {
        let Some((_, shape)) = store.info(name) else { continue };
        let shape = shape.to_vec();
        if let Ok(t) = store.get(name, &shape) {
            let data: Vec<f32> = t.data.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
            tensors.push((name.to_string(), shape, data));
        }
    }
    let views: Vec<(&str, Vec<usize>, &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.clone(), d.as_slice())).collect();
    write_safetensors(&dir.join("model.safetensors"), &views, None).expect("write");
    dir
}

fn fixtures() -> Vec<(PathBuf, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for model in std::fs::read_dir(&root).expect("fixtures").flatten().map(|e| e.path()) {
        if !model.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&model).expect("folder").flatten().map(|e| e.path()) {
            let name = f.file_name().unwrap_or_default().to_string_lossy().to_string();
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
    let tmp = std::env::temp_dir().join(format!("softprompt-parity-emu-{}", std::process::id()));
    let emu = CudaBackend::emu().expect("emu device");
    let cpu = CpuBackend::<f32>::new();
    let mut failed = Vec::new();
    println!("{:<45} {:>9} {:>9} {:>9} {:>9} {:>8}", "fixture", "loss", "logits", "prompt_g", "floor_pg", "tol");
    for (model, file) in fixtures() {
        let reference = Reference::read(&file).expect("reference");
        let rounded = bf16_copy(&model, &tmp);
        let floor = parity::run(&cpu, &rounded, &reference, 1.0).expect("cpu with bf16 weights");
        let worst_floor = floor.rows.iter().map(|r| r.rel_err).fold(0.0, f64::max);
        let tol = (2.0 * worst_floor).max(2e-2);
        let report = parity::run(&emu, &model, &reference, tol).expect("parity on emu");
        let err = |name: &str| report.rows.iter().find(|r| r.name == name).map_or(f64::NAN, |r| r.rel_err);
        let floor_pg = floor.rows.iter().find(|r| r.name == "prompt_grad").map_or(f64::NAN, |r| r.rel_err);
        let label = format!("{}/{}", model.file_name().unwrap_or_default().to_string_lossy(), file.file_stem().unwrap_or_default().to_string_lossy());
        println!(
            "{label:<45} {:>9.2e} {:>9.2e} {:>9.2e} {:>9.2e} {:>8.1e} {}",
            err("loss"), err("logits"), err("prompt_grad"), floor_pg, tol,
            if report.passed() { "ok" } else { "FAIL" }
        );
        if !report.passed() {
            print!("{}", report.table());
            failed.push(label);
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(failed.is_empty(), "parity --device emu failed on {failed:?}");
}
