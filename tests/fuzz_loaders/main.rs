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
//!
//! One test binary: the harness and the generators live here, the targets in a module per
//! kind of input: the model's files (`model_files`), data lines, task.json and
//! adapter_config.json (`data_task`), and what a run reads back (`runs`: checkpoints and
//! reference files).

#[path = "../common/mod.rs"]
mod common;

mod data_task;
mod model_files;
mod runs;

use common::fixture;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};
use std::path::Path;
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
