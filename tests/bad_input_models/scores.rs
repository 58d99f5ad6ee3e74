//! Scores that are not finite: never a label, and a stop naming the row's file and line.

use super::{copy_prompt, pet_args, run_bounded, s};
use crate::common::{self, ScratchDir};

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
    let model = dir.bert_overflowing_on("model", "tension");
    let dev = dir.path().join("dev.jsonl");
    std::fs::write(&dev, common::OVERFLOW_ROWS).expect("dev");
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

/// A loss that is not finite at the first step, before any update, blamed the learning rate
/// ("lower --lr"), which had not acted yet: it names the frozen model's numbers on the initial
/// prompt (hostile pass 33, F1).
#[test]
fn a_loss_not_finite_before_any_update_blames_the_model_not_the_rate() {
    let dir = ScratchDir::new("first_loss_overflow");
    let model = dir.bert_overflowing_on("model", "tension");
    let train = dir.path().join("train.jsonl");
    std::fs::write(&train, common::OVERFLOW_ROWS).expect("train");
    let mut args = common::tiny_pet_train_args(&model, &dir.path().join("out"));
    let at = args.iter().position(|a| a == "--train").expect("--train") + 1;
    args[at] = s(&train).to_string();
    let out = run_bounded(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        "at step 1, so the run stops",
        "no update has been made yet",
        "check the model's weights",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!err.contains("lower --lr"), "{err}");
}
