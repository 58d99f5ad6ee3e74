//! The engine side of `softprompt serve` alone (bench/serve.md, "Where mixed serving loses"):
//! the served batches' engine calls without HTTP, clients or a batcher, timed in the
//! process's CPU seconds, so a machine shared with other work still gives comparable numbers.
//!
//! Rows come in file order (as requests arrive), request i on prompt `i mod K`, and are cut
//! into the batches each serving mode makes of a closed loop of `--clients` clients:
//! `mixed`, `--clients` rows a batch whatever their prompts (the server's `--mix-prompts
//! true`); `one-prompt`, each prompt's rows among them a batch of their own (`false`);
//! `ceiling`, the mixed batches with every row on the second prompt (bench/serve.sh's
//! ceiling run: one prompt, the longer length).
//!
//! ```text
//! cargo run --release --example serve_engine -- --model assets/all-MiniLM-L6-v2 \
//!     --prompts target/bench-serve/prompts --rows 512 --clients 16
//! ```

use clap::Parser;
use softprompt::{Dataset, Device, Model, Prompt, Row, Task, TaskOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "assets/all-MiniLM-L6-v2")]
    model: PathBuf,
    /// a folder of prompt folders (bench/serve.sh's target/bench-serve/prompts)
    #[arg(long)]
    prompts: PathBuf,
    #[arg(long, default_value = "assets/sentiment_en/test.jsonl")]
    data: PathBuf,
    /// rows of --data to predict
    #[arg(long, default_value_t = 512)]
    rows: usize,
    /// requests in flight: a mixed batch's rows
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// mixed, one-prompt, ceiling, or all
    #[arg(long, default_value = "all")]
    mode: String,
    /// CPU threads (0: all cores)
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run(a: &Args) -> Result<(), String> {
    let err = |e: softprompt::Error| e.to_string();
    rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build_global()
        .map_err(|e| e.to_string())?;
    let model = Model::open(&a.model, Device::Cpu).map_err(err)?;
    let jobs = load_prompts(&model, a)?;
    let texts = read_texts(&a.data, a.rows)?;
    // request i: text i for prompt i mod K, encoded for that prompt's task
    let mut rows: Vec<(usize, Row)> = Vec::new();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    for (i, t) in texts.iter().enumerate() {
        let k = i % jobs.len();
        let enc = encode_all(&model, &jobs[k].0, std::slice::from_ref(t))?;
        rows.extend(enc.into_iter().map(|r| (k, r)));
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    println!(
        "    encode: {:.3} ms CPU a row ({:.3} ms wall), a request at a time",
        1e3 * cpu / rows.len() as f64,
        1e3 * wall / rows.len() as f64
    );
    let refs: Vec<(&Task, &Prompt)> = jobs.iter().map(|(t, p)| (t, p)).collect();
    let p1 = (jobs.len() > 1) as usize;
    let ceiling = encode_all(&model, &jobs[p1].0, &texts)?;
    let ceiling: Vec<(usize, Row)> = ceiling.into_iter().map(|r| (p1, r)).collect();
    for mode in ["mixed", "one-prompt", "ceiling"] {
        if a.mode != "all" && a.mode != mode {
            continue;
        }
        let batches = match mode {
            "ceiling" => serve_batches(&ceiling, a.clients, true),
            _ => serve_batches(&rows, a.clients, mode == "mixed"),
        };
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        for b in &batches {
            model.predict_mixed(&refs, b, 32).map_err(err)?;
        }
        let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
        let n = rows.len() as f64;
        println!(
            "{mode:>10}: {} batches of {:.1} rows, {:.2} ms CPU a row ({:.2} ms wall), {} threads",
            batches.len(),
            n / batches.len() as f64,
            1e3 * cpu / n,
            1e3 * wall / n,
            a.threads
        );
    }
    Ok(())
}

/// `texts` encoded for `task`, one row each.
fn encode_all(model: &Model, task: &Task, texts: &[String]) -> Result<Vec<Row>, String> {
    let data = Dataset::from_pairs("text", texts.iter().map(|t| (t.as_str(), None::<&str>)));
    Ok(model.encode(task, &data).map_err(|e| e.to_string())?.rows)
}

/// The batches of a closed loop of `clients` requests in flight: each window of `clients`
/// requests in arrival order is one batch (`mixed`) or one batch per prompt in it.
fn serve_batches(rows: &[(usize, Row)], clients: usize, mixed: bool) -> Vec<Vec<(usize, Row)>> {
    let mut out = Vec::new();
    for window in rows.chunks(clients) {
        if mixed {
            out.push(window.to_vec());
            continue;
        }
        let mut prompts: Vec<usize> = window.iter().map(|(k, _)| *k).collect();
        prompts.sort();
        prompts.dedup();
        for p in prompts {
            out.push(window.iter().filter(|(k, _)| *k == p).cloned().collect());
        }
    }
    out
}

/// The prompt folders under --prompts, sorted by name, each with its task.
fn load_prompts(model: &Model, a: &Args) -> Result<Vec<(Task, Prompt)>, String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&a.prompts)
        .map_err(|e| format!("{}: {e}", a.prompts.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("adapter_config.json").is_file())
        .collect();
    dirs.sort();
    let mut jobs = Vec::new();
    for d in dirs {
        let prompt = Prompt::load(&d).map_err(|e| e.to_string())?;
        let task =
            (model.task_for(&prompt, &TaskOptions::default(), None)).map_err(|e| e.to_string())?;
        jobs.push((task, prompt));
    }
    if jobs.is_empty() {
        return Err(format!("{} holds no prompt folder", a.prompts.display()));
    }
    Ok(jobs)
}

/// The first `n` "text" fields of a JSON lines file.
fn read_texts(path: &PathBuf, n: usize) -> Result<Vec<String>, String> {
    let body = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let texts: Vec<String> = (body.lines())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
        .take(n)
        .collect();
    Ok(texts)
}

/// This process's user + system CPU seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the command's closing parenthesis: utime and stime are the 12th and 13th
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<f64> = (rest.split_whitespace())
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let ticks = f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0);
    ticks / 100.0
}
