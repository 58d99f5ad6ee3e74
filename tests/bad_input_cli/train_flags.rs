//! `train`'s flags: each bad value is refused with the flag's name (and the range), before
//! any step; verbalizers that would train nothing, or blame the wrong flag; lengths and
//! batch sizes that would overflow.

use crate::common::{fixture, refused, ScratchDir};
use crate::{case, ok, s, softprompt, strings, train_args};
use softprompt::internals::train::checkpoint::Checkpoint;

fn flag_case(name: &str) {
    let c = case("flags", name);
    let dir = ScratchDir::new(name);
    let out = dir.path().join("out");
    let extra = strings(&c[0]);
    let extra: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
    let flag = c[1].as_str().expect("flag");
    let model = fixture("bert_mlm");
    let mut args = train_args(&model, &out, &[]);
    // the case's flags replace the defaults above; "!--flag" only drops the default
    for f in &extra {
        let f = f.strip_prefix('!').unwrap_or(f);
        if let Some(i) = args.iter().position(|a| *a == f && f.starts_with("--")) {
            args.drain(i..i + 2);
        }
    }
    args.extend(extra.iter().filter(|f| !f.starts_with('!')));
    // an argument error naming the flag, not a later failure that mentions it
    refused(&softprompt(&args), &[&format!("invalid argument {flag}")]);
    assert!(
        !out.join("checkpoint.safetensors").exists(),
        "{name} wrote a checkpoint"
    );
}

#[test]
fn flag_lr_nan() {
    flag_case("lr_nan");
}

#[test]
fn flag_max_target_len_0_pet() {
    flag_case("max_target_len_0_pet");
}

#[test]
fn flag_lr_negative() {
    flag_case("lr_negative");
}

#[test]
fn flag_lr_0() {
    flag_case("lr_0");
}

/// The engine's advice names the API's fields (`cfg.optim.head_lr`, `dev`): the command line
/// says its flags there too (#17).
#[test]
fn advice_names_the_flags() {
    let dir = ScratchDir::new("advice_flags");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--lr", "0"],
            "invalid argument --lr: 0 trains nothing: expected a number > 0 (0 freezes the \
             prompt, which makes sense only beside a cls head trained by --head-lr > 0)",
        ),
        (
            &["--patience", "2"],
            "invalid argument --patience: early stopping needs a dev split: pass --dev",
        ),
        (
            &["--eval-every", "3"],
            "invalid argument --eval-every: evaluating during the run needs a dev split: pass \
             --dev",
        ),
    ];
    for (extra, want) in cases {
        let args = train_args(&model, &out, extra);
        let err = refused(&softprompt(&args), &[want]);
        assert!(!err.contains("cfg.") && !err.contains('`'), "{err}");
    }
}

/// --lr 0 beside a cls head with its own --head-lr trains the head alone: accepted.
#[test]
fn lr_0_trains_a_cls_head_alone() {
    let dir = ScratchDir::new("lr0_head");
    let out = dir.path().join("out");
    let model = fixture("bert_nohead");
    let mut args = train_args(&model, &out, &["--lr", "0", "--head-lr", "0.1"]);
    args[8] = "cls";
    args.drain(9..11);
    ok(&softprompt(&args));
    let ck = Checkpoint::load(&out.join("checkpoint.safetensors")).expect("checkpoint");
    assert_eq!(ck.state.step, 2);
    // the head starts at zero and moved
    assert!(ck
        .get("head.weight")
        .expect("head")
        .iter()
        .any(|&x| x != 0.0));
}

#[test]
fn flag_weight_decay_nan() {
    flag_case("weight_decay_nan");
}

#[test]
fn flag_head_lr_inf() {
    flag_case("head_lr_inf");
}

#[test]
fn flag_max_grad_norm_nan() {
    flag_case("max_grad_norm_nan");
}

#[test]
fn flag_batch_size_0() {
    flag_case("batch_size_0");
}

#[test]
fn flag_epochs_0() {
    flag_case("epochs_0");
}

#[test]
fn flag_max_steps_0() {
    flag_case("max_steps_0");
}

#[test]
fn flag_patience_without_dev() {
    flag_case("patience_without_dev");
}

#[test]
fn flag_eval_every_without_dev() {
    flag_case("eval_every_without_dev");
}

#[test]
fn flag_prompt_len_huge() {
    flag_case("prompt_len_huge");
}

#[test]
fn flag_max_len_huge() {
    flag_case("max_len_huge");
}

#[test]
fn flag_threads_huge() {
    flag_case("threads_huge");
}

#[test]
fn flag_init_vocab_first_0() {
    flag_case("init_vocab_first_0");
}

#[test]
fn flag_verbalizer_word_not_a_string() {
    flag_case("verbalizer_word_not_a_string");
}

#[test]
fn flag_pooling_with_pet() {
    flag_case("pooling_with_pet");
}

#[test]
fn flag_decode_with_pet() {
    flag_case("decode_with_pet");
}

#[test]
fn flag_free_targets_with_pet() {
    flag_case("free_targets_with_pet");
}

#[test]
fn flag_max_target_len_with_cls() {
    flag_case("max_target_len_with_cls");
}

#[test]
fn flag_decode_with_cls() {
    flag_case("decode_with_cls");
}

#[test]
fn flag_verbalizer_with_cls() {
    flag_case("verbalizer_with_cls");
}

#[test]
fn flag_init_text_empty() {
    flag_case("init_text_empty");
}

#[test]
fn flag_init_std_with_text() {
    flag_case("init_std_with_text");
}

#[test]
fn flag_init_vocab_first_with_random() {
    flag_case("init_vocab_first_with_random");
}

#[test]
fn flag_init_vocab_first_past_vocab() {
    flag_case("init_vocab_first_past_vocab");
}

#[test]
fn flag_decay_rate_above_1() {
    flag_case("decay_rate_above_1");
}

#[test]
fn flag_decay_rate_0() {
    flag_case("decay_rate_0");
}

#[test]
fn flag_encoder_hidden_size_huge() {
    flag_case("encoder_hidden_size_huge");
}

/// Prefix tuning's projection of hidden size 10^11 or 2^32+1 aborted on the allocation
/// (SIGABRT, "memory allocation of 824633721024 bytes failed").
#[test]
fn prefix_projection_hidden_size_huge() {
    let dir = ScratchDir::new("prefix_hidden_huge");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    for size in ["100000000000", "4294967297"] {
        let args = train_args(
            &model,
            &out,
            &[
                "--method",
                "prefix",
                "--prefix-projection",
                "--encoder-hidden-size",
                size,
            ],
        );
        refused(
            &softprompt(&args),
            &[
                "invalid argument --encoder-hidden-size",
                "prefix projection",
                "GB",
            ],
        );
    }
}

/// An encoder past the memory said "more than the 0.0 GB of memory available" below a GB,
/// without the bound that holds (verification 32, B1): both sizes in their own units, and
/// the bound's words as every memory refusal says them.
#[test]
fn an_encoder_past_the_memory_says_both_sizes() {
    let dir = ScratchDir::new("encoder_memory");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let args = train_args(
        &model,
        &out,
        &[
            "--method",
            "p-tuning",
            "--encoder-reparameterization",
            "lstm",
            "--encoder-hidden-size",
            "768",
        ],
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .args(&args)
        .env("SOFTPROMPT_HOST_MEMORY", "100000000")
        .output()
        .expect("run");
    refused(
        &o,
        &[
            "invalid argument --encoder-hidden-size: a LSTM encoder of hidden size 768 (2 \
             layers) holds ",
            " MB with its gradients and optimizer state, but the machine has 100 MB available",
        ],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
}

#[test]
fn flag_encoder_num_layers_huge() {
    flag_case("encoder_num_layers_huge");
}

#[test]
fn flag_decay_rate_with_adamw() {
    flag_case("decay_rate_with_adamw");
}

/// Causal label targets that could never win were accepted: an empty one (`--target-end
/// none`) scored 0 on every row, so its label won them all; one that begins another's made
/// the longer's score the shorter's plus a log-probability. An empty free target failed only
/// once training had started ("the batch has none"), naming neither the file nor the row; an
/// empty text on a decoder without a start token was "row 0 has no token ids".
#[test]
fn causal_rows_and_targets_that_cannot_score_are_refused() {
    let dir = ScratchDir::new("causal_dead_targets");
    let out = dir.path().join("run");
    let model = fixture("bloom");
    for (verbalizer, needle) in [
        (
            r#"{"negative": "", "positive": "good"}"#,
            "label \"negative\": the target \"\" has no tokens",
        ),
        ("negative=good,positive=good bad", "begins the other's"),
    ] {
        let mut args = train_args(&model, &out, &["--target-end", "none"]);
        args[8] = "causal";
        args[10] = verbalizer;
        refused(
            &softprompt(&args),
            &["invalid argument --verbalizer", needle],
        );
    }
    let data = dir.path().join("free.jsonl");
    std::fs::write(
        &data,
        "{\"text\": \"a\", \"label\": \"b\"}\n{\"text\": \"c\", \"label\": \"\"}\n",
    )
    .expect("write");
    let mut args = train_args(&model, &out, &["--target-end", "none", "--free-targets"]);
    args[4] = s(&data);
    args[8] = "causal";
    args.drain(9..11);
    // an empty target is a blank label, refused as the data is read (any task)
    refused(
        &softprompt(&args),
        &[
            &format!("{}:2", data.display()),
            "field \"label\" is \"\": a label needs a name",
        ],
    );
    std::fs::write(&data, "{\"text\": \"\", \"label\": \"b\"}\n").expect("write");
    refused(
        &softprompt(&args),
        &[&format!("{}:1", data.display()), "the text gives no tokens"],
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}

/// BERT: a prompt longer than the position table names --prompt-len and the table (it used to
/// blame --max-len); T5: a huge prompt or row is refused at once, before allocating.
#[test]
fn lengths_name_the_prompt_and_the_position_table() {
    let dir = ScratchDir::new("lengths");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let mut args = train_args(&model, &out, &[]);
    args[12] = "10000000";
    let err = refused(
        &softprompt(&args),
        &["--prompt-len", "max_position_embeddings"],
    );
    assert!(!err.contains("--max-len"), "{err}");
    // a prompt of no rows: the command line's flag, not the API's argument `prompt_len`
    args[12] = "0";
    refused(&softprompt(&args), &["invalid argument --prompt-len: is 0"]);
    let t5 = fixture("t5_flan");
    for (flag, value) in [
        ("--prompt-len", "10000000"),
        ("--prompt-len", "100000"),
        ("--max-len", "1000000000"),
    ] {
        let mut args = train_args(&t5, &out, &[flag, value]);
        args[8] = "seq2seq";
        args[10] = "positive=good,negative=bad";
        if flag == "--prompt-len" {
            args.drain(11..13);
        }
        let t0 = std::time::Instant::now();
        refused(&softprompt(&args), &[flag]);
        assert!(
            t0.elapsed().as_secs() < 20,
            "{flag} {value} took {:?}",
            t0.elapsed()
        );
    }
}

/// Batch size times the bucket pool used to wrap to 0 and panic ("chunk size must be
/// non-zero"); a batch larger than the data is one batch of all rows.
#[test]
fn huge_batch_and_bucket_pool_do_not_wrap() {
    let dir = ScratchDir::new("huge_batch");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let mut args = train_args(&model, &out, &["--bucket-pool", "4294967296"]);
    args[14] = "4294967296";
    let text = ok(&softprompt(&args));
    assert!(text.contains("(1 per epoch)"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Verbalizers that would train nothing, or blame the wrong flag

fn verbalizer_case(name: &str) {
    let c = case("verbalizer", name);
    let dir = ScratchDir::new(name);
    let out = dir.path().join("out");
    let model = fixture(c[0].as_str().expect("fixture"));
    let mut args = train_args(&model, &out, &[]);
    args[8] = c[1].as_str().expect("task");
    args[10] = c[2].as_str().expect("verbalizer");
    let needles = strings(&c[3]);
    let needles: Vec<&str> = needles.iter().map(|s| s.as_str()).collect();
    let err = refused(&softprompt(&args), &needles);
    assert!(!err.contains("--labels:"), "{err}");
}

#[test]
fn verbalizer_shared_token() {
    verbalizer_case("shared_token");
}

#[test]
fn verbalizer_unknown_word() {
    verbalizer_case("unknown_word");
}

#[test]
fn verbalizer_identical_targets() {
    verbalizer_case("identical_targets");
}

#[test]
fn verbalizer_lacks_a_label() {
    verbalizer_case("lacks_a_label");
}

#[test]
fn verbalizer_special_token() {
    verbalizer_case("special_token");
}

#[test]
fn verbalizer_label_twice() {
    verbalizer_case("label_twice");
}

#[test]
fn verbalizer_label_twice_json() {
    verbalizer_case("label_twice_json");
}

/// `--encoder-num-layers` with P-tuning's MLP trained the MLP's three linears whatever the
/// count (exit 0): it applies to the LSTM only.
#[test]
fn encoder_num_layers_with_the_mlp_is_refused() {
    let dir = ScratchDir::new("ptuning_mlp_layers");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let args = train_args(
        &model,
        &out,
        &["--method", "p-tuning", "--encoder-num-layers", "3"],
    );
    refused(
        &softprompt(&args),
        &["invalid argument --encoder-num-layers", "lstm"],
    );
    assert!(!out.join("checkpoint.safetensors").exists());
}

/// task.json saves the verbalizer as `[[label, word], ...]`; given back to --verbalizer it was
/// split at its commas ("\"[[\"positive\"\": expected label=word"). It is read as the JSON
/// object is: train and eval take it, and a malformed array says what the form is.
#[test]
fn verbalizer_in_task_json_form() {
    let dir = ScratchDir::new("verbalizer_array");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let pairs = r#"[["positive", "great"], ["negative", "bad"]]"#;
    let mut args = train_args(&model, &out, &[]);
    args[10] = pairs;
    ok(&softprompt(&args));
    let task: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("task.json")).expect("task.json"))
            .expect("json");
    let saved = task["verbalizer"].to_string();
    assert_eq!(saved, r#"[["positive","great"],["negative","bad"]]"#);
    let data = crate::corpus("data/train.jsonl");
    let eval = |verbalizer: &str| {
        softprompt(&[
            "eval",
            "--prompt",
            s(&out),
            "--data",
            s(&data),
            "--verbalizer",
            verbalizer,
        ])
    };
    ok(&eval(&saved));
    let form = "[[label, word], ...], as task.json writes it";
    for (verbalizer, msg) in [
        (
            r#"[["positive", "great"], ["negative"]]"#,
            format!(
                "item 1 holds [\"negative\"]: expected a pair of strings, label and word ({form})"
            ),
        ),
        (
            r#"[["positive", "great"], ["negative", 3]]"#,
            format!(
                "item 1 holds [\"negative\",3]: expected a pair of strings, label and word ({form})"
            ),
        ),
        (
            r#"[["positive", "great"],"#,
            format!(
                "not a valid JSON array of label, word pairs ({form}): EOF while parsing a value \
                 at line 1 column 23"
            ),
        ),
        (
            r#"[["positive", "great"], ["positive", "bad"]]"#,
            "the label \"positive\" is given twice (words \"great\" and \"bad\"): give each \
             label one word"
                .to_string(),
        ),
    ] {
        let err = refused(&eval(verbalizer), &[]);
        assert!(
            err.contains(&format!("invalid argument --verbalizer: {msg}")),
            "{verbalizer}: {err}"
        );
    }
}
