use softprompt::internals::config::ModelConfig;
use softprompt::internals::weights::{WeightSource, WeightStore};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder, or a PEFT prompt-tuning adapter folder
    path: PathBuf,
    /// List every tensor
    #[arg(long)]
    tensors: bool,
}

/// Prints what the engine makes of a model folder (or a saved prompt): the parsed config,
/// the heads it found, the parameter count, and optionally every tensor.
pub fn run(args: Args) -> i32 {
    match inspect(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn inspect(args: &Args) -> softprompt::Result<()> {
    if args
        .path
        .join(softprompt::internals::prompt::ADAPTER_CONFIG)
        .exists()
    {
        // the whole folder as eval reads it (task.json and head too), and a prefix's
        // placement checked: an unknown one was printed as if it were one
        let saved = softprompt::internals::train::checkpoint::load_prompt_dir(&args.path)?;
        if let Some(warning) = &saved.warning {
            eprintln!("warning: {warning}");
        }
        let p = saved.prompt;
        if let Some(cfg) = &p.layout.config {
            let path = args
                .path
                .join(softprompt::internals::prompt::ADAPTER_CONFIG);
            softprompt::internals::train::ptuning::adapter_prefix_spec(cfg, p.p, &path)?;
        }
        println!(
            "prompt adapter {}: P = {}, d = {}, init {}, num_transformer_submodules {}",
            args.path.display(),
            p.p,
            p.d,
            p.init,
            p.layout.num_transformer_submodules
        );
        let norm = (p.data.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / p.p as f64).sqrt();
        println!("mean row norm {norm:.4}");
        if let Some(cfg) = &p.layout.config {
            if let Some(line) = prefix_line(cfg) {
                println!("{line}");
            }
        }
        return Ok(());
    }
    let cfg = ModelConfig::load(&args.path)?;
    let store = WeightStore::open(&args.path)?;
    println!("{}: {:#?}", args.path.display(), cfg);
    let mut params = 0usize;
    for name in store.names() {
        if let Some((dtype, shape)) = store.info(name) {
            params += shape.iter().product::<usize>();
            if args.tensors {
                println!("  {name:<72} {dtype:?} {shape:?}");
            }
        }
    }
    let heads = match &cfg {
        ModelConfig::Bert(_) => {
            let mlm = store.contains("cls.predictions.transform.dense.weight")
                || store.contains("cls.predictions.bias");
            if mlm {
                "masked-LM head (tasks mlm, pet, cls)"
            } else {
                "no masked-LM head (task cls)"
            }
        }
        ModelConfig::T5(_) => {
            if store.contains("lm_head.weight") {
                "untied lm_head (task seq2seq)"
            } else {
                "LM head tied to shared.weight (task seq2seq)"
            }
        }
        ModelConfig::Bloom(_) | ModelConfig::Llama(_) => {
            if store.contains("lm_head.weight") {
                "untied lm_head (task causal)"
            } else {
                "LM head tied to the input embeddings (task causal)"
            }
        }
    };
    println!("{params} float parameters; {heads}");
    let tokenizer = args.path.join("tokenizer.json");
    // inspect describes what is there (exit 0), but train, eval and predict need a tokenizer
    if std::fs::symlink_metadata(&tokenizer).is_err() {
        println!(
            "tokenizer: none found (looked for {}; train, eval and predict need one)",
            tokenizer.display()
        );
        return Ok(());
    }
    match softprompt::internals::tokenizer::Tokenizer::load(&args.path) {
        Ok(t) => println!(
            "tokenizer.json: {} tokens (padding and truncation switched off)",
            t.vocab_size()
        ),
        Err(e) => println!("tokenizer: {e}"),
    }
    Ok(())
}

/// A prefix adapter's method, placement and whether PEFT computes what it was trained for:
/// only PEFT's placement does on T5; decoder-only models read a block per layer either way;
/// PEFT (with transformers 5) refuses prefix tuning on BERT.
fn prefix_line(cfg: &serde_json::Value) -> Option<String> {
    if cfg.get("peft_type")?.as_str()? != "PREFIX_TUNING" {
        return None;
    }
    let placement = match cfg.get("prefix_placement").and_then(|v| v.as_str()) {
        Some(p) => p.to_string(),
        None => "peft (written by PEFT)".to_string(),
    };
    let n = |k: &str| cfg.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let projection = match cfg.get("prefix_projection").and_then(|v| v.as_bool()) {
        Some(true) => format!(
            ", trained through a projection (hidden {}; the table is its output)",
            n("encoder_hidden_size")
        ),
        _ => String::new(),
    };
    let task = cfg.get("task_type").and_then(|v| v.as_str()).unwrap_or("");
    let peft = match (placement.starts_with("peft"), task) {
        (true, _) => "for PEFT: PEFT computes the same".to_string(),
        (false, "CAUSAL_LM") => {
            "for PEFT: PEFT computes the same (a decoder-only model reads a block per layer \
             under either placement)"
                .to_string()
        }
        (false, "SEQ_2_SEQ_LM") => "not for PEFT: PEFT would read these blocks elsewhere \
             (decoder self-attention only, block 2l mod N); only this engine computes it"
            .to_string(),
        (false, _) => "not for PEFT: PEFT (with transformers 5) refuses prefix tuning on this \
             model; only this engine computes it"
            .to_string(),
    };
    Some(format!(
        "prefix tuning, placement {placement}: {} blocks of keys and values {} wide{projection}; {peft}",
        n("num_layers"),
        n("token_dim")
    ))
}
