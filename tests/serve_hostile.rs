//! `softprompt serve` against hostile clients (the second hostile-input pass): `--max-queue`
//! bounds the requests gathering in the batcher too, a Content-Length over the limit gets 413
//! before the body is read, a request head or body that never completes is cut off after its
//! timeout, SIGTERM with only idle connections or heads part-way in exits 0 at once (a held
//! engine too), `/health` says 503 once the engine's thread has ended, a large `--max-queue`
//! allocates nothing at start, prompt names `.` and `..`
//! are refused, and a PEFT folder without task.json gets an error that names no command-line
//! flag.
#![cfg(feature = "serve")]

mod common;

use common::serve::{make_prompts, Server};
use common::ScratchDir;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `pet` prompt of `make_prompts` (4 rows, verbalizer terrible/good).
fn make_pet(dir: &Path) -> PathBuf {
    make_prompts(dir).0
}

/// Writes `request` on a fresh connection and reads the answer to the end.
fn raw(server: &Server, request: &str) -> String {
    let mut s = server.connect();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// With a 2 s window, requests of 20 texts (two never fit one 32-row batch) waited in the
/// batcher's unbounded backlog: 100 of them all got 200 with `--max-queue 2`. Now the
/// requests gathering count: some get 503, and every accepted one is answered in full.
#[test]
fn max_queue_counts_the_requests_gathering_in_the_batcher() {
    let scratch = ScratchDir::new("serve_hostile_queue");
    let pet = make_pet(scratch.path());
    let server = Server::start(
        &[("pet", &pet)],
        &["--max-queue", "2", "--batch-window-ms", "2000"],
    );
    let texts = vec!["The movie was great."; 20];
    let body = json!({ "prompt": "pet", "texts": texts }).to_string();
    let start = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..24)
            .map(|_| s.spawn(|| server.call("POST", "/v1/predict", Some(&body))))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let (mut ok, mut refused) = (0, 0);
    for (status, v) in &answers {
        match status {
            200 => {
                let p = v["predictions"].as_array().unwrap();
                assert_eq!(p.len(), 20, "{v}");
                assert!(p.iter().all(|p| p["label"].is_string()), "{v}");
                ok += 1;
            }
            503 => {
                let msg = v["error"].as_str().unwrap();
                assert!(msg.contains("--max-queue"), "{msg}");
                refused += 1;
            }
            _ => panic!("{status}: {v}"),
        }
    }
    // the first window holds 2 (its head and one waiting); main accepted nearly every one
    assert!(
        (1..=4).contains(&ok) && refused >= 20,
        "{ok} answered, {refused} refused"
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.terminate(), 0);
}

/// `Content-Length: 10^12` then 2 bytes: the limit was applied while reading the body, so
/// the request waited for bytes that never came. It gets 413 at once.
#[test]
fn a_content_length_over_the_limit_gets_413_at_once() {
    let scratch = ScratchDir::new("serve_hostile_413");
    let pet = make_pet(scratch.path());
    let server = Server::start(&[("pet", &pet)], &[]);
    let start = Instant::now();
    let answer = raw(
        &server,
        &format!(
            "POST /v1/predict HTTP/1.1\r\nHost: {}\r\nContent-Length: 1000000000000\r\n\r\n{{}}",
            server.addr()
        ),
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("larger than the server's --max-request-bytes (1048576 bytes)"),
        "{answer}"
    );
    assert_eq!(server.terminate(), 0);
}

/// A client that sends part of a request line and waits was never cut off (hyper's header
/// timeout had no timer): it is closed once `--header-timeout-ms` passes.
#[test]
fn a_partial_request_head_is_closed_after_the_header_timeout() {
    let scratch = ScratchDir::new("serve_hostile_head");
    let pet = make_pet(scratch.path());
    let server = Server::start(&[("pet", &pet)], &["--header-timeout-ms", "500"]);
    let mut s = server.connect();
    let start = Instant::now();
    s.write_all(b"POST /v1/pre").unwrap();
    let mut answer = Vec::new();
    // EOF, or a reset: either way the server let go
    let _ = s.read_to_end(&mut answer);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    // and it still serves
    let (status, v) = server.call("GET", "/health", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(server.terminate(), 0);
}

/// A body that stops coming gets 408 after `--body-timeout-ms`.
#[test]
fn a_body_that_stops_coming_gets_408() {
    let scratch = ScratchDir::new("serve_hostile_body");
    let pet = make_pet(scratch.path());
    let server = Server::start(&[("pet", &pet)], &["--body-timeout-ms", "500"]);
    let start = Instant::now();
    let answer = raw(
        &server,
        &format!(
            "POST /v1/predict HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n{{",
            server.addr()
        ),
    );
    let took = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-timeout-ms (500 ms)"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(server.terminate(), 0);
}

/// SIGTERM with only idle connections (one that never sent a byte, one kept alive after its
/// request, one part-way through a request head) exited 1 after the whole grace, saying
/// requests were in flight. It exits 0 at once (the head part-way in is dropped: see
/// `a_head_part_way_in_at_sigterm_is_dropped_and_the_exit_is_0`).
#[test]
fn sigterm_with_only_idle_connections_exits_0_at_once() {
    let scratch = ScratchDir::new("serve_hostile_term");
    let pet = make_pet(scratch.path());
    let server = Server::start(
        &[("pet", &pet)],
        &["--shutdown-grace-s", "20", "--header-timeout-ms", "1000"],
    );
    let _silent = server.connect();
    let mut partial = server.connect();
    partial.write_all(b"GET /hea").unwrap();
    let mut kept = server.connect();
    let head = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr());
    kept.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // accepted in order: once the partial head is read, the silent one is in too
    server.await_metric("softprompt_connections{state=\"head\"}", 1.0);
    let start = Instant::now();
    assert_eq!(server.terminate(), 0);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// A head part-way in at SIGTERM is no request in flight: with `--shutdown-grace-s` below
/// `--header-timeout-ms`, the server held the shutdown for the whole grace waiting for the
/// rest of it, then exited 1 saying requests were dropped. It drops that connection and
/// exits 0 at once; the client reads the end of its stream.
#[test]
fn a_head_part_way_in_at_sigterm_is_dropped_and_the_exit_is_0() {
    let scratch = ScratchDir::new("serve_hostile_head_term");
    let pet = make_pet(scratch.path());
    let server = Server::start(
        &[("pet", &pet)],
        &["--shutdown-grace-s", "5", "--header-timeout-ms", "60000"],
    );
    let mut partial = server.connect();
    partial
        .write_all(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Len")
        .unwrap();
    // so on a kept-alive connection's second head
    let mut kept = server.connect();
    let head = format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr());
    kept.write_all(head.as_bytes()).unwrap();
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    kept.write_all(b"GET /hea").unwrap();
    server.await_metric("softprompt_connections{state=\"head\"}", 2.0);
    let start = Instant::now();
    assert_eq!(server.terminate(), 0);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    for mut s in [partial, kept] {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
}

/// `--debug-hold-engine` read stdin on the engine's thread, and the exit joined that thread:
/// a server stopped while held, its stdin still open, never exited. It exits 0.
#[test]
fn a_held_engine_does_not_hold_the_exit() {
    let scratch = ScratchDir::new("serve_hostile_hold_exit");
    let pet = make_pet(scratch.path());
    let server = Server::start_held(&[("pet", &pet)], &[]);
    let (status, v) = server.call("GET", "/health", None);
    assert_eq!(status, 200, "{v}");
    server.sigterm();
    assert_eq!(server.wait_for_exit(Duration::from_secs(20)), Some(0));
}

/// `/health` answered "ok" over an engine whose thread had ended (a panic, hostile pass 17):
/// it answers 503 "engine stopped", a prediction then gets a 500 naming the stopped engine,
/// and SIGTERM still ends the server, with exit code 2 as when the engine's thread panics
/// (it exited 0, as if all had gone well).
#[test]
fn health_says_when_the_engine_has_stopped() {
    let scratch = ScratchDir::new("serve_hostile_engine_ended");
    let pet = make_pet(scratch.path());
    let server = Server::start_held(&[("pet", &pet)], &[]);
    let (status, v) = server.call("GET", "/health", None);
    assert_eq!((status, &v["status"]), (200, &json!("ok")), "{v}");
    server.end_engine();
    let start = Instant::now();
    loop {
        let (status, v) = server.call("GET", "/health", None);
        if status == 503 {
            assert_eq!(v["status"], "engine stopped", "{v}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{status} {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, v) = server.predict("pet", &["a fine film"]);
    assert_eq!(status, 500, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("engine stopped"),
        "{v}"
    );
    server.sigterm();
    assert_eq!(server.wait_for_exit(Duration::from_secs(20)), Some(2));
}

/// `--max-queue` was unbounded and preallocated (std's bounded channel writes every slot, of
/// some 80 bytes, at start): 18446744073709551615 panicked, 1e11 aborted, and 1e6 took 80 MB
/// before any request. It is capped at 1000000 (tests/serve_limits.rs) and the queue
/// allocates as it fills: a server at the cap holds no more memory at start than one at 1.
#[cfg(target_os = "linux")]
#[test]
fn a_large_max_queue_allocates_nothing_at_start() {
    let scratch = ScratchDir::new("serve_hostile_queue_memory");
    let pet = make_pet(scratch.path());
    let rss = |max_queue: &str| {
        let server = Server::start(&[("pet", &pet)], &["--max-queue", max_queue]);
        let kib = server.rss_kib();
        assert_eq!(server.terminate(), 0);
        kib
    };
    let (small, large) = (rss("1"), rss("1000000"));
    // preallocated, a million slots of at least 72 bytes took 70 MB more
    assert!(
        large < small + 24 * 1024,
        "{small} KiB at --max-queue 1, {large} KiB at 1000000"
    );
}

/// "." and ".." were accepted as prompt names (and `DELETE /v1/prompts/..` reached only
/// from a client that does not normalise paths).
#[test]
fn prompt_names_dot_and_dot_dot_are_refused() {
    let scratch = ScratchDir::new("serve_hostile_names");
    let pet = make_pet(scratch.path());
    let server = Server::start(&[], &[]);
    for name in [".", ".."] {
        let body = json!({ "name": name, "path": pet }).to_string();
        let (status, v) = server.call("POST", "/v1/prompts", Some(&body));
        assert_eq!(status, 400, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(&format!("prompt name {name:?}")) && msg.contains("not \".\" or \"..\""),
            "{msg}"
        );
    }
    let (status, v) = server.call("GET", "/v1/prompts", None);
    assert_eq!(
        (status, v["prompts"].as_array().unwrap().len()),
        (200, 0),
        "{v}"
    );
    assert_eq!(server.terminate(), 0);
}

/// A PEFT folder with no task.json: the 400 told the client to pass `--labels` or
/// `--verbalizer`, flags an HTTP client has no way to give.
#[test]
fn a_peft_folder_without_task_json_names_what_it_lacks() {
    let server = Server::start(&[], &[]);
    let peft = common::fixture("bert_mlm/peft_adapter");
    let body = json!({ "name": "p", "path": peft }).to_string();
    let (status, v) = server.call("POST", "/v1/prompts", Some(&body));
    assert_eq!(status, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("holds no task.json") && msg.contains("add one to the folder"),
        "{msg}"
    );
    assert!(
        !msg.contains("--labels") && !msg.contains("--verbalizer"),
        "{msg}"
    );
    assert!(msg.contains(&peft.display().to_string()), "{msg}");
    assert_eq!(server.terminate(), 0);
}
