//! Prompt tuning by hand with the library, without the `Trainer`: load a model and its
//! tokenizer, make a prompt, then loop over batches (loss and prompt gradient, optimizer
//! step), evaluate, and save the prompt where `softprompt eval` and PEFT can read it.
//!
//!     cargo run --release --example prompt_tuning
//!         # PET on the committed fixture BERT, with a few generated sentences
//!     cargo run --release --example prompt_tuning -- assets/all-MiniLM-L6-v2 assets/sentiment_en 60
//!         # cls (mean pooling + linear head) on the real data, 60 steps
//!
//! Arguments: MODEL_DIR [DATA_DIR with train.jsonl and dev.jsonl] [STEPS].

use softprompt::backend::traits::*;
use softprompt::backend::DType;
use softprompt::prompt::PromptInit;
use softprompt::rng::Rng;
use softprompt::train::checkpoint::save_prompt_dir;
use softprompt::train::data::{epoch_plan, DataSpec, Dataset};
use softprompt::train::optim::{OptimConfig, Optimizer};
use softprompt::train::{
    evaluate, optimizer_shapes, optimizer_step, Grads, Model, Params, Task, TaskKind, TaskSpec,
};
use softprompt::{models::Recompute, CpuBackend, Result};
use std::path::{Path, PathBuf};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// A few sentences in words every fixture vocabulary knows.
fn tiny_data(dev: bool) -> Dataset {
    let (pos, neg) = (
        ["great", "good", "funny", "lovely"],
        ["bad", "terrible", "boring", "dull"],
    );
    let subjects = if dev {
        ["music", "comedy"]
    } else {
        ["movie", "film"]
    };
    let mut text = String::new();
    for s in subjects {
        for (p, n) in pos.iter().zip(neg) {
            for (word, label) in [(p, "positive"), (&n, "negative")] {
                text += &format!(
                    "{{\"text\": \"the {s} was really {word}.\", \"label\": \"{label}\"}}\n"
                );
            }
        }
    }
    Dataset::parse(
        Path::new(if dev { "dev.jsonl" } else { "train.jsonl" }),
        &text,
        &DataSpec::default(),
    )
    .expect("valid rows")
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_dir = PathBuf::from(
        args.first()
            .map_or("tests/fixtures/bert_mlm", |s| s.as_str()),
    );
    let (train, dev) = match args.get(1) {
        Some(d) => (
            Dataset::load(&Path::new(d).join("train.jsonl"), &DataSpec::default())?,
            Dataset::load(&Path::new(d).join("dev.jsonl"), &DataSpec::default())?,
        ),
        None => (tiny_data(false), tiny_data(true)),
    };
    let steps: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(40);

    // 1. the frozen model and its tokenizer, on the CPU backend
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &model_dir)?;

    // 2. the task: PET when the model has a masked-LM head, else pooling + a linear head
    let p = 8;
    let mut spec = if model.has_mlm_head() {
        let mut s = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
        s.label_words = vec!["bad".into(), "great".into()];
        s
    } else {
        TaskSpec::new(TaskKind::Cls, &["negative", "positive"])
    };
    spec.max_len = spec.max_len.min(model.max_tokens(p).unwrap_or(usize::MAX));
    let task = Task::new(spec, &model)?;
    let (train, dev) = (
        task.encode(&model.tokenizer, &train)?,
        task.encode(&model.tokenizer, &dev)?,
    );

    // 3. a prompt of P rows initialised from text, and the cls head if the task has one
    let table = model.init_prompt(
        &be,
        p,
        &PromptInit::Text("is this review positive or negative?".into()),
        &mut Rng::new(1),
    )?;
    let mut params = Params {
        prompt: be.upload(DType::F32, &table.data)?,
        p,
        d: table.d,
        head: task.new_head(table.d).map(|h| h.upload(&be)).transpose()?,
    };
    let mut opt = Optimizer::new(
        &be,
        OptimConfig::adamw(0.05, 0.0),
        &optimizer_shapes(&params),
    )?;

    // 4. the loop: deterministic bucketed batches, loss + prompt gradient, clipped update
    let mut rng = Rng::new(0);
    let mut plan = Vec::new();
    for step in 1..=steps {
        if plan.is_empty() {
            plan = epoch_plan(&train.lens(), 16, 8, &mut rng);
            plan.reverse(); // pop() from the end = the plan's order
        }
        let batch = task.batch(&train, &plan.pop().unwrap_or_default())?;
        let mut grads = Grads::zeros(&be, &params)?;
        let loss = task.loss_and_grad(&be, &model, &params, &mut grads, &batch, Recompute::None)?;
        let (lr, norm) = optimizer_step(&be, &mut opt, &mut params, grads, Some(1.0))?;
        if step % 10 == 0 || step == 1 {
            let (m, _) = evaluate(&be, &model, &task, &params, &dev, 64)?;
            println!("step {step:>4}  loss {loss:.4}  grad norm {norm:.3}  lr {lr}  dev accuracy {:.3} macro-F1 {:.3}", m.accuracy, m.macro_f1);
        }
    }

    // 5. save in PEFT's layout, with task.json (and head.safetensors for cls)
    let out = std::env::temp_dir().join("softprompt_example_prompt");
    let mut table = table;
    table.data = be.download(&params.prompt)?;
    let info = model.adapter_info(task.spec.kind.peft_task_type());
    let head = params.head.as_ref().map(|h| h.download(&be)).transpose()?;
    save_prompt_dir(
        &out,
        &table,
        head.as_ref(),
        &task.spec,
        &model.dir,
        &info,
        serde_json::json!({"step": steps}),
    )?;
    println!(
        "saved to {}: try `softprompt eval --prompt {} --data <file.jsonl>`",
        out.display(),
        out.display()
    );
    Ok(())
}
