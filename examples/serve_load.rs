//! A load client for `softprompt serve` (bench/serve.md): requests spread round-robin over
//! the served prompts, at a fixed concurrency (closed loop: each client sends its next request
//! when the last one is answered) or at a fixed rate (open loop: request i is due at
//! i / rate seconds, and its latency counts from then, so a slow server is not hidden by
//! clients that wait). Reports throughput and p50/p99 latency, and one JSON line.
//!
//! ```text
//! cargo run --release --example serve_load -- --url http://127.0.0.1:8000 --concurrency 16 --seconds 20
//! ```

use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    /// the server
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// prompts to send to, comma-separated (default: every prompt the server lists)
    #[arg(long)]
    prompts: Option<String>,
    /// clients sending at once (with --rate: the most requests in flight)
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// requests per second offered, open loop (default: closed loop at --concurrency)
    #[arg(long)]
    rate: Option<f64>,
    /// how long to measure
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// load sent before measuring, not counted
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// texts per request
    #[arg(long, default_value_t = 1)]
    texts_per_request: usize,
    /// jsonl file whose "text" fields are sent, in turn
    #[arg(long, default_value = "assets/sentiment_en/test.jsonl")]
    data: PathBuf,
    /// a label for the JSON line (e.g. mixed, one-prompt)
    #[arg(long, default_value = "")]
    tag: String,
}

/// What the clients measured.
#[derive(Default)]
struct Tally {
    /// latency of each answered request in the measured span
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn run(a: &Args) -> Result<(), String> {
    let texts = read_texts(&a.data)?;
    let prompts = match &a.prompts {
        Some(p) => p.split(',').map(str::to_string).collect(),
        None => served_prompts(&a.url)?,
    };
    if prompts.is_empty() || a.concurrency == 0 || a.texts_per_request == 0 {
        return Err("need at least one prompt, one client and one text per request".into());
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(a.warmup);
    let clock = Clock {
        start,
        measure_from,
        end: measure_from + Duration::from_secs_f64(a.seconds),
    };
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Tally::default());
    std::thread::scope(|s| {
        for _ in 0..a.concurrency {
            s.spawn(|| client(a, &prompts, &texts, &next, &clock, &tally));
        }
    });
    let t = tally.into_inner().map_err(|_| "a client panicked")?;
    report(a, &prompts, t)
}

/// When the run starts, when measuring starts (the warm-up ends), and when it ends.
struct Clock {
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// One client: takes request numbers until the end, each for prompt `i % prompts`.
fn client(
    a: &Args,
    prompts: &[String],
    texts: &[String],
    next: &AtomicUsize,
    clock: &Clock,
    tally: &Mutex<Tally>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let url = format!("{}/v1/predict", a.url);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let due = match a.rate {
            Some(r) => clock.start + Duration::from_secs_f64(i as f64 / r),
            None => Instant::now(),
        };
        if due >= clock.end {
            return;
        }
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let picked: Vec<&String> = (0..a.texts_per_request)
            .map(|k| &texts[(i * a.texts_per_request + k) % texts.len()])
            .collect();
        let body = json!({ "prompt": prompts[i % prompts.len()], "texts": picked }).to_string();
        let outcome = send(&agent, &url, &body);
        let took = due.elapsed();
        if due < clock.measure_from {
            continue;
        }
        let mut t = tally.lock().unwrap();
        match outcome {
            Ok(()) => t.latencies.push(took),
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert(e);
            }
        }
    }
}

fn send(agent: &ureq::Agent, url: &str, body: &str) -> Result<(), String> {
    let mut resp = (agent.post(url))
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    match status {
        200 => Ok(()),
        _ => Err(format!("{status}: {text}")),
    }
}

fn report(a: &Args, prompts: &[String], mut t: Tally) -> Result<(), String> {
    t.latencies.sort();
    let n = t.latencies.len();
    let pct = |q: f64| -> f64 {
        let i = ((n as f64 - 1.0) * q).round() as usize;
        t.latencies
            .get(i)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let rps = n as f64 / a.seconds;
    let mode = match a.rate {
        Some(r) => format!(
            "{r} req/s offered (open loop, up to {} in flight)",
            a.concurrency
        ),
        None => format!("{} clients (closed loop)", a.concurrency),
    };
    println!(
        "{mode}, {} prompts, {} text(s)/request, {:.1} s measured",
        prompts.len(),
        a.texts_per_request,
        a.seconds
    );
    println!(
        "  {n} ok, {} errors: {rps:.1} req/s ({:.1} texts/s); latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        t.errors,
        rps * a.texts_per_request as f64,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    if let Some(e) = &t.first_error {
        println!("  first error: {e}");
    }
    let line = json!({
        "tag": a.tag, "prompts": prompts.len(), "concurrency": a.concurrency, "rate": a.rate,
        "texts_per_request": a.texts_per_request, "seconds": a.seconds, "ok": n,
        "errors": t.errors, "req_per_s": rps, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
    });
    println!("{line}");
    Ok(())
}

/// The "text" field of every line of a jsonl file.
fn read_texts(path: &PathBuf) -> Result<Vec<String>, String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let texts: Vec<String> = (src.lines().filter(|l| !l.trim().is_empty()))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    if texts.is_empty() {
        return Err(format!("{}: no line with a \"text\"", path.display()));
    }
    Ok(texts)
}

/// The names `GET /v1/prompts` lists.
fn served_prompts(url: &str) -> Result<Vec<String>, String> {
    let mut resp = ureq::get(&format!("{url}/v1/prompts"))
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok((v["prompts"].as_array().into_iter().flatten())
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect())
}
