//! `softprompt serve` driven over real HTTP (the binary on a free port, `common::serve`):
//! served scores equal `softprompt predict`'s, concurrent clients on several prompts of one
//! model (prompt and prefix tuning, rank-scored and greedy) get their own answers, the
//! metrics count them, and SIGTERM lets a request in flight finish before exit 0.
//! Limits and bad requests are in serve_limits.rs, loading and unloading in serve_load.rs.
#![cfg(feature = "serve")]

mod common;

use common::serve::*;
use common::ScratchDir;
use serde_json::{json, Value};
use softprompt::prelude::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn served_scores_equal_predict_under_concurrent_clients() {
    let scratch = ScratchDir::new("serve_eq");
    let (pet, cls) = make_prompts(scratch.path());
    let want_pet = predict_cli(&pet, TEXTS, scratch.path());
    let want_cls = predict_cli(&cls, TEXTS, scratch.path());
    assert!(want_pet.iter().any(|v| v["truncated"] == json!(true)));
    let server = Server::start(
        &[("pet", &pet), ("cls", &cls)],
        &["--batch-window-ms", "20", "--max-batch", "16"],
    );
    // one request per prompt with every text
    let (status, body) = server.predict("pet", TEXTS);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prompt"], "pet");
    for (i, (got, want)) in (body["predictions"].as_array().unwrap().iter())
        .zip(&want_pet)
        .enumerate()
    {
        assert_same(&format!("pet text {i}"), got, want);
    }
    // 8 clients at once, alternating prompts, each on its own slice of the texts: batches
    // mix both prompts, and every answer is still that prompt's
    std::thread::scope(|s| {
        for c in 0..8 {
            let (server, want_pet, want_cls) = (&server, &want_pet, &want_cls);
            s.spawn(move || {
                let (name, want) = match c % 2 {
                    0 => ("pet", want_pet),
                    _ => ("cls", want_cls),
                };
                for round in 0..3 {
                    let first = (c + round) % TEXTS.len();
                    let picked: Vec<usize> = (first..TEXTS.len()).step_by(1 + c % 3).collect();
                    let texts: Vec<&str> = picked.iter().map(|&i| TEXTS[i]).collect();
                    let (status, body) = server.predict(name, &texts);
                    assert_eq!(status, 200, "{body}");
                    let preds = body["predictions"].as_array().unwrap();
                    assert_eq!(preds.len(), picked.len());
                    for (p, &i) in preds.iter().zip(&picked) {
                        assert_same(&format!("client {c} {name} text {i}"), p, &want[i]);
                    }
                }
            });
        }
    });
    let (status, text) = server.call_text("GET", "/metrics", None);
    assert_eq!(status, 200);
    let ok = metric(
        &text,
        "softprompt_requests_total{route=\"/v1/predict\",status=\"200\"}",
    );
    assert_eq!(ok, 25.0, "1 + 8 clients x 3 requests");
    assert_eq!(metric(&text, "softprompt_request_seconds_count"), 25.0);
    assert_eq!(metric(&text, "softprompt_queue_seconds_count"), 25.0);
    let batches = metric(&text, "softprompt_batch_rows_count");
    assert!((1.0..=25.0).contains(&batches), "{batches} batches");
    assert!(metric(&text, "softprompt_tokens_total") > 0.0);
    assert!(metric(&text, "softprompt_tokens_per_second") > 0.0);
    assert_eq!(metric(&text, "softprompt_prompts_loaded"), 2.0);
    assert_eq!(
        metric(&text, SPLITS),
        0.0,
        "a mixed batch ran request by request"
    );
    assert_eq!(server.terminate(), 0);
}

/// A prefix-tuning prompt (a 3-row prefix for the `pet` task, saved with its task) served
/// beside a prompt-tuning one: concurrent clients on both share batches (each row reading its
/// own prefix or prompt), and every answer equals `predict`'s for that prompt alone.
#[test]
fn a_prefix_prompt_is_served_beside_a_prompt() {
    let scratch = ScratchDir::new("serve_prefix");
    let (pet, _) = make_prompts(scratch.path());
    let model = Model::open(model_dir(), Device::Cpu).unwrap();
    let opts = pet_options();
    let task = model.task(&opts, None, 3).unwrap();
    let raw = common::prefix_prompt(&scratch.path().join("raw"), 3, 2 * 2 * 48, "papers", 5);
    let pre = scratch.path().join("pre");
    model
        .save_prompt(&pre, &raw, &task, SaveOptions::default())
        .unwrap();
    let want_pre = predict_cli(&pre, TEXTS, scratch.path());
    let want_pet = predict_cli(&pet, TEXTS, scratch.path());
    let server = Server::start(
        &[("pet", &pet), ("pre", &pre)],
        &["--batch-window-ms", "20", "--max-batch", "32"],
    );
    std::thread::scope(|s| {
        for c in 0..6 {
            let (server, want_pre, want_pet) = (&server, &want_pre, &want_pet);
            s.spawn(move || {
                let (name, want) = match c % 2 {
                    0 => ("pre", want_pre),
                    _ => ("pet", want_pet),
                };
                let (status, body) = server.predict(name, TEXTS);
                assert_eq!(status, 200, "{body}");
                let preds = body["predictions"].as_array().unwrap();
                for (i, (got, want)) in preds.iter().zip(want).enumerate() {
                    assert_same(&format!("client {c} {name} text {i}"), got, want);
                }
            });
        }
    });
    assert_no_split(&server);
    assert_eq!(server.terminate(), 0);
}

/// Greedy prompts (Llama, free targets, prompts of 3 and 5 rows) served to concurrent
/// clients share batches (`predict_mixed`'s greedy group): each text's output and label equal
/// `predict`'s with its prompt alone, its score within SCORE_TOL.
#[test]
fn greedy_prompts_are_served_together() {
    let scratch = ScratchDir::new("serve_greedy");
    let model_dir = common::fixture("llama");
    let model = Model::open(&model_dir, Device::Cpu).unwrap();
    let opts = TaskOptions {
        free_targets: true,
        max_target_len: Some(4),
        ..TaskOptions::default()
    };
    let mut dirs = Vec::new();
    for (i, rows) in [3, 5].into_iter().enumerate() {
        let task = model.task(&opts, None, rows).unwrap();
        let init = PromptInit::Random { std: 0.5 };
        let prompt = model.new_prompt(&task, rows, &init, 7 + i as u64).unwrap();
        let dir = scratch.path().join(format!("g{rows}"));
        model
            .save_prompt(&dir, &prompt, &task, SaveOptions::default())
            .unwrap();
        dirs.push(dir);
    }
    let texts = &TEXTS[..4];
    let want: Vec<Vec<Value>> = (dirs.iter())
        .map(|d| predict_cli_on(&model_dir, d, texts, scratch.path()))
        .collect();
    let server = Server::start_on(
        &model_dir,
        &[("g3", &dirs[0]), ("g5", &dirs[1])],
        &["--batch-window-ms", "50", "--max-batch", "32"],
    );
    std::thread::scope(|s| {
        for c in 0..4 {
            let (server, want) = (&server, &want);
            s.spawn(move || {
                let (name, want) = (["g3", "g5"][c % 2], &want[c % 2]);
                let (status, body) = server.predict(name, texts);
                assert_eq!(status, 200, "{body}");
                let preds = body["predictions"].as_array().unwrap();
                assert_eq!(preds.len(), want.len());
                for (i, (got, want)) in preds.iter().zip(want).enumerate() {
                    let what = format!("client {c} {name} text {i}");
                    assert!(want["output"].is_string(), "{what}: {want}");
                    assert_eq!(got["output"], want["output"], "{what}");
                    assert_eq!(got["label"], want["label"], "{what}");
                    let score = |v: &Value| [v["score"].as_f64().unwrap()];
                    let (g, w) = (score(got), score(want));
                    common::assert_close_floor(&what, &g, &w, SCORE_TOL, 1.0);
                }
            });
        }
    });
    assert_no_split(&server);
    assert_eq!(server.terminate(), 0);
}

/// Engine batches that failed as one and ran again request by request: a failure the
/// answers alone would hide (each request still gets its 200).
const SPLITS: &str = "softprompt_batches_split_total";

fn assert_no_split(server: &Server) {
    let (status, text) = server.call_text("GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        metric(&text, SPLITS),
        0.0,
        "a mixed batch ran request by request"
    );
}

/// #17: a 4-row prompt's task reaches the position table's end (bert_mlm: 64 positions, the
/// task's max_len clamped to 60) and a 12-row prompt's does too (52). Two requests inside one
/// batch window share one engine batch: the short prompt's 60-token row beside the longer
/// prompt (12 + 60 > 64, while each row fits beside its own prompt). That batch was refused
/// as a whole and re-run request by request, which the answers alone did not show.
#[test]
fn prompts_of_different_lengths_at_the_position_limit_share_one_pass() {
    let scratch = ScratchDir::new("serve_poslimit");
    let model = Model::open(model_dir(), Device::Cpu).unwrap();
    let opts = TaskOptions {
        max_len: None,
        ..pet_options()
    };
    let mut dirs = Vec::new();
    for rows in [4, 12] {
        let task = model.task(&opts, None, rows).unwrap();
        assert_eq!(task.spec().max_len, 64 - rows);
        let init = PromptInit::Random { std: 0.5 };
        let prompt = model.new_prompt(&task, rows, &init, rows as u64).unwrap();
        let dir = scratch.path().join(format!("p{rows}"));
        model
            .save_prompt(&dir, &prompt, &task, SaveOptions::default())
            .unwrap();
        dirs.push(dir);
    }
    let long = "long ".repeat(80);
    let texts = [long.as_str(), "The movie was great."];
    let want: Vec<Vec<Value>> = (dirs.iter())
        .map(|d| predict_cli(d, &texts, scratch.path()))
        .collect();
    assert!(want.iter().all(|w| w[0]["truncated"] == json!(true)));
    let server = Server::start(
        &[("p4", &dirs[0]), ("p12", &dirs[1])],
        &["--batch-window-ms", "3000", "--max-batch", "32"],
    );
    std::thread::scope(|s| {
        for (name, want) in ["p4", "p12"].into_iter().zip(&want) {
            let (server, texts) = (&server, &texts);
            s.spawn(move || {
                let (status, body) = server.predict(name, texts);
                assert_eq!(status, 200, "{body}");
                let preds = body["predictions"].as_array().unwrap();
                assert_eq!(preds.len(), want.len());
                for (i, (got, want)) in preds.iter().zip(want).enumerate() {
                    assert_same(&format!("{name} text {i}"), got, want);
                }
            });
        }
    });
    let (status, text) = server.call_text("GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(metric(&text, "softprompt_batches_total"), 1.0, "{text}");
    assert_eq!(
        metric(&text, SPLITS),
        0.0,
        "the shared batch ran request by request"
    );
    assert_eq!(server.terminate(), 0);
}

/// SIGTERM lets a request in flight finish, then the server exits 0. The engine is held
/// (`--debug-hold-engine`) and the queue holds one request (`--max-queue 1`): of two clients
/// one is refused, so the other is in flight for sure when the signal comes. The server stays
/// up, taking no new connection, until the hold ends and that request gets its 200. That it
/// did not exit in between is the server's own word, not a sleep: its log says the signal
/// was heard before the hold ends, and a server that had exited could not answer after it.
#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let scratch = ScratchDir::new("serve_term");
    let (pet, _) = make_prompts(scratch.path());
    // both prompts from their folder
    let dir = pet.parent().unwrap().to_str().unwrap();
    let log = scratch.path().join("serve.log");
    let extra = ["--debug-hold-engine", "--prompts", dir, "--max-queue", "1"];
    let server = Server::start_logged(&model_dir(), &[], &extra, &log);
    let addr = server.url.trim_start_matches("http://").to_string();
    let (done, answers) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for c in 0..2 {
            let (server, done) = (&server, done.clone());
            let name = ["pet", "cls"][c];
            s.spawn(move || done.send((c, server.predict(name, &TEXTS[..2]))).unwrap());
        }
        let next = || answers.recv_timeout(Duration::from_secs(60)).unwrap();
        let (refused, (status, body)) = next();
        assert_eq!(status, 503, "client {refused}: {body}");
        server.sigterm();
        // the signal heard, the listener closed: no answer and no exit while the request waits
        await_log(&log, "shutting down");
        assert!(server.running(), "exited with a request in flight");
        assert!(answers.try_recv().is_err(), "answered while held");
        server.release();
        let (c, (status, body)) = next();
        assert_eq!(c, 1 - refused);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["prompt"], ["pet", "cls"][c]);
        assert_eq!(body["predictions"].as_array().unwrap().len(), 2, "{body}");
    });
    assert_eq!(server.wait(), 0, "exit code after SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("every request in flight was answered"),
        "{text}"
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "still listening after exit"
    );
}

/// A request that never completes (its body never comes) holds the shutdown only for
/// --shutdown-grace-s; then the server exits 1, saying requests were dropped. The signal
/// comes once the server says the request is under way (`softprompt_connections` in the
/// request state: it and the scrape itself), not after a sleep that a slow machine outlasts.
#[test]
fn a_request_that_never_ends_is_dropped_after_the_grace() {
    let scratch = ScratchDir::new("serve_grace");
    let (pet, _) = make_prompts(scratch.path());
    let server = Server::start(&[("pet", &pet)], &["--shutdown-grace-s", "1"]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    let head =
        format!("POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{{");
    s.write_all(head.as_bytes()).unwrap();
    server.await_metric("softprompt_connections{state=\"request\"}", 2.0);
    let start = Instant::now();
    assert_eq!(server.terminate(), 1);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}
