//! Hostile inputs to what a run saves and resumes from (#17, hostile pass 2): task folders
//! that are one folder, prompt folders mixing two saves, checkpoints whose counters, plan,
//! best evaluation or optimizer state lie, the model folder spelled another way, and a
//! `--task-config` with a BOM. Each case is a few steps on the small BERT fixtures, against
//! the release binary.

mod common;

use common::multitask::{multi_args, tagged_file};
use common::{fixture, refused, softprompt, stdout_ok, ScratchDir};
use serde_json::Value;
use softprompt::internals::train::checkpoint::Checkpoint;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(args: &[String]) -> std::process::Output {
    softprompt(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A `cls` command on the headless BERT (so the folder has a head) for `steps` steps.
fn cls_args(model: &str, out: &Path, steps: &str, extra: &[&str]) -> Vec<String> {
    let mut args = common::tiny_pet_train_args(Path::new(model), out);
    args[8] = "cls".into();
    args.drain(9..11); // no verbalizer
    let at = args
        .iter()
        .position(|a| a == "--max-steps")
        .expect("--max-steps")
        + 1;
    args[at] = steps.into();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

// ---------------------------------------------------------------------------------------------
// Task folders

/// `--out/b` a link to `--out/a`: task b's prompt replaced task a's (exit 0, no word). Both
/// tasks and the folder are named, before anything is written; a link elsewhere is refused
/// too, naming the task.
#[test]
fn tasks_sharing_one_folder_are_refused() {
    let dir = ScratchDir::new("saves_task_link");
    let train = tagged_file(&dir);
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("a")).expect("mkdir");
    std::os::unix::fs::symlink(out.join("a"), out.join("b")).expect("symlink");
    let real = std::fs::canonicalize(out.join("a")).expect("canonical");
    refused(
        &run(&multi_args(&train, &out, &[])),
        &["tasks `a` and `b`", s(&real), "a folder of its own"],
    );
    assert_eq!(std::fs::read_dir(out.join("a")).expect("a").count(), 0);
    assert!(!out.join("checkpoint.safetensors").exists());

    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::remove_file(out.join("b")).expect("unlink");
    std::os::unix::fs::symlink(&elsewhere, out.join("b")).expect("symlink");
    refused(
        &run(&multi_args(&train, &out, &[])),
        &["task `b`'s folder is a symbolic link", s(&out.join("b"))],
    );
    assert_eq!(std::fs::read_dir(&elsewhere).expect("elsewhere").count(), 0);
    // a dangling link names its target, and a file where the folder goes is named as such
    // (an export failed on it with a bare "File exists"; hostile pass 25)
    std::fs::remove_file(out.join("b")).expect("unlink");
    std::os::unix::fs::symlink("/nonexistent/b", out.join("b")).expect("symlink");
    refused(
        &run(&multi_args(&train, &out, &[])),
        &["task `b`'s folder is a symbolic link (to /nonexistent/b)"],
    );
    std::fs::remove_file(out.join("b")).expect("unlink");
    std::fs::write(out.join("b"), "mine").expect("write");
    refused(
        &run(&multi_args(&train, &out, &[])),
        &["task `b`'s folder is a file", "move the file away"],
    );
    assert_eq!(std::fs::read(out.join("b")).expect("read"), b"mine");
}

/// A multi-task `--overwrite` over a task folder holding an earlier single-task run kept that
/// run's checkpoint and metrics beside the new task's prompt: resuming the old run then broke
/// the folder (hostile pass 25, F6). Without `--overwrite` the run is named; with it, its
/// files go too.
#[test]
fn a_task_folder_holding_a_run_is_replaced_whole() {
    let dir = ScratchDir::new("saves_task_over_run");
    let train = tagged_file(&dir);
    let out = dir.path().join("out");
    stdout_ok(&run(&cls_args(
        s(&fixture("bert_nohead")),
        &out.join("b"),
        "1",
        &[],
    )));
    refused(
        &run(&multi_args(&train, &out, &[])),
        &["task `b`", "holds a finished run (step 1)", "--overwrite"],
    );
    // a run training into it now keeps its files (review 17: they went from under it)
    overwrite_refused_while_b_is_written(&train, &out);
    assert!(out.join("b/checkpoint.safetensors").is_file());
    // an input among the files it would remove is refused before anything goes (review 17)
    let input = out.join("b/metrics.jsonl");
    std::fs::copy(&train, &input).expect("copy");
    refused(
        &run(&multi_args(&input, &out, &["--overwrite"])),
        &[s(&input), "a file of the run in", "move it out of"],
    );
    assert!(input.is_file());
    stdout_ok(&run(&multi_args(&train, &out, &["--overwrite"])));
    for f in ["checkpoint.safetensors", "metrics.jsonl"] {
        assert!(!out.join("b").join(f).exists(), "{f} kept");
    }
    stdout_ok(&eval(&out.join("b")));
}

/// A refused multi-task run leaves no task folder it made: a resume refused for its settings,
/// and an `--overwrite` refused on a file it could not remove, each left task `b`'s folder
/// (deleted before) made again, with a lock file only; the `--overwrite` had removed the
/// earlier run's files first (review 21, R21-2).
#[test]
fn a_refused_run_leaves_no_task_folder_it_made() {
    let dir = ScratchDir::new("saves_refused_makes_none");
    let train = tagged_file(&dir);
    let out = dir.path().join("out");
    stdout_ok(&run(&multi_args(&train, &out, &[])));
    std::fs::remove_dir_all(out.join("b")).expect("rm b");
    refused(
        &run(&multi_args(&train, &out, &["--resume", "--lr", "0.5"])),
        &["other settings", "lr"],
    );
    assert!(!out.join("b").exists(), "the refused resume made b");
    // a folder where a prompt file goes: its removal fails
    let head = out.join("a/adapter_model.safetensors");
    std::fs::remove_file(&head).expect("rm");
    std::fs::create_dir_all(head.join("x")).expect("mkdir");
    refused(
        &run(&multi_args(&train, &out, &["--overwrite"])),
        &[
            s(&head),
            "is a folder where the run's file",
            "nothing was removed",
        ],
    );
    assert!(!out.join("b").exists(), "the refused run made b");
    // refused before anything went: the earlier run's files are there
    assert!(out.join("checkpoint.safetensors").is_file());
    assert!(out.join("a/task.json").is_file());
}

/// A multi-task `--overwrite` into `out` while a run holds task `b`'s folder: refused,
/// naming it.
fn overwrite_refused_while_b_is_written(train: &Path, out: &Path) {
    let live =
        softprompt::internals::train::outdir::OutLock::acquire(&out.join("b")).expect("lock");
    refused(
        &run(&multi_args(train, out, &["--overwrite"])),
        &["task `b`", "is writing into this folder"],
    );
    drop(live);
}

/// `files` of the folder `from` copied into `to` (made).
fn copy_files(from: &Path, to: &Path, files: &[&str]) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

/// `--overwrite` over a multi-task run: a run training into one of its task folders now
/// refuses it before anything is removed (the earlier run's checkpoint and every task's
/// prompt went first; review 18, R18-2), and only the task folders the run's checkpoint names
/// are emptied (a user's copy of a prompt in `out` was emptied too; R18-1).
#[test]
fn overwrite_removes_only_the_earlier_runs_task_folders() {
    let dir = ScratchDir::new("saves_overwrite_scope");
    let train = tagged_file(&dir);
    let out = dir.path().join("out");
    stdout_ok(&run(&multi_args(&train, &out, &[])));
    let keep = out.join("keep");
    let files = [
        "adapter_config.json",
        "adapter_model.safetensors",
        "task.json",
    ];
    copy_files(&out.join("a"), &keep, &files);
    let all = |d: &Path| files.iter().all(|f| d.join(f).is_file());
    // a task folder holding a prompt alone is a saved prompt's, not a run's
    let other = dir.path().join("other");
    copy_files(&keep, &other.join("a"), &files);
    refused(
        &run(&multi_args(&train, &other, &[])),
        &["task `a`", "holds a saved prompt (adapter_config.json"],
    );
    overwrite_refused_while_b_is_written(&train, &out);
    // a run of tasks a and c refused over b, being written: it makes no folder of its own
    // (review 20, R20-5)
    let ac = dir.path().join("ac.jsonl");
    let rows = common::multitask::tagged_rows().replace("\"task\": \"b\"", "\"task\": \"c\"");
    std::fs::write(&ac, rows).expect("write");
    let live =
        softprompt::internals::train::outdir::OutLock::acquire(&out.join("b")).expect("lock");
    refused(
        &run(&multi_args(&ac, &out, &["--overwrite"])),
        &["is writing into this folder"],
    );
    drop(live);
    assert!(!out.join("c").exists(), "a refused run made a task folder");
    assert!(out.join("checkpoint.safetensors").is_file());
    assert!(
        all(&out.join("a")) && all(&out.join("b")),
        "a refused run removed prompts"
    );
    stdout_ok(&run(&multi_args(&train, &out, &["--overwrite"])));
    assert!(all(&keep), "a prompt the run did not write was removed");
    stdout_ok(&eval(&keep));
    // a single-task --overwrite over it: the task folders the run's checkpoint names go, lock
    // files and all (review 19, R19-8), a user's file keeps its folder, the copy stays
    std::fs::write(out.join("b/notes.txt"), "mine").expect("write");
    let mut single = common::tiny_pet_train_args(&fixture("bert_mlm"), &out);
    single.push("--overwrite".into());
    stdout_ok(&run(&single));
    assert!(!out.join("a").exists(), "an emptied task folder kept");
    let left: Vec<_> = std::fs::read_dir(out.join("b"))
        .expect("b")
        .flatten()
        .collect();
    assert_eq!(left.len(), 2, "b: the user's file and the lock file");
    assert!(all(&keep));
}

/// A prompt folder holding a file another prompt left there (a `cls` head beside a `pet`
/// run's prompt, as a multi-task run's task folder left it under a single-task run's
/// --resume) was refused as a mix of two saves, and the run's re-export kept it, so the advice
/// to resume looped (hostile pass 25, F6): every save removes the prompt files it did not
/// write.
#[test]
fn a_save_removes_prompt_files_it_did_not_write() {
    let dir = ScratchDir::new("saves_stale_head");
    let one = dir.path().join("cls");
    stdout_ok(&run(&cls_args(s(&fixture("bert_mlm")), &one, "1", &[])));
    let pet = dir.path().join("pet");
    let args = common::tiny_pet_train_args(&fixture("bert_mlm"), &pet);
    stdout_ok(&run(&args));
    std::fs::copy(one.join("head.safetensors"), pet.join("head.safetensors")).expect("copy");
    refused(&eval(&pet), &["head.safetensors", "different saves"]);
    let mut resume = args.clone();
    resume.push("--resume".into());
    stdout_ok(&run(&resume));
    assert!(
        !pet.join("head.safetensors").exists(),
        "the stale head kept"
    );
    stdout_ok(&eval(&pet));
}

/// A `--task-config` starting with a UTF-8 BOM was "expected value at line 1 column 1": it
/// is read as the data files are, the BOM skipped.
#[test]
fn task_config_with_a_bom_is_read() {
    let dir = ScratchDir::new("saves_config_bom");
    let train = tagged_file(&dir);
    let out = dir.path().join("out");
    let config = dir.path().join("tasks.json");
    std::fs::write(&config, "\u{feff}{\"b\": {\"prompt_len\": 2}}\n").expect("write");
    stdout_ok(&run(&multi_args(
        &train,
        &out,
        &["--task-config", s(&config)],
    )));
    let task: Value =
        serde_json::from_slice(&std::fs::read(out.join("b/task.json")).expect("task.json"))
            .expect("json");
    assert_eq!(task["num_virtual_tokens"], 2);
}

// ---------------------------------------------------------------------------------------------
// A prompt folder of two saves

/// Two finished `cls` runs on the headless BERT, of one and two steps, in `dir/one` and
/// `dir/two`.
fn two_saves(dir: &ScratchDir) -> (PathBuf, PathBuf) {
    let model = fixture("bert_nohead");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    stdout_ok(&run(&cls_args(s(&model), &one, "1", &[])));
    stdout_ok(&run(&cls_args(s(&model), &two, "2", &[])));
    (one, two)
}

/// The prompt of the run folder `run` saved into `to` by `Model::save_prompt`.
fn save_prompt_of(run: &Path, to: &Path) {
    use softprompt::{Device, Model, Prompt, SaveOptions, TaskOptions};
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).expect("model");
    let prompt = Prompt::load(run).expect("prompt");
    let task = (model.task_for(&prompt, &TaskOptions::default(), None)).expect("task");
    (model.save_prompt(to, &prompt, &task, SaveOptions::default())).expect("save");
}

/// `eval` of the prompt folder `prompt` on the small dev file.
fn eval(prompt: &Path) -> std::process::Output {
    scored("eval", prompt, &[])
}

/// A run killed between the files of its prompt folder left a step-2 adapter beside the
/// step-1 head and task.json, which `eval` and `predict` scored without a word. Every file
/// carries the save's stamp, and a folder whose stamps differ is refused, naming them.
#[test]
fn a_prompt_folder_of_two_saves_is_refused() {
    let dir = ScratchDir::new("saves_mixed_folder");
    let (one, two) = two_saves(&dir);
    stdout_ok(&eval(&one));
    // a mix of two saves, as a kill between the renames left it when each file was written
    // and renamed in turn (now task.json goes first and adapter_config.json last; the stamps
    // refuse any mix)
    let adapter = "adapter_model.safetensors";
    std::fs::copy(two.join(adapter), one.join(adapter)).expect("copy");
    let err = refused(
        &eval(&one),
        &[
            s(&one),
            "different saves",
            "adapter_model.safetensors: step 2",
            "head.safetensors: step 1",
            "task.json: step 1",
            "--resume",
        ],
    );
    assert!(!err.contains("panicked"), "{err}");
    // a folder without a checkpoint (`Model::save_prompt`'s) has no run to resume
    // a run's folder copied out (no checkpoint beside it): copied again, not resumed nor
    // saved again (review 16)
    let copied = dir.path().join("copied");
    copied_out(&one, &copied, true);
    std::fs::copy(one.join("task.json"), copied.join("task.json")).expect("copy");
    let err = refused(
        &eval(&copied),
        &[
            "different saves",
            "copy the whole folder again from where it was saved",
        ],
    );
    assert!(
        !err.contains("--resume") && !err.contains("save the prompt again"),
        "{err}"
    );
    // a folder `Model::save_prompt` wrote has no run to resume: saved again
    let (saved, whole) = (dir.path().join("saved"), dir.path().join("whole"));
    save_prompt_of(&two, &saved);
    save_prompt_of(&two, &whole);
    std::fs::copy(one.join("head.safetensors"), saved.join("head.safetensors")).expect("copy");
    let err = refused(
        &eval(&saved),
        &[
            "different saves",
            "a save was stopped",
            "save the prompt again",
        ],
    );
    assert!(!err.contains("--resume"), "{err}");
    // a save's first write cut after its stamped task.json, which is renamed in first: save
    // again, not PEFT's files to copy nor a run's folder (review 14, R14-3); the states
    // follow the rename order
    let cut = dir.path().join("cut");
    std::fs::create_dir_all(&cut).expect("mkdir");
    let again = "save the prompt again";
    for (file, missing) in [
        ("task.json", "holds no prompt yet"),
        (
            "adapter_model.safetensors",
            "is missing beside adapter_model.safetensors",
        ),
        ("adapter_config.json", "head.safetensors: is missing"),
    ] {
        std::fs::copy(whole.join(file), cut.join(file)).expect("copy");
        let err = refused(&eval(&cut), &[missing, "a save was stopped", again]);
        assert!(!err.contains("--resume") && !err.contains("PEFT"), "{err}");
    }
    // a run's folder copied out without its head: copied back, not saved again (review 16)
    let no_head = dir.path().join("no_head");
    copied_out(&two, &no_head, false);
    std::fs::copy(two.join("task.json"), no_head.join("task.json")).expect("copy");
    let err = refused(
        &eval(&no_head),
        &[
            "head.safetensors: is missing",
            "copy it back from the run's --out folder",
        ],
    );
    assert!(!err.contains(again), "{err}");
    // the same adapter copied out without task.json is still told to copy its head back
    let head_left = dir.path().join("head_left");
    copied_out(&one, &head_left, false);
    refused(
        &eval(&head_left),
        &["copy it back from the run's --out folder"],
    );
    // a run's folder killed in its first export, before its head (a cls run) or before
    // adapter_config.json: the run is resumed, nothing is copied from elsewhere
    let first = dir.path().join("first");
    std::fs::create_dir_all(&first).expect("mkdir");
    std::fs::copy(
        one.join("checkpoint.safetensors"),
        first.join("checkpoint.safetensors"),
    )
    .expect("copy");
    refused(
        &eval(&first),
        &[
            "a run's folder whose prompt is not written yet",
            "resume the run",
        ],
    );
    std::fs::copy(
        one.join("adapter_model.safetensors"),
        first.join("adapter_model.safetensors"),
    )
    .expect("copy");
    refused(
        &eval(&first),
        &[
            "is missing beside adapter_model.safetensors",
            "resume it (train ... --resume)",
        ],
    );
    // a task's folder in a multi-task run's --out, whose checkpoint is the parent's and
    // names the task
    let multi = dir.path().join("multi");
    stdout_ok(&run(&multi_args(&tagged_file(&dir), &multi, &[])));
    std::fs::remove_file(multi.join("a/adapter_config.json")).expect("rm");
    refused(
        &eval(&multi.join("a")),
        &[
            "is missing beside adapter_model.safetensors",
            "resume it (train ... --resume)",
        ],
    );
    // a folder beside a single-task run's checkpoint is no folder of that run's, which
    // never writes it (review 14, R14-8)
    let beside = first.join("task_a");
    std::fs::create_dir_all(&beside).expect("mkdir");
    let adapter = "adapter_model.safetensors";
    std::fs::copy(one.join(adapter), beside.join(adapter)).expect("copy");
    let err = refused(
        &eval(&beside),
        &[
            "is missing beside adapter_model.safetensors",
            "copy it from where the adapter was saved",
        ],
    );
    assert!(!err.contains("--resume"), "{err}");
    for f in ["adapter_config.json", "task.json"] {
        std::fs::copy(one.join(f), first.join(f)).expect("copy");
    }
    refused(
        &eval(&first),
        &[
            "head.safetensors: is missing",
            "resume the run (train ... --resume)",
        ],
    );
    // the whole new folder is one save again
    for f in ["head.safetensors", "task.json", "adapter_config.json"] {
        std::fs::copy(two.join(f), one.join(f)).expect("copy");
    }
    stdout_ok(&eval(&one));
}

/// A folder an older softprompt wrote (no stamps) that a stamped save was killed while
/// replacing: the new adapter beside the old head and task.json loaded without a word, the
/// unstamped files not being compared. Once one file is stamped, a file only softprompt
/// writes without a stamp is refused, naming it and the stamped one; an unstamped adapter
/// (PEFT's never has a stamp) beside stamped files is not.
#[test]
fn an_unstamped_file_beside_a_stamped_save_is_refused() {
    let dir = ScratchDir::new("saves_unstamped");
    let (old, new) = two_saves(&dir);
    let unstamp = |folder: &Path, file: &str| {
        let path = folder.join(file);
        if file == "task.json" {
            let mut v: Value =
                serde_json::from_slice(&std::fs::read(&path).expect("task.json")).expect("json");
            v.as_object_mut().expect("object").remove("softprompt_save");
            std::fs::write(&path, v.to_string()).expect("write");
        } else {
            let (tensors, _) = common::read_raw(&path);
            common::write_raw(&path, &tensors, None);
        }
    };
    // the old version's folder, which loads
    for f in ["adapter_model.safetensors", "head.safetensors", "task.json"] {
        unstamp(&old, f);
    }
    stdout_ok(&eval(&old));
    // a stamped adapter beside the old head and task.json, as an earlier build's kill between
    // its renames left it
    let adapter = "adapter_model.safetensors";
    std::fs::copy(new.join(adapter), old.join(adapter)).expect("copy");
    refused(
        &eval(&old),
        &[
            s(&old),
            "task.json has no save stamp, but adapter_model.safetensors has one (step 2, ",
            "older softprompt version",
            "--resume",
        ],
    );
    // and after the head too
    std::fs::copy(new.join("head.safetensors"), old.join("head.safetensors")).expect("copy");
    refused(&eval(&old), &["task.json has no save stamp"]);
    // the new save's own head unstamped: named, with task.json's stamp
    unstamp(&new, "head.safetensors");
    refused(
        &eval(&new),
        &["head.safetensors has no save stamp, but task.json has one (step 2, "],
    );
    // an unstamped adapter beside a stamped save is PEFT's to write: read
    std::fs::copy(old.join("head.safetensors"), new.join("head.safetensors")).expect("copy");
    unstamp(&new, adapter);
    stdout_ok(&eval(&new));
}

/// Flips bit `bit` of the first value of tensor `name` in the raw tensors `t`.
fn flip(t: &mut std::collections::HashMap<String, common::RawTensor>, name: &str, bit: u32) {
    flip_at(t, name, 0, bit);
}

/// Flips bit `bit` of value `i` (an f32) of tensor `name` in the raw tensors `t`.
fn flip_at(
    t: &mut std::collections::HashMap<String, common::RawTensor>,
    name: &str,
    i: usize,
    bit: u32,
) {
    let bytes = &mut t.get_mut(name).expect(name).bytes[4 * i..4 * i + 4];
    let v = u32::from_le_bytes((&*bytes).try_into().expect("4 bytes")) ^ (1 << bit);
    bytes.copy_from_slice(&v.to_le_bytes());
}

/// Rewrites the save stamp of every file of the prompt folder `dir` with `edit`: an earlier
/// softprompt's stamp, made from a newer one.
fn restamp(dir: &Path, edit: impl Fn(&str) -> String) {
    let task = dir.join("task.json");
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(&task).expect("task.json")).expect("json");
    let stamp = edit(v["softprompt_save"].as_str().expect("a stamp"));
    v["softprompt_save"] = stamp.clone().into();
    std::fs::write(&task, v.to_string()).expect("write");
    for f in [
        "adapter_model.safetensors",
        "head.safetensors",
        "prompt_encoder.safetensors",
    ] {
        let path = dir.join(f);
        if path.exists() {
            let (tensors, meta) = common::read_raw(&path);
            let mut meta = meta.expect("metadata");
            meta.insert("softprompt_save".into(), stamp.clone());
            common::write_raw(&path, &tensors, Some(meta));
        }
    }
}

/// `stamp` without its `", "`-separated field named `field`: an earlier save's stamp.
fn without_field(stamp: &str, field: &str) -> String {
    let prefix = format!("{field} ");
    let fields: Vec<&str> = stamp.split(", ").collect();
    assert!(
        fields.iter().any(|f| f.starts_with(&prefix)),
        "{stamp} has no {field}"
    );
    let kept: Vec<&str> = fields
        .into_iter()
        .filter(|f| !f.starts_with(&prefix))
        .collect();
    kept.join(", ")
}

/// PEFT's decoder rows behind a seq2seq adapter's table (`num_transformer_submodules` 2) are
/// kept and saved back, but the save stamp hashed the first P rows alone: a flipped bit in
/// the others loaded without a word. The stamp hashes them too now, and a flip is refused as
/// corrupt; a stamp without that field (an earlier save's) leaves them unchecked, as before.
#[test]
fn the_rows_behind_a_seq2seq_table_are_in_the_stamp() {
    use softprompt::{Device, Model, Prompt, SaveOptions, TaskOptions};
    let dir = ScratchDir::new("saves_extra_rows");
    let model = Model::open(fixture("t5_v1_0"), Device::Cpu).expect("model");
    let peft = Prompt::load(fixture("t5_v1_0/peft_adapter_2sub")).expect("adapter");
    let words = [("negative", "bad"), ("positive", "good")];
    let opts = TaskOptions {
        verbalizer: Some(words.map(|(l, w)| (l.into(), w.into())).to_vec()),
        ..TaskOptions::default()
    };
    let task = model.task_for(&peft, &opts, None).expect("task");
    let saved = dir.path().join("saved");
    let opts = SaveOptions::default();
    model.save_prompt(&saved, &peft, &task, opts).expect("save");
    Prompt::load(&saved).expect("the folder as saved");
    // earlier builds read the stamp's last field as the table's hash: the new fields stand
    // before it, so a folder saved now still loads there
    let task: Value =
        serde_json::from_slice(&std::fs::read(saved.join("task.json")).expect("read"))
            .expect("json");
    let stamp = task["softprompt_save"].as_str().expect("a stamp");
    let last = stamp.rsplit(", ").next().unwrap_or_default();
    assert!(stamp.contains(", rows "), "{stamp}");
    assert!(
        last.len() == 16 && last.chars().all(|c| c.is_ascii_hexdigit()),
        "{stamp}"
    );
    let adapter = saved.join("adapter_model.safetensors");
    let values = common::read_raw(&adapter).0["prompt_embeddings"]
        .bytes
        .len()
        / 4;
    common::edit_safetensors(&adapter, |t| {
        flip_at(t, "prompt_embeddings", values - 1, 22)
    });
    let Err(err) = Prompt::load(&saved) else {
        panic!("a flipped decoder row loaded");
    };
    let err = err.to_string();
    for want in [
        s(&adapter),
        "the rows of adapter_model.safetensors behind its first 7",
        "corrupt or was edited",
    ] {
        assert!(err.contains(want), "{err}");
    }
    // an earlier save's stamp, without the field: read as before
    restamp(&saved, |s| without_field(s, "rows"));
    Prompt::load(&saved).expect("an earlier stamp");
}

/// P-tuning's prompt_encoder.safetensors carried the save stamp, but its values were never
/// hashed: a flipped bit loaded without a word (and a resume from the folder would train on
/// from it). The stamp hashes the encoder's tensors too now; a stamp without that field (an
/// earlier save's) leaves them unchecked, as before.
#[test]
fn a_ptuning_encoder_that_does_not_match_its_stamp_is_refused() {
    let dir = ScratchDir::new("saves_encoder_bit");
    let out = dir.path().join("pt");
    let method = ["--method", "p-tuning"];
    stdout_ok(&run(&cls_args(
        s(&fixture("bert_nohead")),
        &out,
        "1",
        &method,
    )));
    stdout_ok(&eval(&out));
    let encoder = out.join("prompt_encoder.safetensors");
    common::edit_safetensors(&encoder, |t| flip(t, "mlp_head.2.weight", 22));
    refused(
        &eval(&out),
        &[s(&encoder), "its tensors hash to", "corrupt or was edited"],
    );
    restamp(&out, |s| without_field(s, "encoder"));
    stdout_ok(&eval(&out));
}

/// A reader of a folder a run is exporting into met two saves between two of the export's
/// renames, about one read in eight under `--save-every 1` (hostile pass 23, F2). While the
/// folder's lock is held, a refused read is tried again for about a second: a mix the
/// writer ends in that time is read whole; one that stays is refused as before.
#[cfg(target_os = "linux")]
#[test]
fn a_folder_being_written_is_read_again_until_whole() {
    use softprompt::internals::train::outdir::OutLock;
    let dir = ScratchDir::new("saves_read_again");
    let (one, two) = two_saves(&dir);
    let adapter = "adapter_model.safetensors";
    let first_task = std::fs::read(one.join("task.json")).expect("task.json");
    std::fs::copy(two.join(adapter), one.join(adapter)).expect("copy");
    let held = OutLock::acquire(&one).expect("lock");
    // the writer's remaining renames, 50 ms later
    let writer = {
        let (one, two) = (one.clone(), two.clone());
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            for f in ["task.json", "head.safetensors", "adapter_config.json"] {
                let tmp = one.join(format!(".{f}.tmp"));
                std::fs::copy(two.join(f), &tmp).expect("copy");
                std::fs::rename(&tmp, one.join(f)).expect("rename");
            }
        })
    };
    let read = softprompt::Prompt::load(&one);
    writer.join().expect("writer");
    let prompt = read.expect("read whole once the writer ended");
    assert_eq!(prompt.saved_task().map(|t| t.kind.name()), Some("cls"));
    // a mix that stays: refused, once the tries are spent
    std::fs::write(one.join("task.json"), &first_task).expect("write");
    let t0 = std::time::Instant::now();
    let err = softprompt::Prompt::load(&one)
        .expect_err("two saves")
        .to_string();
    assert!(err.contains("different saves"), "{err}");
    // the writer named: the advice to resume is refused while it runs (review 18, R18-6)
    let live = format!(
        "(pid {}) is writing into {} now",
        std::process::id(),
        one.display()
    );
    assert!(err.contains(&live), "{err}");
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(800),
        "tried again"
    );
    drop(held);
    let t0 = std::time::Instant::now();
    softprompt::Prompt::load(&one).expect_err("two saves");
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(800),
        "no writer: no wait"
    );
    // a folder inside one a run holds is not being written (review 20, R20-7: a multi-task
    // run holds each task folder's lock; the folder above's was looked at too)
    let held = OutLock::acquire(dir.path()).expect("lock");
    let t0 = std::time::Instant::now();
    let err = softprompt::Prompt::load(&one)
        .expect_err("two saves")
        .to_string();
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(800),
        "no writer of its own: no wait"
    );
    assert!(!err.contains("is writing into"), "{err}");
    drop(held);
}

/// One flipped bit in a saved adapter scored with exit 0: the stamps agreed, but the values
/// were never checked against the stamp's hash. A stamped file whose values do not match is
/// refused, naming it; the edited values saved without the stamp (as PEFT saves) are read,
/// with a warning that task.json and the head were saved with other values.
#[test]
fn a_prompt_folder_whose_values_do_not_match_its_stamp_is_refused() {
    let dir = ScratchDir::new("saves_flipped_bit");
    let (one, _) = two_saves(&dir);
    let adapter = one.join("adapter_model.safetensors");
    let clean = std::fs::read(&adapter).expect("adapter");
    common::edit_safetensors(&adapter, |t| flip(t, "prompt_embeddings", 22));
    refused(
        &eval(&one),
        &[
            s(&adapter),
            "adapter_model.safetensors and head.safetensors hash to",
            "do not match the stamp",
            "corrupt or was edited",
        ],
    );
    // edited on purpose and saved without the stamp: read, with a warning
    let (tensors, _) = common::read_raw(&adapter);
    common::write_raw(&adapter, &tensors, None);
    let out = eval(&one);
    stdout_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ") && stderr.contains("has no stamp (PEFT's, or edited)"),
        "{stderr}"
    );
    // in a run's folder it may be an export cut after its stamped task.json, over an older
    // unstamped save: the warning says so (review 14, R14-4)
    assert!(
        stderr.contains("if the run was stopped while it exported, resume it (train ... --resume)"),
        "{stderr}"
    );
    // the head's bit flipped instead
    std::fs::write(&adapter, &clean).expect("restore");
    let out = eval(&one);
    stdout_ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    common::edit_safetensors(&one.join("head.safetensors"), |t| flip(t, "bias", 3));
    refused(&eval(&one), &["do not match the stamp"]);
    // a cls folder without its head: the head named, not the adapter blamed as corrupt
    let head = one.join("head.safetensors");
    std::fs::remove_file(&head).expect("remove head");
    let out = eval(&one);
    refused(&out, &[s(&head), "is missing", "cls task"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("corrupt"));
}

// ---------------------------------------------------------------------------------------------
// A cls folder copied out without task.json (PEFT's layout)

/// The adapter's files of the prompt folder `from` (and its head when `head`) copied into
/// `to`: the folder without task.json a user hands PEFT.
fn copied_out(from: &Path, to: &Path, head: bool) {
    std::fs::create_dir_all(to).expect("mkdir");
    let mut files = vec!["adapter_config.json", "adapter_model.safetensors"];
    if head {
        files.push("head.safetensors");
    }
    for f in files {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

/// `cmd` (eval or predict) of the prompt folder `prompt` on the small dev file, with `extra`.
fn scored(cmd: &str, prompt: &Path, extra: &[&str]) -> std::process::Output {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/data/dev.jsonl");
    let mut args = vec![
        cmd,
        "--prompt",
        s(prompt),
        "--data",
        s(&dev),
        "--threads",
        "1",
    ];
    args.extend(extra);
    softprompt(&args)
}

/// A cls prompt trained with `--labels positive,negative`, its folder copied out without
/// task.json and scored with `--task cls`, read the head with the data's sorted labels: its
/// rows swapped, every prediction inverted, with a note only. head.safetensors records the
/// labels in the order of its rows, and the copy scores as the folder does; --labels in
/// another order is refused, naming the head's; a head without them (an earlier softprompt's)
/// still reads in the sorted order, with a warning that names --labels.
#[test]
fn a_cls_folder_without_task_json_reads_its_head_in_the_trained_order() {
    let dir = ScratchDir::new("saves_head_order");
    let run_dir = dir.path().join("run");
    let order = ["--labels", "positive,negative", "--lr", "0.3"];
    stdout_ok(&run(&cls_args(
        s(&fixture("bert_nohead")),
        &run_dir,
        "30",
        &order,
    )));
    let head = run_dir.join("head.safetensors");
    let (tensors, meta) = common::read_raw(&head);
    let meta = meta.expect("metadata");
    assert_eq!(meta["softprompt_labels"], r#"["positive","negative"]"#);
    let copy = dir.path().join("peft");
    copied_out(&run_dir, &copy, true);
    let cls = ["--task", "cls", "--json"];
    let want = stdout_ok(&scored("eval", &run_dir, &["--json"]));
    let v: Value = serde_json::from_str(want.trim()).expect("json");
    // trained well enough that swapped rows would score otherwise
    assert_eq!(v["accuracy"], 1.0, "{want}");
    let out = scored("eval", &copy, &cls);
    assert_eq!(stdout_ok(&out), want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"has no task.json (the task its head.safetensors records): task cls, template "{text}", labels ["positive", "negative"], pooling mean"#),
        "{stderr}"
    );
    assert!(!stderr.contains("warning"), "{stderr}");
    let preds = stdout_ok(&scored("predict", &run_dir, &[]));
    assert_eq!(stdout_ok(&scored("predict", &copy, &cls[..2])), preds);
    // the head's order given: the same; another order or another name: refused
    let same = ["--task", "cls", "--json", "--labels", "positive,negative"];
    assert_eq!(stdout_ok(&scored("eval", &copy, &same)), want);
    refused(
        &scored(
            "eval",
            &copy,
            &["--task", "cls", "--labels", "negative,positive"],
        ),
        &[
            "--labels",
            r#"["negative", "positive"] differs from the labels ["positive", "negative"] in the order of the prompt's cls head rows"#,
            s(&copy),
            "holds no task.json; its head.safetensors records the labels",
        ],
    );
    refused(
        &scored(
            "eval",
            &copy,
            &["--task", "cls", "--labels", "positive,neutral"],
        ),
        &[
            "--labels",
            r#""neutral" is not one of the prompt's labels"#,
            "the cls head has a row for each of them",
        ],
    );
    // a head saved without the names (an earlier softprompt's): the same tensors and stamp
    // still load, in the sorted order, with a warning; --labels in the trained order scores
    // as the folder does, without one
    let mut old = meta.clone();
    old.remove("softprompt_labels");
    old.remove("softprompt_task");
    common::write_raw(&copy.join("head.safetensors"), &tensors, Some(old));
    let out = scored("eval", &copy, &cls);
    let got: Value = serde_json::from_str(stdout_ok(&out).trim()).expect("json");
    assert_eq!(got["accuracy"], 0.0, "the rows read swapped");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let head_copy = copy.join("head.safetensors");
    for want in [
        &format!("warning: {} records no label names", s(&head_copy)),
        r#"assumed to be the labels sorted, ["negative", "positive"]; pass --labels in the order training used"#,
    ] {
        assert!(stderr.contains(want), "{stderr}");
    }
    let out = scored("eval", &copy, &same);
    assert_eq!(stdout_ok(&out), want);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    // names that are not a list of the head's labels
    let mut bad = meta.clone();
    bad.insert("softprompt_labels".into(), r#"["positive"]"#.into());
    common::write_raw(&copy.join("head.safetensors"), &tensors, Some(bad));
    refused(
        &scored("eval", &copy, &cls),
        &[
            s(&head_copy),
            r#"`softprompt_labels` in its metadata is "[\"positive\"]": 1 names, but `weight` has 2 rows"#,
        ],
    );
}

/// A cls folder copied out without task.json was scored with the default template and
/// pooling, not those it was trained with (other scores, exit 0, a note naming neither;
/// hostile pass 23, F1). The head records its task, and the copy scores as its folder does;
/// a flag other than the recorded value is named in a note, as against a task.json; a head
/// that records its labels alone (saved before) scores under the defaults.
#[test]
fn a_cls_folder_without_task_json_scores_with_the_task_its_head_records() {
    let dir = ScratchDir::new("saves_head_task");
    let run_dir = dir.path().join("run");
    let trained = ["--pooling", "cls", "--template", "Review: {text}"];
    stdout_ok(&run(&cls_args(
        s(&fixture("bert_nohead")),
        &run_dir,
        "3",
        &trained,
    )));
    let head = run_dir.join("head.safetensors");
    let (tensors, meta) = common::read_raw(&head);
    let meta = meta.expect("metadata");
    let task: Value = serde_json::from_str(&meta["softprompt_task"]).expect("json");
    assert_eq!(
        (&task["task"], &task["template"], &task["pooling"]),
        (
            &serde_json::json!("cls"),
            &serde_json::json!("Review: {text}"),
            &serde_json::json!("cls")
        )
    );
    let copy = dir.path().join("peft");
    copied_out(&run_dir, &copy, true);
    let want = stdout_ok(&scored("predict", &run_dir, &[]));
    let out = scored("predict", &copy, &["--task", "cls"]);
    assert_eq!(stdout_ok(&out), want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"has no task.json (the task its head.safetensors records): task cls, template "Review: {text}", labels ["negative", "positive"], pooling cls"#),
        "{stderr}"
    );
    // another pooling asked for: used, and named against the head's
    let out = scored("predict", &copy, &["--pooling", "mean"]);
    assert_ne!(stdout_ok(&out), want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: --pooling mean is used, but the prompt was trained with cls (as its head.safetensors records)"),
        "{stderr}"
    );
    // a recorded max_len past the model's positions is the file's, as task.json's is
    // (review 16: it named a --max-len no one gave)
    let mut long = meta.clone();
    let mut wide = task.clone();
    wide["max_len"] = serde_json::json!(100_000);
    long.insert("softprompt_task".into(), wide.to_string());
    common::write_raw(&copy.join("head.safetensors"), &tensors, Some(long));
    let err = refused(
        &scored("predict", &copy, &["--task", "cls"]),
        &[
            s(&copy.join("head.safetensors")),
            "(the setting comes from this file; --max-len overrides it)",
        ],
    );
    assert!(!err.contains("invalid argument --max-len"), "{err}");
    // a head that records its labels alone: the defaults, as before
    let mut old = meta.clone();
    old.remove("softprompt_task");
    common::write_raw(&copy.join("head.safetensors"), &tensors, Some(old));
    let out = scored("predict", &copy, &["--task", "cls"]);
    assert_ne!(stdout_ok(&out), want);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"(a PEFT folder?): task cls, template "{text}", labels ["negative", "positive"], pooling mean"#)
    );
    // a task of other labels than the head's
    let mut bad = meta.clone();
    bad.insert(
        "softprompt_task".into(),
        meta["softprompt_task"].replace("positive", "neutral"),
    );
    common::write_raw(&copy.join("head.safetensors"), &tensors, Some(bad));
    refused(
        &scored("predict", &copy, &["--task", "cls"]),
        &[
            s(&copy.join("head.safetensors")),
            "`softprompt_task` in its metadata is",
            "expected the cls task of the labels `softprompt_labels` names",
        ],
    );
    // task.json's words said of the key, and free targets of a cls task named as the
    // file's, not a --free-targets no one gave (review 18, R18-5)
    let mut partial = meta.clone();
    partial.insert(
        "softprompt_task".into(),
        r#"{"labels": ["negative", "positive"], "task": "cls"}"#.into(),
    );
    common::write_raw(&copy.join("head.safetensors"), &tensors, Some(partial));
    refused(
        &scored("predict", &copy, &["--task", "cls"]),
        &[
            "`softprompt_task` in its metadata is",
            "missing list `verbalizer`",
        ],
    );
    let mut free = meta.clone();
    let mut freed = task.clone();
    freed["free_targets"] = serde_json::json!(true);
    free.insert("softprompt_task".into(), freed.to_string());
    common::write_raw(&copy.join("head.safetensors"), &tensors, Some(free));
    let err = refused(
        &scored("predict", &copy, &["--task", "cls"]),
        &["`free_targets` is true, but the task cls has no targets"],
    );
    assert!(!err.contains("--free-targets"), "{err}");
}

/// On a model with an MLM head (whose default task is pet) a cls folder copied out without
/// task.json was scored as pet, refused naming a --verbalizer no one gave (review 18, R18-4):
/// a head is a cls run's, and the copy scores as its folder does.
#[test]
fn a_copied_cls_folder_scores_as_cls_on_an_mlm_model() {
    let dir = ScratchDir::new("saves_head_mlm");
    let run_dir = dir.path().join("run");
    stdout_ok(&run(&cls_args(s(&fixture("bert_mlm")), &run_dir, "2", &[])));
    let copy = dir.path().join("peft");
    copied_out(&run_dir, &copy, true);
    let model = fixture("bert_mlm");
    let want = stdout_ok(&scored("predict", &run_dir, &[]));
    assert_eq!(
        stdout_ok(&scored("predict", &copy, &["--model", s(&model)])),
        want
    );
}

/// A cls adapter copied out without its head was refused as "corrupt or was edited": its
/// stamp hashes the table and the head. The stamp says it covers a head now, and the missing
/// head.safetensors is named; an earlier save's stamp (without that field) still fails the
/// hash, and the message says a missing head may be why.
#[test]
fn a_cls_adapter_copied_without_its_head_names_the_head() {
    let dir = ScratchDir::new("saves_head_missing");
    let (one, _) = two_saves(&dir);
    let copy = dir.path().join("peft");
    copied_out(&one, &copy, false);
    let head = copy.join("head.safetensors");
    let out = scored("predict", &copy, &["--task", "cls"]);
    let err = refused(
        &out,
        &[
            s(&head),
            "is missing: the folder's save stamp (step 1, head 2, ",
            "covers a cls classifier head of 2 labels",
            "copy it back from the run's --out folder",
        ],
    );
    assert!(!err.contains("corrupt"), "{err}");
    // an earlier save's stamp
    restamp(&one, |s| without_field(s, "head"));
    stdout_ok(&eval(&one));
    copied_out(&one, &copy, false);
    refused(
        &scored("predict", &copy, &["--task", "cls"]),
        &[
            "corrupt or was edited (or, if it is a cls prompt, its head.safetensors is missing",
            "copy it back from the run's --out folder",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Checkpoints that lie

/// A finished two-step `cls` run that saved at every step (no dev), to tamper with, and its
/// command.
fn checkpointed(dir: &ScratchDir) -> (PathBuf, Vec<String>) {
    let out = dir.path().join("run");
    let args = cls_args(
        s(&fixture("bert_nohead")),
        &out,
        "2",
        &["--save-every", "1"],
    );
    stdout_ok(&run(&args));
    (out, args)
}

fn resume(args: &[String]) -> std::process::Output {
    let mut args = args.to_vec();
    args.push("--resume".into());
    run(&args)
}

/// A flipped bit in the checkpoint's prompt or optimizer state resumed with exit 0 and other
/// losses; an edited state (a NaN loss sum) wrote `"loss": null`. The checksum saved with
/// them refuses both, naming the checkpoint.
#[test]
fn a_checkpoint_with_a_flipped_bit_is_refused() {
    let dir = ScratchDir::new("saves_ck_flip");
    let (out, args) = checkpointed(&dir);
    let ckpt = out.join("checkpoint.safetensors");
    let saved = std::fs::read(&ckpt).expect("checkpoint");
    for (name, bit) in [("prompt", 20), ("opt.prompt.m", 30), ("opt.prompt.v", 1)] {
        common::edit_safetensors(&ckpt, |t| flip(t, name, bit));
        refused(
            &resume(&args),
            &[
                s(&ckpt),
                "checksum saved with them",
                "corrupt or was edited",
            ],
        );
        std::fs::write(&ckpt, &saved).expect("restore");
    }
    let (tensors, meta) = common::read_raw(&ckpt);
    let mut meta = meta.expect("metadata");
    let key = "softprompt_checkpoint";
    let mut v: Value = serde_json::from_str(&meta[key]).expect("state");
    v["log_window"]["loss_sum_bits"] = f64::NAN.to_bits().into();
    meta.insert(key.into(), v.to_string());
    common::write_raw(&ckpt, &tensors, Some(meta));
    refused(&resume(&args), &[s(&ckpt), "corrupt or was edited"]);
    std::fs::write(&ckpt, &saved).expect("restore");
    stdout_ok(&resume(&args));
}

/// The same for a multi-task run's checkpoint: one bit of task `a`'s prompt.
#[test]
fn a_multitask_checkpoint_with_a_flipped_bit_is_refused() {
    let dir = ScratchDir::new("saves_mt_flip");
    let train = tagged_file(&dir);
    let out = dir.path().join("out");
    stdout_ok(&run(&multi_args(&train, &out, &[])));
    let ckpt = out.join("checkpoint.safetensors");
    let saved = std::fs::read(&ckpt).expect("checkpoint");
    common::edit_safetensors(&ckpt, |t| flip(t, "a/prompt", 29));
    let resume = multi_args(&train, &out, &["--resume"]);
    refused(&run(&resume), &[s(&ckpt), "corrupt or was edited"]);
    std::fs::write(&ckpt, &saved).expect("restore");
    stdout_ok(&run(&resume));
}

/// An edited `step` (one fewer, the plan and position kept) or a plan naming one row four
/// times trained on to other numbers (exit 0): the counters are checked against the plan.
#[test]
fn checkpoint_step_and_plan_that_disagree_are_refused() {
    let dir = ScratchDir::new("saves_ck_step");
    let (out, args) = checkpointed(&dir);
    let ckpt = out.join("checkpoint.safetensors");
    let saved = std::fs::read(&ckpt).expect("checkpoint");
    // a resume of the untouched checkpoint is fine
    stdout_ok(&resume(&args));
    common::edit_checkpoint_state(&out, |v| {
        v["step"] = 1.into();
        v["done"] = false.into();
    });
    refused(
        &resume(&args),
        &[s(&ckpt), "`step` is 1", "makes 2 steps", "corrupt"],
    );
    std::fs::write(&ckpt, &saved).expect("restore");
    common::edit_checkpoint_state(&out, |v| {
        let plan = v["plan"].as_array().expect("plan").clone();
        let same: Vec<Value> = plan
            .iter()
            .map(|_| serde_json::json!([0, 0, 0, 0]))
            .collect();
        v["plan"] = same.into();
    });
    refused(&resume(&args), &[s(&ckpt), "`plan` names row 0 twice"]);
}

/// A `best` of 7.0 was written into task.json, and task.json was then blamed; a `best`
/// without the prompt it kept was accepted. Both are refused at load, naming the checkpoint.
#[test]
fn checkpoint_best_is_checked() {
    let dir = ScratchDir::new("saves_ck_best");
    let (out, args) = checkpointed(&dir);
    let ckpt = out.join("checkpoint.safetensors");
    let task_before = std::fs::read(out.join("task.json")).expect("task.json");
    let best = serde_json::json!({"accuracy": 7.0, "macro_f1": 0.5, "examples": 8});
    common::edit_checkpoint_state(&out, |v| v["best"] = best);
    let err = refused(&resume(&args), &[s(&ckpt), "`best.accuracy` is 7"]);
    assert!(!err.contains("task.json"), "{err}");
    assert_eq!(
        std::fs::read(out.join("task.json")).expect("task.json"),
        task_before
    );
    let best = serde_json::json!({"accuracy": 0.5, "macro_f1": 0.5, "examples": 8});
    common::edit_checkpoint_state(&out, |v| v["best"] = best);
    refused(
        &resume(&args),
        &[s(&ckpt), "a `best` evaluation but no tensor `best.prompt`"],
    );
}

/// An optimizer tensor of another size was "shape mismatch in opt.prompt.m" with exit 1 (the
/// code of a diverged run): it names the checkpoint, with exit 2.
#[test]
fn checkpoint_optimizer_state_of_another_size_names_the_checkpoint() {
    let dir = ScratchDir::new("saves_ck_opt");
    let (out, args) = checkpointed(&dir);
    let ckpt = out.join("checkpoint.safetensors");
    let mut ck = Checkpoint::load(&ckpt).expect("checkpoint");
    let (shape, data) = ck.tensors.get_mut("opt.prompt.m").expect("opt.prompt.m");
    shape[0] -= 1;
    data.pop();
    ck.save(&ckpt).expect("save");
    refused(
        &resume(&args),
        &[s(&ckpt), "`opt.prompt.m`", "another run or is corrupt"],
    );
}

/// The same model folder spelled another way (`x/../x/`) was refused as another model: the
/// settings record the canonical path.
#[test]
fn resume_accepts_the_model_folder_spelled_another_way() {
    let dir = ScratchDir::new("saves_model_spelled");
    let (_, args) = checkpointed(&dir);
    let model = fixture("bert_nohead");
    let mut other = args.clone();
    let at = other.iter().position(|a| a == "--model").expect("--model") + 1;
    other[at] = format!("{}/../bert_nohead/", s(&model));
    stdout_ok(&resume(&other));
}

/// `save_prompt(overwrite)` removed the folder's prompt files before writing the new ones, so
/// a reader (a server reloading the prompt) loaded a `cls` prompt without its head; and two
/// saves into one folder at once failed on each other's temporary files ("No such file or
/// directory"). Now the files are replaced one by one (a reader loading beside 200 saves
/// never gets a cls prompt without its head), what the new prompt has not (a head) is removed
/// after, a save into a folder another save or a training run holds is refused (one inside
/// a run's folder is not), and writes of one file from several threads at once all succeed.
#[test]
fn a_save_over_a_prompt_replaces_its_files_and_is_held_alone() {
    use softprompt::internals::train::outdir::OutLock;
    use softprompt::internals::train::save_lock::SaveLock;
    use softprompt::{Device, Model, PromptInit, SaveOptions, TaskKind, TaskOptions};
    let dir = ScratchDir::new("saves_held");
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).expect("model");
    let labels = Some(vec!["no".to_string(), "yes".to_string()]);
    let cls = TaskOptions {
        labels: labels.clone(),
        task: Some(TaskKind::Cls),
        ..TaskOptions::default()
    };
    let pet = TaskOptions {
        verbalizer: Some(vec![
            ("no".into(), "bad".into()),
            ("yes".into(), "good".into()),
        ]),
        ..TaskOptions::default()
    };
    let (cls, pet) = (
        model.task(&cls, None, 4).expect("cls"),
        model.task(&pet, None, 4).expect("pet"),
    );
    let init = PromptInit::Random { std: 1.0 };
    let prompt = model.new_prompt(&cls, 4, &init, 0).expect("prompt");
    let saved = dir.path().join("saved");
    let over = SaveOptions { overwrite: true };
    model
        .save_prompt(&saved, &prompt, &cls, over)
        .expect("cls save");
    let head = saved.join("head.safetensors");
    // saves over the folder while a reader loads it: the head is never missing, from a load
    // or from the folder (the files were removed first: a reader found a cls prompt without
    // its head, or a folder whose stamp names a head that is not there); a load between two
    // files of one save is refused by their stamps, which is no torn read
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (loads, headless) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut loads, mut headless) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match softprompt::Prompt::load(&saved) {
                    Ok(p) => {
                        loads += 1;
                        headless += usize::from(p.head().is_none());
                    }
                    Err(e) => {
                        let e = e.to_string();
                        let gone = ["head.safetensors: is missing", "head.safetensors: No such"];
                        headless += usize::from(gone.iter().any(|g| e.contains(g)));
                    }
                }
            }
            (loads, headless)
        });
        for _ in 0..200 {
            model
                .save_prompt(&saved, &prompt, &cls, over)
                .expect("again");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().unwrap()
    });
    assert_eq!(headless, 0, "of {loads} loads");
    assert!(loads > 0, "the reader loaded nothing beside the saves");
    model
        .save_prompt(&saved, &prompt, &pet, over)
        .expect("pet over cls");
    assert!(!head.exists(), "the cls head stayed beside a pet prompt");
    softprompt::Prompt::load(&saved).expect("the pet save");

    let held = SaveLock::acquire(&saved).expect("held");
    let err = model.save_prompt(&saved, &prompt, &pet, over).unwrap_err();
    assert!(
        err.to_string().contains("another save in this process"),
        "{err}"
    );
    let in_use = |e: &softprompt::Error| {
        matches!(
            e,
            softprompt::Error::Folder {
                state: softprompt::FolderState::InUse,
                ..
            }
        )
    };
    assert!(in_use(&err), "{err:?}");
    drop(held);
    let run = OutLock::acquire(&saved).expect("a run's lock");
    let err = model.save_prompt(&saved, &prompt, &pet, over).unwrap_err();
    let want = format!(
        "a training run (pid {}) is writing into this folder",
        std::process::id()
    );
    assert!(err.to_string().contains(&want), "{err}");
    assert!(in_use(&err), "{err:?}");
    drop(run);
    // a run holding the folder above writes into that folder, not into this one (a
    // multi-task run locks each task folder): the save was refused naming it (review 21,
    // R21-3)
    let above = OutLock::acquire(dir.path()).expect("a run's lock on the folder above");
    model
        .save_prompt(&saved, &prompt, &pet, over)
        .expect("a save inside a run's folder");
    drop(above);

    let file = dir.path().join("one.json");
    std::thread::scope(|s| {
        for t in 0..4 {
            let file = &file;
            s.spawn(move || {
                for i in 0..50 {
                    let v = serde_json::json!({ "thread": t, "i": i });
                    softprompt::internals::fsutil::write_json_atomic(file, &v).expect("write");
                }
            });
        }
    });
}
