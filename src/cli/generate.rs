//! `softprompt generate`: greedy generation behind a saved prompt on a decoder-only model,
//! with the KV cache, the texts in one left-padded batch (the prompt directly before each
//! row's first real token, so a row gives the tokens it gives alone).

use super::common::{fail, DeviceArgs, TaskArgs};
use super::eval::load;
use serde_json::json;
use softprompt::device::{with_backend, WithBackend};
use softprompt::models::decoder::{GenerateOptions, PromptPlacement};
use softprompt::train::data::{Dataset, Example};
use softprompt::{Backend, Error, Result};
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
    /// tokens to generate per text at most (a text stops at the end-of-sequence token)
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
    match args
        .device
        .setup()
        .and_then(|kind| with_backend(kind, Job(&args)))
    {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

struct Job<'a>(&'a Args);

impl WithBackend for Job<'_> {
    type Output = ();
    fn run<B: Backend>(self, be: B) -> Result<()> {
        generate(&be, self.0)
    }
}

fn generate<B: Backend>(be: &B, a: &Args) -> Result<()> {
    let l = load(be, &a.prompt, a.model.as_deref(), &a.task, None)?;
    let decoder = l.model.net.decoder().ok_or_else(|| {
        Error::arg(
            "--prompt",
            format!(
                "generate needs a decoder-only model (BLOOM, Llama, Mistral, Qwen2), not {}",
                l.model.arch_name()
            ),
        )
    })?;
    let data = Dataset {
        path: PathBuf::from("--text"),
        examples: (a.text.iter().enumerate())
            .map(|(i, t)| Example {
                text: t.clone(),
                label: None,
                line: i + 1,
            })
            .collect(),
    };
    let enc = l.task.encode(&l.model.tokenizer, &data)?;
    let rows: Vec<Vec<i32>> = enc.rows.iter().map(|r| r.ids.clone()).collect();
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        stop: decoder
            .cfg
            .eos_token_ids
            .iter()
            .map(|&e| e as i32)
            .collect(),
        placement: a.prompt_placement.parse::<PromptPlacement>()?,
        keep_logits: false,
    };
    let g = decoder.generate(be, &l.params.prompt, l.params.p, &rows, &opts)?;
    for ((text, ids), logprob) in a.text.iter().zip(&g.ids).zip(&g.logprob) {
        let output = l.model.tokenizer.decode(ids, true)?;
        println!(
            "{}",
            json!({"text": text, "output": output, "ids": ids, "logprob": logprob})
        );
    }
    Ok(())
}
