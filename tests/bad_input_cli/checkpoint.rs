//! Checkpoints that lie, and `--resume`: a tampered head, step, batch plan or optimizer state
//! is refused naming the field; metrics.jsonl is read to a bound; the loss curve survives a
//! resume at a step that is not a multiple of --log-every.

use crate::common::{self, binary, edit_safetensors, fixture, refused, RawTensor, ScratchDir};
use crate::{corpus, ok, s, s_static, softprompt, train_args};
use serde_json::Value;
use softprompt::internals::train::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A run that saves at step 1 and stops: its checkpoint, to tamper with.
fn checkpointed(dir: &ScratchDir) -> (PathBuf, Vec<&'static str>) {
    let out = dir.path().join("run");
    let model = s_static(fixture("bert_nohead"));
    let mut args = train_args(Path::new(model), &out, &["--save-every", "1"]);
    args[8] = "cls";
    args.drain(9..11);
    ok(&softprompt(&args));
    let args: Vec<&'static str> = args.into_iter().map(|a| s_static(a.into())).collect();
    (out, args)
}

/// A saved head of the wrong shape names head.safetensors and `weight`, with exit code 2 (it
/// blamed the bias, named no file and exited 1, the code of a diverged run).
#[test]
fn head_of_the_wrong_shape_names_the_weight() {
    let dir = ScratchDir::new("head_shape");
    let (out, _) = checkpointed(&dir);
    edit_safetensors(&out.join("head.safetensors"), |t| {
        let data = t["weight"].as_f32();
        let shape = t["weight"].shape.iter().rev().copied().collect();
        t.insert("weight".into(), RawTensor::f32(shape, &data));
    });
    let err = refused(
        &softprompt(&[
            "eval",
            "--prompt",
            s(&out),
            "--data",
            s(&corpus("data/dev.jsonl")),
        ]),
        &["head.safetensors", "`weight`"],
    );
    assert!(!err.contains("bias"), "{err}");
}

fn edit_checkpoint(out: &Path, edit: impl FnOnce(&mut Checkpoint)) {
    let path = out.join("checkpoint.safetensors");
    let mut ck = Checkpoint::load(&path).expect("checkpoint");
    edit(&mut ck);
    ck.save(&path).expect("save");
}

/// `--resume` reads metrics.jsonl to the stream bound (a link to /dev/zero ate all memory),
/// and a line of invalid UTF-8 in it costs that line only (every earlier line was dropped).
#[test]
fn resume_reads_metrics_to_a_bound_and_keeps_good_lines() {
    let dir = ScratchDir::new("resume_metrics");
    let (out, mut args) = checkpointed(&dir);
    common::edit_checkpoint_state(&out, |state| state["done"] = serde_json::json!(false));
    args.push("--resume");
    let metrics = out.join("metrics.jsonl");
    let kept = std::fs::read(&metrics).expect("metrics.jsonl");
    std::fs::remove_file(&metrics).expect("remove");
    std::os::unix::fs::symlink("/dev/zero", &metrics).expect("symlink");
    let run = Command::new(binary())
        .args(&args)
        .env("SOFTPROMPT_MAX_STREAM_BYTES", "100000")
        .output()
        .expect("run softprompt");
    refused(&run, &["metrics.jsonl", "more than 100000 bytes"]);
    std::fs::remove_file(&metrics).expect("remove the link");
    // the lines kept, then one that is not UTF-8: the kept lines survive the resume
    let mut bad = kept.clone();
    bad.extend_from_slice(b"{\"step\": 1, \"note\": \"\xff\"}\n");
    std::fs::write(&metrics, &bad).expect("write");
    ok(&softprompt(&args));
    let after = String::from_utf8_lossy(&std::fs::read(&metrics).expect("read")).into_owned();
    let first = String::from_utf8_lossy(&kept)
        .lines()
        .next()
        .map(String::from);
    let first = first.expect("a metrics line");
    assert!(after.contains(&first), "lost {first:?}: {after}");
}

#[test]
fn checkpoint_negative_step_names_the_key() {
    let dir = ScratchDir::new("ck_step_negative");
    let (out, mut args) = checkpointed(&dir);
    common::edit_checkpoint_state(&out, |state| {
        state["step"] = serde_json::json!(-1);
        state["done"] = serde_json::json!(false);
    });
    args.push("--resume");
    refused(
        &softprompt(&args),
        &[
            "checkpoint.safetensors",
            "`step` is -1",
            "non-negative integer",
        ],
    );
}

#[test]
fn checkpoint_plan_row_out_of_range() {
    let dir = ScratchDir::new("ck_plan");
    let (out, mut args) = checkpointed(&dir);
    edit_checkpoint(&out, |ck| {
        ck.state.done = false;
        ck.state.step = 1;
        ck.state.plan[0][0] = 1000;
    });
    args.push("--resume");
    refused(
        &softprompt(&args),
        &["checkpoint.safetensors", "batch plan", "1000"],
    );
}

#[test]
fn checkpoint_head_with_wrong_shape() {
    let dir = ScratchDir::new("ck_head");
    let (out, mut args) = checkpointed(&dir);
    args.push("--resume");
    for done in [false, true] {
        edit_checkpoint(&out, |ck| {
            ck.state.done = done;
            ck.tensors
                .insert("head.weight".into(), (vec![2, 35], vec![0.1; 70]));
        });
        refused(&softprompt(&args), &["head.weight", "[2, 35]", "[2, 36]"]);
    }
}

/// A checkpoint whose step is past --max-steps, or that says `done` before the end without
/// having stopped early, is refused naming the field (a resumed run ended at once, exit 0).
#[test]
fn checkpoint_progress_past_the_end_or_done_early() {
    let dir = ScratchDir::new("ck_progress");
    let (out, mut args) = checkpointed(&dir);
    args.push("--resume");
    edit_checkpoint(&out, |ck| {
        ck.state.done = false;
        ck.state.step = 5;
    });
    refused(
        &softprompt(&args),
        &["checkpoint.safetensors", "`step` is 5", "2 steps"],
    );
    edit_checkpoint(&out, |ck| {
        ck.state.done = true;
        ck.state.step = 1;
    });
    refused(
        &softprompt(&args),
        &["checkpoint.safetensors", "`done`", "step 1 of 2"],
    );
}

/// A negative AdamW second moment (its square root is NaN) is refused naming the tensor and
/// the file (it trained a NaN prompt from the first resumed step).
#[test]
fn checkpoint_negative_second_moment() {
    let dir = ScratchDir::new("ck_v");
    let (out, mut args) = checkpointed(&dir);
    args.push("--resume");
    edit_checkpoint(&out, |ck| {
        ck.state.done = false;
        // a step the plan agrees with (a step alone edited is refused as such)
        ck.state.step = 1;
        ck.state.pos = 1;
        let v = ck.tensors.get_mut("opt.prompt.v").expect("opt.prompt.v");
        v.1[3] = -1.0;
    });
    refused(
        &softprompt(&args),
        &["opt.prompt.v", "checkpoint.safetensors", "negative"],
    );
    // NaN is refused when the file is read
    edit_checkpoint(&out, |ck| {
        let v = ck.tensors.get_mut("opt.prompt.v").expect("opt.prompt.v");
        v.1[3] = f32::NAN;
    });
    refused(
        &softprompt(&args),
        &["opt.prompt.v", "checkpoint.safetensors", "non-finite"],
    );
}

// ---------------------------------------------------------------------------------------------
// Resume: the loss curve is byte-identical when the checkpoint step is not a multiple of
// --log-every

#[test]
fn resume_at_an_odd_step_keeps_the_loss_window() {
    use softprompt::internals::prompt::PromptInit;
    use softprompt::internals::train::data::{DataSpec, Dataset};
    use softprompt::internals::train::{
        Event, Model, Task, TaskKind, TaskSpec, TrainConfig, Trainer,
    };
    let be = softprompt::internals::CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).expect("model");
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.max_len = 40;
    let task = Task::new(spec, &model).expect("task");
    let data = Dataset::load(&corpus("data/train.jsonl"), &DataSpec::default()).expect("data");
    let enc = task.encode(&model.tokenizer, &data).expect("encode");
    let cfg = TrainConfig {
        prompt_len: 3,
        init: PromptInit::Random { std: 1.0 },
        batch_size: 4,
        max_steps: Some(12),
        save_every: 3,
        log_every: 5,
        seed: 5,
        threads: rayon::current_num_threads(),
        ..TrainConfig::default()
    };
    let dir = ScratchDir::new("odd_resume");
    let (full, cut) = (dir.path().join("full"), dir.path().join("cut"));
    std::fs::create_dir_all(&cut).expect("mkdir");
    let mut t =
        Trainer::new(&be, &model, &task, &enc, None, None, cfg.clone(), &full).expect("trainer");
    t.run(&mut |e| {
        // at step 7 the checkpoint on disk is step 6's, 1 step into the window of step 10
        if let Event::Step(i) = e {
            if i.step == 7 {
                for f in ["checkpoint.safetensors", "metrics.jsonl"] {
                    std::fs::copy(full.join(f), cut.join(f)).expect("copy");
                }
            }
        }
    })
    .expect("run");
    drop(t);
    let ck = Checkpoint::load(&cut.join("checkpoint.safetensors")).expect("checkpoint");
    assert_eq!(ck.state.step, 6);
    let mut t = Trainer::resume(&be, &model, &task, &enc, None, None, cfg, &cut).expect("resume");
    t.run(&mut |_| {}).expect("resumed run");
    let losses = |d: &Path| -> Vec<(u64, u64)> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .expect("metrics")
            .lines()
            .filter_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                Some((v["step"].as_u64()?, v["loss"].as_f64()?.to_bits()))
            })
            .collect()
    };
    // steps 5 and 10, and the last (12) closing its window
    assert_eq!(losses(&full).len(), 3);
    assert_eq!(losses(&full), losses(&cut));
}
