//! Your own training loop over softprompt's step: loss and gradients per batch, the update in
//! your hands, then evaluation and a PEFT adapter folder. With no arguments: the committed
//! test BERT and sample sentences.
//!     cargo run --release --example custom_loop [MODEL_DIR TRAIN_FILE DEV_FILE]
use softprompt::prelude::*;

fn main() -> Result<()> {
    let arg = |i: usize, default: &str| std::env::args().nth(i).unwrap_or(default.into());
    let model = Model::open(arg(1, "tests/fixtures/bert_mlm"), Device::Cpu)?;
    let load = |path: String| Dataset::load(path.as_ref(), &DataSpec::default());
    let train = load(arg(2, "tests/bad_inputs/data/train.jsonl"))?;
    let dev = load(arg(3, "tests/bad_inputs/data/dev.jsonl"))?;
    let task = model.task(&TaskOptions::default(), Some(&train), 8)?;
    let init = PromptInit::SampleVocab { from_first: None };
    let mut prompt = model.new_prompt(&task, 8, &init, 0)?;
    let (rows, dev) = (
        model.encode(&task, &train)?.rows,
        model.encode(&task, &dev)?,
    );
    let mut velocity = vec![0.0f32; prompt.num_params()];
    for (step, batch) in rows.chunks(8).cycle().take(30).enumerate() {
        let out = model.step(&task, &prompt, batch)?;
        // the prompt's rows (and a cls head's weights) with their gradients, in one order
        for ((p, v), g) in prompt.params_mut().zip(&mut velocity).zip(out.grads()) {
            *v = 0.9 * *v + g; // SGD with momentum
            *p -= 0.1 * *v;
        }
        if step % 10 == 0 {
            println!("step {step}: loss {:.4}", out.loss);
        }
    }
    let (m, _) = model.evaluate(&task, &prompt, &dev, 64)?;
    println!("dev accuracy {:.4} macro-F1 {:.4}", m.accuracy, m.macro_f1);
    let out = std::env::temp_dir().join("softprompt_custom_loop");
    // a second run replaces the first run's prompt; PEFT's PeftModel.from_pretrained reads it
    model.save_prompt(&out, &prompt, &task, SaveOptions { overwrite: true })?;
    println!("saved to {}", out.display());
    Ok(())
}
