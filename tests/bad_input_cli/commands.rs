//! The flags of the other commands: `kernels --arch`, `eval` on a saved prompt, `generate`.

use crate::common::{fixture, refused};
use crate::{corpus, edit_json, ok, s, softprompt, train_args, trained, ScratchDir};

/// `kernels --arch` that is not sm_ and a compute capability the kernels compile for exited 1
/// with NVRTC's words, naming neither the flag nor what it takes; it is refused before NVRTC
/// is looked for (so also where it is missing).
#[test]
fn kernels_arch_names_the_flag() {
    for arch in ["sm_0", "90", "sm_75", "sm_", "sm_9x", "compute_90"] {
        refused(
            &softprompt(&["kernels", "--arch", arch]),
            &["--arch", &format!("{arch:?}"), "expected sm_80 or later"],
        );
    }
}

/// A task flag given to eval on a saved prompt whose task does not read it names the flag
/// (and the task), not task.json: `--decode greedy` on a PET prompt was ignored.
#[test]
fn eval_flag_the_saved_task_does_not_read() {
    let dir = ScratchDir::new("eval_flag_unread");
    let run = trained(&dir, &[]);
    let data = corpus("data/dev.jsonl");
    let err = refused(
        &softprompt(&[
            "eval",
            "--prompt",
            s(&run),
            "--data",
            s(&data),
            "--decode",
            "greedy",
        ]),
        &["invalid argument --decode", "pet"],
    );
    assert!(!err.contains("task.json"), "{err}");
}

/// `generate` with `--max-new-tokens 0` answered empty texts with exit 0; `--decode` and
/// `--max-target-len` were ignored (generation is greedy, bounded by --max-new-tokens).
#[test]
fn generate_refuses_what_it_would_not_do() {
    let dir = ScratchDir::new("generate_unread");
    let out = dir.path().join("run");
    let model = fixture("bloom");
    let mut args = train_args(&model, &out, &[]);
    args[8] = "causal";
    args[10] = "positive=good,negative=bad";
    ok(&softprompt(&args));
    let gen = |extra: &[&str]| {
        let mut a = vec!["generate", "--prompt", s(&out), "--text", "a story"];
        a.extend_from_slice(extra);
        softprompt(&a)
    };
    ok(&gen(&["--max-new-tokens", "2"]));
    refused(
        &gen(&["--max-new-tokens", "0"]),
        &["--max-new-tokens", "at least 1"],
    );
    refused(
        &gen(&["--decode", "rank"]),
        &["invalid argument --decode", "greedy"],
    );
    refused(
        &gen(&["--max-target-len", "4"]),
        &["invalid argument --max-target-len", "--max-new-tokens"],
    );
    // predict bounds generation by --max-target-len: its error named generate's flag
    let data = corpus("data/dev.jsonl");
    let err = refused(
        &softprompt(&[
            "predict",
            "--prompt",
            s(&out),
            "--data",
            s(&data),
            "--decode",
            "greedy",
            "--max-target-len",
            "8190",
        ]),
        &[
            "invalid argument --max-target-len",
            "past this engine's cap",
        ],
    );
    assert!(!err.contains("--max-new-tokens"), "{err}");
}

/// Generation past a Mistral's sliding window (which the engine does not slide) blamed
/// `--prompt`; it names `--max-new-tokens` and what the window leaves of it.
#[test]
fn generate_past_the_sliding_window_names_max_new_tokens() {
    let dir = ScratchDir::new("generate_window");
    let model = dir.copy_model("mistral", "mistral");
    edit_json(
        &model.join("config.json"),
        &serde_json::json!({"sliding_window": 40}),
    );
    let out = dir.path().join("run");
    let mut args = train_args(&model, &out, &[]);
    args[8] = "causal";
    args[10] = "positive=good,negative=bad";
    ok(&softprompt(&args));
    let gen = |n: &str| {
        softprompt(&[
            "generate",
            "--prompt",
            s(&out),
            "--text",
            "a story",
            "--max-new-tokens",
            n,
        ])
    };
    ok(&gen("2"));
    let err = refused(
        &gen("60"),
        &[
            "invalid argument --max-new-tokens",
            "past sliding_window 40",
            "or less",
        ],
    );
    assert!(!err.contains("--prompt"), "{err}");
}
