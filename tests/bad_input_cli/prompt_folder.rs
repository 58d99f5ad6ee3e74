//! Saved prompt folders: a bad task.json key names task.json and the key; a prefix folder's
//! adapter files that do not fit the model name adapter_config.json's key; files that are not
//! ordinary files, NaN or integer tables, another architecture, a moved folder, and eval's
//! notes of a task flag over the trained one and of a recorded model that is gone.

use crate::common::{edit_safetensors, refused, RawTensor, ScratchDir};
use crate::{
    case, corpus, edit_json, fixture, ok, s, softprompt, softprompt_in, strings, train_args,
    trained,
};
use serde_json::Value;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// task.json: a bad key names task.json and the key, not the flag that would override it

fn task_case(name: &str) {
    let c = case("task", name);
    let dir = ScratchDir::new(name);
    let run = trained(&dir, &[]);
    edit_json(&run.join("task.json"), &c[0]);
    let needles = strings(&c[1]);
    let needles: Vec<&str> = needles.iter().map(|s| s.as_str()).collect();
    let data = corpus("data/dev.jsonl");
    let err = refused(
        &softprompt(&["eval", "--prompt", s(&run), "--data", s(&data)]),
        &needles,
    );
    assert!(!err.contains("argument --"), "{err}");
}

#[test]
fn task_prefix_placement_unknown() {
    task_case("prefix_placement_unknown");
}

#[test]
fn task_method_unknown() {
    task_case("method_unknown");
}

#[test]
fn task_method_not_the_adapters() {
    task_case("method_not_the_adapters");
}

#[test]
fn task_verbalizer_label_twice() {
    task_case("verbalizer_label_twice");
}

#[test]
fn task_num_virtual_tokens_other() {
    task_case("num_virtual_tokens_other");
}

#[test]
fn task_step_negative() {
    task_case("step_negative");
}

#[test]
fn task_seed_not_a_number() {
    task_case("seed_not_a_number");
}

#[test]
fn task_arch_not_a_string() {
    task_case("arch_not_a_string");
}

#[test]
fn task_dev_accuracy_past_1() {
    task_case("dev_accuracy_past_1");
}

#[test]
fn task_max_len_0() {
    task_case("max_len_0");
}

#[test]
fn task_max_len_negative() {
    task_case("max_len_negative");
}

#[test]
fn task_template_null() {
    task_case("template_null");
}

#[test]
fn task_future_format() {
    task_case("future_format");
}

#[test]
fn task_max_target_len_0() {
    task_case("max_target_len_0");
}

#[test]
fn task_template_without_text() {
    task_case("template_without_text");
}

#[test]
fn task_template_two_masks() {
    task_case("template_two_masks");
}

#[test]
fn task_free_targets_not_a_bool() {
    task_case("free_targets_not_a_bool");
}

#[test]
fn task_unknown_task() {
    task_case("unknown_task");
}

#[test]
fn task_verbalizer_not_a_list() {
    task_case("verbalizer_not_a_list");
}

#[test]
fn task_verbalizer_other_labels() {
    task_case("verbalizer_other_labels");
}

#[test]
fn task_labels_reordered() {
    task_case("labels_reordered");
}

// ---------------------------------------------------------------------------------------------
// A prefix folder's adapter files: what does not fit the model is refused naming
// adapter_config.json's key; tensors nothing reads are named in a warning

fn adapter_case(name: &str) {
    let c = case("adapter", name);
    let dir = ScratchDir::new(&format!("adapter_{name}"));
    let run = trained(&dir, &["--method", "prefix"]);
    edit_json(&run.join("adapter_config.json"), &c[1]);
    let extra = strings(&c[2]);
    edit_safetensors(&run.join("adapter_model.safetensors"), |t| {
        for k in &extra {
            t.insert(k.clone(), RawTensor::f32(vec![2, 3], &[0.5; 6]));
        }
    });
    let needles = strings(&c[4]);
    let needles: Vec<&str> = needles.iter().map(|s| s.as_str()).collect();
    let data = corpus("data/dev.jsonl");
    let out = match c[0].as_str() {
        Some("eval") => softprompt(&["eval", "--prompt", s(&run), "--data", s(&data)]),
        Some("inspect") => softprompt(&["inspect", s(&run)]),
        other => panic!("{name}: unknown command {other:?}"),
    };
    match c[3].as_str() {
        Some("refused") => {
            refused(&out, &needles);
        }
        Some("warns") => {
            ok(&out);
            let stderr = String::from_utf8_lossy(&out.stderr);
            for n in &needles {
                assert!(
                    stderr.contains(n),
                    "{name}: the warning lacks {n:?}: {stderr}"
                );
            }
            // once, however often the folder is read
            assert_eq!(stderr.matches(needles[2]).count(), 1, "{stderr}");
        }
        other => panic!("{name}: unknown outcome {other:?}"),
    }
}

#[test]
fn adapter_prefix_heads_other() {
    adapter_case("prefix_heads_other");
}

#[test]
fn adapter_prefix_heads_not_a_number() {
    adapter_case("prefix_heads_not_a_number");
}

#[test]
fn adapter_prefix_placement_unknown() {
    adapter_case("prefix_placement_unknown");
}

#[test]
fn adapter_extra_tensors() {
    adapter_case("extra_tensors");
}

/// An untouched prefix folder reads without a warning, and inspect of it succeeds.
#[test]
fn adapter_untouched_reads_quietly() {
    let dir = ScratchDir::new("adapter_untouched");
    let run = trained(&dir, &["--method", "prefix"]);
    let data = corpus("data/dev.jsonl");
    for out in [
        softprompt(&["eval", "--prompt", s(&run), "--data", s(&data)]),
        softprompt(&["inspect", s(&run)]),
    ] {
        let text = ok(&out);
        assert!(!text.contains("warning"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Files that are not what they seem: a link to /dev/zero, a NaN or integer table, a prompt
// of another architecture

/// The files of a model or prompt folder must be ordinary files: one that is a link to
/// /dev/zero (read until memory ran out) is refused naming it before it is opened, a tensor
/// file too. (tests/bad_input_models/folders.rs: a FIFO, which blocked the open.)
#[test]
fn json_file_that_never_ends_is_refused() {
    let dir = ScratchDir::new("json_stream");
    let model = dir.copy_model("bert_mlm", "model");
    let run = trained(&dir, &[]);
    for (folder, file) in [
        (&model, "config.json"),
        (&run, "adapter_config.json"),
        (&run, "task.json"),
        (&run, "adapter_model.safetensors"),
    ] {
        let path = folder.join(file);
        let kept = std::fs::read(&path).expect("read");
        std::fs::remove_file(&path).expect("remove");
        std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
        refused(
            &softprompt(&["inspect", s(folder)]),
            &[file, "is not an ordinary file"],
        );
        std::fs::remove_file(&path).expect("remove the link");
        std::fs::write(&path, kept).expect("restore");
    }
}

/// A saved prompt or head holding NaN is refused at load by `eval` and `predict`, naming the
/// tensor and the file (they scored every row the same).
#[test]
fn nan_in_a_saved_prompt_is_named_at_load() {
    let dir = ScratchDir::new("nan_prompt");
    let run = trained(&dir, &[]);
    let name = "prompt_embeddings";
    edit_safetensors(&run.join("adapter_model.safetensors"), |t| {
        let mut data = t[name].as_f32();
        data[1] = f32::NAN;
        let shape = t[name].shape.clone();
        t.insert(name.into(), RawTensor::f32(shape, &data));
    });
    for cmd in ["eval", "predict"] {
        refused(
            &softprompt(&[
                cmd,
                "--prompt",
                s(&run),
                "--data",
                s(&corpus("data/dev.jsonl")),
            ]),
            &[name, "non-finite", "adapter_model.safetensors"],
        );
    }
}

/// task.json records the architecture; a prompt loaded on a model of another one (a Llama
/// prompt on a BLOOM of the same width ran) is refused naming task.json, `arch` and both,
/// or, when the user named the model with --model, warned about.
#[test]
fn prompt_on_another_architecture() {
    use softprompt::internals::train::checkpoint::load_prompt_dir;
    let dir = ScratchDir::new("arch");
    let run = trained(&dir, &[]);
    let task: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("task.json")).expect("task"))
            .expect("json");
    assert_eq!(task["arch"], "bert");
    let saved = load_prompt_dir(&run).expect("prompt");
    assert_eq!(saved.check_arch(&run, "bert", false).expect("same"), None);
    let err = saved
        .check_arch(&run, "bloom", false)
        .expect_err("another architecture")
        .to_string();
    for w in [
        "task.json",
        "`arch` is \"bert\"",
        "the model is bloom",
        "--model",
    ] {
        assert!(err.contains(w), "{err}");
    }
    let warning = saved
        .check_arch(&run, "bloom", true)
        .expect("explicit --model");
    assert!(warning.is_some_and(|w| w.contains("task.json") && w.contains("bloom")));
}

/// A prompt table stored as integers was reported missing ("missing the tensor
/// `prompt_embeddings`") although the file holds it; a file without it lists what it holds.
#[test]
fn integer_prompt_table_is_named_not_missing() {
    let dir = ScratchDir::new("int_table");
    let run = trained(&dir, &[]);
    let weights = run.join("adapter_model.safetensors");
    edit_safetensors(&weights, |t| {
        let table = t.get_mut("prompt_embeddings").expect("the table");
        table.dtype = safetensors::Dtype::I32;
    });
    let data = corpus("data/dev.jsonl");
    for cmd in [
        &["inspect", s(&run)][..],
        &["eval", "--prompt", s(&run), "--data", s(&data)],
    ] {
        refused(&softprompt(cmd), &[s(&weights), "as integers"]);
    }
    edit_safetensors(&weights, |t| {
        let table = t.remove("prompt_embeddings").expect("the table");
        t.insert(
            "embedding.weight".into(),
            RawTensor {
                dtype: safetensors::Dtype::F32,
                ..table
            },
        );
    });
    refused(
        &softprompt(&["inspect", s(&run)]),
        &["missing the tensor `prompt_embeddings`", "embedding.weight"],
    );
}

// ---------------------------------------------------------------------------------------------
// Prompt folders find their model when copied or moved

/// task.json records the model as typed, absolute, and relative to the prompt folder: a
/// folder trained with a relative --model is found from another working directory and after
/// the project moves; when nothing is found the error lists the paths tried.
#[test]
fn copied_prompt_folder_finds_its_model() {
    let dir = ScratchDir::new("moved");
    let project = dir.path().join("project");
    dir.copy_model("bert_mlm", "project/model");
    // a relative --model, typed in the project folder
    ok(&softprompt_in(
        &project,
        &train_args(Path::new("model"), Path::new("runs/a"), &[]),
    ));
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("runs/a/task.json")).expect("task.json"),
    )
    .expect("json");
    assert_eq!(v["model"], "model");
    assert_eq!(v["model_from_prompt"], "../../model");
    let data = corpus("data/dev.jsonl");
    // from another working directory
    ok(&softprompt_in(
        dir.path(),
        &["eval", "--prompt", "project/runs/a", "--data", s(&data)],
    ));
    // the whole project moved: the absolute path is gone, the relative one still holds
    let moved = dir.path().join("moved");
    std::fs::rename(&project, &moved).expect("move");
    ok(&softprompt_in(
        dir.path(),
        &["eval", "--prompt", "moved/runs/a", "--data", s(&data)],
    ));
    // the model gone: the error says where it looked
    std::fs::rename(moved.join("model"), dir.path().join("elsewhere")).expect("move");
    refused(
        &softprompt_in(
            dir.path(),
            &["eval", "--prompt", "moved/runs/a", "--data", s(&data)],
        ),
        &["--model", "project/model", "moved/runs/a/../../model"],
    );
}

/// task.json's `model` and `model_path` pointing nowhere: eval took adapter_config.json's
/// `base_model_name_or_path` without a word (it may name another model). It still does, with
/// a note naming both; a folder whose recorded model is there says nothing.
#[test]
fn a_recorded_model_that_is_gone_is_noted() {
    let dir = ScratchDir::new("model_gone");
    let run = trained(&dir, &[]);
    let data = corpus("data/dev.jsonl");
    let eval = || {
        ok(&softprompt(&[
            "eval",
            "--prompt",
            s(&run),
            "--data",
            s(&data),
        ]))
    };
    assert!(!eval().contains("note: "));
    let gone = dir.path().join("gone/model");
    let patch = serde_json::json!({
        "model": s(&gone), "model_path": s(&gone), "model_from_prompt": "../gone/model",
    });
    edit_json(&run.join("task.json"), &patch);
    let text = eval();
    let base = fixture("bert_mlm");
    for want in [
        &format!("note: {}", s(&run.join("task.json"))),
        "records its model at",
        s(&gone),
        "holds no config.json: using",
        "adapter_config.json's base_model_name_or_path",
        s(&base),
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

/// `eval --template` or `--pooling` on a prompt trained with others replaced task.json's
/// without a word (accuracy 1.0 became 0.75): each is still used, with a note naming the
/// flag, the trained value and the value used; the trained values given again say nothing.
#[test]
fn eval_flags_over_the_trained_task_are_noted() {
    let dir = ScratchDir::new("eval_overrides");
    let out = dir.path().join("cls");
    let mut args = crate::common::tiny_pet_train_args(&fixture("bert_nohead"), &out);
    args[8] = "cls".into();
    args.drain(9..11); // no verbalizer
    ok(&softprompt(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let data = corpus("data/dev.jsonl");
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--prompt", s(&out), "--data", s(&data)];
        args.extend_from_slice(extra);
        ok(&softprompt(&args))
    };
    assert!(!eval(&[]).contains("note: "));
    let same = eval(&["--pooling", "mean", "--template", "{text}"]);
    assert!(!same.contains("note: "), "{same}");
    let text = eval(&["--pooling", "cls", "--template", "Review: {text}"]);
    for want in [
        "note: --template \"Review: {text}\" is used, but the prompt was trained with \"{text}\" \
         (its task.json)",
        "note: --pooling cls is used, but the prompt was trained with mean (its task.json)",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

/// `inspect` says what it does not know and which method a folder holds: a prefix adapter's
/// null `num_layers`/`token_dim`/`encoder_hidden_size` are "unset" (printed as "0 blocks ...
/// 0 wide"), a P-tuning adapter names P_TUNING and its encoder (shown as "init RANDOM" alone),
/// and a multi-task run's folder lists its tasks' folders (it said only "config.json: No such
/// file or directory"). (#17, hostile5 F7)
#[test]
fn inspect_names_unset_keys_p_tuning_and_multi_task_folders() {
    let dir = ScratchDir::new("inspect_methods");
    let peft = crate::common::fixture("deep").join("llama/peft_adapter_prefix");
    let copy = |name: &str, patch: Value| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(&to).expect("mkdir");
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(peft.join(f), to.join(f)).expect("copy");
        }
        edit_json(&to.join("adapter_config.json"), &patch);
        to
    };
    let unset = copy(
        "unset",
        serde_json::json!({"num_layers": null, "token_dim": null,
                           "encoder_hidden_size": null, "prefix_projection": true}),
    );
    let text = ok(&softprompt(&["inspect", s(&unset)]));
    for needle in [
        "(PREFIX_TUNING)",
        "unset blocks",
        "unset wide",
        "hidden unset",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}: {text}");
    }
    assert!(
        !text.contains("0 blocks") && !text.contains("0 wide"),
        "{text}"
    );
    // the llama table is 3 x 96: as a P-tuning table of token_dim 96
    let pt = copy(
        "pt",
        serde_json::json!({"peft_type": "P_TUNING", "token_dim": 96, "num_layers": null,
                           "encoder_reparameterization_type": "LSTM",
                           "encoder_hidden_size": 5, "encoder_num_layers": 2}),
    );
    let text = ok(&softprompt(&["inspect", s(&pt)]));
    for needle in [
        "(P_TUNING)",
        "LSTM encoder (hidden 5, 2 layers)",
        "no prompt_encoder",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}: {text}");
    }
    assert!(!text.contains("prefix tuning"), "{text}");
    // a multi-task --out folder: a prompt folder per task (with its task.json, which PEFT's
    // folders of several adapters lack), and no config.json
    let multi = dir.path().join("multi");
    for task in ["b", "a"] {
        let to = copy(&format!("multi/{task}"), serde_json::json!({}));
        std::fs::write(to.join("task.json"), "{}").expect("write task.json");
    }
    let text = ok(&softprompt(&["inspect", s(&multi)]));
    let (a, b) = (multi.join("a"), multi.join("b"));
    let listed = format!("{}, {}", a.display(), b.display());
    assert!(
        text.contains("multi-task") && text.contains(&listed),
        "{text}"
    );
}
