//! Training with P-tuning (`--method p-tuning`): the prompt is the output of PEFT's prompt
//! encoder (MLP or LSTM), whose tensors are trained. The loss goes down with both encoders, a
//! stopped run resumes bit for bit, the exported folder (PEFT's P_TUNING layout: the
//! encoder's output, and the encoder beside it) evaluates to the accuracy the run reported,
//! and bad settings are errors naming their flag.

use softprompt::internals::prompt_encoder::{EncoderConfig, PromptEncoder};
use softprompt::internals::weights::TensorFile;
use softprompt::prelude::*;
use std::path::Path;

mod common;
use common::sample_run::{
    assert_refused_before_writing, assert_resume_refused, assert_resumes_bit_identically, file,
    mean, run_on_sample, sample, softprompt,
};
use common::ScratchDir;

fn ptuning(kind: EncoderKind) -> TrainConfig {
    TrainConfig {
        method: Method::PTuning(PTuning {
            kind,
            hidden: Some(16),
            num_layers: 2,
        }),
        prompt_len: 4,
        batch_size: 4,
        max_steps: Some(12),
        eval_every: 4,
        save_every: 5,
        log_every: 2,
        optim: OptimConfig {
            lr: 0.01,
            ..OptimConfig::defaults(OptimKind::AdamW)
        },
        ..TrainConfig::default()
    }
}

/// Over two epochs of 6 batches, the second epoch's mean loss is well below the first's, with
/// either encoder; the exported adapter is PEFT's P_TUNING layout, and its rows are exactly
/// the output of the encoder saved beside it.
#[test]
fn loss_goes_down_and_the_export_is_the_encoders_output() {
    for (kind, name) in [(EncoderKind::Mlp, "MLP"), (EncoderKind::Lstm, "LSTM")] {
        let dir = ScratchDir::new(&format!("pt_down_{name}"));
        let out = dir.path();
        let (summary, losses) = run_on_sample("bert_mlm", out, &ptuning(kind), None).unwrap();
        assert_eq!((summary.steps, losses.len()), (12, 12));
        let (first, second) = (mean(&losses[..6]), mean(&losses[6..]));
        assert!(second < 0.75 * first, "{name}: {losses:?}");

        let cfg: serde_json::Value =
            serde_json::from_slice(&file(out, "adapter_config.json")).unwrap();
        assert_eq!(cfg["peft_type"], "P_TUNING");
        assert_eq!(cfg["encoder_reparameterization_type"], name);
        assert_eq!(
            (
                cfg["encoder_hidden_size"].as_u64(),
                cfg["num_virtual_tokens"].as_u64()
            ),
            (Some(16), Some(4))
        );
        assert!(cfg.get("prompt_tuning_init").is_none(), "{cfg}");

        let adapter = TensorFile::read(&out.join("adapter_model.safetensors")).unwrap();
        let rows = &adapter.floats["prompt_embeddings"];
        assert_eq!(rows.shape, [4, 48]);
        let enc_file = TensorFile::read(&out.join("prompt_encoder.safetensors")).unwrap();
        let ecfg = EncoderConfig {
            kind,
            p: 4,
            d: 48,
            hidden: 16,
            lstm_layers: 2,
        };
        let enc = PromptEncoder::from_tensors(ecfg, |n| {
            enc_file
                .floats
                .get(n)
                .map(|t| (t.shape.as_slice(), t.data.as_slice()))
        })
        .unwrap();
        assert_eq!(enc.forward().unwrap().0, rows.data, "{name}");
    }
}

/// A run stopped at step 7 of 12 and resumed ends where the uninterrupted run ends, bit for
/// bit: the adapter, the encoder, and the losses of the steps after the stop (the LSTM
/// encoder, whose state is the largest).
#[test]
fn stopped_run_resumes_bit_identically() {
    let dir = ScratchDir::new("pt_stop");
    let (whole, parts) = (dir.path().join("whole"), dir.path().join("parts"));
    let cfg = ptuning(EncoderKind::Lstm);
    let files = [
        "adapter_model.safetensors",
        "prompt_encoder.safetensors",
        "adapter_config.json",
    ];
    let resume = assert_resumes_bit_identically("bert_mlm", (&whole, &parts), &cfg, &files);
    // other encoder settings are refused, naming the setting
    let other = TrainConfig {
        method: Method::PTuning(PTuning {
            kind: EncoderKind::Lstm,
            hidden: Some(8),
            num_layers: 2,
        }),
        ..resume
    };
    assert_resume_refused("bert_mlm", &parts, &other, "encoder_hidden_size");
    // and so is prompt tuning over a P-tuning checkpoint
    let prompt = TrainConfig {
        method: Method::Prompt,
        ..other
    };
    assert_resume_refused("bert_mlm", &parts, &prompt, "method");
}

/// The exported folder, read by `softprompt eval` as a prompt, scores the training rows as the
/// run scored them with its kept prompt (the test split of `run`).
#[test]
fn exported_folder_evaluates_as_the_run_reported() {
    let dir = ScratchDir::new("pt_eval");
    let out = dir.path();
    let cfg = TrainConfig {
        max_steps: Some(4),
        eval_every: 2,
        ..ptuning(EncoderKind::Mlp)
    };
    let (summary, _) = run_on_sample("bert_mlm", out, &cfg, None).unwrap();
    let test = summary.test.unwrap();
    let s = |p: &Path| p.display().to_string();
    let o = softprompt(&[
        "eval",
        "--prompt",
        &s(out),
        "--data",
        &s(&sample("train")),
        "--json",
    ]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["accuracy"].as_f64(), Some(test.accuracy), "{v}");
    assert_eq!(v["macro_f1"].as_f64(), Some(test.macro_f1), "{v}");
    assert_eq!(v["examples"].as_u64(), Some(24));
}

/// Bad P-tuning settings fail before anything is written, naming the flag (and the bound).
#[test]
fn bad_settings_name_their_flag() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--method", "p-tuning", "--encoder-hidden-size", "0"][..],
            "--encoder-hidden-size",
        ),
        (
            &[
                "--method",
                "p-tuning",
                "--encoder-reparameterization",
                "lstm",
                "--encoder-num-layers",
                "0",
            ][..],
            "--encoder-num-layers",
        ),
        // only memory bounded it: 100000 layers took minutes a step
        (
            &[
                "--method",
                "p-tuning",
                "--encoder-reparameterization",
                "lstm",
                "--encoder-num-layers",
                "100000",
            ][..],
            "--encoder-num-layers: is 100000: expected 1 to 64",
        ),
        (
            &[
                "--method",
                "p-tuning",
                "--encoder-reparameterization",
                "gru",
            ][..],
            "--encoder-reparameterization",
        ),
        (&["--encoder-hidden-size", "8"][..], "--encoder-hidden-size"),
        (
            &["--method", "prompt", "--encoder-num-layers", "1"][..],
            "--encoder-num-layers",
        ),
        (&["--method", "prefix-tuning"][..], "--method"),
        (
            &[
                "--method",
                "p-tuning",
                "--init",
                "text",
                "--init-text",
                "good",
            ][..],
            "--init",
        ),
    ];
    assert_refused_before_writing("pt_bad", cases);
}

/// An LSTM of hidden size 2^62 overflowed the u128 parameter count (4 · h · 2h per layer) and
/// the shapes (4 · h wrapped to 0) before the memory check could refuse it: sizes past i32
/// are refused first, naming the flag.
#[test]
fn encoder_sizes_past_i32_are_refused_before_any_product() {
    use softprompt::internals::rng::Rng;
    let cfg = EncoderConfig {
        kind: EncoderKind::Lstm,
        p: 5,
        d: 7,
        hidden: 1 << 62,
        lstm_layers: 2,
    };
    let msg = match PromptEncoder::init(cfg, &mut Rng::new(0)) {
        Ok(_) => panic!("an LSTM of hidden size 2^62 was built"),
        Err(e) => e.to_string(),
    };
    for want in [
        "--encoder-hidden-size",
        "is 4611686018427387904: more than this engine supports (2147483647)",
    ] {
        assert!(msg.contains(want), "{msg}");
    }
}
