//! A multi-task step is one pass of the model (#17 item 2): prompt-tuning and prefix-tuning
//! jobs share one batch on every family (jobs of a few rows each, whose padding costs less
//! than a pass: `by_prompt_len` keeps them in one run), one forward and one backward whose gradients are the
//! prompt table's and the prefix stack's at once (`Bert::encoder_bwd_split`,
//! `T5::train_step_parts`, `Decoder::train_step_parts`). Through the kernels (the `emu`
//! device, float32 build) the launch counts (`internals::kernel_launches`) show it: a mixed
//! step of a prompt job and a prefix job launches `attention_bwd_dkdv` once per attention
//! layer (BERT's and the decoders' layers; T5's encoder self-attention, and its decoder's
//! self- and cross-attention), as a prompt job's step alone does; a second pass for the
//! prefix jobs would launch more. Each job's loss and gradient equal its step alone within
//! 1e-5 relative there too.
#![cfg(feature = "emu")]

use softprompt::internals::kernel_launches;
use softprompt::prelude::*;

mod common;
use common::label_jobs::{check_step_mixed, interleave, label_task};
use common::{fixture, ScratchDir};

/// `attention_bwd_dkdv` launches so far on `model`'s device (either head-dim entry point).
fn dkdv_launches(model: &Model) -> usize {
    (kernel_launches(model).iter())
        .filter(|(name, _)| name.starts_with("attention_bwd_dkdv"))
        .map(|(_, n)| n)
        .sum()
}

/// The attention ops of one backward of the fixture `name` (its config.json): one per layer,
/// T5's decoder layers two (self- and cross-attention).
fn attention_layers(name: &str) -> usize {
    let text = std::fs::read_to_string(fixture(name).join("config.json")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    let get = |key: &str| cfg[key].as_u64().map(|n| n as usize);
    match get("num_layers") {
        Some(enc) => enc + 2 * get("num_decoder_layers").unwrap_or(enc),
        None => get("num_hidden_layers").or(get("n_layer")).unwrap(),
    }
}

/// On `name` under the emulator: a prompt job of 3 rows and prefix jobs of 2 and 5 rows
/// (under `placement`, `width` wide) in one mixed step: one backward's `attention_bwd_dkdv`
/// launches (once per attention layer, as the prompt job's step alone, which on T5 skips the
/// decoder's first self-attention), and each job's numbers its step's alone.
fn one_pass(name: &str, width: usize, placement: &str) {
    let device = Device::parse("emu", "f32").unwrap();
    let model = Model::open(fixture(name), device).unwrap();
    let bert = name.starts_with("bert");
    let dir = ScratchDir::new(&format!("onepass_{name}_{placement}"));
    let mut jobs = Vec::new();
    for (i, (prefix, rows, three)) in [(false, 3, true), (true, 2, false), (true, 5, true)]
        .into_iter()
        .enumerate()
    {
        let (t, e) = label_task(&model, bert, rows, three);
        let seed = 60 + i as u64;
        let p = match prefix {
            true => {
                let at = dir.path().join(format!("p{i}"));
                common::prefix_prompt(&at, rows, width, placement, seed)
            }
            false => (model.new_prompt(&t, rows, &PromptInit::Random { std: 0.5 }, seed)).unwrap(),
        };
        jobs.push((t, p, e));
    }
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p, _)| (t, p)).collect();
    let rows = interleave(&jobs.iter().map(|(_, _, e)| e).collect::<Vec<_>>());
    let before = dkdv_launches(&model);
    model.step_mixed(&refs, &rows).unwrap();
    let mixed = dkdv_launches(&model) - before;
    let (task, prompt, enc) = &jobs[0];
    let before = dkdv_launches(&model);
    model.step(task, prompt, &enc.rows).unwrap();
    let alone = dkdv_launches(&model) - before;
    let what = format!("{name} {placement}: attention_bwd_dkdv launches of a mixed step");
    assert_eq!(mixed, attention_layers(name), "{what}");
    // T5's prompt job alone runs no self-attention backward in the decoder's first block
    // (its input is the labels' frozen embeddings); the prefix jobs' decoder prefix needs it
    let first_block = name.starts_with("t5") as usize;
    assert_eq!(
        mixed,
        alone + first_block,
        "{what} against the prompt job's step alone"
    );
    let worst = check_step_mixed(&model, &jobs);
    eprintln!("{name} {placement}: {mixed} launches, worst rel err {worst:.2e}");
}

#[test]
fn bert_prompt_and_prefix_jobs_step_in_one_pass() {
    one_pass("bert_mlm", 2 * 2 * 48, "papers");
}

#[test]
fn t5_prompt_and_prefix_jobs_step_in_one_pass() {
    one_pass("t5_v1_0", 4 * 2 * 32, "papers");
    one_pass("t5_v1_0", 2 * 2 * 32, "peft");
}

#[test]
fn decoder_prompt_and_prefix_jobs_step_in_one_pass() {
    one_pass("llama", 2 * 2 * 2 * 12, "peft");
    one_pass("bloom", 2 * 2 * 48, "peft");
}
