use softprompt::internals::config::ModelConfig;
use softprompt::internals::weights::{WeightSource, WeightStore};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// a Hugging Face model folder, a prompt folder (any method: prompt tuning, P-tuning,
    /// prefix tuning; softprompt's or PEFT's) or a multi-task run's --out
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
            errln!("error: {e}");
            2
        }
    }
}

fn inspect(args: &Args) -> softprompt::Result<()> {
    use softprompt::internals::prompt::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
    let has = |f: &str| args.path.join(f).exists();
    // an adapter without its config (or older PEFT's adapter_model.bin) was read as a model
    // folder: "config.json: No such file"; the prompt loader says what is missing
    let adapter = [ADAPTER_WEIGHTS, "adapter_model.bin"]
        .iter()
        .any(|f| has(f));
    if has(ADAPTER_CONFIG) || (adapter && !has("config.json")) {
        return inspect_prompt(args);
    }
    // a multi-task run's --out folder was reported as "config.json: No such file"
    if !has("config.json") {
        if let Some((tasks, run)) = task_folders(&args.path) {
            // softprompt writes task.json beside each task's adapter, PEFT none
            let what = match run {
                true => "the output of a multi-task run (a prompt folder per task)",
                false => "adapters PEFT's save_pretrained saved together (a folder per adapter)",
            };
            outln!(
                "{}: {what}; inspect each one's folder: {}",
                args.path.display(),
                tasks.join(", ")
            );
            return Ok(());
        }
    }
    inspect_model(args)
}

/// The prompt folders right under `dir` (a multi-task run writes one per task; PEFT's
/// save_pretrained one per adapter but the default), sorted, and whether any holds a
/// task.json (a run's); None when there are none.
fn task_folders(dir: &std::path::Path) -> Option<(Vec<String>, bool)> {
    let mut tasks: Vec<std::path::PathBuf> = (std::fs::read_dir(dir).ok()?.flatten())
        .map(|e| e.path())
        .filter(|p| {
            p.join(softprompt::internals::prompt::ADAPTER_CONFIG)
                .is_file()
        })
        .collect();
    tasks.sort();
    let run = tasks.iter().any(|p| p.join("task.json").is_file());
    let names = tasks.iter().map(|p| p.display().to_string()).collect();
    (!tasks.is_empty()).then_some((names, run))
}

/// A saved prompt folder: its table, its method (prompt tuning, P-tuning, prefix tuning) and
/// how PEFT reads it.
fn inspect_prompt(args: &Args) -> softprompt::Result<()> {
    // the whole folder as eval reads it (task.json and head too), and a prefix's
    // placement checked: an unknown one was printed as if it were one
    let saved = softprompt::internals::train::checkpoint::load_prompt_dir(&args.path)?;
    if let Some(warning) = &saved.warning {
        errln!("warning: {warning}");
    }
    let p = saved.prompt;
    if let Some(cfg) = &p.layout.config {
        let path = args
            .path
            .join(softprompt::internals::prompt::ADAPTER_CONFIG);
        softprompt::internals::train::ptuning::adapter_prefix_spec(cfg, p.p, &path)?;
    }
    let peft_type = (p.layout.config.as_ref())
        .and_then(|c| c.get("peft_type")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "PROMPT_TUNING".to_string());
    outln!(
        "prompt adapter {} ({peft_type}): P = {}, d = {}, init {}, num_transformer_submodules {}",
        args.path.display(),
        p.p,
        p.d,
        p.init,
        p.layout.num_transformer_submodules
    );
    let norm = (p.data.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / p.p as f64).sqrt();
    outln!("mean row norm {norm:.4}");
    if let Some(cfg) = &p.layout.config {
        let lines = [prefix_line(cfg), ptuning_line(cfg, &args.path)];
        for line in lines.into_iter().flatten() {
            outln!("{line}");
        }
    }
    // the task and the cls head eval reads with the table, and with --tensors every tensor
    // of the folder (it was accepted and did nothing; review 27, F4)
    if let Some(task) = &saved.task {
        outln!(
            "task {} (task.json): labels {:?}",
            task.kind.name(),
            task.labels
        );
    }
    if let Some(head) = &saved.head {
        outln!(
            "cls head (head.safetensors): {} labels x {} wide",
            head.k,
            head.c
        );
    }
    if args.tensors {
        prompt_tensors(&args.path)?;
    }
    Ok(())
}

/// Every tensor of a prompt folder's files, by file.
fn prompt_tensors(dir: &std::path::Path) -> softprompt::Result<()> {
    use softprompt::internals::prompt::ADAPTER_WEIGHTS;
    use softprompt::internals::train::{checkpoint::HEAD_FILE, ptuning::ENCODER_FILE};
    for file in [ADAPTER_WEIGHTS, HEAD_FILE, ENCODER_FILE] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        let tensors = softprompt::internals::weights::TensorFile::read(&path)?;
        let mut names: Vec<_> = tensors.dtypes.iter().collect();
        names.sort_by_key(|(name, _)| name.as_str());
        outln!("{file}:");
        for (name, dtype) in names {
            let shape = match tensors.floats.get(name) {
                Some(t) => t.shape.clone(),
                None => (tensors.ints.get(name)).map_or(Vec::new(), |(s, _)| s.clone()),
            };
            outln!("  {name:<72} {dtype:?} {shape:?}");
        }
    }
    Ok(())
}

/// A model folder: its parsed config, parameters, heads and tokenizer.
fn inspect_model(args: &Args) -> softprompt::Result<()> {
    let cfg = ModelConfig::load(&args.path)?;
    let store = WeightStore::open(&args.path)?;
    outln!("{}: {:#?}", args.path.display(), cfg);
    let mut params = 0usize;
    for name in store.names() {
        if let Some((dtype, shape)) = store.info(name) {
            params += shape.iter().product::<usize>();
            if args.tensors {
                outln!("  {name:<72} {dtype:?} {shape:?}");
            }
        }
    }
    let heads = match &cfg {
        ModelConfig::Bert(_) => {
            let mlm = store.contains("cls.predictions.transform.dense.weight")
                || store.contains("cls.predictions.bias");
            if mlm {
                "masked-LM head (tasks mlm, pet, cls)".to_string()
            } else {
                "no masked-LM head (task cls)".to_string()
            }
        }
        ModelConfig::T5(c) => {
            lm_head_line(&store, c.tie_word_embeddings, "shared.weight", "seq2seq")
        }
        ModelConfig::Bloom(c) | ModelConfig::Llama(c) => lm_head_line(
            &store,
            c.tie_word_embeddings,
            "the input embeddings",
            "causal",
        ),
    };
    outln!("{params} float parameters; {heads}");
    let tokenizer = args.path.join("tokenizer.json");
    // inspect describes what is there (exit 0), but train, eval and predict need a tokenizer
    if std::fs::symlink_metadata(&tokenizer).is_err() {
        outln!(
            "tokenizer: none found (looked for {}; train, eval and predict need one)",
            tokenizer.display()
        );
        return Ok(());
    }
    match softprompt::internals::tokenizer::Tokenizer::load(&args.path) {
        Ok(t) => outln!(
            "tokenizer.json: {} tokens (padding and truncation switched off)",
            t.vocab_size()
        ),
        Err(e) => outln!("tokenizer: {e}"),
    }
    Ok(())
}

/// What a language model's head is: its own `lm_head.weight`, the embeddings it is tied to, or
/// neither (config.json unties it and no head is stored: the model loads nowhere, and saying
/// "tied" would contradict config.json).
fn lm_head_line(store: &WeightStore, tied: bool, embeddings: &str, task: &str) -> String {
    match (store.contains("lm_head.weight"), tied) {
        (true, _) => format!("untied lm_head (task {task})"),
        (false, true) => format!("LM head tied to {embeddings} (task {task})"),
        (false, false) => "no lm_head.weight, and config.json says tie_word_embeddings: false: \
             no LM head (train, eval and predict refuse this folder)"
            .to_string(),
    }
}

/// A count of adapter_config.json, or "unset" where it is null or absent (PEFT fills some in
/// on load): a null was printed as "0 blocks ... 0 wide".
fn config_count(cfg: &serde_json::Value, key: &str) -> String {
    match cfg.get(key).and_then(|v| v.as_u64()) {
        Some(n) => n.to_string(),
        None => "unset".to_string(),
    }
}

/// A P-tuning adapter's encoder and whether its weights are beside the table (the table is
/// the encoder's output, as PEFT saves it): it was shown only as "init RANDOM".
fn ptuning_line(cfg: &serde_json::Value, dir: &std::path::Path) -> Option<String> {
    if cfg.get("peft_type")?.as_str()? != "P_TUNING" {
        return None;
    }
    let kind = (cfg.get("encoder_reparameterization_type"))
        .and_then(|v| v.as_str())
        .unwrap_or("MLP (PEFT's default)");
    let file = softprompt::internals::train::ptuning::ENCODER_FILE;
    let weights = match dir.join(file).exists() {
        true => format!("its weights in {file}"),
        false => format!("no {file}: the table alone, as PEFT saves it"),
    };
    Some(format!(
        "P-tuning: the table is the output of a {kind} encoder (hidden {}, {} layers); {weights}",
        config_count(cfg, "encoder_hidden_size"),
        config_count(cfg, "encoder_num_layers")
    ))
}

/// A prefix adapter's method, placement and whether PEFT computes what it was trained for:
/// only PEFT's placement does on T5; decoder-only models read a block per layer either way;
/// on BERT PEFT (with transformers 5) computes `papers` for the FEATURE_EXTRACTION adapter
/// softprompt writes, and refuses its classifier task types (it was said to refuse BERT
/// altogether; review 27, F7).
fn prefix_line(cfg: &serde_json::Value) -> Option<String> {
    if cfg.get("peft_type")?.as_str()? != "PREFIX_TUNING" {
        return None;
    }
    let placement = match cfg.get("prefix_placement").and_then(|v| v.as_str()) {
        Some(p) => p.to_string(),
        None => "peft (written by PEFT)".to_string(),
    };
    let n = |k: &str| config_count(cfg, k);
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
        (false, "FEATURE_EXTRACTION") => "for PEFT: PEFT computes the same on AutoModel or \
             AutoModelForMaskedLM (its SEQ_CLS and TOKEN_CLS models refuse prefix tuning on BERT)"
            .to_string(),
        (false, _) => format!(
            "not for PEFT: PEFT (with transformers 5) refuses prefix tuning for task_type \
             {task:?} on this model; only this engine computes it"
        ),
    };
    Some(format!(
        "prefix tuning, placement {placement}: {} blocks of keys and values {} wide{projection}; {peft}",
        n("num_layers"),
        n("token_dim")
    ))
}
