//! A task, encoded rows and a prompt each carry the model they were made on (a fingerprint of
//! its config.json and tokenizer file): rows that another model's tokenizer encoded and a
//! prompt made or saved on another model of the same width ran this model's weights on them
//! without a word. Every use refuses them, naming the argument and both folders; what records
//! no model (rows made by hand, PEFT's adapters, folders saved before the fingerprint was
//! recorded) runs on every model it fits, as before.

use softprompt::internals::train::model_id::canonical_config;
use softprompt::prelude::*;
use std::path::{Path, PathBuf};

mod common;

use common::{fixture, softprompt, stdout_ok, tiny_pet_train_args, ScratchDir};

/// bert_mlm, and a copy of it whose config.json says another dropout, which the engine does
/// not run: the same width, tokenizer and weights, so nothing but the fingerprint tells the
/// two apart.
fn two_models(scratch: &ScratchDir) -> (Model, Model) {
    let a = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let dir = scratch.copy_model("bert_mlm", "resaved");
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    cfg["hidden_dropout_prob"] = 0.2.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    (a, Model::open(&dir, Device::Cpu).unwrap())
}

/// bert_mlm's config.json as a newer transformers saves it again: another key order and
/// indent, another `transformers_version`, `_name_or_path` added, `torch_dtype` for `dtype`.
fn resave(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let cfg: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut lines: Vec<String> = (cfg.into_iter().rev())
        .map(|(k, v)| match k.as_str() {
            "transformers_version" => "    \"transformers_version\": \"9.9.9\"".to_string(),
            "dtype" => format!("    \"torch_dtype\": {v}"),
            _ => format!("    {}: {v}", serde_json::Value::String(k)),
        })
        .collect();
    lines.push("    \"_name_or_path\": \"/elsewhere/bert_mlm\"".into());
    let resaved = format!("{{\n{}\n}}\n", lines.join(",\n"));
    assert_ne!(resaved, text);
    std::fs::write(path, resaved).unwrap();
}

/// The fingerprint of config.json's raw text and tokenizer.json, as folders saved before the
/// canonical form recorded it (FNV-1a, 64 bits).
fn raw_fingerprint(dir: &Path) -> String {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    fnv(&[&read("config.json"), &read("tokenizer.json")])
}

/// FNV-1a (64 bits) over `parts` in order, as 16 hex digits.
fn fnv(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn words() -> TaskOptions {
    TaskOptions {
        verbalizer: Some(TaskOptions::verbalizer_from_str("neg=bad,pos=great").unwrap()),
        ..TaskOptions::default()
    }
}

fn pet(model: &Model) -> Task {
    model.task(&words(), None, 4).unwrap()
}

fn prompt(model: &Model, task: &Task) -> Prompt {
    let init = PromptInit::Random { std: 1.0 };
    model.new_prompt(task, 4, &init, 0).unwrap()
}

fn data() -> Dataset {
    Dataset::from_pairs("mem", [("a fine film", Some("pos")), ("dull", Some("neg"))])
}

/// The error of `r`, which must name `flag`, say `what` of the model in bert_mlm, and name
/// the copy (`resaved`) as this model.
fn refused<T>(r: Result<T>, flag: &str, what: &str) -> String {
    let Err(e) = r else {
        panic!("{flag}: {what} another model was accepted")
    };
    let msg = e.to_string();
    let want = format!(
        "invalid argument {flag}: {what} the model in {}, and this is the model in",
        fixture("bert_mlm").display()
    );
    assert!(
        msg.contains(&want) && msg.contains("resaved (another config.json or tokenizer)"),
        "{msg}"
    );
    msg
}

/// Rows that bert_mlm's task encoded, used with the copy's own task and prompt: refused by
/// step, evaluate, predict, their mixed forms and train, naming the row. The same ids made by
/// hand run, and an unchanged copy of bert_mlm is the same model.
#[test]
fn rows_encoded_by_another_model_are_refused() {
    let scratch = ScratchDir::new("identity_rows");
    let (a, b) = two_models(&scratch);
    let (ta, tb) = (pet(&a), pet(&b));
    let pb = prompt(&b, &tb);
    let of_a = a.encode(&ta, &data()).unwrap();
    let of_b = b.encode(&tb, &data()).unwrap();
    assert!(of_a.rows[0].model_fingerprint().is_some());

    let by = "row 1 was encoded by";
    let msg = refused(b.step(&tb, &pb, &of_a.rows), "rows", by);
    assert!(msg.contains("encode the rows with this model"), "{msg}");
    refused(b.evaluate(&tb, &pb, &of_a, 8), "data", by);
    refused(b.predict(&tb, &pb, &of_a, 8), "data", by);
    let mixed: Vec<(usize, Row)> = of_a.rows.iter().map(|r| (0, r.clone())).collect();
    refused(b.step_mixed(&[(&tb, &pb)], &mixed), "rows", by);
    refused(b.predict_mixed(&[(&tb, &pb)], &mixed, 8), "rows", by);
    // the row is named where it sits among the caller's rows
    let rows = [of_b.rows[0].clone(), of_a.rows[1].clone()];
    refused(b.step(&tb, &pb, &rows), "rows", "row 2 was encoded by");
    let cfg = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let splits = Splits {
        train: &of_b,
        dev: Some(&of_a),
        test: None,
    };
    let out = scratch.path().join("run");
    let run = b.train(&tb, splits, &cfg, &out, &mut |_| {});
    refused(run, "splits.dev", by);

    // the same ids made by hand record no model: every model takes them
    let own = b.step(&tb, &pb, &of_b.rows).unwrap().loss;
    let by_hand: Vec<Row> = (of_a.rows.iter())
        .map(|r| {
            let mut row = Row::new(r.ids.clone());
            (row.mask_pos, row.label) = (r.mask_pos, r.label);
            row
        })
        .collect();
    assert!(by_hand[0].model_fingerprint().is_none());
    assert_eq!(b.step(&tb, &pb, &by_hand).unwrap().loss, own);
    // a copy of the folder is the same model
    let copy = Model::open(scratch.copy_model("bert_mlm", "copy"), Device::Cpu).unwrap();
    let tc = pet(&copy);
    let pc = prompt(&copy, &tc);
    assert_eq!(copy.step(&tc, &pc, &of_a.rows).unwrap().loss, own);
}

/// A prompt made on bert_mlm, used on the copy with the copy's own task and rows: refused by
/// every use. Saved, its task.json records the fingerprint, so the loaded prompt is refused
/// too (by `task_for` first); `set_model` runs it on purpose, saying what it replaced. A run's
/// kept prompt records its model the same way.
#[test]
fn a_prompt_of_another_model_is_refused() {
    let scratch = ScratchDir::new("identity_prompt");
    let (a, b) = two_models(&scratch);
    let (ta, tb) = (pet(&a), pet(&b));
    let pa = prompt(&a, &ta);
    let of_b = b.encode(&tb, &data()).unwrap();

    let made = "the prompt was made on";
    refused(b.step(&tb, &pa, &of_b.rows), "prompt", made);
    refused(b.evaluate(&tb, &pa, &of_b, 8), "prompt", made);
    refused(b.predict(&tb, &pa, &of_b, 8), "prompt", made);
    refused(b.check_prompt(&tb, &pa), "prompt", made);
    let mixed: Vec<(usize, Row)> = of_b.rows.iter().map(|r| (0, r.clone())).collect();
    refused(b.step_mixed(&[(&tb, &pa)], &mixed), "prompt", made);
    let into = scratch.path().join("not_written");
    refused(
        b.save_prompt(&into, &pa, &tb, SaveOptions::default()),
        "prompt",
        made,
    );
    assert!(!into.exists());

    let saved = scratch.path().join("saved");
    a.save_prompt(&saved, &pa, &ta, SaveOptions::default())
        .unwrap();
    let record = task_json(&saved)["model_fingerprint"].clone();
    assert!(record.as_str().is_some_and(|h| h.len() == 16), "{record}");
    let loaded = Prompt::load(&saved).unwrap();
    assert_eq!(loaded.model_fingerprint(), pa.model_fingerprint());
    assert_eq!(record, pa.model_fingerprint().unwrap().as_str());
    let trained = format!("the prompt in {} was trained on", saved.display());
    let msg = refused(b.task_for(&loaded, &words(), None), "prompt", &trained);
    assert!(
        msg.contains("Prompt::set_model") && msg.contains("--model"),
        "{msg}"
    );
    let own = a.task_for(&loaded, &words(), None).unwrap();
    let of_a = a.encode(&own, &data()).unwrap();
    let want = a.evaluate(&own, &loaded, &of_a, 8).unwrap().0;

    let mut moved = loaded.clone();
    let warning = moved.set_model(&b).expect("the model it replaced");
    assert!(
        warning.starts_with(&trained) && warning.contains("resaved"),
        "{warning}"
    );
    assert_eq!(moved.set_model(&b), None);
    let on_b = b.task_for(&moved, &words(), None).unwrap();
    // the same weights: the same numbers, once run on purpose
    assert_eq!(b.evaluate(&on_b, &moved, &of_b, 8).unwrap().0, want);

    let cfg = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let splits = Splits {
        train: &of_b,
        dev: None,
        test: None,
    };
    let out = scratch.path().join("run");
    let (_, kept) = b.train(&tb, splits, &cfg, &out, &mut |_| {}).unwrap();
    let pb = prompt(&b, &tb);
    let mine = pb.model_fingerprint().unwrap();
    assert_eq!(task_json(&out)["model_fingerprint"], mine.as_str());
    let e = a.task_for(&kept, &words(), None).map(|_| ()).unwrap_err();
    let want = format!(
        "invalid argument prompt: the prompt in {} was trained on the model in {}, and this \
         is the model in {} (another config.json or tokenizer)",
        out.display(),
        b.dir().display(),
        a.dir().display()
    );
    assert!(e.to_string().contains(&want), "{e}");
}

/// What records no model runs on both models, as before: PEFT's adapter folder, and a folder
/// an earlier softprompt saved (task.json without `model_fingerprint`). A fingerprint that
/// is not 16 hex digits is refused by name, not skipped.
#[test]
fn prompts_that_record_no_model_run_on_any_model_they_fit() {
    let scratch = ScratchDir::new("identity_none");
    let (a, b) = two_models(&scratch);
    let peft = fixture("bert_mlm/peft_adapter");
    let older = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/tests/peft/adapter");
    assert!(task_json(&older).get("model_fingerprint").is_none());
    for dir in [peft, older] {
        let p = Prompt::load(&dir).unwrap();
        assert!(p.model_fingerprint().is_none(), "{}", dir.display());
        let mut scores = Vec::new();
        for m in [&a, &b] {
            let task = m.task_for(&p, &words(), None).unwrap();
            let enc = m.encode(&task, &data()).unwrap();
            let preds = m.predict(&task, &p, &enc, 8).unwrap();
            scores.push(preds.iter().map(|x| x.scores.clone()).collect::<Vec<_>>());
        }
        assert_eq!(scores[0], scores[1], "{}", dir.display());
    }

    let saved = scratch.path().join("saved");
    let ta = pet(&a);
    a.save_prompt(&saved, &prompt(&a, &ta), &ta, SaveOptions::default())
        .unwrap();
    let mut v = task_json(&saved);
    v["model_fingerprint"] = "not a fingerprint".into();
    std::fs::write(saved.join("task.json"), v.to_string()).unwrap();
    let e = Prompt::load(&saved).map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("`model_fingerprint` is \"not a fingerprint\": expected 16 hex digits"),
        "{e}"
    );
}

fn task_json(dir: &Path) -> serde_json::Value {
    let path: PathBuf = dir.join("task.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The command line: `eval` of a folder whose recorded model changed since (config.json
/// saved again) is refused, saying so; naming the model with `--model` runs it on purpose with
/// a warning, as for a prompt of another architecture.
#[test]
fn the_command_line_refuses_a_changed_model_unless_named() {
    let scratch = ScratchDir::new("identity_cli");
    let model = scratch.copy_model("bert_mlm", "m");
    let out = scratch.path().join("p");
    let args = tiny_pet_train_args(&model, &out);
    stdout_ok(&softprompt(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/dev.jsonl");
    let eval = |extra: &[&str]| {
        let mut a = vec!["eval", "--prompt", out.to_str().unwrap()];
        a.extend(["--data", dev.to_str().unwrap(), "--threads", "1"]);
        a.extend(extra);
        softprompt(&a)
    };
    let before = stdout_ok(&eval(&[]));
    let path = model.join("config.json");
    // saved again by a newer transformers: the same model, run without a word
    resave(&path);
    let resaved = eval(&[]);
    assert_eq!(stdout_ok(&resaved), before);
    let said = String::from_utf8_lossy(&resaved.stderr);
    assert!(!said.contains("warning"), "{said}");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "\"hidden_dropout_prob\": 0.1",
            "\"hidden_dropout_prob\": 0.2",
        ),
    )
    .unwrap();
    let trained = format!(
        "the prompt in {} was trained on the model in",
        out.display()
    );
    common::refused(
        &eval(&[]),
        &[
            &trained,
            "whose config.json or tokenizer file has changed since",
            "--model",
        ],
    );
    let named = eval(&["--model", model.to_str().unwrap()]);
    assert_eq!(stdout_ok(&named), before);
    let warning = String::from_utf8_lossy(&named.stderr);
    assert!(
        warning.contains(&format!("warning: {trained}")) && warning.contains("--model given"),
        "{warning}"
    );
}

/// config.json saved again by a newer transformers (key order, indent, `transformers_version`,
/// `_name_or_path`, `torch_dtype`), and tokenizer.json by another tokenizers (key order,
/// indent): the fingerprint hashed their raw text, so the same model became "another model"
/// and every saved prompt of it was refused. Now the copy has the model's fingerprint, its
/// prompts run on it, and a task.json that recorded an earlier form (both raw texts, or
/// config.json's content with tokenizer.json's raw text) still names it.
#[test]
fn a_config_saved_again_is_the_same_model() {
    let scratch = ScratchDir::new("identity_resaved");
    let a = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let dir = scratch.copy_model("bert_mlm", "resaved");
    resave(&dir.join("config.json"));
    let tokenizer = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&tokenizer).unwrap();
    let compact = serde_json::from_str::<serde_json::Value>(&text)
        .unwrap()
        .to_string();
    assert_ne!(compact, text);
    std::fs::write(&tokenizer, compact).unwrap();
    let b = Model::open(&dir, Device::Cpu).unwrap();
    let (ta, tb) = (pet(&a), pet(&b));
    let (pa, pb) = (prompt(&a, &ta), prompt(&b, &tb));
    assert_eq!(pa.model_fingerprint(), pb.model_fingerprint());
    let of_a = a.encode(&ta, &data()).unwrap();
    let want = a.step(&ta, &pa, &of_a.rows).unwrap().loss;
    assert_eq!(b.step(&tb, &pa, &of_a.rows).unwrap().loss, want);

    // an earlier save recorded the hash of config.json's raw text
    let saved = scratch.path().join("saved");
    a.save_prompt(&saved, &pa, &ta, SaveOptions::default())
        .unwrap();
    let mut v = task_json(&saved);
    let raw = raw_fingerprint(&fixture("bert_mlm"));
    assert_ne!(v["model_fingerprint"], raw.as_str());
    v["model_fingerprint"] = raw.as_str().into();
    std::fs::write(saved.join("task.json"), v.to_string()).unwrap();
    let older = Prompt::load(&saved).unwrap();
    assert_eq!(older.model_fingerprint(), Some(raw));
    let own = a.task_for(&older, &words(), None).unwrap();
    assert_eq!(a.step(&own, &older, &of_a.rows).unwrap().loss, want);
    // the raw text is all an earlier save knows: the copy's differs, so it is refused there,
    // as before
    assert!(b.task_for(&older, &words(), None).is_err());
    // a save of the version before: config.json's content, tokenizer.json's raw text
    let read = |name: &str| std::fs::read_to_string(fixture("bert_mlm").join(name)).unwrap();
    let config = canonical_config(&read("config.json")).unwrap();
    let before = fnv(&[config.as_bytes(), read("tokenizer.json").as_bytes()]);
    v["model_fingerprint"] = before.as_str().into();
    std::fs::write(saved.join("task.json"), v.to_string()).unwrap();
    let older = Prompt::load(&saved).unwrap();
    let own = a.task_for(&older, &words(), None).unwrap();
    assert_eq!(a.step(&own, &older, &of_a.rows).unwrap().loss, want);
}
