//! Fuzz targets for every loader a user hands files to, on stable Rust (proptest): config.json,
//! safetensors headers and sharded indexes, the tokenizer.json hand-off, data lines (jsonl,
//! csv, tsv) through encoding, task.json, adapter_config.json, checkpoints (through
//! `Trainer::resume` and a few steps), and reference files (through `parity`).
//!
//! The generators are structure-aware: each starts from a valid fixture file and gets one
//! field wrong (a value of another type, an edge number, a missing key, a lying offset), which
//! reaches far deeper than random bytes. The property is the project's promise: the loader
//! returns `Ok` or an `Err` with a message, and never panics.
//!
//! The targets are `#[ignore]`d, so the two `cargo test` runs of `.ci/run` skip them; `.ci/run`
//! runs them once, a short deterministic pass:
//!
//!     cargo test --release --test fuzz_loaders -- --ignored
//!
//! Each target runs a fixed number of cases (a few seconds' worth; `FUZZ_CASES` overrides it) from a fixed seed (`FUZZ_SEED`, default
//! 0). The long run, on demand, runs each target for `FUZZ_SECONDS`, seed after seed:
//!
//!     FUZZ_SECONDS=60 cargo test --release --test fuzz_loaders -- --ignored --test-threads 1

mod common;

use common::{fixture, ScratchDir};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};
use softprompt::internals::train::data::{DataSpec, Dataset, Format};
use softprompt::internals::train::{Model, Task, TaskKind, TaskSpec};
use softprompt::internals::CpuBackend;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// The harness

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `target` on inputs drawn from `strategy`: `default_cases` (sized to take a few seconds)
/// or FUZZ_CASES cases from seed FUZZ_SEED, or,
/// with FUZZ_SECONDS, batches from seed after seed until the time is up. A panic or an `Err`
/// without a message fails, with proptest's shrunk input. Prints the count of cases run and
/// how many the loader accepted.
fn fuzz<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    target: impl Fn(S::Value) -> Result<bool, String>,
) where
    S::Value: std::fmt::Debug,
{
    let cases = env_u64("FUZZ_CASES").map_or(default_cases, |n| n as u32);
    let seconds = env_u64("FUZZ_SECONDS");
    let mut seed = env_u64("FUZZ_SEED").unwrap_or(0);
    let t0 = Instant::now();
    let (mut total, accepted) = (0u64, std::cell::Cell::new(0u64));
    loop {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..8 + name.len().min(24)].copy_from_slice(&name.as_bytes()[..name.len().min(24)]);
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
        let result = runner.run(&strategy, |input| match target(input) {
            Ok(ok) => {
                accepted.set(accepted.get() + ok as u64);
                Ok(())
            }
            Err(msg) if msg.trim().is_empty() => {
                Err(TestCaseError::fail("an error without a message"))
            }
            Err(_) => Ok(()),
        });
        if let Err(e) = result {
            panic!("fuzz target {name} (seed {seed}): {e}");
        }
        total += cases as u64;
        match seconds {
            Some(s) if t0.elapsed() < Duration::from_secs(s) => seed += 1,
            _ => break,
        }
    }
    println!(
        "fuzz {name}: {total} cases in {:.1} s ({} accepted, seeds up to {seed})",
        t0.elapsed().as_secs_f64(),
        accepted.get()
    );
}

/// JSON values a hostile file might hold where another was expected.
fn json_value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(3)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(4294967296u64)),
        Just(json!(1e308)),
        Just(json!(-1e-12)),
        Just(json!(0.5)),
        Just(json!(-0.0)),
        (0u64..100_000).prop_map(|x| json!(x)),
        any::<i64>().prop_map(|x| json!(x)),
        any::<f64>().prop_map(|x| json!(x)),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number,
        "[a-z_\\-\\.\\[\\] ]{0,12}".prop_map(Value::String),
        Just(json!("NaN")),
        Just(json!("../../x")),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// One wrong field: set (or remove) the key at `pick` (of the object's keys and of its nested
/// objects' keys, and a few names that are not there) to `value`.
#[derive(Clone, Debug)]
struct JsonEdit {
    pick: usize,
    remove: bool,
    value: Value,
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    (any::<usize>(), prop::bool::weighted(0.15), json_value()).prop_map(|(pick, remove, value)| {
        JsonEdit {
            pick,
            remove,
            value,
        }
    })
}

fn apply(base: &Value, edits: &[JsonEdit]) -> Value {
    let mut v = base.clone();
    for e in edits {
        // (parent path, key) of every key one or two levels deep
        let mut slots: Vec<(Option<String>, String)> = Vec::new();
        if let Some(obj) = v.as_object() {
            for (k, x) in obj {
                slots.push((None, k.clone()));
                if let Some(inner) = x.as_object() {
                    slots.extend(inner.keys().map(|k2| (Some(k.clone()), k2.clone())));
                }
            }
        }
        slots.push((None, "zz_unknown".into()));
        let (parent, key) = slots[e.pick % slots.len()].clone();
        let target = match parent {
            Some(p) => &mut v[p.as_str()],
            None => &mut v,
        };
        if let Some(obj) = target.as_object_mut() {
            if e.remove {
                obj.remove(&key);
            } else {
                obj.insert(key, e.value.clone());
            }
        }
    }
    v
}

fn edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    prop::collection::vec(json_edit(), 1..3)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_string(v).expect("json")).expect("write");
}

fn verdict<T>(r: softprompt::Result<T>) -> Result<bool, String> {
    r.map(|_| true).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Safetensors: one header field wrong

#[derive(Clone, Debug)]
enum StEdit {
    Dtype(usize, String),
    Shape(usize, Vec<u64>),
    Offsets(usize, u64, u64),
    HeaderLen(u64),
    Truncate(usize),
    Metadata(Value),
    Drop(usize),
}

fn st_edit() -> impl Strategy<Value = StEdit> {
    let dims = prop::collection::vec(
        prop_oneof![Just(0u64), 1u64..70, Just(u64::MAX), Just(1 << 32)],
        0..4,
    );
    let offset = prop_oneof![0u64..5000, Just(u64::MAX), Just(1u64 << 40)];
    prop_oneof![
        (
            any::<usize>(),
            prop::sample::select(vec![
                "F32", "BF16", "F16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "X"
            ])
        )
            .prop_map(|(i, d)| StEdit::Dtype(i, d.to_string())),
        (any::<usize>(), dims).prop_map(|(i, s)| StEdit::Shape(i, s)),
        (any::<usize>(), offset.clone(), offset).prop_map(|(i, a, b)| StEdit::Offsets(i, a, b)),
        prop_oneof![0u64..100, Just(u64::MAX), Just(1u64 << 33)].prop_map(StEdit::HeaderLen),
        any::<usize>().prop_map(StEdit::Truncate),
        json_value().prop_map(StEdit::Metadata),
        any::<usize>().prop_map(StEdit::Drop),
    ]
}

/// The bytes of a safetensors file with `edit` applied to its header.
fn edit_st(bytes: &[u8], edit: &StEdit) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let data = &bytes[8 + n..];
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let name = |i: usize| names[i % names.len()].clone();
    match edit {
        StEdit::Dtype(i, d) => header[&name(*i)]["dtype"] = json!(d),
        StEdit::Shape(i, s) => header[&name(*i)]["shape"] = json!(s),
        StEdit::Offsets(i, a, b) => header[&name(*i)]["data_offsets"] = json!([a, b]),
        StEdit::Metadata(v) => {
            header.insert("__metadata__".into(), v.clone());
        }
        StEdit::Drop(i) => {
            header.remove(&name(*i));
        }
        StEdit::HeaderLen(len) => {
            let mut out = len.to_le_bytes().to_vec();
            out.extend_from_slice(&bytes[8..]);
            return out;
        }
        StEdit::Truncate(at) => return bytes[..at % bytes.len()].to_vec(),
    }
    let text = serde_json::to_vec(&header).expect("header");
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

// ---------------------------------------------------------------------------------------------
// Targets

/// config.json of a BERT and a T5 fixture with one or two keys wrong, then the whole model
/// load (the sizes in config.json decide every tensor's expected shape).
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_config_json() {
    let dir = ScratchDir::new("fuzz_config");
    let be = CpuBackend::<f32>::new();
    let models: Vec<(PathBuf, Value)> = ["bert_mlm", "t5_flan"]
        .iter()
        .map(|m| {
            let path = dir.copy_model(m, m);
            let cfg = read_json(&path.join("config.json"));
            (path, cfg)
        })
        .collect();
    fuzz("config_json", 1000, (any::<bool>(), edits()), |(t5, e)| {
        let (path, base) = &models[t5 as usize];
        write_json(&path.join("config.json"), &apply(base, &e));
        verdict(Model::load(&be, path))
    });
}

/// model.safetensors with one header field wrong (dtype, shape, offsets, header length,
/// metadata, a tensor gone, the file cut short), through the model load.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_safetensors_header() {
    let dir = ScratchDir::new("fuzz_st");
    let be = CpuBackend::<f32>::new();
    let model = dir.copy_model("bert_mlm", "bert_mlm");
    let base = std::fs::read(model.join("model.safetensors")).expect("read");
    let file = model.join("model.safetensors");
    fuzz("safetensors_header", 1000, st_edit(), |e| {
        std::fs::write(&file, edit_st(&base, &e)).expect("write");
        let one = softprompt::internals::weights::TensorFile::read(&file).map(|_| ());
        let all = Model::load(&be, &model).map(|_| ());
        Ok(verdict(one)? & verdict(all)?)
    });
}

/// The sharded layout: model.safetensors.index.json with one entry wrong (another file, a
/// path outside the folder, a non-string), or a shard's header wrong.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_sharded_index() {
    let dir = ScratchDir::new("fuzz_shards");
    let be = CpuBackend::<f32>::new();
    let model = dir.copy_model("bert_mlm_bf16_sharded", "m");
    let index = model.join("model.safetensors.index.json");
    let base = read_json(&index);
    let shard = model.join("model-00002-of-00002.safetensors");
    let shard_bytes = std::fs::read(&shard).expect("read");
    let names = prop::sample::select(vec![
        json!("model-00001-of-00002.safetensors"),
        json!("model-00003-of-00002.safetensors"),
        json!("../m/model-00001-of-00002.safetensors"),
        json!("/dev/zero"),
        json!("config.json"),
        json!(""),
        json!("."),
        json!(7),
        json!(null),
    ]);
    fuzz(
        "sharded_index",
        1000,
        (
            any::<usize>(),
            names,
            prop::option::of(edits()),
            prop::option::of(st_edit()),
        ),
        |(i, file, e, st)| {
            let mut v = apply(&base, &e.unwrap_or_default());
            if let Some(map) = v.get_mut("weight_map").and_then(|m| m.as_object_mut()) {
                if !map.is_empty() {
                    let key = map.keys().nth(i % map.len()).cloned().unwrap_or_default();
                    map.insert(key, file);
                }
            }
            write_json(&index, &v);
            let bytes = match &st {
                Some(st) => edit_st(&shard_bytes, st),
                None => shard_bytes.clone(),
            };
            std::fs::write(&shard, bytes).expect("write");
            verdict(Model::load(&be, &model))
        },
    );
}

/// tokenizer.json with one field wrong, handed to the tokenizers crate, then used the way a
/// task uses it (encode with offsets, decode, the mask and unknown tokens).
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_tokenizer_json() {
    let dir = ScratchDir::new("fuzz_tok");
    let models: Vec<(PathBuf, Value)> = ["bert_mlm", "t5_flan"]
        .iter()
        .map(|m| {
            let path = dir.copy_model(m, m);
            let tok = read_json(&path.join("tokenizer.json"));
            (path, tok)
        })
        .collect();
    fuzz(
        "tokenizer_json",
        1000,
        (any::<bool>(), edits()),
        |(t5, e)| {
            let (path, base) = &models[t5 as usize];
            write_json(&path.join("tokenizer.json"), &apply(base, &e));
            let tok = match softprompt::internals::tokenizer::Tokenizer::load(path) {
                Ok(t) => t,
                Err(e) => return Err(e.to_string()),
            };
            let ids = tok
                .encode_with_offsets("the movie was great. It was [MASK].")
                .map_err(|e| e.to_string())?;
            tok.decode(&ids.ids, false).map_err(|e| e.to_string())?;
            tok.decode(&[-1, i32::MAX], true)
                .map_err(|e| e.to_string())?;
            let _ = (tok.unk_id(), tok.vocab_size());
            Ok(true)
        },
    );
}

/// Data lines: jsonl rows with fields of every type, csv with quotes, newlines and ragged
/// rows, tsv with missing columns, BOMs, CRs and long texts; parsed, then encoded for a PET
/// task (which cuts long texts by words before tokenizing).
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_data_lines() {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).expect("model");
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 12;
    let task = Task::new(spec, &model).expect("task");
    let word = prop_oneof![
        Just("great".to_string()),
        Just("the".to_string()),
        Just("film".to_string()),
        "[a-z]{1,12}",
        "\\PC{1,4}",
        Just("[MASK]".to_string()),
        Just("\"".to_string()),
        Just(",".to_string()),
        Just("\t".to_string()),
        Just("\r\n".to_string()),
        Just("\u{feff}".to_string()),
        Just("很".to_string()),
        Just("e\u{301}".to_string()),
    ];
    let sep = prop_oneof![
        Just(" "),
        Just("  "),
        Just("\n"),
        Just("\u{3000}"),
        Just("")
    ];
    let text = prop::collection::vec((word, sep), 0..40).prop_map(|ws| {
        ws.into_iter()
            .map(|(w, s)| format!("{w}{s}"))
            .collect::<String>()
    });
    // a long text: a phrase repeated past the cut-by-words threshold (4096 bytes)
    let long = (text.clone(), 0usize..400).prop_map(|(t, n)| t.repeat(n.max(1)));
    let label = prop_oneof![
        4 => Just(json!("positive")),
        4 => Just(json!("negative")),
        1 => json_value()
    ];
    let row = (
        prop_oneof![text.clone(), long],
        label,
        json_value(),
        any::<u8>(),
    );
    let rows = prop::collection::vec(row, 0..6);
    fuzz("data_lines", 2000, (rows, 0usize..3), |(rows, fmt)| {
        let (name, format) = [
            ("d.jsonl", Format::Jsonl),
            ("d.csv", Format::Csv),
            ("d.tsv", Format::Tsv),
        ][fmt];
        let mut text = String::new();
        match format {
            Format::Jsonl => {
                for (t, l, extra, k) in &rows {
                    let mut o = json!({"text": t, "label": l});
                    if k % 16 == 0 {
                        o["text"] = extra.clone();
                    }
                    if k % 31 == 0 {
                        o = extra.clone();
                    }
                    text.push_str(&o.to_string());
                    text.push('\n');
                }
            }
            _ => {
                let d = if format == Format::Csv { "," } else { "\t" };
                text.push_str(&format!("text{d}label\n"));
                for (t, l, _, k) in &rows {
                    let l = l.as_str().unwrap_or("positive");
                    let t = if format == Format::Csv && k % 2 == 0 {
                        format!("\"{}\"", t.replace('"', "\"\""))
                    } else {
                        t.clone()
                    };
                    let cols = match k % 16 {
                        0 => t,
                        1 => format!("{t}{d}{l}{d}extra"),
                        _ => format!("{t}{d}{l}"),
                    };
                    text.push_str(&cols);
                    text.push('\n');
                }
            }
        }
        let data = Dataset::parse(Path::new(name), &text, &DataSpec::default())
            .map_err(|e| e.to_string())?;
        let enc = task
            .encode(&model.tokenizer, &data)
            .map_err(|e| e.to_string())?;
        for r in &enc.rows {
            assert!(
                r.ids.len() <= 12,
                "a row of {} tokens past max_len 12",
                r.ids.len()
            );
        }
        Ok(true)
    });
}

/// A prompt folder written by a short run, with one key of task.json or adapter_config.json
/// wrong, or the adapter's tensor reshaped; then the whole load that eval and predict do
/// (prompt folder, task spec against the model, encoding a row).
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_task_and_adapter_json() {
    let dir = ScratchDir::new("fuzz_prompt");
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).expect("model");
    let run = dir.path().join("run");
    short_run(&run, &[]);
    let task_path = run.join("task.json");
    let adapter_path = run.join("adapter_config.json");
    let (task_base, adapter_base) = (read_json(&task_path), read_json(&adapter_path));
    let weights = run.join("adapter_model.safetensors");
    let weights_base = std::fs::read(&weights).expect("read");
    let data = Dataset::parse(
        Path::new("d.jsonl"),
        "{\"text\": \"the film was great.\", \"label\": \"positive\"}\n",
        &DataSpec::default(),
    )
    .expect("data");
    fuzz(
        "task_and_adapter_json",
        500,
        (0u8..3, edits(), st_edit()),
        |(which, e, st)| {
            write_json(&task_path, &task_base);
            write_json(&adapter_path, &adapter_base);
            std::fs::write(&weights, &weights_base).expect("write");
            match which {
                0 => write_json(&task_path, &apply(&task_base, &e)),
                1 => write_json(&adapter_path, &apply(&adapter_base, &e)),
                _ => std::fs::write(&weights, edit_st(&weights_base, &st)).expect("write"),
            }
            let saved = softprompt::internals::train::checkpoint::load_prompt_dir(&run)
                .map_err(|e| e.to_string())?;
            let Some(spec) = saved.task else {
                return Ok(true);
            };
            let task = Task::new(spec, &model).map_err(|e| e.to_string())?;
            model
                .check_lengths(saved.prompt.p, Some(task.spec.max_len))
                .map_err(|e| e.to_string())?;
            task.encode(&model.tokenizer, &data)
                .map_err(|e| e.to_string())?;
            Ok(true)
        },
    );
}

/// A short PET run of 2 steps on bert_mlm into `out`.
fn short_run(out: &Path, extra: &[&str]) {
    let mut args = common::tiny_pet_train_args(&fixture("bert_mlm"), out);
    args.extend(extra.iter().map(|a| a.to_string()));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(&args)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[derive(Clone, Debug)]
enum CkEdit {
    State(Vec<JsonEdit>),
    Plan(usize, usize, u32),
    Tensor(StEdit),
}

/// A checkpoint with one field of its state wrong (step, epoch, plan, position, rng, best,
/// window...), a plan index out of range, or a tensor's header wrong; then `Trainer::resume`
/// and the rest of the run.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_checkpoint() {
    use softprompt::internals::prompt::PromptInit;
    use softprompt::internals::train::checkpoint::Checkpoint;
    use softprompt::internals::train::optim::OptimConfig;
    use softprompt::internals::train::{TrainConfig, Trainer};
    let dir = ScratchDir::new("fuzz_ck");
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).expect("model");
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 40;
    let task = Task::new(spec, &model).expect("task");
    let data = Dataset::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/train.jsonl"),
        &DataSpec::default(),
    )
    .expect("data");
    let enc = task.encode(&model.tokenizer, &data).expect("encode");
    let cfg = TrainConfig {
        prompt_len: 3,
        init: PromptInit::Random { std: 1.0 },
        optim: OptimConfig::lester(),
        batch_size: 4,
        max_steps: Some(4),
        save_every: 1,
        log_every: 3,
        seed: 1,
        threads: rayon::current_num_threads(),
        ..TrainConfig::default()
    };
    // the checkpoint after step 2 of 4
    let base_dir = dir.path().join("base");
    let mut t = Trainer::new(&be, &model, &task, &enc, None, None, cfg.clone(), &base_dir)
        .expect("trainer");
    let keep = dir.path().join("ck.safetensors");
    t.run(&mut |e| {
        if let softprompt::internals::train::Event::Step(i) = e {
            if i.step == 3 {
                std::fs::copy(base_dir.join("checkpoint.safetensors"), &keep).expect("copy");
            }
        }
    })
    .expect("run");
    drop(t);
    let base = Checkpoint::load(&keep).expect("checkpoint");
    let base_bytes = std::fs::read(&keep).expect("read");
    let state = serde_json::to_value(&base.state).expect("state");
    let run = dir.path().join("run");
    let edit = prop_oneof![
        edits().prop_map(CkEdit::State),
        (
            any::<usize>(),
            any::<usize>(),
            prop_oneof![Just(24u32), Just(u32::MAX), 0u32..30]
        )
            .prop_map(|(b, i, x)| CkEdit::Plan(b, i, x)),
        st_edit().prop_map(CkEdit::Tensor),
    ];
    fuzz("checkpoint", 200, edit, |e| {
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).expect("mkdir");
        let path = run.join("checkpoint.safetensors");
        match &e {
            CkEdit::State(e) => {
                let Ok(s) = serde_json::from_value(apply(&state, e)) else {
                    return Ok(false);
                };
                Checkpoint {
                    state: s,
                    tensors: base.tensors.clone(),
                }
                .save(&path)
                .expect("save");
            }
            CkEdit::Plan(b, i, x) => {
                let mut ck = base.clone();
                let n = ck.state.plan.len();
                if let Some(batch) = ck.state.plan.get_mut(b % n) {
                    let m = batch.len();
                    batch[i % m] = *x;
                }
                ck.save(&path).expect("save");
            }
            CkEdit::Tensor(st) => std::fs::write(&path, edit_st(&base_bytes, st)).expect("write"),
        }
        let mut t = Trainer::resume(&be, &model, &task, &enc, None, None, cfg.clone(), &run)
            .map_err(|e| e.to_string())?;
        t.run(&mut |_| {}).map_err(|e| e.to_string())?;
        Ok(true)
    });
}

/// Reference files with one tensor's header or one metadata key wrong, through `parity`.
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see the module doc)"]
fn fuzz_reference_files() {
    use softprompt::internals::reference::Reference;
    let dir = ScratchDir::new("fuzz_ref");
    let be = CpuBackend::<f32>::new();
    let cases: Vec<(PathBuf, PathBuf, Vec<u8>, Value)> = [
        ("bert_mlm", "ref_pet_random.safetensors"),
        ("bert_nohead", "ref_cls_random_mean.safetensors"),
        ("t5_flan", "ref_seq2seq_text.safetensors"),
    ]
    .iter()
    .map(|(m, r)| {
        let model = dir.copy_model(m, m);
        let path = model.join(r);
        let (_, meta) = common::read_raw(&path);
        let meta: Value = serde_json::from_str(&meta.expect("meta")["softprompt"]).expect("json");
        (
            model,
            path.clone(),
            std::fs::read(&path).expect("read"),
            meta,
        )
    })
    .collect();
    fuzz(
        "reference_files",
        500,
        (
            0usize..3,
            prop::option::of(st_edit()),
            prop::option::of(edits()),
        ),
        |(which, st, meta)| {
            let (model, path, bytes, meta_base) = &cases[which];
            std::fs::write(path, bytes).expect("write");
            if let Some(e) = meta {
                common::edit_reference_meta(path, |m| *m = apply(meta_base, &e));
            }
            if let Some(st) = st {
                let b = std::fs::read(path).expect("read");
                std::fs::write(path, edit_st(&b, &st)).expect("write");
            }
            let r = Reference::read(path).map_err(|e| e.to_string())?;
            verdict(softprompt::internals::parity::run(&be, model, &r, 1e-4))
        },
    );
}
