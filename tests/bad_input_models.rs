//! Damaged model and prompt folders (issues #16/#17, the hostile-input pass): each is
//! refused at once with exit code 2 and a message naming the file and key at fault, never a
//! hang, an abort or numbers that mean nothing. Every case builds its damaged copy of a
//! committed fixture in a scratch folder and runs the release binary on it.

mod common;

use common::{binary, fixture, refused, ScratchDir};
use softprompt::prelude::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The longest any refusal here may take: a case that hangs fails instead of stalling the run.
const LIMIT: Duration = Duration::from_secs(60);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs the binary with `args`, killed (and the test failed) after `LIMIT`.
fn run_bounded(args: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run softprompt");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("softprompt {args:?} still ran after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Replaces `path` with a FIFO no one writes to.
fn make_fifo(path: &Path) {
    std::fs::remove_file(path).expect("remove");
    let c_path = std::ffi::CString::new(s(path)).expect("path");
    // SAFETY: mkfifo(3) on a NUL-terminated path we own
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
}

/// A copy of the committed PEFT prompt folder for the tiny BERT under `dir`.
fn copy_prompt(dir: &ScratchDir) -> std::path::PathBuf {
    let dst = dir.path().join("prompt");
    std::fs::create_dir_all(&dst).expect("create");
    for f in std::fs::read_dir(fixture("bert_mlm/peft_adapter")).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, dst.join(f.file_name().expect("name"))).expect("copy");
    }
    dst
}

/// `cmd` (predict, eval) of the PEFT `prompt` on `model` over `data`, with its verbalizer.
fn pet_args<'a>(cmd: &'a str, prompt: &'a Path, model: &'a Path, data: &'a Path) -> Vec<&'a str> {
    vec![
        cmd,
        "--prompt",
        s(prompt),
        "--model",
        s(model),
        "--data",
        s(data),
        "--verbalizer",
        "negative=terrible,positive=good",
    ]
}

/// A file of a model or prompt folder that is a FIFO blocked `predict` for ever (opening it
/// waits for a writer): now refused before it is opened, naming it.
#[test]
fn a_fifo_in_a_model_or_prompt_folder_is_refused() {
    let dir = ScratchDir::new("fifo_files");
    let model = dir.copy_model("bert_mlm", "model");
    let prompt = copy_prompt(&dir);
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\":\"a good film\"}\n").expect("data");
    let args = pet_args("predict", &prompt, &model, &data);
    // the copies work as they are
    let out = run_bounded(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (folder, file) in [
        (&prompt, "adapter_model.safetensors"),
        (&prompt, "adapter_config.json"),
        (&model, "config.json"),
        (&model, "model.safetensors"),
        (&model, "tokenizer.json"),
    ] {
        let path = folder.join(file);
        let kept = std::fs::read(&path).expect("read");
        make_fifo(&path);
        let out = run_bounded(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{file} as a FIFO was not refused"
        );
        refused(&out, &[file, "is not an ordinary file"]);
        std::fs::remove_file(&path).expect("remove the FIFO");
        std::fs::write(&path, kept).expect("restore");
    }
}

/// Sets `key` of `dir`/config.json to `value`.
fn set_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).expect("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    cfg[key] = value;
    std::fs::write(&path, cfg.to_string()).expect("write config.json");
}

/// A layer count of 10^9 that the weights do not hold sized a Vec of 864 GB before the
/// first missing layer was found (BLOOM, Llama, Qwen2, T5: "memory allocation of
/// 864000000000 bytes failed", an abort): now the first missing layer is named, as BERT does.
#[test]
fn a_layer_count_past_the_weights_names_the_first_missing_layer() {
    let dir = ScratchDir::new("layer_count");
    for (fixture, key, missing) in [
        (
            "bloom",
            "n_layer",
            "`h.2.self_attention.query_key_value.weight`",
        ),
        (
            "llama",
            "num_hidden_layers",
            "`model.layers.2.input_layernorm.weight`",
        ),
        (
            "qwen2",
            "num_hidden_layers",
            "`model.layers.2.input_layernorm.weight`",
        ),
        ("t5_flan", "num_layers", "`encoder.block.3."),
        ("t5_flan", "num_decoder_layers", "`decoder.block.2."),
    ] {
        let model = dir.copy_model(fixture, &format!("{fixture}_{key}"));
        set_config(&model, key, 1_000_000_000u64.into());
        let err = match Model::open(&model, Device::Cpu) {
            Ok(_) => panic!("{fixture} with {key} 1e9 loaded"),
            Err(e) => e.to_string(),
        };
        for want in [missing, "missing from", "model.safetensors"] {
            assert!(err.contains(want), "{fixture} {key}: {err}");
        }
    }
}

/// A norm epsilon of 0 or below (or NaN) made every score NaN for Llama, Qwen2 and BLOOM
/// (predict printed null scores, eval accuracy 0.5, exit 0): refused at load naming
/// config.json's key, as BERT and T5 do.
#[test]
fn a_norm_epsilon_that_is_not_small_and_positive_is_refused() {
    let dir = ScratchDir::new("norm_eps");
    for (fixture, key) in [
        ("llama", "rms_norm_eps"),
        ("qwen2", "rms_norm_eps"),
        ("bloom", "layer_norm_epsilon"),
    ] {
        for (i, eps) in [serde_json::json!(-1.0), serde_json::json!(0.0)]
            .into_iter()
            .enumerate()
        {
            let model = dir.copy_model(fixture, &format!("{fixture}_{i}"));
            set_config(&model, key, eps.clone());
            let err = match Model::open(&model, Device::Cpu) {
                Ok(_) => panic!("{fixture} with {key} {eps} loaded"),
                Err(e) => e.to_string(),
            };
            let want = format!("`{key}` must be a small positive number (such as 1e-12), got");
            for want in ["config.json", &want] {
                assert!(err.contains(want), "{fixture} {key} {eps}: {err}");
            }
        }
    }
}

/// A model whose numbers overflow (layer-norm weights of 3e38: inf, then NaN, in every
/// score) chose a label by argmax over NaN scores, exit 0: now an error naming the prompt's
/// file, the row and its line, its scores, and the model as the likely culprit.
#[test]
fn a_nan_score_never_becomes_a_label() {
    let dir = ScratchDir::new("nan_scores");
    let model = dir.copy_model("bert_mlm", "model");
    common::edit_safetensors(&model.join("model.safetensors"), |t| {
        let w = t
            .get_mut("bert.embeddings.LayerNorm.weight")
            .expect("tensor");
        let n = w.as_f32().len();
        *w = common::RawTensor::f32(w.shape.clone(), &vec![3e38; n]);
    });
    let prompt = copy_prompt(&dir);
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\":\"a good film\",\"label\":\"positive\"}\n").expect("data");
    for cmd in ["predict", "eval"] {
        let out = run_bounded(&pet_args(cmd, &prompt, &model, &data));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        for want in [
            "adapter_model.safetensors: row 0 (",
            "data.jsonl:1)",
            "negative: NaN",
            "chooses no label",
            "the model's numbers are not finite on this prompt",
        ] {
            assert!(err.contains(want), "{cmd}: {err}");
        }
    }
}

/// A dev row whose scores are not finite during training (a word's embedding 3e38,
/// a word no training row holds, so every step's loss is finite) was an `Overflow` naming
/// "the prompt: row N" alone: no data file, and no advice. It stops the run as divergence
/// does, naming the dev file and line, the step, and `--lr`.
#[test]
fn a_dev_score_that_overflows_in_training_names_the_file_and_line() {
    let dir = ScratchDir::new("dev_overflow");
    let model = dir.copy_model("bert_mlm", "model");
    let vocab: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("tokenizer.json")).expect("tokenizer"))
            .expect("json");
    let id = vocab["model"]["vocab"]["tension"].as_u64().expect("a word") as usize;
    common::edit_safetensors(&model.join("model.safetensors"), |t| {
        let w = t
            .get_mut("bert.embeddings.word_embeddings.weight")
            .expect("tensor");
        let d = w.shape[1];
        w.bytes[4 * id * d..4 * (id + 1) * d].copy_from_slice(&3e38f32.to_le_bytes().repeat(d));
    });
    let dev = dir.path().join("dev.jsonl");
    let rows = [
        ("the movie was great.", "positive"),
        ("the tension was great.", "positive"),
    ];
    let text: String = (rows.iter())
        .map(|(t, l)| serde_json::json!({"text": t, "label": l}).to_string() + "\n")
        .collect();
    std::fs::write(&dev, text).expect("dev");
    let mut args = common::tiny_pet_train_args(&model, &dir.path().join("out"));
    args.extend(["--dev", s(&dev), "--eval-every", "1"].map(String::from));
    let out = run_bounded(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        &format!("the dev row at {}:2 scored its labels", s(&dev)),
        "chooses no label at step 1, so the run stops",
        "lower --lr",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// RoPE settings that were read as no scaling, silently: a `rope_scaling` that is a string,
/// a list or an object naming no type, and a `rope_theta` or linear factor of 0 or below.
/// Each is refused naming config.json and the key (a config holding both `rope_scaling` and
/// `rope_parameters` reads the first, as transformers does: config_parsing.rs).
#[test]
fn rope_settings_that_were_dropped_are_refused() {
    use serde_json::json;
    let dir = ScratchDir::new("rope");
    let cases = [
        (
            "llama",
            "rope_scaling",
            json!("linear"),
            "`rope_scaling` is \"linear\": expected an object",
        ),
        (
            "llama",
            "rope_scaling",
            json!([1, 2]),
            "`rope_scaling` is [1,2]: expected an object",
        ),
        (
            "llama",
            "rope_scaling",
            json!({"factor": 8.0}),
            "`rope_scaling` has no `rope_type`",
        ),
        (
            "llama",
            "rope_theta",
            json!(0),
            "`rope_theta` must be a positive number, got 0",
        ),
        (
            "llama",
            "rope_theta",
            json!(-1),
            "`rope_theta` must be a positive number, got -1",
        ),
        (
            "llama",
            "rope_scaling",
            json!({"rope_type": "linear", "factor": -2.0}),
            "`rope_scaling.factor` must be a positive number, got -2",
        ),
    ];
    for (i, (fixture, key, value, want)) in cases.into_iter().enumerate() {
        let model = dir.copy_model(fixture, &format!("{fixture}_{i}"));
        set_config(&model, key, value.clone());
        let err = match Model::open(&model, Device::Cpu) {
            Ok(_) => panic!("{fixture} with {key} {value} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("config.json") && err.contains(want),
            "{key} {value}: {err}"
        );
    }
    // the fixtures' own settings still load: llama3 scaling, Qwen2's rope_parameters
    for name in ["llama", "qwen2"] {
        Model::open(fixture(name), Device::Cpu).expect(name);
    }
}

/// A BPE tokenizer.json with `dropout` 0.5 split words at random: the same text scored
/// differently from run to run (labels flipped). Dropout is switched off at load, as padding
/// and truncation are: every encoding equals the fixture's own (dropout null).
#[test]
fn bpe_dropout_is_switched_off() {
    use softprompt::internals::tokenizer::Tokenizer;
    let dir = ScratchDir::new("bpe_dropout");
    let model = dir.copy_model("llama", "llama_dropout");
    let path = model.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    v["model"]["dropout"] = 0.5.into();
    std::fs::write(&path, v.to_string()).expect("write tokenizer.json");
    let text = "the music was lovely and the story slow, unbelievably understated";
    let want = Tokenizer::load(&fixture("llama"))
        .unwrap()
        .encode(text, false)
        .unwrap();
    let damaged = Tokenizer::load(&model).unwrap();
    for _ in 0..20 {
        assert_eq!(damaged.encode(text, false).unwrap(), want);
    }
}

/// A decoder's end token past its vocabulary was accepted at load, then every target it
/// ended failed as "tensor `labels`: label 304 ... is outside 0..304", with no word of
/// config.json: now refused at load naming config.json, the key, the value and vocab_size,
/// as BERT and T5 do. (A pad token past it only pads: see the test below.)
#[test]
fn a_decoder_token_id_past_the_vocabulary_is_refused_at_load() {
    use serde_json::json;
    let dir = ScratchDir::new("decoder_token_ids");
    // every decoder fixture has vocab_size 304
    for (i, (fixture, key, value, shown)) in [
        ("llama", "eos_token_id", json!(304), "304"),
        ("llama", "eos_token_id", json!([1, 400]), "400"),
        ("qwen2", "eos_token_id", json!(1000), "1000"),
        ("bloom", "eos_token_id", json!(304), "304"),
    ]
    .into_iter()
    .enumerate()
    {
        let model = dir.copy_model(fixture, &format!("{fixture}_{i}"));
        set_config(&model, key, value.clone());
        let err = match Model::open(&model, Device::Cpu) {
            Ok(_) => panic!("{fixture} with {key} {value} loaded"),
            Err(e) => e.to_string(),
        };
        let want = format!("`{key}` is {shown}, outside the vocabulary (vocab_size 304)");
        for want in ["config.json", &want] {
            assert!(err.contains(want), "{fixture} {key} {value}: {err}");
        }
    }
    // the last id of the vocabulary is one
    let model = dir.copy_model("llama", "llama_last");
    set_config(&model, "eos_token_id", json!(303));
    Model::open(&model, Device::Cpu).expect("eos_token_id 303 of 304");
}

/// A decoder's `pad_token_id` of vocab_size or more (a pad token added to the tokenizer
/// without resizing the embeddings) loaded before the end-token check above, which then
/// refused it too. It is accepted: padding only fills positions the key mask hides, with an
/// id within the table (it failed as "tensor `input_ids`: id 304" at the first padded batch),
/// so a run on such a config trains the prompt a config without a pad token trains, bit for
/// bit. `--target-end pad`, which makes the pad token a target, refuses it, naming the key,
/// the id and vocab_size.
#[test]
fn a_decoder_pad_token_past_the_vocabulary_only_pads() {
    use serde_json::json;
    let dir = ScratchDir::new("decoder_pad_past_vocab");
    // rows of 4 to 9 words, so that every batch pads
    let rows: Vec<String> = (0..8)
        .map(|i| {
            let text = vec!["the order was late"; 1 + i % 3].join(" and ");
            let label = ["complaint", "no complaint"][i % 2];
            json!({"text": text, "label": label}).to_string()
        })
        .collect();
    let data = dir.path().join("rows.jsonl");
    std::fs::write(&data, rows.join("\n")).expect("data");
    let train = |model: &Path, out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["train", "--model", s(model), "--train", s(&data), "--out"];
        args.extend([
            s(&out),
            "--task",
            "causal",
            "--prompt-len",
            "3",
            "--batch-size",
            "4",
        ]);
        args.extend(["--max-steps", "2", "--no-progress", "--threads", "1"]);
        args.extend(extra);
        (run_bounded(&args), out)
    };
    // the Llama fixture has no pad_token_id (padding with 0), vocab_size 304
    let plain = dir.copy_model("llama", "llama_plain");
    let past = dir.copy_model("llama", "llama_pad_304");
    set_config(&past, "pad_token_id", json!(304));
    let bloom = dir.copy_model("bloom", "bloom_pad_305");
    set_config(&bloom, "pad_token_id", json!(305));
    Model::open(&bloom, Device::Cpu).expect("BLOOM with pad_token_id 305 of 304");
    let table = |out: &Path| {
        let (t, _) = common::read_raw(&out.join("adapter_model.safetensors"));
        t["prompt_embeddings"].as_f32()
    };
    let (run, want) = train(&plain, "plain", &[]);
    common::stdout_ok(&run);
    let (run, got) = train(&past, "past", &[]);
    common::stdout_ok(&run);
    assert_eq!(table(&got), table(&want));
    let (run, _) = train(&past, "pad_end", &["--target-end", "pad"]);
    let config = format!("`pad_token_id` in {}", s(&past.join("config.json")));
    refused(
        &run,
        &[
            "invalid argument --target-end",
            &config,
            "is id 304, outside the vocabulary (vocab_size 304",
        ],
    );
}

/// adapter_config.json keys of the wrong JSON type were read as absent (a `token_dim` of
/// "48" checked nothing, `num_transformer_submodules` "x" read as 1), and a `peft_type` that
/// is not a string was named as "": each is refused naming the file, the key, the value as
/// found and the type expected.
#[test]
fn adapter_config_keys_of_the_wrong_type_are_refused() {
    use serde_json::json;
    use softprompt::internals::prompt::PromptTable;
    let dir = ScratchDir::new("adapter_types");
    let prompt = copy_prompt(&dir);
    let path = prompt.join("adapter_config.json");
    let good = std::fs::read_to_string(&path).expect("adapter_config.json");
    PromptTable::load_peft(&prompt).expect("the fixture's adapter");
    let cases = [
        (
            "num_transformer_submodules",
            json!("x"),
            "`num_transformer_submodules` is \"x\": expected a non-negative integer",
        ),
        (
            "token_dim",
            json!("48"),
            "`token_dim` is \"48\": expected a non-negative integer",
        ),
        (
            "token_dim",
            json!(48.5),
            "`token_dim` is 48.5: expected a non-negative integer",
        ),
        (
            "num_layers",
            json!(-2),
            "`num_layers` is -2: expected a non-negative integer",
        ),
        (
            "num_virtual_tokens",
            json!("5"),
            "`num_virtual_tokens` is \"5\": expected a positive integer",
        ),
        (
            "num_virtual_tokens",
            json!(-5),
            "`num_virtual_tokens` is -5: expected a positive integer",
        ),
        (
            "prompt_tuning_init",
            json!(5),
            "`prompt_tuning_init` is 5: expected a string",
        ),
        (
            "task_type",
            json!(["SEQ_CLS"]),
            "`task_type` is [\"SEQ_CLS\"]: expected a string",
        ),
        (
            "prefix_projection",
            json!("yes"),
            "`prefix_projection` is \"yes\": expected true or false",
        ),
        (
            "encoder_hidden_size",
            json!("64"),
            "`encoder_hidden_size` is \"64\": expected a non-negative integer",
        ),
        // the value as found, not "" (a number read as no string at all)
        (
            "peft_type",
            json!(5),
            "peft_type is 5: expected \"PROMPT_TUNING\"",
        ),
        ("peft_type", json!(null), "peft_type is null: expected"),
    ];
    for (key, value, want) in cases {
        let mut cfg: serde_json::Value = serde_json::from_str(&good).expect("JSON");
        cfg[key] = value.clone();
        std::fs::write(&path, cfg.to_string()).expect("write adapter_config.json");
        let err = match PromptTable::load_peft(&prompt) {
            Ok(_) => panic!("{key} {value} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("adapter_config.json") && err.contains(want),
            "{key} {value}: {err}"
        );
    }
    // and from the command line: exit 2, the same words
    let model = dir.copy_model("bert_mlm", "model");
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, "{\"text\":\"a good film\"}\n").expect("data");
    let mut cfg: serde_json::Value = serde_json::from_str(&good).expect("JSON");
    cfg["token_dim"] = json!("48");
    std::fs::write(&path, cfg.to_string()).expect("write adapter_config.json");
    let out = run_bounded(&pet_args("predict", &prompt, &model, &data));
    refused(
        &out,
        &[
            "adapter_config.json",
            "`token_dim` is \"48\": expected a non-negative integer",
        ],
    );
}

/// `inspect` describes what a model folder holds (exit 0), and a folder without a
/// tokenizer.json is one that train, eval and predict refuse: it says so, naming the file it
/// looked for, where it said nothing of the tokenizer (or only an error's words). A folder
/// with one names its vocabulary.
#[test]
fn inspect_says_when_there_is_no_tokenizer() {
    let dir = ScratchDir::new("inspect_no_tokenizer");
    let model = dir.copy_model("bert_mlm", "bert_no_tokenizer");
    std::fs::remove_file(model.join("tokenizer.json")).expect("remove tokenizer.json");
    let out = run_bounded(&["inspect", s(&model)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let want = format!(
        "tokenizer: none found (looked for {};",
        s(&model.join("tokenizer.json"))
    );
    assert!(stdout.contains(&want), "{stdout}");
    let out = run_bounded(&["inspect", s(&fixture("bert_mlm"))]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("tokenizer.json: "), "{stdout}");
    assert!(!stdout.contains("none found"), "{stdout}");
}

/// `tokenizer.json` of the BERT fixture (139 rows) with `edit` applied.
fn edit_tokenizer(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&path).expect("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    edit(&mut v);
    std::fs::write(&path, v.to_string()).expect("write tokenizer.json");
}

/// A tokenizer.json holding added tokens past the model's embedding table (a fine-tune that
/// added a pad token without resizing the embeddings) was refused at load as another model's;
/// transformers loads such a model and fails only where the token is used. It loads and
/// scores as the model without the tokens does; a text, template or label word that encodes
/// to one is refused, naming the token. A vocabulary proper larger than the table is still
/// another model's.
#[test]
fn added_tokens_past_the_embedding_table_are_refused_only_where_used() {
    use serde_json::json;
    let dir = ScratchDir::new("added_past_table");
    let added = dir.copy_model("bert_mlm", "added");
    let token = |id: u32, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    edit_tokenizer(&added, |v| {
        let list = v["added_tokens"].as_array_mut().expect("added_tokens");
        list.extend([token(139, "[PAD2]", true), token(140, "newword", false)]);
    });
    let words = |w: &str| {
        vec![
            ("negative".into(), "terrible".into()),
            ("positive".into(), w.into()),
        ]
    };
    let opts = |template: Option<&str>, word: &str| TaskOptions {
        verbalizer: Some(words(word)),
        template: template.map(String::from),
        max_len: Some(24),
        ..TaskOptions::default()
    };
    let data =
        |texts: &[&str]| Dataset::from_pairs("mem", texts.iter().map(|&t| (t, None::<&str>)));
    let scores = |dir: &Path| {
        let model = Model::open(dir, Device::Cpu).expect("the model loads");
        let task = model.task(&opts(None, "good"), None, 4).expect("task");
        let prompt = (model.new_prompt(&task, 4, &PromptInit::Random { std: 0.5 }, 1)).unwrap();
        let enc = model
            .encode(&task, &data(&["a good film", "dull"]))
            .unwrap();
        let preds = model.predict(&task, &prompt, &enc, 8).unwrap();
        preds
            .into_iter()
            .flat_map(|p| p.scores)
            .collect::<Vec<f32>>()
    };
    assert_eq!(scores(&added), scores(&fixture("bert_mlm")));

    let model = Model::open(&added, Device::Cpu).expect("added tokens past the table load");
    let past = |id: u32, content: &str| {
        format!("the token {content:?} (id {id}), past the model's embedding table of 139 rows")
    };
    let task = model.task(&opts(None, "good"), None, 4).unwrap();
    let err = model
        .encode(&task, &data(&["fine", "a newword film"]))
        .unwrap_err();
    let err = err.to_string();
    for want in ["mem:2: the text encodes to", &past(140, "newword")] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
    let template = Some("{text} [PAD2] It was [MASK].");
    let err = model
        .task(&opts(template, "good"), None, 4)
        .unwrap_err()
        .to_string();
    for want in ["invalid argument --template", &past(139, "[PAD2]")] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
    let err = model
        .task(&opts(None, "newword"), None, 4)
        .unwrap_err()
        .to_string();
    for want in [
        "invalid argument --verbalizer",
        "\"positive\"",
        &past(140, "newword"),
    ] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }

    let regular = dir.copy_model("bert_mlm", "regular");
    edit_tokenizer(&regular, |v| {
        v["model"]["vocab"]["zzzword"] = json!(139);
    });
    let err = match Model::open(&regular, Device::Cpu) {
        Ok(_) => panic!("a vocabulary past the table loaded"),
        Err(e) => e.to_string(),
    };
    for want in [
        "tokenizer.json",
        "holds token id 139",
        "belongs to another model",
    ] {
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
}
