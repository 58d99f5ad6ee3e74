//! PEFT prompt-tuning adapters: the ones PEFT 0.21.2 wrote load with `PromptTable::load_peft`
//! and equal the reference prompts; save → reload keeps the layout (2-submodule tables keep
//! their 2P rows, the P decoder rows unchanged) and writes a config PEFT understands.

mod common;

use common::{fixture, read_raw, run_python, softprompt, write_raw, RawTensor, ScratchDir};
use softprompt::internals::prompt::{
    AdapterInfo, PromptTable, ADAPTER_CONFIG, ADAPTER_WEIGHTS, PROMPT_KEY,
};
use softprompt::internals::reference::Reference;
use softprompt::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn reference_prompt(rel: &str) -> Vec<f32> {
    Reference::read(&fixture(rel)).unwrap().prompt.data
}

/// The raw `prompt_embeddings` table and its shape.
fn raw_table(dir: &Path) -> (Vec<usize>, Vec<f32>) {
    let (tensors, _) = read_raw(&dir.join(ADAPTER_WEIGHTS));
    assert_eq!(tensors.len(), 1, "one tensor, `{PROMPT_KEY}`");
    let t = &tensors[PROMPT_KEY];
    (t.shape.clone(), t.as_f32())
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap()).unwrap()
}

#[test]
fn load_bert_adapter() {
    let t = PromptTable::load_peft(&fixture("bert_mlm/peft_adapter")).unwrap();
    assert_eq!((t.p, t.d), (5, 48));
    assert_eq!(
        t.data,
        reference_prompt("bert_mlm/ref_mlm_random.safetensors")
    );
    assert_eq!(t.layout.num_transformer_submodules, 1);
    assert!(t.layout.extra_rows.is_empty());
    assert_eq!(t.init, "RANDOM");
}

#[test]
fn load_t5_adapters_one_and_two_submodules() {
    let want = reference_prompt("t5_v1_0/ref_seq2seq_text.safetensors");
    let one = PromptTable::load_peft(&fixture("t5_v1_0/peft_adapter_1sub")).unwrap();
    assert_eq!(
        (one.p, one.d, one.layout.num_transformer_submodules),
        (7, 32, 1)
    );
    assert_eq!(one.data, want);
    assert!(one.layout.extra_rows.is_empty());
    assert_eq!(
        (one.init.as_str(), one.init_text.as_deref()),
        ("TEXT", Some("summarize:"))
    );

    let dir = fixture("t5_v1_0/peft_adapter_2sub");
    let two = PromptTable::load_peft(&dir).unwrap();
    assert_eq!(
        (two.p, two.d, two.layout.num_transformer_submodules),
        (7, 32, 2)
    );
    // prompt tuning feeds only the first P rows to the encoder
    assert_eq!(two.data, want);
    let (shape, raw) = raw_table(&dir);
    assert_eq!(shape, [14, 32]);
    assert_eq!(two.layout.extra_rows, raw[7 * 32..]);
}

#[test]
fn two_submodule_round_trip_keeps_layout() {
    let src = fixture("t5_v1_0/peft_adapter_2sub");
    let mut t = PromptTable::load_peft(&src).unwrap();
    let (_, original) = raw_table(&src);
    // as if trained: the encoder rows change, the decoder rows must not
    for (i, x) in t.data.iter_mut().enumerate() {
        *x += 0.01 * i as f32;
    }
    let scratch = ScratchDir::new("peft2");
    let out = scratch.path().join("adapter");
    let info = AdapterInfo {
        task_type: Some("SEQ_2_SEQ_LM".into()),
        base_model_name_or_path: Some("elsewhere/t5".into()),
        tokenizer_name_or_path: None,
        num_attention_heads: 4,
        num_layers: 2,
    };
    t.save_peft(&out, &info).unwrap();

    let (shape, raw) = raw_table(&out);
    assert_eq!(shape, [14, 32], "2P rows");
    assert_eq!(raw[..7 * 32], t.data[..]);
    assert_eq!(raw[7 * 32..], original[7 * 32..], "decoder rows unchanged");

    let cfg = config(&out);
    assert_eq!(cfg["peft_type"], "PROMPT_TUNING");
    assert_eq!(cfg["num_virtual_tokens"], 7);
    assert_eq!(cfg["token_dim"], 32);
    assert_eq!(cfg["num_transformer_submodules"], 2);
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
    // what the loaded PEFT config said about its own model is kept
    assert_eq!(cfg["base_model_name_or_path"], "t5_v1_0");
    assert_eq!(cfg["peft_version"], "0.21.2");
    assert_eq!(cfg["prompt_tuning_init"], "TEXT");
    assert_eq!(cfg["prompt_tuning_init_text"], "summarize:");

    let back = PromptTable::load_peft(&out).unwrap();
    assert_eq!(
        back,
        PromptTable {
            layout: back.layout.clone(),
            ..t.clone()
        }
    );
    assert_eq!(back.layout.num_transformer_submodules, 2);
    assert_eq!(back.layout.extra_rows, t.layout.extra_rows);
    // saving twice is stable
    back.save_peft(&out, &info).unwrap();
    assert_eq!(PromptTable::load_peft(&out).unwrap().data, t.data);
}

#[test]
fn fresh_table_writes_a_complete_peft_config() {
    let data: Vec<f32> = (0..3 * 8).map(|i| i as f32 * 0.5 - 3.0).collect();
    let t = PromptTable::from_data(3, 8, data.clone()).unwrap();
    let scratch = ScratchDir::new("peft1");
    let out = scratch.path().join("fresh");
    let info = AdapterInfo {
        task_type: Some("SEQ_CLS".into()),
        base_model_name_or_path: Some("bert".into()),
        tokenizer_name_or_path: Some("bert".into()),
        num_attention_heads: 12,
        num_layers: 6,
    };
    t.save_peft(&out, &info).unwrap();
    let cfg = config(&out);
    // every field PEFT's PromptTuningConfig reads back
    for (key, want) in [
        ("peft_type", serde_json::json!("PROMPT_TUNING")),
        ("task_type", "SEQ_CLS".into()),
        ("num_virtual_tokens", 3.into()),
        ("token_dim", 8.into()),
        ("num_transformer_submodules", 1.into()),
        ("num_attention_heads", 12.into()),
        ("num_layers", 6.into()),
        ("prompt_tuning_init", "RANDOM".into()),
        ("base_model_name_or_path", "bert".into()),
        ("inference_mode", true.into()),
    ] {
        assert_eq!(cfg[key], want, "{key}");
    }
    let (shape, raw) = raw_table(&out);
    assert_eq!((shape, raw), (vec![3, 8], data.clone()));
    let back = PromptTable::load_peft(&out).unwrap();
    assert_eq!((back.p, back.d, back.data), (3, 8, data));
    // no temporary files are left beside the adapter
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn load_rejects_what_is_not_a_prompt_table() {
    let scratch = ScratchDir::new("peftbad");
    let dir = scratch.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
        std::fs::copy(fixture("t5_v1_0/peft_adapter_2sub").join(f), dir.join(f)).unwrap();
    }
    let set = |key: &str, value: serde_json::Value| {
        let mut cfg = config(&fixture("t5_v1_0/peft_adapter_2sub"));
        cfg[key] = value;
        std::fs::write(dir.join(ADAPTER_CONFIG), cfg.to_string()).unwrap();
    };
    let err = |needle: &str| {
        let e = PromptTable::load_peft(&dir).expect_err(needle).to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    };
    set("peft_type", "LORA".into());
    err("PROMPT_TUNING");
    set("num_transformer_submodules", 1.into());
    err("14 rows");
    set("num_transformer_submodules", 3.into());
    err("num_transformer_submodules");
    set("token_dim", 31.into());
    err("token_dim 31");
    // a present but wrong count says what it is (it said "missing"); 0 rows is no prompt
    set("num_virtual_tokens", (-1).into());
    err("`num_virtual_tokens` is -1: expected a positive integer");
    set("num_virtual_tokens", 0.into());
    err("`num_virtual_tokens` is 0");
    std::fs::remove_file(dir.join(ADAPTER_WEIGHTS)).unwrap();
    set("token_dim", 32.into());
    err(ADAPTER_WEIGHTS);
}

/// PEFT itself loads the adapters this engine writes: a reloaded 2-submodule T5 adapter and
/// a fresh BERT table. Needs torch, transformers and peft, which CI does not have: run with
/// `cargo test --test peft_adapters -- --ignored`.
#[test]
#[ignore = "needs /work/venv/bin/python with torch, transformers and peft (not in CI)"]
fn peft_loads_our_adapters() {
    let scratch = ScratchDir::new("peftpy");
    // T5: loaded from PEFT's own 2-submodule adapter, changed, saved
    let mut t = PromptTable::load_peft(&fixture("t5_v1_0/peft_adapter_2sub")).unwrap();
    for x in t.data.iter_mut() {
        *x *= -1.5;
    }
    let t5_out = scratch.path().join("t5");
    let info = AdapterInfo {
        task_type: Some("SEQ_2_SEQ_LM".into()),
        num_attention_heads: 4,
        num_layers: 2,
        ..Default::default()
    };
    t.save_peft(&t5_out, &info).unwrap();
    let mut table = t.data.clone();
    table.extend_from_slice(&t.layout.extra_rows);
    let t5_want = serde_json::to_string(&table).unwrap();
    // BERT: a fresh table, as training writes it
    let data: Vec<f32> = (0..4 * 36).map(|i| (i as f32 * 0.37).sin()).collect();
    let fresh = PromptTable::from_data(4, 36, data.clone()).unwrap();
    let bert_out = scratch.path().join("bert");
    let info = AdapterInfo {
        task_type: Some("FEATURE_EXTRACTION".into()),
        num_attention_heads: 3,
        num_layers: 2,
        ..Default::default()
    };
    fresh.save_peft(&bert_out, &info).unwrap();
    let bert_want = serde_json::to_string(&data).unwrap();
    let script = r#"
import json, sys, torch
from transformers import T5ForConditionalGeneration, BertModel
from peft import PeftModel, PeftConfig
def check(model_cls, model_dir, adapter, want, shape):
    cfg = PeftConfig.from_pretrained(adapter)
    assert cfg.peft_type == "PROMPT_TUNING", cfg.peft_type
    base = model_cls.from_pretrained(model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter)
    w = model.prompt_encoder["default"].embedding.weight.detach()
    assert tuple(w.shape) == shape, w.shape
    assert torch.equal(w, torch.tensor(json.loads(want), dtype=torch.float32).reshape(shape))
check(T5ForConditionalGeneration, *sys.argv[1:4], (14, 32))
check(BertModel, *sys.argv[4:7], (4, 36))
print("ok")
"#;
    let (t5_dir, bert_dir) = (fixture("t5_v1_0"), fixture("bert_nohead"));
    run_python(
        script,
        &[
            t5_dir.as_os_str(),
            t5_out.as_os_str(),
            t5_want.as_ref(),
            bert_dir.as_os_str(),
            bert_out.as_os_str(),
            bert_want.as_ref(),
        ],
    );
}

/// A folder `name` in `scratch` holding adapter_config.json `cfg` and a `prompt_embeddings`
/// of `shape` (values i·0.01).
fn adapter(scratch: &ScratchDir, name: &str, cfg: serde_json::Value, shape: [usize; 2]) -> PathBuf {
    let dir = scratch.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(ADAPTER_CONFIG), cfg.to_string()).unwrap();
    let data: Vec<f32> = (0..shape[0] * shape[1]).map(|i| i as f32 * 0.01).collect();
    let table = HashMap::from([(
        PROMPT_KEY.to_string(),
        RawTensor::f32(shape.to_vec(), &data),
    )]);
    write_raw(&dir.join(ADAPTER_WEIGHTS), &table, None);
    dir
}

fn load_err(dir: &Path) -> String {
    PromptTable::load_peft(dir)
        .expect_err("refused")
        .to_string()
}

/// A T5 adapter without `num_transformer_submodules` (or with null) is read as PEFT's
/// `_setup_prompt_encoder` reads it: 2 for task_type SEQ_2_SEQ_LM, so PEFT's 2P-row table
/// loads as the explicit 2 does (it was refused as "x num_transformer_submodules 1"); a P-row
/// table still loads; a refusal says what the file holds and PEFT's default (hostile pass 11,
/// F12).
#[test]
fn absent_submodules_read_as_peft_does() {
    let scratch = ScratchDir::new("peft_subs_absent");
    let src = fixture("t5_v1_0/peft_adapter_2sub");
    let explicit = PromptTable::load_peft(&src).unwrap();
    let mut cfg = config(&src);
    for (name, held) in [("absent", None), ("null", Some(serde_json::Value::Null))] {
        let dir = scratch.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join(ADAPTER_WEIGHTS), dir.join(ADAPTER_WEIGHTS)).unwrap();
        match &held {
            None => cfg
                .as_object_mut()
                .unwrap()
                .remove("num_transformer_submodules"),
            Some(v) => cfg
                .as_object_mut()
                .unwrap()
                .insert("num_transformer_submodules".into(), v.clone()),
        };
        std::fs::write(dir.join(ADAPTER_CONFIG), cfg.to_string()).unwrap();
        let t = PromptTable::load_peft(&dir).unwrap();
        assert_eq!((t.p, t.layout.num_transformer_submodules), (7, 2), "{name}");
        assert_eq!(t.data, explicit.data, "{name}: rows 0..P-1, the encoder's");
        assert_eq!(t.layout.extra_rows, explicit.layout.extra_rows, "{name}");
    }
    // a P-row table (one submodule's) still loads
    let mut seven = cfg.clone();
    seven
        .as_object_mut()
        .unwrap()
        .remove("num_transformer_submodules");
    let one = adapter(&scratch, "seven", seven.clone(), [7, 32]);
    let t = PromptTable::load_peft(&one).unwrap();
    assert_eq!((t.p, t.layout.num_transformer_submodules), (7, 1));
    assert!(t.layout.extra_rows.is_empty());
    // neither P nor 2P rows
    let odd = adapter(&scratch, "odd", seven.clone(), [13, 32]);
    let cfg_path = odd.join(ADAPTER_CONFIG);
    assert!(
        load_err(&odd).ends_with(&format!(
            "`prompt_embeddings` has 13 rows: expected num_virtual_tokens 7 x \
         num_transformer_submodules, which {} leaves out: PEFT reads it as 2 for task_type \
         \"SEQ_2_SEQ_LM\" (14 rows: P encoder rows, then P decoder rows; a table of 7 rows, \
         one submodule's, is read too)",
            cfg_path.display()
        )),
        "{}",
        load_err(&odd)
    );
    // another task type: PEFT reads 1, and 2P rows are refused saying so
    seven["task_type"] = "SEQ_CLS".into();
    seven["num_transformer_submodules"] = serde_json::Value::Null;
    let cls = adapter(&scratch, "cls", seven, [14, 32]);
    let e = load_err(&cls);
    assert!(
        e.ends_with(&format!(
            "`prompt_embeddings` has 14 rows: expected num_virtual_tokens 7 x \
         num_transformer_submodules, which {} has null for: PEFT reads it as 1 where \
         task_type is not \"SEQ_2_SEQ_LM\" (it is \"SEQ_CLS\"): 7 rows",
            cls.join(ADAPTER_CONFIG).display()
        )),
        "{e}"
    );
}

/// The bert_mlm fixture's task (pet, "great"/"bad") and the prompt in `dir` checked on it.
fn check_on_bert(dir: &Path) -> Result<()> {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu)?;
    let (data, opts) = common::bert_mlm_pet();
    let prompt = Prompt::load(dir)?;
    let task = model.task_for(&prompt, &opts, Some(&data))?;
    model.check_prompt(&task, &prompt)
}

/// `num_transformer_submodules` 2 on an encoder-only model: the table's second half was
/// dropped without a word, though PEFT sets 2 only for SEQ_2_SEQ_LM and cannot run such an
/// adapter on BERT or a decoder (hostile pass 11, F3). Refused naming the key; 1 runs.
#[test]
fn two_submodules_on_bert_are_refused() {
    let scratch = ScratchDir::new("peft_subs_bert");
    let mut cfg = config(&fixture("bert_mlm/peft_adapter"));
    cfg["num_transformer_submodules"] = 2.into();
    let two = adapter(&scratch, "two", cfg.clone(), [10, 48]);
    let model = fixture("bert_mlm");
    let e = check_on_bert(&two).expect_err("refused").to_string();
    assert_eq!(
        e,
        format!(
            "{}: `num_transformer_submodules` is 2 but {} is a bert model: 2 (a table of P \
             encoder rows, then P decoder rows: 10 rows here) is PEFT's for a SEQ_2_SEQ_LM \
             model (T5) only, and PEFT cannot run such an adapter on this model; expected 1 \
             (a table of num_virtual_tokens 5 rows)",
            two.join(ADAPTER_CONFIG).display(),
            model.display()
        )
    );
    // absent, with task_type SEQ_2_SEQ_LM and 2P rows: PEFT's 2 again
    cfg.as_object_mut()
        .unwrap()
        .remove("num_transformer_submodules");
    cfg["task_type"] = "SEQ_2_SEQ_LM".into();
    let absent = adapter(&scratch, "absent", cfg.clone(), [10, 48]);
    let e = check_on_bert(&absent).expect_err("refused").to_string();
    assert!(e.contains("`num_transformer_submodules` is absent, which PEFT reads as 2 for task_type SEQ_2_SEQ_LM, but"), "{e}");
    cfg["num_transformer_submodules"] = 1.into();
    cfg["task_type"] = "TOKEN_CLS".into();
    let one = adapter(&scratch, "one", cfg, [5, 48]);
    check_on_bert(&one).unwrap();
}

/// Prefix adapters whose width is not num_layers·2·token_dim said "token_dim 24 (num_layers
/// 2, prefix tuning: true) does not match the table width 24", and "num_layers 0" for a
/// missing key (hostile pass 11, F4): the message names the width expected and how it is
/// made, says `num_layers` is missing, and recognises a prefix_projection adapter saved in
/// inference mode. Without `num_layers` a multiple of 2·token_dim loads (PEFT takes the
/// model's layers, checked where it runs).
#[test]
fn prefix_width_errors_say_what_is_expected() {
    let scratch = ScratchDir::new("peft_prefix_width");
    let base = serde_json::json!({
        "peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 3,
        "num_layers": 2, "token_dim": 24, "num_attention_heads": 2, "prefix_projection": true,
    });
    let inference = adapter(&scratch, "inference", base.clone(), [3, 24]);
    assert!(load_err(&inference).ends_with(
        "adapter_config.json: a PREFIX_TUNING `prompt_embeddings` row is num_layers·2·token_dim \
         = 2·2·24 = 96 wide, but the one in adapter_model.safetensors is 24 wide (a \
         prefix_projection adapter saved in inference mode: it holds only the projection's \
         input, P × token_dim, not the table the projection makes, which is what runs; save it \
         from the PEFT model it was trained in)"
    ), "{}", load_err(&inference));
    let mut plain = base.clone();
    plain["prefix_projection"] = false.into();
    let wide = adapter(&scratch, "wide", plain.clone(), [3, 100]);
    assert!(load_err(&wide).ends_with(
        "a PREFIX_TUNING `prompt_embeddings` row is num_layers·2·token_dim = 2·2·24 = 96 wide, \
         but the one in adapter_model.safetensors is 100 wide"
    ), "{}", load_err(&wide));
    plain.as_object_mut().unwrap().remove("num_layers");
    plain["token_dim"] = 48.into();
    let no_layers = adapter(&scratch, "no_layers", plain.clone(), [3, 48]);
    assert!(load_err(&no_layers).ends_with(
        "a PREFIX_TUNING `prompt_embeddings` row is num_layers·2·token_dim wide, a multiple of \
         2·token_dim = 96 (`num_layers` is missing: PEFT takes the model's), but the one in \
         adapter_model.safetensors is 48 wide"
    ), "{}", load_err(&no_layers));
    plain["token_dim"] = 24.into();
    let fits = adapter(&scratch, "fits", plain, [3, 96]);
    let t = PromptTable::load_peft(&fits).unwrap();
    assert_eq!((t.p, t.d), (3, 96));
}

/// Folders that are no prompt folder said a bare "No such file or directory", or called a
/// model folder "the folder of a multi-task run?" (hostile pass 11, F7 and F10): each says
/// what it holds and what to do.
#[test]
fn folders_that_are_no_prompt_folder_say_what_they_are() {
    let scratch = ScratchDir::new("peft_not_a_folder");
    let src = fixture("bert_mlm/peft_adapter");
    // older PEFT's adapter_model.bin, no safetensors
    let bin = scratch.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(src.join(ADAPTER_CONFIG), bin.join(ADAPTER_CONFIG)).unwrap();
    std::fs::write(bin.join("adapter_model.bin"), b"PK").unwrap();
    let (b, w) = (bin.join("adapter_model.bin"), bin.join(ADAPTER_WEIGHTS));
    assert_eq!(
        load_err(&bin),
        format!(
            "{}: is missing, but the folder holds adapter_model.bin, a PyTorch pickle (older \
             PEFT's default), which softprompt does not read: convert it, e.g. python -c \
             \"import torch; from safetensors.torch import save_file; \
             save_file(torch.load('{}'), '{}')\"",
            w.display(),
            b.display(),
            w.display()
        )
    );
    // no adapter_config.json, or no folder at all
    let no_cfg = scratch.path().join("no_cfg");
    std::fs::create_dir_all(&no_cfg).unwrap();
    std::fs::copy(src.join(ADAPTER_WEIGHTS), no_cfg.join(ADAPTER_WEIGHTS)).unwrap();
    assert_eq!(
        load_err(&no_cfg),
        format!(
            "{}: is missing beside adapter_model.safetensors: copy it from where the adapter \
             was saved (PEFT's save_pretrained writes both)",
            no_cfg.join(ADAPTER_CONFIG).display()
        )
    );
    let empty = scratch.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let files = "adapter_config.json and adapter_model.safetensors, as PEFT's save_pretrained \
                 writes them";
    assert_eq!(
        load_err(&empty),
        format!(
            "{}: is missing: {} is no prompt folder (one holds {files})",
            empty.join(ADAPTER_CONFIG).display(),
            empty.display()
        )
    );
    let gone = scratch.path().join("gone");
    assert_eq!(
        load_err(&gone),
        format!(
            "{}: no such folder: expected a prompt folder ({files})",
            gone.display()
        )
    );
    // a model folder
    let model = fixture("bert_mlm");
    assert_eq!(
        load_err(&model),
        format!(
            "{}: holds no adapter_config.json: it is a model folder (config.json and the \
             model's weights), not a prompt folder: name it as the model (--model) and a prompt \
             folder as the prompt",
            model.display()
        )
    );
    // PEFT's save_pretrained of several adapters, none at the top: no task.json in them
    let multi = scratch.path().join("multi");
    for name in ["second", "first"] {
        let sub = multi.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        for f in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
            std::fs::copy(src.join(f), sub.join(f)).unwrap();
        }
    }
    assert_eq!(
        load_err(&multi),
        format!(
            "{}: holds no adapter_config.json, but its folders first, second each hold one: \
             adapters PEFT's save_pretrained saved together (each but the default one in a \
             folder of its name)? name one of them",
            multi.display()
        )
    );
    PromptTable::load_peft(&multi.join("first")).unwrap();
    // inspect: the adapter's folders are prompt folders, not a model's (it said "config.json:
    // No such file"), and PEFT's several adapters are not a multi-task run
    let inspect = |dir: &Path| softprompt(&["inspect", dir.to_str().unwrap()]);
    for dir in [&bin, &no_cfg] {
        let out = inspect(dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("error: {}", load_err(dir))),
            "{stderr}"
        );
    }
    let out = inspect(&multi);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        format!(
            "{}: adapters PEFT's save_pretrained saved together (a folder per adapter); inspect \
             each one's folder: {}, {}",
            multi.display(),
            multi.join("first").display(),
            multi.join("second").display()
        )
    );
}

/// A PEFT folder's hub id in `base_model_name_or_path` met a folder of that name two levels
/// up, and eval ran it without naming it (hostile pass 11, F13): a note names the folder.
#[test]
fn a_model_found_from_the_adapters_base_is_noted() {
    let scratch = ScratchDir::new("peft_base_note");
    let model = scratch.copy_model("bert_mlm", "bert-tiny-hub");
    let data: Vec<f32> = (0..4 * 48).map(|i| (i as f32 * 0.37).sin()).collect();
    let info = AdapterInfo {
        task_type: Some("FEATURE_EXTRACTION".into()),
        base_model_name_or_path: Some("bert-tiny-hub".into()),
        num_attention_heads: 4,
        num_layers: 2,
        ..Default::default()
    };
    let dir = scratch.path().join("adapters/a");
    PromptTable::from_data(4, 48, data)
        .unwrap()
        .save_peft(&dir, &info)
        .unwrap();
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/dev.jsonl");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--prompt",
            dir.to_str().unwrap(),
            "--data",
            dev.to_str().unwrap(),
            "--task",
            "pet",
            "--template",
            "{text} It was [MASK].",
            "--verbalizer",
            "positive=great,negative=bad",
        ];
        args.extend_from_slice(extra);
        let out = softprompt(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        stderr
    };
    let want = format!(
        "note: using the model in {}: {}'s base_model_name_or_path is \"bert-tiny-hub\" (pass \
         --model to name another)",
        scratch.path().join("bert-tiny-hub").display(),
        dir.join(ADAPTER_CONFIG).display()
    );
    assert!(eval(&[]).contains(&want), "{want}: {}", eval(&[]));
    // --model named: no note
    assert!(!eval(&["--model", model.to_str().unwrap()]).contains("note: using the model"));
}
