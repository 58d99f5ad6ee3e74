//! `softprompt serve`'s limits and errors over real HTTP (`common::serve`): every bad request
//! gets a 4xx JSON error naming what was wrong, a full queue gets 503 and the server goes on,
//! bad flags stop it before it listens, and a text holding the mask token is named by its
//! index.
#![cfg(feature = "serve")]

mod common;

use common::serve::*;
use common::ScratchDir;
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

#[test]
fn bad_requests_get_4xx_json_errors() {
    let scratch = ScratchDir::new("serve_bad");
    let (pet, _) = make_prompts(scratch.path());
    let server = Server::start(
        &[("pet", &pet)],
        &[
            "--max-request-bytes",
            "4096",
            "--max-text-chars",
            "200",
            "--max-texts",
            "3",
        ],
    );
    let long_text = "x".repeat(201);
    let four = json!({ "prompt": "pet", "texts": ["a", "b", "c", "d"] }).to_string();
    let huge = json!({ "prompt": "pet", "texts": ["y".repeat(5000)] }).to_string();
    let missing = scratch.path().join("no_such_prompt");
    let load_missing = json!({ "name": "other", "path": missing }).to_string();
    let predict_long = json!({ "prompt": "pet", "texts": [long_text] }).to_string();
    // an unknown name is echoed cut to a name's longest (hostile pass 34, F3)
    let long_name = json!({ "prompt": "p".repeat(3000), "texts": ["a"] }).to_string();
    let long_name_echo = format!(
        "unknown prompt \"{}\"... (3000 bytes); loaded: [pet]",
        "p".repeat(64)
    );
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "POST",
            "/v1/predict",
            Some(r#"{"prompt": "nope", "texts": ["a"]}"#),
            404,
            "unknown prompt \"nope\"; loaded: [pet]",
        ),
        (
            "POST",
            "/v1/predict",
            Some(&long_name),
            404,
            &long_name_echo,
        ),
        ("POST", "/v1/predict", Some("not json"), 400, "bad JSON"),
        ("POST", "/v1/predict", Some(""), 400, "bad JSON"),
        // what Python's json.dumps writes for a str holding a lone surrogate
        (
            "POST",
            "/v1/predict",
            Some(r#"{"prompt": "pet", "texts": ["a\ud800b"]}"#),
            400,
            "a lone UTF-16 surrogate such as \\ud800 is not a Unicode character",
        ),
        (
            "POST",
            "/v1/predict",
            Some(r#"{"prompt": "pet", "texts": [1]}"#),
            400,
            "bad JSON: invalid type",
        ),
        (
            "POST",
            "/v1/predict",
            Some(r#"{"prompt": "pet"}"#),
            400,
            "missing field `texts`",
        ),
        (
            "POST",
            "/v1/predict",
            Some(r#"{"prompt": "pet", "text": ["a"]}"#),
            400,
            "unknown field `text`",
        ),
        (
            "POST",
            "/v1/predict",
            Some(r#"{"prompt": "pet", "texts": []}"#),
            400,
            "\"texts\" is empty",
        ),
        (
            "POST",
            "/v1/predict",
            Some(&predict_long),
            400,
            "texts[0] has 201 characters, more than the server's --max-text-chars (200)",
        ),
        (
            "POST",
            "/v1/predict",
            Some(&four),
            400,
            "\"texts\" holds 4 texts, more than the server's --max-texts (3)",
        ),
        (
            "POST",
            "/v1/predict",
            Some(&huge),
            413,
            "--max-request-bytes (4096 bytes)",
        ),
        (
            "POST",
            "/v1/prompts",
            Some(r#"{"name": "../x", "path": "/tmp"}"#),
            400,
            "prompt name \"../x\"",
        ),
        (
            "POST",
            "/v1/prompts",
            Some(&load_missing),
            400,
            "no_such_prompt",
        ),
        // an empty path said ": no such folder" (hostile pass 34, F1)
        (
            "POST",
            "/v1/prompts",
            Some(r#"{"name": "other", "path": ""}"#),
            400,
            "\"path\" is empty: expected a prompt folder on the server's machine",
        ),
        (
            "POST",
            "/v1/prompts",
            Some(r#"{"name": "pet", "path": "/tmp"}"#),
            409,
            "loaded already",
        ),
        (
            "DELETE",
            "/v1/prompts/nope",
            None,
            404,
            "unknown prompt \"nope\"",
        ),
        ("GET", "/v2/nothing", None, 404, "no route /v2/nothing"),
        (
            "PUT",
            "/v1/predict",
            Some("{}"),
            405,
            "PUT is not served on /v1/predict",
        ),
    ];
    // deep nesting: refused before any depth matters
    let deep = format!("{{\"prompt\": \"pet\", \"texts\": {}", "[".repeat(4000));
    let hostile: &[(&str, &str, Option<&str>, u16, &str)] =
        &[("POST", "/v1/predict", Some(&deep), 400, "bad JSON")];
    for &(method, path, body, want_status, want_msg) in cases.iter().chain(hostile) {
        let (status, v) = server.call(method, path, body);
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: {v}"));
        let shown: String = body.unwrap_or("").chars().take(80).collect();
        assert_eq!(status, want_status, "{method} {path} {shown:?}: {msg}");
        assert!(
            msg.contains(want_msg),
            "{method} {path}: {msg:?} lacks {want_msg:?}"
        );
    }
    // a body that is not UTF-8, over a raw socket (the client crate sends text)
    let body: &[u8] = b"{\"prompt\": \"pet\", \"texts\": [\"\xff\xfe\"]}";
    let answer = raw_request(&server, "POST", "/v1/predict", body);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("{\"error\":\"bad JSON: invalid unicode"),
        "{answer}"
    );
    let (_, text) = server.call_text("GET", "/metrics", None);
    for series in [
        "softprompt_requests_total{route=\"/v1/predict\",status=\"400\"}",
        "softprompt_requests_total{route=\"/v1/predict\",status=\"404\"}",
        "softprompt_requests_total{route=\"/v1/predict\",status=\"413\"}",
        "softprompt_requests_total{route=\"other\",status=\"404\"}",
    ] {
        assert!(metric(&text, series) >= 1.0, "{series}");
    }
    assert_eq!(
        metric(
            &text,
            "softprompt_requests_total{route=\"/v1/predict\",status=\"400\"}"
        ),
        // 9 in the table, the deep nesting, the body that is not UTF-8
        11.0
    );
    // a client that sends garbage on the socket, or leaves mid-request, stops nothing
    for junk in [
        "GARBAGE\r\n\r\n",
        "POST /v1/predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
    ] {
        let addr = server.url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(junk.as_bytes()).unwrap();
        drop(s);
    }
    let (status, ok) = server.predict("pet", &["still up"]);
    assert_eq!(status, 200, "{ok}");
    assert_eq!(server.terminate(), 0);
}

/// A full queue answers 503 with a JSON error, and the server goes on. The engine is held
/// (`--debug-hold-engine`), so nothing leaves the queue: with `--max-queue 2`, of three
/// clients exactly one is refused, and so is a fourth request while the hold lasts; once it
/// ends, the two queued requests get their predictions, and the next requests are served with
/// the scores those got. The metrics count each 503.
#[test]
fn a_full_queue_gets_503_and_the_server_goes_on() {
    let scratch = ScratchDir::new("serve_full");
    let (pet, _) = make_prompts(scratch.path());
    let server = Server::start_held(&[("pet", &pet)], &["--max-queue", "2"]);
    let full = json!({
        "error": "the engine's queue is full (--max-queue requests wait): retry later"
    });
    let texts = |c: usize| &TEXTS[c..c + 2];
    let (done, answers) = std::sync::mpsc::channel();
    let served: Vec<(usize, Value)> = std::thread::scope(|s| {
        for c in 0..3 {
            let (server, done) = (&server, done.clone());
            s.spawn(move || done.send((c, server.predict("pet", texts(c)))).unwrap());
        }
        // held, the engine answers nothing: the first answer is the 503 of the client that
        // found both places taken
        let next = || answers.recv_timeout(Duration::from_secs(60)).unwrap();
        let (refused, (status, body)) = next();
        assert_eq!((status, &body), (503, &full), "client {refused}");
        assert_eq!(server.predict("pet", &TEXTS[..1]), (503, full.clone()));
        assert!(answers.try_recv().is_err(), "answered while held");
        server.release();
        let mut served: Vec<(usize, Value)> = (0..2)
            .map(|_| {
                let (c, (status, body)) = next();
                assert_eq!(status, 200, "client {c}: {body}");
                (c, body)
            })
            .collect();
        served.sort_by_key(|(c, _)| *c);
        served
    });
    // the two queued ones were answered, each with its own texts, as lone requests are
    assert_eq!(served.len(), 2);
    for (c, body) in &served {
        let preds = body["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 2, "client {c}: {body}");
        let (status, again) = server.predict("pet", texts(*c));
        assert_eq!(status, 200, "{again}");
        for (i, p) in preds.iter().enumerate() {
            let what = format!("client {c} text {i}");
            assert_same(&what, p, &again["predictions"][i]);
        }
    }
    let (_, text) = server.call_text("GET", "/metrics", None);
    let series = "softprompt_requests_total{route=\"/v1/predict\",status=\"503\"}";
    assert_eq!(metric(&text, series), 2.0);
    let series = "softprompt_requests_total{route=\"/v1/predict\",status=\"200\"}";
    assert_eq!(metric(&text, series), 4.0);
    assert_eq!(server.terminate(), 0);
}

/// Flags and prompt folders that cannot work stop the server before it listens, with exit
/// code 2 and a message naming the flag or the folder.
#[test]
fn bad_flags_fail_before_listening() {
    let scratch = ScratchDir::new("serve_flags");
    let missing = scratch.path().join("missing");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--prompt", "pet"],
            "--prompt: \"pet\": expected NAME=FOLDER",
        ),
        (
            &["--prompt", &format!("x={}", missing.display())],
            "missing",
        ),
        (&["--prompt", "a/b=."], "prompt name \"a/b\""),
        (
            &["--prompts", scratch.path().to_str().unwrap()],
            "holds no prompt folder",
        ),
        (&["--max-batch", "0"], "--max-batch"),
        (&["--batch-window-ms", "600000"], "--batch-window-ms"),
        // unbounded, --max-queue panicked (u64::MAX) or aborted (1e11) allocating its queue;
        // the timeouts and the grace took any u64, so a stop could wait for ever
        (
            &["--max-queue", "18446744073709551615"],
            "--max-queue: 18446744073709551615: expected at most 1000000",
        ),
        (&["--max-queue", "1000001"], "--max-queue"),
        (
            &["--shutdown-grace-s", "3601"],
            "--shutdown-grace-s: 3601: expected at most 3600",
        ),
        (
            &["--body-timeout-ms", "18446744073709551615"],
            "--body-timeout-ms",
        ),
        (&["--header-timeout-ms", "3600001"], "--header-timeout-ms"),
        (
            &["--write-timeout-ms", "3600001"],
            "--write-timeout-ms: 3600001: expected at most 3600000",
        ),
        (
            &["--write-timeout-ms", "0"],
            "--write-timeout-ms: 0: expected at least 1",
        ),
        (&["--mix-prompts", "maybe"], "--mix-prompts"),
        (&["--device", "tpu"], "--device"),
        // the start-up said "loaded already: unload it first", and an address not on this
        // machine blamed --port
        (
            &["--prompt", "a=/x", "--prompt", "a=/y"],
            "--prompt: the name \"a\" is given twice",
        ),
        // a bad name or no folder blamed the folder, or nothing at all (hostile pass 34, F1
        // and F2)
        (
            &["--prompt", "../x=/x"],
            "invalid argument --prompt: prompt name \"../x\": expected 1 to 64 letters",
        ),
        (
            &["--prompt", "=/x"],
            "invalid argument --prompt: prompt name \"\": expected",
        ),
        (
            &["--prompt", "a="],
            "invalid argument --prompt: \"a=\" names no folder: expected NAME=FOLDER",
        ),
        (
            &["--prompt", "a=/no/such/folder"],
            "invalid argument --prompt: \"a=/no/such/folder\": /no/such/folder: no such folder",
        ),
        (&["--host", "192.0.2.1"], "invalid argument --host"),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_softprompt"))
            .args(["serve", "--port", "0", "--model"])
            .arg(model_dir())
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        assert!(out.stdout.is_empty(), "{args:?} listened");
    }
}

/// A text holding the mask token got a 400 naming the template (`--template`), a flag a
/// request cannot pass: it names the text by its index. (A task.json max_len too short for
/// its template failed each text the same way; such a prompt is now refused at load:
/// serve_load's `a_task_json_max_len_that_cannot_serve_is_refused_at_load`.)
#[test]
fn a_text_holding_the_mask_token_is_named_by_its_index() {
    let dir = ScratchDir::new("serve_mask_text");
    let (pet, _) = make_prompts(dir.path());
    let server = Server::start(&[("pet", &pet)], &[]);
    let answer = server.predict("pet", &["fine", "a [MASK] movie"]);
    let msg = refused_with("mask", &answer, 400, &[]);
    assert!(
        msg.starts_with("texts[1]: the text holds the mask token"),
        "{msg}"
    );
    assert!(!msg.contains("--"), "names a flag: {msg}");
    assert_eq!(server.terminate(), 0);
}

/// A prompt of finite values so large (3e38, near float32's largest) that the model's
/// numbers overflow on it scores its texts NaN: the 500 said "row 0 of a batch scored its
/// labels" (a row of the engine's batch, not the request's). It names the prompt and the
/// text, and a request for another prompt in the same engine batch is still answered: the
/// batch fails as one and each request runs again alone (`softprompt_batches_split_total`).
#[test]
fn scores_that_are_not_finite_name_the_prompt_and_the_text() {
    let dir = ScratchDir::new("serve_non_finite");
    let (pet, _) = make_prompts(dir.path());
    let huge = dir.path().join("huge");
    save_pet_prompt(&huge, 4, 3e38);
    let want = predict_cli(&pet, &TEXTS[..2], dir.path());
    // both requests inside one batch window: one engine batch
    let server = Server::start(
        &[("pet", &pet), ("huge", &huge)],
        &["--batch-window-ms", "3000"],
    );
    let (answer, (status, v)) = std::thread::scope(|s| {
        let huge = s.spawn(|| server.predict("huge", &["fine", "a fine movie"]));
        let pet = s.spawn(|| server.predict("pet", &TEXTS[..2]));
        (huge.join().unwrap(), pet.join().unwrap())
    });
    let needles = [
        "prompt \"huge\" scores texts[0] with numbers that are not finite",
        "scored its labels {negative: NaN, positive: NaN}",
    ];
    refused_with("huge", &answer, 500, &needles);
    assert_eq!(status, 200, "{v}");
    for (i, (got, want)) in (v["predictions"].as_array().unwrap().iter())
        .zip(&want)
        .enumerate()
    {
        assert_same(&format!("pet text {i}"), got, want);
    }
    let (status, text) = server.call_text("GET", "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(metric(&text, "softprompt_batches_total"), 1.0, "{text}");
    assert_eq!(
        metric(&text, "softprompt_batches_split_total"),
        1.0,
        "{text}"
    );
    // the batch gathered 4 rows; the 2 of the failed request were not predicted (they were
    // counted as predicted, and their tokens in tokens/s: hostile pass 16, F5)
    assert_eq!(metric(&text, "softprompt_batch_rows_sum"), 4.0, "{text}");
    assert_eq!(metric(&text, "softprompt_rows_total"), 2.0, "{text}");
    assert_eq!(server.terminate(), 0);
}

/// A batch whose step would not fit the host's memory (`SOFTPROMPT_HOST_MEMORY` lowers it to
/// 1000 bytes) got a 400 naming `--batch-size`, which serve has not (#17, hostile7 F8): it
/// says what does not fit and names the server's own limits, --max-batch and --max-texts.
#[test]
fn a_batch_past_the_host_memory_names_the_server_s_limits() {
    let dir = ScratchDir::new("serve_host_memory");
    let (pet, _) = make_prompts(dir.path());
    let env = [("SOFTPROMPT_HOST_MEMORY", "1000")];
    let server = Server::start_env(&[("pet", &pet)], &[], &env);
    let answer = server.predict("pet", &TEXTS[..2]);
    let needles = [
        "the engine batch does not fit the server's memory: a step of 2 rows",
        " for activations, but the machine has 1000 bytes available",
        "a lower --max-batch",
        "--max-texts",
    ];
    let msg = refused_with("host memory", &answer, 400, &needles);
    assert!(!msg.contains("--batch-size"), "{msg}");
    assert_eq!(server.terminate(), 0);
}
