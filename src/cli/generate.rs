//! `softprompt generate`: greedy generation behind a saved prompt on a decoder-only model,
//! with the KV cache, the texts in left-padded batches of 64 (the prompt directly before each
//! row's first real token, so a row gives the tokens it gives alone).

use super::common::{fail, DeviceArgs, TaskArgs};
use super::eval::load_checked;
use serde_json::json;
use softprompt::{Error, Model, PromptPlacement, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// prompt folder (from `softprompt train --task causal`, or PEFT's with the task flags)
    #[arg(long)]
    prompt: PathBuf,
    /// an input text, filled into the prompt's template (repeat for a batch)
    #[arg(long, required = true)]
    text: Vec<String>,
    /// model folder (default: the one recorded with the prompt)
    #[arg(long)]
    model: Option<PathBuf>,
    /// tokens to generate per text at most (a text stops at the end-of-sequence token, or at
    /// the pad token for a prompt trained with --target-end pad)
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// tokens: the prompt right before each text's tokens (each row as alone); peft: before
    /// the left padding, as PEFT's generate puts it (PEFT issue #1093)
    #[arg(long, default_value = "tokens")]
    prompt_placement: String,
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> i32 {
    match generate(&args) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

fn generate(a: &Args) -> Result<()> {
    // generation is greedy, bounded by --max-new-tokens, and writes free text that no label
    // scores: these would be ignored (--free-targets is what generate does anyway)
    let t = &a.task;
    let label = "generate writes free text and scores no label: leave it out";
    let unread = [
        (
            "--decode",
            t.decode.is_some(),
            "generate is always greedy: leave it out",
        ),
        (
            "--max-target-len",
            t.max_target_len.is_some(),
            "generate stops after --max-new-tokens: use that instead",
        ),
        ("--labels", t.labels.is_some(), label),
        ("--verbalizer", t.verbalizer.is_some(), label),
    ];
    if let Some((flag, _, why)) = unread.iter().find(|(_, given, _)| *given) {
        return Err(Error::arg(*flag, *why));
    }
    // a folder without task.json (PEFT's) has no labels, which generate never reads: its
    // task has free targets, else it would ask for the label flags refused above
    let mut task = a.task.clone();
    task.free_targets |= !a.prompt.join("task.json").is_file();
    // before the task: a BERT folder of PEFT's was told to leave out --free-targets, set above
    // (review 27, F2)
    let decoder_only = |m: &Model| match m.check_generates() {
        Err(Error::Unsupported(why)) => Err(Error::arg("--prompt", why)),
        checked => checked,
    };
    let l = load_checked(
        &a.device,
        &a.prompt,
        a.model.as_deref(),
        &task,
        None,
        decoder_only,
    )?;
    let placement = a.prompt_placement.parse::<PromptPlacement>()?;
    let out = l
        .model
        .generate(&l.task, &l.prompt, &a.text, a.max_new_tokens, placement)
        .map_err(|e| match e {
            Error::Unsupported(why) => Error::arg("--prompt", why),
            e => e,
        })?;
    let cut = out.iter().filter(|g| g.truncated).count();
    let to = format!("{} tokens", l.task.spec().max_len);
    super::predict::warn_truncated(cut, out.len(), &to);
    for (text, g) in a.text.iter().zip(out) {
        let mut line = json!({"text": text, "output": g.text, "ids": g.ids, "logprob": g.logprob});
        if g.truncated {
            line["truncated"] = json!(true);
        }
        outln!("{line}");
    }
    Ok(())
}
