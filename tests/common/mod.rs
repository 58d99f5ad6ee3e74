//! Helpers shared by the integration tests: one comparison (`assert_close`), central finite
//! differences, fixture paths, a scratch folder, safetensors rewriting, and an f64-exact
//! download for `CpuBackend<f64>`.
//!
//! Every test binary includes this module with `mod common;` (a directory test, whose root is
//! `tests/NAME/main.rs`, with `#[path = "../common/mod.rs"]`) and uses only part of it.
#![allow(dead_code)]

pub mod bert_batch;
pub mod label_jobs;
pub mod multitask;
pub mod ref_step;
pub mod sample_run;
#[cfg(feature = "serve")]
pub mod serve;

use softprompt::internals::backend::{Backend, DType};
use softprompt::internals::closeness::{Closeness, TENSOR_FLOOR};
use softprompt::internals::rng::Rng;
use softprompt::internals::train::Params;
use softprompt::internals::weights::TensorFile;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Comparison

/// Compares `got` with `want` in the crate's one measure, `softprompt::internals::closeness`: passes when
/// the relative L2 error ‖got − want‖ / max(‖want‖, 1e-30) is at most `tol`, the lengths
/// match and every value is finite. A failure prints the max abs and relative error, where
/// the worst element sits and the first few pairs, then panics; SOFTPROMPT_TEST_VERBOSE=1
/// prints every comparison. Returns the relative error.
pub fn assert_close<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    name: &str,
    got: &[A],
    want: &[B],
    tol: f64,
) -> f64 {
    assert_close_floor(name, got, want, tol, TENSOR_FLOOR)
}

/// As `assert_close`, with `floor` under ‖want‖ instead of 1e-30: the data's scale·√n for a
/// result that can cancel to near zero, or 1 for a scalar measured absolutely below 1.
pub fn assert_close_floor<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    name: &str,
    got: &[A],
    want: &[B],
    tol: f64,
    floor: f64,
) -> f64 {
    let c = Closeness::of(got, want, floor);
    let ok = c.within(tol);
    if !ok || std::env::var_os("SOFTPROMPT_TEST_VERBOSE").is_some() {
        let status = if ok { "ok  " } else { "FAIL" };
        println!("{status} {name}: {} (tol {tol:.0e})", c.describe(got, want));
    }
    assert!(ok, "{name}: rel err {:.3e} above tol {tol:.0e}", c.rel_err);
    c.rel_err
}

/// The error of `got` against `want`, as `assert_close` measures it.
pub fn rel_err<A: Copy + Into<f64>, B: Copy + Into<f64>>(got: &[A], want: &[B]) -> f64 {
    Closeness::of(got, want, TENSOR_FLOOR).rel_err
}

// ---------------------------------------------------------------------------------------------
// Random data

pub fn normals(rng: &mut Rng, n: usize, std: f64) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * std).collect()
}

pub fn uniforms(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A random unit vector.
pub fn unit_direction(rng: &mut Rng, n: usize) -> Vec<f64> {
    let v = normals(rng, n, 1.0);
    let norm = dot(&v, &v).sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

// ---------------------------------------------------------------------------------------------
// Finite differences

/// Central difference of `f` at `x` along `dir` with step `h`.
pub fn central_difference(f: &mut dyn FnMut(&[f64]) -> f64, x: &[f64], dir: &[f64], h: f64) -> f64 {
    let plus: Vec<f64> = x.iter().zip(dir).map(|(a, d)| a + h * d).collect();
    let minus: Vec<f64> = x.iter().zip(dir).map(|(a, d)| a - h * d).collect();
    (f(&plus) - f(&minus)) / (2.0 * h)
}

/// Checks an analytic gradient `grad` of the scalar `f` at `x` against central differences:
/// every coordinate when there are at most `max_coords` of them (else that many coordinates
/// drawn at random), then 4 random unit directions. Returns the worst error seen.
#[allow(clippy::too_many_arguments)]
pub fn check_gradient(
    name: &str,
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    grad: &[f64],
    h: f64,
    tol: f64,
    rng: &mut Rng,
    max_coords: usize,
) -> f64 {
    assert_eq!(x.len(), grad.len(), "{name}: gradient length");
    let coords: Vec<usize> = if x.len() <= max_coords {
        (0..x.len()).collect()
    } else {
        (0..max_coords)
            .map(|_| rng.below(x.len() as u64) as usize)
            .collect()
    };
    let mut fd = Vec::with_capacity(coords.len());
    let mut an = Vec::with_capacity(coords.len());
    let mut e = vec![0.0; x.len()];
    for &i in &coords {
        e[i] = 1.0;
        fd.push(central_difference(f, x, &e, h));
        an.push(grad[i]);
        e[i] = 0.0;
    }
    let coords_err = assert_close(
        &format!("{name}: {} coordinates", coords.len()),
        &an,
        &fd,
        tol,
    );
    let mut fd_dir = Vec::new();
    let mut an_dir = Vec::new();
    for _ in 0..4 {
        let d = unit_direction(rng, x.len());
        fd_dir.push(central_difference(f, x, &d, h));
        an_dir.push(dot(grad, &d));
    }
    let dirs_err = assert_close(
        &format!("{name}: 4 random directions"),
        &an_dir,
        &fd_dir,
        tol,
    );
    coords_err.max(dirs_err)
}

// ---------------------------------------------------------------------------------------------
// Fixtures and scratch space

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// (model folder, reference under deep/): every prefix reference committed.
pub const PREFIX_REFERENCES: [(&str, &str); 14] = [
    ("bert_mlm", "bert_mlm/ref_mlm_prefix_papers.safetensors"),
    (
        "bert_mlm",
        "bert_mlm/ref_mlm_prefix_papers_pos0.safetensors",
    ),
    (
        "bert_mlm",
        "bert_mlm/ref_pet_prefix_papers_proj.safetensors",
    ),
    ("t5_v1_0", "t5_v1_0/ref_seq2seq_prefix_papers.safetensors"),
    ("t5_v1_0", "t5_v1_0/ref_seq2seq_prefix_peft.safetensors"),
    (
        "t5_v1_0",
        "t5_v1_0/ref_seq2seq_prefix_peft_proj.safetensors",
    ),
    (
        "t5_v1_1",
        "t5_v1_1/ref_seq2seq_prefix_papers_proj.safetensors",
    ),
    (
        "t5_v1_1",
        "t5_v1_1/ref_seq2seq_prefix_peft_proj.safetensors",
    ),
    ("t5_flan", "t5_flan/ref_seq2seq_prefix_peft.safetensors"),
    ("bloom", "bloom/ref_causal_prefix.safetensors"),
    ("bloom", "bloom/ref_causal_prefix_proj.safetensors"),
    ("llama", "llama/ref_causal_prefix.safetensors"),
    ("llama", "llama/ref_causal_prefix_proj.safetensors"),
    ("qwen2", "qwen2/ref_causal_prefix.safetensors"),
];

pub fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

/// A copy of the `mistral` fixture in `dir` with config.json's `sliding_window` set to
/// `window` (the engine does not slide it: each row's own positions must fit in it).
pub fn windowed_mistral(dir: &Path, window: usize) -> PathBuf {
    let model_dir = dir.join(format!("mistral_w{window}"));
    std::fs::create_dir_all(&model_dir).unwrap();
    for f in std::fs::read_dir(fixture("mistral")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, model_dir.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = model_dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["sliding_window"] = window.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    model_dir
}

/// Every `tests/fixtures/*/ref_*.safetensors` of a model folder (BERT, T5, and the decoder-only
/// bloom, llama, qwen2, mistral), as (model folder, reference file), sorted. `deep/` holds
/// the deep-prompt references the engine does not run yet (issue #15).
pub fn reference_files() -> Vec<(PathBuf, PathBuf)> {
    reference_files_in(&fixtures())
        .into_iter()
        .filter(|(dir, _)| {
            let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
            matches!(
                v["model_type"].as_str(),
                Some("bert" | "t5" | "bloom" | "llama" | "qwen2" | "mistral")
            )
        })
        .collect()
}

/// Whether `dir` holds a decoder-only model (its references: `causal`, `generate`).
pub fn is_decoder(dir: &Path) -> bool {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    matches!(
        v["model_type"].as_str(),
        Some("bloom" | "llama" | "qwen2" | "mistral")
    )
}

/// The realistic-weight-scale set, `tests/fixtures/realistic/*/ref_*.safetensors` (unseen random
/// configs with variance-preserving bf16 weights; tests/fixtures/README.md).
pub fn realistic_reference_files() -> Vec<(PathBuf, PathBuf)> {
    reference_files_in(&fixtures().join("realistic"))
}

/// Every `root/*/ref_*.safetensors`, as (model folder, reference file), sorted.
pub fn reference_files_in(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).expect("fixture root") {
        let dir = dir.expect("fixture entry").path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).expect("fixture folder") {
            let f = f.expect("fixture file").path();
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("ref_") && name.ends_with(".safetensors") {
                out.push((dir.clone(), f));
            }
        }
    }
    out.sort();
    out
}

/// `softprompt train` of a 2-step PET run with a 3-row prompt on `model` into `out`, on the
/// bad-input corpus' training file (tests/bad_inputs/data/train.jsonl): the arguments, in the
/// order the bad-input tests index them (task at 8, verbalizer at 10, prompt length at 12,
/// batch size at 14, steps at 16).
pub fn tiny_pet_train_args(model: &Path, out: &Path) -> Vec<String> {
    let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl");
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    let mut args: Vec<String> = ["train", "--model"].map(String::from).to_vec();
    args.extend([
        path(model),
        "--train".into(),
        path(&train),
        "--out".into(),
        path(out),
    ]);
    args.extend(
        [
            "--task",
            "pet",
            "--verbalizer",
            "positive=great,negative=bad",
            "--prompt-len",
            "3",
            "--batch-size",
            "4",
            "--max-steps",
            "2",
            "--no-progress",
            "--threads",
            "1",
        ]
        .map(String::from),
    );
    args
}

/// Runs `script` with the venv's python; it must print "ok" last.
pub fn run_python(script: &str, args: &[&std::ffi::OsStr]) {
    let python = Path::new("/work/venv/bin/python");
    assert!(python.exists(), "no {}", python.display());
    let res = std::process::Command::new(python)
        .env("HF_HUB_OFFLINE", "1")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success() && stdout.trim_end().ends_with("ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

/// A fresh, empty folder `group/name` under the build's scratch space (CARGO_TARGET_TMPDIR),
/// left in place after the test for a look at what it wrote.
pub fn scratch_in(group: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh folder under the system temp dir, removed (with its contents) on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "softprompt-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create scratch dir");
        ScratchDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A copy of a fixture model folder (files only, no subfolders) under `name`.
    pub fn copy_model(&self, fixture_dir: &str, name: &str) -> PathBuf {
        let dst = self.0.join(name);
        std::fs::create_dir_all(&dst).expect("create model copy");
        for f in std::fs::read_dir(fixture(fixture_dir)).expect("fixture folder") {
            let f = f.expect("entry").path();
            if f.is_file() {
                std::fs::copy(&f, dst.join(f.file_name().unwrap())).expect("copy fixture file");
            }
        }
        dst
    }

    /// A copy of the bert_mlm fixture under `name` whose embedding of `word` is 3e38 in every
    /// element: a row holding the word overflows (its scores are not finite), one without it
    /// scores as in the fixture. `OVERFLOW_ROWS` holds one of each for "tension".
    pub fn bert_overflowing_on(&self, name: &str, word: &str) -> PathBuf {
        let model = self.copy_model("bert_mlm", name);
        let tokenizer = std::fs::read(model.join("tokenizer.json")).expect("tokenizer");
        let vocab: serde_json::Value = serde_json::from_slice(&tokenizer).expect("json");
        let id = vocab["model"]["vocab"][word].as_u64().expect("a word") as usize;
        edit_safetensors(&model.join("model.safetensors"), |t| {
            let w = (t.get_mut("bert.embeddings.word_embeddings.weight")).expect("tensor");
            let d = w.shape[1];
            w.bytes[4 * id * d..4 * (id + 1) * d].copy_from_slice(&3e38f32.to_le_bytes().repeat(d));
        });
        model
    }
}

/// Two labelled JSON lines: a row that scores, then one that overflows on the model
/// `bert_overflowing_on(_, "tension")` makes (no training row holds the word).
pub const OVERFLOW_ROWS: &str = "{\"text\":\"the movie was great.\",\"label\":\"positive\"}\n\
                                 {\"text\":\"the tension was great.\",\"label\":\"positive\"}\n";

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A reference file's `prompt` (P, d) on `be`, as the parameters of prompt tuning (no head,
/// no prefix).
pub fn reference_params<B: Backend>(be: &B, reference: &TensorFile) -> Params<B> {
    let prompt = reference.float("prompt").expect("the reference's prompt");
    Params {
        prompt: be
            .upload(DType::F32, &prompt.data)
            .expect("upload the prompt"),
        p: prompt.shape[0],
        d: prompt.shape[1],
        head: None,
        prefix: None,
    }
}

// ---------------------------------------------------------------------------------------------
// The command line

/// `softprompt ARGS`, the binary under test (`binary`): its output.
pub fn softprompt(args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .args(args)
        .output()
        .expect("run the softprompt binary")
}

/// The stdout of a run that must have succeeded; else a panic with its exit status, stdout
/// and stderr.
pub fn stdout_ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The binary under test: this build's, or SOFTPROMPT_BIN (to show that an older build fails
/// a test).
/// Runs this test binary's #[ignore]d test `name` alone in a child process under `env` (a
/// variable the engine reads once per process, or that must not reach the other tests), and
/// fails unless it passed.
pub fn run_child_test(name: &str, env: &[(&str, &str)]) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child {name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `line` (a shell command line) writes on a terminal, stdout and stderr together:
/// it runs under `script(1)`'s pty, and must succeed.
pub fn on_terminal(line: &str) -> String {
    let got = std::process::Command::new("script")
        .args(["-qefc", line, "/dev/null"])
        .output()
        .expect("script(1), from util-linux, runs a command on a terminal");
    let said = String::from_utf8_lossy(&got.stdout).into_owned();
    assert!(got.status.success(), "{line}: {said}");
    said
}

pub fn binary() -> PathBuf {
    std::env::var_os("SOFTPROMPT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_softprompt")),
        PathBuf::from,
    )
}

/// Fails with exit code 2, no panic, and an error line holding every needle; returns stderr.
pub fn refused(out: &std::process::Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(stderr.contains("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "the error lacks {n:?}: {stderr}");
    }
    stderr
}

// ---------------------------------------------------------------------------------------------
// Safetensors rewriting (any dtype), for building broken inputs

/// One tensor of a safetensors file: dtype, shape and raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    pub fn f32(shape: Vec<usize>, data: &[f32]) -> RawTensor {
        RawTensor {
            dtype: safetensors::Dtype::F32,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn i64(shape: Vec<usize>, data: &[i64]) -> RawTensor {
        RawTensor {
            dtype: safetensors::Dtype::I64,
            shape,
            bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    pub fn as_i64(&self) -> Vec<i64> {
        assert_eq!(self.dtype, safetensors::Dtype::I64);
        self.bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
    pub fn as_f32(&self) -> Vec<f32> {
        assert_eq!(self.dtype, safetensors::Dtype::F32);
        self.bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

/// Tensors and `__metadata__` of a safetensors file.
pub fn read_raw(path: &Path) -> (HashMap<String, RawTensor>, Option<HashMap<String, String>>) {
    let bytes = std::fs::read(path).expect("read safetensors");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                RawTensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    bytes: v.data().to_vec(),
                },
            )
        })
        .collect();
    (tensors, meta.metadata().clone())
}

pub fn write_raw(
    path: &Path,
    tensors: &HashMap<String, RawTensor>,
    meta: Option<HashMap<String, String>>,
) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                    .expect("view"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, meta).expect("serialize");
    std::fs::write(path, bytes).expect("write safetensors");
}

/// Rewrites a safetensors file in place through `edit`, keeping its metadata.
pub fn edit_safetensors(path: &Path, edit: impl FnOnce(&mut HashMap<String, RawTensor>)) {
    let (mut tensors, meta) = read_raw(path);
    edit(&mut tensors);
    write_raw(path, &tensors, meta);
}

/// Rewrites the `softprompt` metadata JSON of a reference file in place.
pub fn edit_reference_meta(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let (tensors, meta) = read_raw(path);
    let mut meta = meta.expect("reference metadata");
    let mut v: serde_json::Value =
        serde_json::from_str(&meta["softprompt"]).expect("softprompt json");
    edit(&mut v);
    meta.insert("softprompt".into(), v.to_string());
    write_raw(path, &tensors, Some(meta));
}

// ---------------------------------------------------------------------------------------------
// Backend helpers

/// The full-precision contents of a buffer. `Backend::download` rounds to f32; on
/// `CpuBackend<f64>` this recovers the f64 values as hi + lo, where hi is the f32 download and
/// lo the f32 download of (buf - hi), computed on the backend in f64 (exact by Sterbenz). The
/// result carries ~48 significant bits, plenty for finite differences in f64.
pub fn download_f64<B: Backend>(be: &B, buf: &B::Buf) -> Vec<f64> {
    let hi = be.download(buf).expect("download");
    let mut diff = be.upload(DType::F32, &hi).expect("upload");
    let n = hi.len();
    be.scale_inplace(&mut diff, -1.0, n).expect("scale");
    be.add_inplace(&mut diff, buf, n).expect("add");
    let lo = be.download(&diff).expect("download");
    hi.iter()
        .zip(&lo)
        .map(|(&h, &l)| h as f64 + l as f64)
        .collect()
}

/// A float buffer holding base + s * dir, computed on the backend (in f64 on
/// `CpuBackend<f64>`), with base and dir given as f32.
pub fn upload_axpy<B: Backend>(be: &B, base: &[f32], s: f64, dir: &[f32]) -> B::Buf {
    let n = base.len();
    let mut x = be.upload(DType::F32, base).expect("upload");
    let mut d = be.upload(DType::F32, dir).expect("upload");
    be.scale_inplace(&mut d, s, n).expect("scale");
    be.add_inplace(&mut x, &d, n).expect("add");
    x
}

/// A PEFT PREFIX_TUNING folder of `rows` random rows `width` wide (values N(0, 0.5²)) under
/// `placement`, written at `dir` and loaded.
pub fn prefix_prompt(
    dir: &Path,
    rows: usize,
    width: usize,
    placement: &str,
    seed: u64,
) -> softprompt::Prompt {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = serde_json::json!({
        "peft_type": "PREFIX_TUNING",
        "num_virtual_tokens": rows,
        "prefix_placement": placement,
        "prefix_projection": false,
    });
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    let mut rng = Rng::new(seed);
    let values: Vec<f32> = (normals(&mut rng, rows * width, 0.5).iter())
        .map(|&v| v as f32)
        .collect();
    let file = dir.join("adapter_model.safetensors");
    softprompt::internals::weights::write_safetensors(
        &file,
        &[("prompt_embeddings", vec![rows, width], &values)],
        None,
    )
    .unwrap();
    softprompt::Prompt::load(dir).unwrap()
}

/// Rewrites the training state in a checkpoint's metadata, sealed again with its checksum
/// as softprompt writes it, so that the edit reaches the state's own checks.
pub fn edit_checkpoint_state(out: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    edit_checkpoint_meta(
        &out.join("checkpoint.safetensors"),
        "softprompt_checkpoint",
        edit,
    );
}

/// Rewrites the JSON under metadata `key` of the checkpoint `path` (single- or multi-task)
/// and seals it again with the checksum of the new state and the tensors.
pub fn edit_checkpoint_meta(path: &Path, key: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    use softprompt::internals::train::checkpoint::{checksum, CHECKSUM_KEY};
    let (tensors, meta) = read_raw(path);
    let mut meta = meta.expect("checkpoint metadata");
    let mut state: serde_json::Value = serde_json::from_str(&meta[key]).expect("state");
    edit(&mut state);
    let text = state.to_string();
    let floats: Vec<(&str, &[usize], Vec<f32>)> = (tensors.iter())
        .map(|(k, t)| {
            let values = (t.bytes.chunks_exact(4))
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect();
            (k.as_str(), t.shape.as_slice(), values)
        })
        .collect();
    let sum = checksum(&text, floats.iter().map(|(k, s, v)| (*k, *s, v.as_slice())));
    meta.insert(key.into(), text);
    meta.insert(CHECKSUM_KEY.into(), sum);
    write_raw(path, &tensors, Some(meta));
}

/// The bert_mlm fixture's `pet` task inputs: two labelled rows and the verbalizer
/// positive=great, negative=bad (the tests that need any valid task on it).
pub fn bert_mlm_pet() -> (softprompt::Dataset, softprompt::TaskOptions) {
    let data = softprompt::Dataset::from_pairs(
        "d",
        [("great", Some("positive")), ("bad", Some("negative"))],
    );
    let opts = softprompt::TaskOptions {
        verbalizer: Some(vec![
            ("positive".into(), "great".into()),
            ("negative".into(), "bad".into()),
        ]),
        ..softprompt::TaskOptions::default()
    };
    (data, opts)
}
