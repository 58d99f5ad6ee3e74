//! The API's `*_until` calls stop between their parts (batches, chunks of rows, tokens), and
//! only while parts remain: a stop heard after the last batch comes too late to save any
//! work, so the finished result is returned (`evaluate_until` and `predict_until` threw it
//! away). The stop is set by the progress callback on its N-th call, so each test is exact,
//! without sleeps.

use softprompt::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

mod common;

use common::fixture;

/// `n` labelled texts (labels neg, pos in turn).
fn data(n: usize) -> Dataset {
    let pairs = (0..n).map(|i| {
        (
            format!("film number {i} was good"),
            Some(["neg", "pos"][i % 2]),
        )
    });
    Dataset::from_pairs("mem", pairs)
}

/// The `cls` task on the headless BERT fixture and a random prompt for it.
fn cls(model: &Model) -> (Task, Prompt) {
    let opts = TaskOptions {
        task: Some(TaskKind::Cls),
        pooling: Some(Pooling::Mean),
        ..TaskOptions::default()
    };
    let task = model.task(&opts, Some(&data(2)), 4).unwrap();
    let prompt = model
        .new_prompt(&task, 4, &PromptInit::Random { std: 0.5 }, 0)
        .unwrap();
    (task, prompt)
}

/// A progress callback that sets `stop` on its `n`-th call, and what it heard.
fn stop_at<'a>(
    n: usize,
    stop: &'a AtomicBool,
    heard: &'a mut Vec<usize>,
) -> impl FnMut(usize) + 'a {
    move |done| {
        heard.push(done);
        if heard.len() == n {
            stop.store(true, Ordering::SeqCst);
        }
    }
}

/// 5 rows in batches of 2: 3 batches. A stop after the first or second batch ends the call
/// (nothing is returned); one after the third, the last, leaves the result, equal to the
/// call without a stop.
#[test]
fn a_stop_during_the_last_batch_leaves_the_result() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let (task, prompt) = cls(&model);
    let enc = model.encode(&task, &data(5)).unwrap();
    let whole = model.evaluate(&task, &prompt, &enc, 2).unwrap();
    for n in 1..=3 {
        let (stop, mut heard) = (AtomicBool::new(false), Vec::new());
        let mut on_batch = stop_at(n, &stop, &mut heard);
        let eval = model.evaluate_until(&task, &prompt, &enc, 2, &mut on_batch, &stop);
        drop(on_batch);
        let (stop, mut heard_p) = (AtomicBool::new(false), Vec::new());
        let mut on_batch = stop_at(n, &stop, &mut heard_p);
        let pred = model.predict_until(&task, &prompt, &enc, 2, &mut on_batch, &stop);
        drop(on_batch);
        assert_eq!(heard, [2, 4, 5][..n], "rows heard, stop at batch {n}");
        assert_eq!(heard_p, heard);
        if n < 3 {
            let want = format!("interrupted after {} of 5 rows", 2 * n);
            for e in [eval.map(|_| ()), pred.map(|_| ())] {
                let e = e.expect_err("a stop while batches remain");
                assert!(matches!(e, Error::Interrupted(_)), "{e:?}");
                assert!(e.to_string().contains(&want), "{e}");
            }
        } else {
            assert_eq!(eval.expect("the stop came after the last batch"), whole);
            assert_eq!(pred.expect("the stop came after the last batch"), whole.1);
        }
    }
}

/// Encoding asks after each chunk of 256 rows: of 600 rows (3 chunks) a stop after the
/// first ends it; one after the last leaves every row, as `encode` gives them.
#[test]
fn encode_stops_between_chunks_of_rows() {
    let model = Model::open(fixture("bert_nohead"), Device::Cpu).unwrap();
    let (task, _) = cls(&model);
    let data = data(600);
    let whole = model.encode(&task, &data).unwrap();
    let (stop, mut heard) = (AtomicBool::new(false), Vec::new());
    let e = model.encode_until(&task, &data, &mut stop_at(1, &stop, &mut heard), &stop);
    let e = e.map(|_| ()).expect_err("a stop after the first chunk");
    assert!(matches!(e, Error::Interrupted(_)), "{e:?}");
    assert!(
        e.to_string().contains("interrupted after 256 of 600 rows"),
        "{e}"
    );
    assert_eq!(heard, [256]);
    let (stop, mut heard) = (AtomicBool::new(false), Vec::new());
    let enc = model.encode_until(&task, &data, &mut stop_at(3, &stop, &mut heard), &stop);
    assert_eq!(
        enc.expect("the stop came after the last chunk").rows,
        whole.rows
    );
    assert_eq!(heard, [256, 512, 600]);
}

/// Generation asks before each token after the first: a stop after the second of four
/// tokens ends it; without one it hears 1, 2 and 3 and gives what `generate` gives.
#[test]
fn generate_stops_between_tokens() {
    let model = Model::open(fixture("bloom"), Device::Cpu).unwrap();
    let opts = TaskOptions {
        free_targets: true,
        ..TaskOptions::default()
    };
    let task = model.task(&opts, None, 4).unwrap();
    let init = PromptInit::Text("once upon".into());
    let prompt = model.new_prompt(&task, 4, &init, 0).unwrap();
    let texts = [
        "a story".to_string(),
        "the end of a longer story".to_string(),
    ];
    let place = PromptPlacement::BeforeTokens;
    let whole = model.generate(&task, &prompt, &texts, 4, place).unwrap();
    assert!(
        whole.iter().any(|g| g.ids.len() == 4),
        "no row made 4 tokens"
    );
    let (stop, mut heard) = (AtomicBool::new(false), Vec::new());
    let mut on_token = stop_at(2, &stop, &mut heard);
    let e = model.generate_until(&task, &prompt, &texts, 4, place, &mut on_token, &stop);
    drop(on_token);
    let e = e.map(|_| ()).expect_err("a stop while tokens remain");
    assert!(matches!(e, Error::Interrupted(_)), "{e:?}");
    assert!(
        e.to_string().contains("interrupted after 2 of 4 tokens"),
        "{e}"
    );
    assert_eq!(heard, [1, 2]);
    let (never, mut heard) = (AtomicBool::new(false), Vec::new());
    let mut on_token = |done| heard.push(done);
    let got = model.generate_until(&task, &prompt, &texts, 4, place, &mut on_token, &never);
    assert_eq!(got.unwrap(), whole);
    assert_eq!(heard, [1, 2, 3]);
    // 66 texts run in batches of 64 (one batch of all held a KV cache for each; hostile
    // pass 19): each row still gives what it gives alone
    let many: Vec<String> = (0..66)
        .map(|i| format!("story number {i} of {}", 66 - i))
        .collect();
    let all = model.generate(&task, &prompt, &many, 3, place).unwrap();
    assert_eq!(all.len(), 66);
    for i in [0, 63, 64, 65] {
        let alone = model
            .generate(&task, &prompt, &many[i..=i], 3, place)
            .unwrap();
        assert_eq!(all[i].ids, alone[0].ids, "text {i}");
    }
}
