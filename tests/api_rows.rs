//! Rows the Rust API takes from its caller, against the seventh hostile pass (#17): rows
//! encoded for another task of the same model, a hand-made `pet` row whose [MASK] position
//! is not the mask token, and rows past the task's lengths gave numbers (or ran unbounded)
//! without a word; a huge text aborted `Model::tokenize`; class labels a caller gave were
//! replaced by the task's without a word.

use softprompt::prelude::*;
use std::path::PathBuf;

mod common;

use common::fixture;

/// A `pet` task on the BERT with its masked-LM head, for a prompt of 4 rows.
fn pet(model: &Model, verbalizer: &str, template: Option<&str>) -> Task {
    let opts = TaskOptions {
        verbalizer: Some(TaskOptions::verbalizer_from_str(verbalizer).unwrap()),
        template: template.map(String::from),
        ..TaskOptions::default()
    };
    model.task(&opts, None, 4).unwrap()
}

fn random(model: &Model, task: &Task, rows: usize) -> Prompt {
    let init = PromptInit::Random { std: 1.0 };
    model.new_prompt(task, rows, &init, 3).unwrap()
}

fn encoded(rows: Vec<Row>) -> Encoded {
    Encoded {
        path: PathBuf::from("rows"),
        rows,
        truncated: 0,
        truncated_targets: 0,
    }
}

/// Rows encoded by a task with labels (neg, pos) were scored by one with (pos, neg), the
/// labels read as the other's indices (accuracy 0.667 -> 0.333), and by one of another
/// template: evaluate, predict and step refuse them naming both settings. A task of the same
/// settings made again, or of other verbalizer words only (a pet row holds none), takes them.
#[test]
fn rows_of_another_task_are_refused() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let a = pet(&model, "neg=bad,pos=great", None);
    let data = Dataset::from_pairs("mem", [("a fine film", Some("pos")), ("dull", Some("neg"))]);
    let enc = model.encode(&a, &data).unwrap();
    assert!(enc.rows[0].task_fingerprint().is_some());
    let prompt = random(&model, &a, 4);
    let (own, preds) = model.evaluate(&a, &prompt, &enc, 8).unwrap();
    let again = pet(&model, "neg=bad,pos=great", None);
    assert_eq!(model.evaluate(&again, &prompt, &enc, 8).unwrap().1, preds);
    let words = pet(&model, "neg=awful,pos=great", None);
    assert!(model.evaluate(&words, &prompt, &enc, 8).is_ok());

    let flipped = pet(&model, "pos=great,neg=bad", None);
    let want = "row 1 was encoded for another task (its labels [\"neg\", \"pos\"], this task's \
                [\"pos\", \"neg\"])";
    let e = model.evaluate(&flipped, &prompt, &enc, 8).map(|_| ());
    let e = e.expect_err("rows of another label order");
    assert!(matches!(e, Error::Arg { .. }), "{e:?}");
    assert!(
        e.to_string().contains(want),
        "{e} (accuracy {})",
        own.accuracy
    );
    let e = model.predict(&flipped, &prompt, &enc, 8).map(|_| ());
    assert!(e.unwrap_err().to_string().contains(want));
    let e = model.step(&flipped, &prompt, &enc.rows).map(|_| ());
    assert!(e.unwrap_err().to_string().contains(want));

    let other = pet(
        &model,
        "neg=bad,pos=great",
        Some("{text} All in all, [MASK]."),
    );
    let e = model.step(&other, &prompt, &enc.rows).map(|_| ());
    let msg = e.expect_err("rows of another template").to_string();
    assert!(
        msg.contains("its template \"{text} It was [MASK].\""),
        "{msg}"
    );
    let jobs = [(&a, &prompt), (&other, &prompt)];
    let mixed = [(0, enc.rows[0].clone()), (1, enc.rows[1].clone())];
    let e = model.step_mixed(&jobs, &mixed).map(|_| ());
    let msg = e.expect_err("a mixed row of another task").to_string();
    assert!(msg.contains("row 2 was encoded for another task"), "{msg}");
}

/// A hand-made `pet` row (`Row::new`) points at its first token, [CLS]: predict scored it
/// (class 0 where the encoded row gives class 1) and step gave a loss. Both refuse it naming
/// the row and where the mask token is; with its position set it scores as the encoded row.
#[test]
fn a_pet_row_must_point_at_its_mask_token() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let task = pet(&model, "neg=bad,pos=great", None);
    let prompt = random(&model, &task, 4);
    let data = Dataset::from_pairs("mem", [("a fine film", Some("pos"))]);
    let enc = model.encode(&task, &data).unwrap();
    let ids = model.tokenize("a fine film It was [MASK].").unwrap();
    assert_eq!(ids, enc.rows[0].ids);
    let mask_id = model.tokenize("[MASK]").unwrap()[1];
    let at = ids.iter().position(|&i| i == mask_id).unwrap();
    let mut hand = Row::new(ids.clone());
    hand.label = Some(1);
    let want = format!(
        "row 1: its [MASK] position (mask_positions) 0 holds token id {}, not the mask token \
         (id {mask_id}): expected the index of the mask token in its ids (it is at {at})",
        ids[0]
    );
    let e = model.predict(&task, &prompt, &encoded(vec![hand.clone()]), 8);
    let e = e.map(|_| ()).expect_err("a pet row pointing at [CLS]");
    assert!(e.to_string().contains(&want), "{e}");
    let e = model.step(&task, &prompt, &[hand.clone()]).map(|_| ());
    assert!(e.unwrap_err().to_string().contains(&want));
    // mixed: each row against its own job's task, behind a cls job's row (no mask token;
    // a mixed batch is padded by its first job's task)
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        ..TaskOptions::default()
    };
    let two = Dataset::from_pairs("mem", [("a fine film", Some("pos")), ("dull", Some("neg"))]);
    let cls = model.task(&opts, Some(&two), 4).unwrap();
    let cls_prompt = random(&model, &cls, 4);
    let cls_row = model.encode(&cls, &two).unwrap().rows[0].clone();
    let jobs = [(&cls, &cls_prompt), (&task, &prompt)];
    let e = model
        .predict_mixed(&jobs, &[(0, cls_row), (1, hand.clone())], 8)
        .map(|_| ());
    let second = want.replacen("row 1:", "row 2:", 1);
    assert!(e.unwrap_err().to_string().contains(&second));
    // train_multi: refused before anything is written (its mixed steps skipped the check)
    let dir = common::ScratchDir::new("api_rows_pet_multi");
    let out = dir.path().join("run");
    let hand_rows = encoded(vec![hand.clone()]);
    let job = MultiTask {
        name: "a".into(),
        task: &task,
        splits: Splits {
            train: &hand_rows,
            dev: None,
            test: None,
        },
        prompt_len: None,
        init: None,
        method: None,
    };
    let cfg = TrainConfig {
        prompt_len: 4,
        max_steps: Some(1),
        ..TrainConfig::default()
    };
    let e = model.train_multi(&[job], &cfg, &out, &mut |_, _| {});
    let e = e.map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("splits.train") && e.contains(&want), "{e}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    hand.mask_pos = at;
    let by_hand = model.predict(&task, &prompt, &encoded(vec![hand]), 8);
    let own = model.predict(&task, &prompt, &enc, 8).unwrap();
    assert_eq!(by_hand.unwrap()[0].scores, own[0].scores);
}

/// Hand-made rows skipped every length limit on T5 and the decoders (12,000 ids ran; a
/// 100,000-token target ran for minutes): a row past the task's max_len or max_target_len
/// is refused naming the row and the limit, and one at them runs.
#[test]
fn rows_past_the_task_lengths_are_refused() {
    for (name, kind) in [("t5_v1_1", TaskKind::Seq2Seq), ("bloom", TaskKind::Causal)] {
        let model = Model::open(fixture(name), Device::Cpu).unwrap();
        let opts = TaskOptions {
            task: Some(kind),
            free_targets: true,
            max_len: Some(20),
            max_target_len: Some(8),
            ..TaskOptions::default()
        };
        let task = model.task(&opts, None, 4).unwrap();
        let prompt = random(&model, &task, 4);
        let id = *model.tokenize("film").unwrap().first().unwrap();
        let row = |n: usize, m: usize| {
            let mut row = Row::new(vec![id; n]);
            row.target = vec![id; m];
            row
        };
        let e = model.step(&task, &prompt, &[row(20, 8), row(21, 8)]);
        let msg = e.map(|_| ()).expect_err("21 ids").to_string();
        let want = "row 2 has 21 token ids, more than the task's max_len 20";
        assert!(msg.contains(want), "{name}: {msg}");
        let e = model.predict(&task, &prompt, &encoded(vec![row(20, 9)]), 8);
        let msg = e.map(|_| ()).expect_err("a target of 9").to_string();
        let want = "row 1 has a target of 9 token ids, more than the task's max_target_len 8";
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(model.step(&task, &prompt, &[row(20, 8)]).is_ok(), "{name}");
    }
    // a prompt longer than the task's leaves a row at max_len past the model's positions
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        labels: Some(vec!["neg".into(), "pos".into()]),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, None, 4).unwrap();
    let (limit, what) = model.position_limit();
    let prompt = random(&model, &task, 10);
    let ids = vec![*model.tokenize("film").unwrap().first().unwrap(); limit - 4];
    let e = model.predict(&task, &prompt, &encoded(vec![Row::new(ids)]), 8);
    let msg = e.map(|_| ()).expect_err("past the positions").to_string();
    let want = format!(
        "row 1 has {} token ids, which next to a prompt of 10 rows need {} positions, but \
         {what} holds {limit}: cut it to {}",
        limit - 4,
        limit + 6,
        limit - 10
    );
    assert!(msg.contains(&want), "{msg}");
}

/// A 60 MB text aborted the process inside the tokenizer (about 500 bytes a token): past
/// 2 MiB (256 bytes for each of the 8192 positions a row may hold) it is an error naming
/// the limit.
#[test]
fn tokenize_refuses_a_text_past_its_limit() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let huge = "a ".repeat(1 << 20) + "b";
    let e = model
        .tokenize(&huge)
        .expect_err("a text of 2 MiB and a byte");
    let want = "invalid argument text: is 2097153 bytes, more than the 2097152 \
                Model::tokenize takes (256 bytes for each of the 8192 positions";
    assert!(e.to_string().contains(want), "{e}");
    assert_eq!(model.tokenize("a b").unwrap().len(), 4);
}

/// `PromptInit::ClassLabels { labels, .. }` from the caller were replaced by the task's
/// without a word (labels of ids 2^30 and -1 gave the task's prompt): labels other than the
/// task's are refused naming both; the task's own, or none, give the same prompt.
#[test]
fn class_labels_a_caller_gives_are_the_tasks() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let task = pet(&model, "neg=bad,pos=great", None);
    let init = |labels: Vec<(String, Vec<i32>)>| PromptInit::ClassLabels {
        labels,
        from_first: None,
    };
    let word = |w: &str| model.tokenize(w).unwrap()[1..2].to_vec();
    let own = vec![
        ("neg".to_string(), word("bad")),
        ("pos".into(), word("great")),
    ];
    let bad = vec![("a".to_string(), vec![]), ("b".into(), vec![1 << 30, -1])];
    let e = model.new_prompt(&task, 4, &init(bad), 0).map(|_| ());
    let msg = e.expect_err("labels not the task's").to_string();
    let want = format!(
        "invalid argument init: PromptInit::ClassLabels lists the labels and pieces [(\"a\", \
         []), (\"b\", [1073741824, -1])], but the task's labels and their words give {own:?}"
    );
    assert!(msg.contains(&want), "{msg}");
    let given = model.new_prompt(&task, 4, &init(own), 0).unwrap();
    let filled = model.new_prompt(&task, 4, &init(Vec::new()), 0).unwrap();
    assert_eq!(given.values(), filled.values());
}

/// A hand-made `seq2seq` or `causal` row with a label but no target (Python's
/// `Encoded.from_ids(..., targets=[t, []])`) added nothing to the step's loss or gradient
/// while its tokens were counted (the step gave row 1's numbers alone), and a batch of such
/// rows was refused naming `--task seq2seq`, a flag an API caller never passed. Step,
/// step_mixed and train refuse the row naming it and `targets`; with its target the hand-made
/// rows give the encoded rows' loss. Evaluate and predict rank the label targets, which such
/// a row needs none of: they take it.
#[test]
fn a_training_row_without_a_target_is_refused() {
    for (name, kind) in [("t5_v1_1", TaskKind::Seq2Seq), ("bloom", TaskKind::Causal)] {
        let model = Model::open(fixture(name), Device::Cpu).unwrap();
        let data =
            Dataset::from_pairs("mem", [("a fine film", Some("pos")), ("dull", Some("neg"))]);
        let opts = TaskOptions {
            task: Some(kind),
            ..TaskOptions::default()
        };
        let task = model.task(&opts, Some(&data), 4).unwrap();
        let prompt = random(&model, &task, 4);
        let enc = model.encode(&task, &data).unwrap();
        let hand: Vec<Row> = (enc.rows.iter())
            .map(|r| {
                let mut row = Row::new(r.ids.clone());
                (row.label, row.target) = (r.label, r.target.clone());
                row
            })
            .collect();
        let own = model.step(&task, &prompt, &enc.rows).unwrap();
        let by_hand = model.step(&task, &prompt, &hand).unwrap();
        assert_eq!(
            (by_hand.loss, by_hand.tokens),
            (own.loss, own.tokens),
            "{name}"
        );
        assert!(
            own.loss.is_finite() && own.loss > 0.0,
            "{name}: {}",
            own.loss
        );

        let mut no_target = hand.clone();
        no_target[1].target.clear();
        let want = |row: usize, job: &str| {
            format!(
                "invalid argument targets: row {row}{job} has no target: every row of a {} \
                 training step needs one (its label's target, as Model::encode gives it)",
                kind.name()
            )
        };
        let e = model.step(&task, &prompt, &no_target).map(|_| ());
        assert_eq!(e.unwrap_err().to_string(), want(2, ""), "{name}");
        // none has a target: the first row is named, not a flag of the command line
        let mut none = no_target.clone();
        none[0].target.clear();
        let e = model.step(&task, &prompt, &none).map(|_| ());
        assert_eq!(e.unwrap_err().to_string(), want(1, ""), "{name}");
        let jobs = [(&task, &prompt)];
        let mixed: Vec<(usize, Row)> = no_target.iter().map(|r| (0, r.clone())).collect();
        let e = model.step_mixed(&jobs, &mixed).map(|_| ());
        let of_job = format!(" (of job 0, a {} task)", kind.name());
        assert_eq!(e.unwrap_err().to_string(), want(2, &of_job), "{name}");

        let dir = common::ScratchDir::new(&format!("api_rows_no_target_{name}"));
        let out = dir.path().join("run");
        let rows = encoded(no_target.clone());
        let splits = Splits {
            train: &rows,
            dev: None,
            test: None,
        };
        let cfg = TrainConfig {
            prompt_len: 4,
            max_steps: Some(1),
            ..TrainConfig::default()
        };
        let e = model
            .train(&task, splits, &cfg, &out, &mut |_| {})
            .map(|_| ());
        assert_eq!(e.unwrap_err().to_string(), want(2, ""), "{name}");
        assert!(
            !out.exists(),
            "{name}: a refused run wrote {}",
            out.display()
        );

        // scoring ranks the label targets: the row's own target is not read
        let (_, preds) = model.evaluate(&task, &prompt, &rows, 8).unwrap();
        let (_, own_preds) = model.evaluate(&task, &prompt, &enc, 8).unwrap();
        assert_eq!(preds[1].scores, own_preds[1].scores, "{name}");
    }
}

/// Fields a hand-made row's task has no use for were ignored without a word: a `pet` row's
/// target, a `seq2seq` row's [MASK] position. Both are refused naming the argument, the row
/// and the task's kind; a hand-made row's faults are argument errors naming the argument, not
/// a made-up file and line ("rows:2: row 2 has no token ids").
#[test]
fn hand_made_row_fields_the_task_does_not_use_are_refused() {
    let model = Model::open(fixture("bert_mlm"), Device::Cpu).unwrap();
    let task = pet(&model, "neg=bad,pos=great", None);
    let prompt = random(&model, &task, 4);
    let data = Dataset::from_pairs("mem", [("a fine film", Some("pos"))]);
    let enc = model.encode(&task, &data).unwrap();
    let mut hand = Row::new(enc.rows[0].ids.clone());
    (hand.label, hand.mask_pos) = (Some(1), enc.rows[0].mask_pos);
    let own = model.step(&task, &prompt, &enc.rows).unwrap().loss;
    assert_eq!(
        model.step(&task, &prompt, &[hand.clone()]).unwrap().loss,
        own
    );
    let mut with_target = hand.clone();
    with_target.target = vec![hand.ids[1]];
    let e = model.step(&task, &prompt, &[hand.clone(), with_target.clone()]);
    assert_eq!(
        e.map(|_| ()).unwrap_err().to_string(),
        "invalid argument rows: row 2 has a target (targets), but a pet task scores its \
         labels, not targets: leave targets out"
    );
    let e = model.predict(&task, &prompt, &encoded(vec![with_target]), 8);
    let e = e.map(|_| ()).unwrap_err().to_string();
    assert!(
        e.starts_with("invalid argument data: row 1 has a target"),
        "{e}"
    );
    let mut empty = hand.clone();
    empty.ids.clear();
    let e = model.step(&task, &prompt, &[hand, empty]).map(|_| ());
    assert_eq!(
        e.unwrap_err().to_string(),
        "invalid argument rows: row 2 has no token ids: a row needs at least one token"
    );

    let model = Model::open(fixture("t5_v1_1"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        task: Some(TaskKind::Seq2Seq),
        ..TaskOptions::default()
    };
    let two = Dataset::from_pairs("mem", [("a fine film", Some("pos")), ("dull", Some("neg"))]);
    let task = model.task(&opts, Some(&two), 4).unwrap();
    let prompt = random(&model, &task, 4);
    let enc = model.encode(&task, &two).unwrap();
    let mut hand = Row::new(enc.rows[0].ids.clone());
    (hand.label, hand.target, hand.mask_pos) = (enc.rows[0].label, enc.rows[0].target.clone(), 2);
    let e = model
        .evaluate(&task, &prompt, &encoded(vec![hand]), 8)
        .map(|_| ());
    assert_eq!(
        e.unwrap_err().to_string(),
        "invalid argument data: row 1 has a [MASK] position (mask_positions) 2, but a seq2seq \
         task has none: leave mask_positions out (they are for pet tasks)"
    );
}
