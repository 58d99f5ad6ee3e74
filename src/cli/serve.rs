//! `softprompt serve`: the command line of the HTTP server in `crate::serve`.

use super::common::{fail, DeviceArgs};
use crate::serve::{prompts_in, ConnLimits, DeviceChoice, Limits, Policy, Settings};
use softprompt::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// the frozen model folder every prompt runs on
    #[arg(long)]
    model: PathBuf,
    /// a folder of prompt folders (from `softprompt train`, or PEFT's with task.json), each
    /// served under its folder's name
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// a prompt to serve, as NAME=FOLDER (repeat for more)
    #[arg(long = "prompt", value_name = "NAME=FOLDER")]
    prompt: Vec<String>,
    /// the address to listen on (0.0.0.0 for every interface: the API loads any folder the
    /// server can read, so expose it with care)
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// the port (0: any free one; the chosen one is printed)
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// the most texts (rows) in one engine batch
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// how long a batch's first request waits for others to join it, in milliseconds
    #[arg(long, default_value_t = 5)]
    batch_window_ms: u64,
    /// true: a batch holds requests of every prompt; false: of one prompt at a time (the
    /// load benchmark's baseline)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    mix_prompts: bool,
    /// the largest request body; larger ones get 413
    #[arg(long, default_value_t = 1 << 20)]
    max_request_bytes: usize,
    /// the most characters in one text; longer ones get 400
    #[arg(long, default_value_t = 10_000)]
    max_text_chars: usize,
    /// the most texts in one request; more get 400 (a request's texts run in one engine
    /// batch, however large: a huge one would hold up every other client)
    #[arg(long, default_value_t = 256)]
    max_texts: usize,
    /// requests waiting for the engine (predictions queued or gathering into the next
    /// batch, loads and unloads) before new ones get 503; at most 1000000
    #[arg(long, default_value_t = 1024)]
    max_queue: usize,
    /// connections served at once; more wait to be accepted; at most 1000000
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// how long a connection may take to send a request's head (the request line and
    /// headers), idle keep-alive time included, in milliseconds; then it is closed; at most
    /// an hour
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// how long a request's body may take to arrive, in milliseconds; then it gets 408; at
    /// most an hour
    #[arg(long, default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// how long an answer may make no progress to a client that reads nothing, in milliseconds;
    /// then the connection is closed; at most an hour
    #[arg(long, default_value_t = 30_000)]
    write_timeout_ms: u64,
    /// after SIGTERM or Ctrl-C, how long the requests in flight may still take (seconds);
    /// past it they are dropped and the exit code is 1, as at a second signal, which ends
    /// the server at once; at most 3600
    #[arg(long, default_value_t = 30)]
    shutdown_grace_s: u64,
    // Hidden, for tests only: the engine takes no message until a line (or the end) comes on
    // stdin, so a test can fill the queue exactly and know a request is in flight; nothing
    // else can hold the engine on purpose (prompt folders are read off its thread). Released
    // by stdin rather than by a timer (a busy machine would make a timer race the test) or an
    // HTTP route (which would be reachable by every client); without a stdin to read, or with
    // /dev/null, the hold ends at once.
    #[arg(long, hide = true)]
    debug_hold_engine: bool,
    /// `--device auto` picks the first GPU when there is one, else the CPU
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(args: Args) -> i32 {
    match settings(args).and_then(crate::serve::run) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// The upper bounds of the numeric flags, each with its reason: a value past one is a typo or
/// would make the server look hung, and some allocated or panicked (exit 2 naming the flag).
fn check_caps(a: &Args) -> Result<()> {
    // one hour, for the timeouts and the grace: more is a typo for a smaller unit, and lets a
    // silent client hold its connection (a file descriptor), or a stop wait, for hours
    const HOUR_MS: u64 = 3_600_000;
    let caps = [
        // a longer window would look like a hung server
        ("--batch-window-ms", a.batch_window_ms, 60_000),
        // each connection holds a file descriptor; tokio's semaphore panics past 2^61 permits
        ("--max-connections", a.max_connections as u64, 1_000_000),
        // a waiting request holds its connection, so no more than that cap can ever wait
        // (u64::MAX panicked, and std's bounded channel allocated every slot at start)
        ("--max-queue", a.max_queue as u64, 1_000_000),
        ("--header-timeout-ms", a.header_timeout_ms, HOUR_MS),
        ("--body-timeout-ms", a.body_timeout_ms, HOUR_MS),
        ("--write-timeout-ms", a.write_timeout_ms, HOUR_MS),
        ("--shutdown-grace-s", a.shutdown_grace_s, HOUR_MS / 1000),
    ];
    for (flag, v, most) in caps {
        if v > most {
            return Err(Error::arg(flag, format!("{v}: expected at most {most}")));
        }
    }
    Ok(())
}

fn settings(a: Args) -> Result<Settings> {
    let device = match a.device.device.as_str() {
        "auto" => {
            // the thread and GEMM flags still apply; --precision is the GPU's, if there is one
            let cpu = DeviceArgs {
                device: "cpu".into(),
                precision: None,
                ..a.device.clone()
            };
            cpu.setup()?;
            DeviceChoice::Auto(a.device.precision().parse()?)
        }
        _ => DeviceChoice::Given(a.device.setup()?),
    };
    let mut prompts = match &a.prompts {
        Some(dir) => prompts_in(dir)?,
        None => Vec::new(),
    };
    for p in &a.prompt {
        let (name, dir) = p
            .split_once('=')
            .ok_or_else(|| Error::arg("--prompt", format!("{p:?}: expected NAME=FOLDER")))?;
        // the flag's fault, not the folder's (hostile pass 34, F1 and F2)
        crate::serve::check_name(name).map_err(|msg| Error::arg("--prompt", msg))?;
        if dir.is_empty() {
            return Err(Error::arg(
                "--prompt",
                format!("{p:?} names no folder: expected NAME=FOLDER"),
            ));
        }
        // at start nothing can be unloaded: the load's 409 advice does not apply
        if prompts.iter().any(|(n, _)| n == name) {
            let also = if a.prompts.is_some() {
                " (or in --prompts)"
            } else {
                ""
            };
            return Err(Error::arg(
                "--prompt",
                format!("the name \"{name}\" is given twice{also}"),
            ));
        }
        prompts.push((name.to_string(), PathBuf::from(dir)));
    }
    // once every name is read (a name given twice is the first thing to say)
    let given = prompts.iter().skip(prompts.len() - a.prompt.len());
    for (p, (_, dir)) in a.prompt.iter().zip(given) {
        if std::fs::symlink_metadata(dir).is_err() {
            return Err(Error::arg(
                "--prompt",
                format!(
                    "{p:?}: {}: no such folder: expected a prompt folder",
                    dir.display()
                ),
            ));
        }
    }
    for (flag, v) in [
        ("--max-batch", a.max_batch),
        ("--max-request-bytes", a.max_request_bytes),
        ("--max-text-chars", a.max_text_chars),
        ("--max-texts", a.max_texts),
        ("--max-queue", a.max_queue),
        ("--max-connections", a.max_connections),
        ("--header-timeout-ms", a.header_timeout_ms as usize),
        ("--body-timeout-ms", a.body_timeout_ms as usize),
        ("--write-timeout-ms", a.write_timeout_ms as usize),
    ] {
        if v == 0 {
            return Err(Error::arg(flag, "0: expected at least 1"));
        }
    }
    check_caps(&a)?;
    Ok(Settings {
        model: a.model,
        prompts,
        device,
        host: a.host,
        port: a.port,
        policy: Policy {
            max_rows: a.max_batch,
            window: Duration::from_millis(a.batch_window_ms),
            mix_prompts: a.mix_prompts,
        },
        limits: Limits {
            max_request_bytes: a.max_request_bytes,
            max_text_chars: a.max_text_chars,
            max_texts: a.max_texts,
            body_timeout: Duration::from_millis(a.body_timeout_ms),
        },
        max_queue: a.max_queue,
        conns: ConnLimits {
            max_connections: a.max_connections,
            header_timeout: Duration::from_millis(a.header_timeout_ms),
            write_timeout: Duration::from_millis(a.write_timeout_ms),
        },
        shutdown_grace: Duration::from_secs(a.shutdown_grace_s),
        hold_engine: a.debug_hold_engine,
    })
}
