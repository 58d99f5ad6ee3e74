//! Fuzz targets for data lines (jsonl, csv, tsv) through encoding, and for task.json and
//! adapter_config.json.

use crate::common::{fixture, ScratchDir};
use crate::{apply, edit_st, edits, fuzz, json_value, read_json, short_run, st_edit, write_json};
use proptest::prelude::*;
use serde_json::json;
use softprompt::internals::train::data::{DataSpec, Dataset, Format};
use softprompt::internals::train::{Model, Task, TaskKind, TaskSpec};
use softprompt::internals::CpuBackend;
use std::path::Path;

/// Data lines: jsonl rows with fields of every type, csv with quotes, newlines and ragged
/// rows, tsv with missing columns, BOMs, CRs and long texts; parsed, then encoded for a PET
/// task (which cuts long texts by words before tokenizing).
#[test]
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
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
#[ignore = "fuzz: run by .ci/run once, or on demand (see tests/fuzz_loaders/main.rs)"]
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
