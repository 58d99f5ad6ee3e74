//! What the tests of `softprompt serve` (tests/serve.rs, serve_limits.rs, serve_load.rs)
//! share: the binary started on a free port, requests to it, two prompts of different tasks
//! (a `pet` one and a `cls` one) on the committed tiny BERT, and `softprompt predict`'s
//! answers to compare with.

use serde_json::{json, Value};
use softprompt::prelude::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Served scores against `predict`'s: batch make-up changes the last bits (issue #17).
pub const SCORE_TOL: f64 = 1e-5;

pub const TEXTS: &[&str] = &[
    "The movie was great.",
    "Terrible plot.",
    "Quite a pleasant surprise.",
    "The actors seemed tired and the jokes fell flat.",
    "",
    "emoji \u{1F600} and a NUL \u{0} inside",
    // past the task's max_len: cut, and flagged `truncated`
    "long long long long long long long long long long long long long long long long long \
     long long long long long long long long long long long long long long long long long",
];

pub fn model_dir() -> PathBuf {
    super::fixture("bert_mlm")
}

/// The `pet` task of `make_prompts`: verbalizer terrible/good, rows cut to 24 tokens.
pub fn pet_options() -> TaskOptions {
    TaskOptions {
        verbalizer: Some(vec![
            ("negative".into(), "terrible".into()),
            ("positive".into(), "good".into()),
        ]),
        max_len: Some(24),
        ..TaskOptions::default()
    }
}

/// Saves a `pet` prompt (verbalizer terrible/good, 4 rows) and a `cls` prompt with a random
/// head (three labels, 3 rows) for the tiny BERT under `dir`: (pet folder, cls folder). Their
/// lengths differ, so a batch mixing them runs as one engine pass with per-row prompt lengths.
pub fn make_prompts(dir: &Path) -> (PathBuf, PathBuf) {
    let model = Model::open(model_dir(), Device::Cpu).unwrap();
    let pet_opts = pet_options();
    let pet_task = model.task(&pet_opts, None, 4).unwrap();
    let pet = model
        .new_prompt(&pet_task, 4, &PromptInit::Random { std: 0.5 }, 1)
        .unwrap();
    let cls_opts = TaskOptions {
        task: Some(TaskKind::Cls),
        labels: Some(vec!["a".into(), "b".into(), "c".into()]),
        max_len: Some(20),
        ..TaskOptions::default()
    };
    let cls_task = model.task(&cls_opts, None, 3).unwrap();
    let mut cls = model
        .new_prompt(&cls_task, 3, &PromptInit::Random { std: 0.5 }, 2)
        .unwrap();
    // a zero head scores every label alike: give it weights that tell them apart
    let (w, b) = cls.head_mut().unwrap();
    for (i, v) in w.iter_mut().chain(b.iter_mut()).enumerate() {
        *v = ((i * 37 % 23) as f32 - 11.0) * 0.05;
    }
    let (pet_dir, cls_dir) = (dir.join("pet"), dir.join("cls"));
    model
        .save_prompt(&pet_dir, &pet, &pet_task, SaveOptions::default())
        .unwrap();
    model
        .save_prompt(&cls_dir, &cls, &cls_task, SaveOptions::default())
        .unwrap();
    (pet_dir, cls_dir)
}

/// Saves a `pet` prompt (the task of `pet_options`) of `rows` rows, every value `value`, in
/// the folder `dir`.
pub fn save_pet_prompt(dir: &Path, rows: usize, value: f32) {
    let model = Model::open(model_dir(), Device::Cpu).unwrap();
    let task = model.task(&pet_options(), None, 4).unwrap();
    let prompt = Prompt::from_values(rows, 48, vec![value; rows * 48]).unwrap();
    model
        .save_prompt(dir, &prompt, &task, SaveOptions::default())
        .unwrap();
}

/// As `save_pet_prompt`, written by the engine's own writer past `Model::save_prompt`'s
/// check, which refuses more rows than the model's positions hold: a folder a hand (or
/// another build) wrote, to test its refusal.
pub fn write_pet_prompt_unchecked(dir: &Path, rows: usize, value: f32) {
    use softprompt::internals::{prompt::PromptTable, train, CpuBackend};
    let be = CpuBackend::<f32>::new();
    let engine = train::Model::load(&be, &model_dir()).unwrap();
    let model = Model::open(model_dir(), Device::Cpu).unwrap();
    let task = model.task(&pet_options(), None, 4).unwrap();
    let spec = task.spec();
    let table = PromptTable::from_data(rows, 48, vec![value; rows * 48]).unwrap();
    let info = engine.adapter_info(spec.kind.peft_task_type());
    let extra = json!({ "arch": "bert" });
    train::checkpoint::save_prompt_dir(dir, &table, (None, None), spec, &model_dir(), &info, extra)
        .unwrap();
}

/// `softprompt predict` on `texts`: one JSON object per text.
pub fn predict_cli(prompt: &Path, texts: &[&str], scratch: &Path) -> Vec<Value> {
    predict_cli_on(&model_dir(), prompt, texts, scratch)
}

/// `predict_cli` with the model folder `model`.
pub fn predict_cli_on(model: &Path, prompt: &Path, texts: &[&str], scratch: &Path) -> Vec<Value> {
    let data = scratch.join(format!(
        "{}.jsonl",
        prompt.file_name().unwrap().to_string_lossy()
    ));
    let lines: Vec<String> = texts
        .iter()
        .map(|t| json!({ "text": t }).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_softprompt"))
        .arg("predict")
        .args(["--prompt".as_ref(), prompt.as_os_str()])
        .args(["--data".as_ref(), data.as_os_str()])
        .args(["--model".as_ref(), model.as_os_str()])
        .output()
        .unwrap();
    (super::stdout_ok(&out).lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The running server; killed on drop if a test failed before stopping it.
pub struct Server {
    /// behind a lock, as `stdin`: a test looks at it while its clients wait
    child: Mutex<Child>,
    pub url: String,
    /// the hold's release (`start_held`): behind a lock, so that a test can release it while
    /// its clients wait
    stdin: Mutex<Option<ChildStdin>>,
}

impl Server {
    pub fn start(prompts: &[(&str, &Path)], extra: &[&str]) -> Server {
        Server::start_on(&model_dir(), prompts, extra)
    }

    /// `start` with the hidden `--debug-hold-engine`: the engine takes no request (nor a load
    /// or an unload) until `release`, so they wait in the queue, `--max-queue` of them at most.
    pub fn start_held(prompts: &[(&str, &Path)], extra: &[&str]) -> Server {
        let extra: Vec<&str> = ["--debug-hold-engine"]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        Server::start_on(&model_dir(), prompts, &extra)
    }

    /// Ends `start_held`'s hold.
    pub fn release(&self) {
        self.hold_line(b"\n");
    }

    /// Ends `start_held`'s engine thread instead of its hold, as a failure would.
    pub fn end_engine(&self) {
        self.hold_line(b"end-engine\n");
    }

    fn hold_line(&self, line: &[u8]) {
        let mut stdin = self.stdin.lock().unwrap();
        let mut stdin = stdin
            .take()
            .expect("a server started held, not released yet");
        stdin.write_all(line).unwrap();
    }

    /// `start` with the model folder `model`.
    pub fn start_on(model: &Path, prompts: &[(&str, &Path)], extra: &[&str]) -> Server {
        Server::start_with(model, prompts, extra, Stdio::inherit(), &[])
    }

    /// `start` with the environment variables `env` set for the server.
    pub fn start_env(prompts: &[(&str, &Path)], extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_with(&model_dir(), prompts, extra, Stdio::inherit(), env)
    }

    /// `start_on` with the server's stderr written to the file `log`.
    pub fn start_logged(
        model: &Path,
        prompts: &[(&str, &Path)],
        extra: &[&str],
        log: &Path,
    ) -> Server {
        let file = std::fs::File::create(log).unwrap();
        Server::start_with(model, prompts, extra, Stdio::from(file), &[])
    }

    fn start_with(
        model: &Path,
        prompts: &[(&str, &Path)],
        extra: &[&str],
        stderr: Stdio,
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_softprompt"));
        cmd.envs(env.iter().copied());
        cmd.args(["serve", "--port", "0", "--model"]).arg(model);
        for (name, dir) in prompts {
            cmd.arg("--prompt").arg(format!("{name}={}", dir.display()));
        }
        let mut child = cmd
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let status = child.wait().unwrap();
            panic!("the server did not start ({status}): stdout {line:?}");
        };
        Server {
            url: url.to_string(),
            stdin: Mutex::new(child.stdin.take()),
            child: Mutex::new(child),
        }
    }

    /// (status, JSON body) of a request; every body the API sends is JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let (status, text) = self.call_text(method, path, body);
        let v = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path}: {status} with a body that is not JSON ({e}): {text:?}")
        });
        (status, v)
    }

    pub fn call_text(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let mut resp = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            ("PUT", b) => agent.put(&url).send(b.unwrap_or("")),
            (_, b) => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(b.unwrap_or("")),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap())
    }

    pub fn predict(&self, prompt: &str, texts: &[&str]) -> (u16, Value) {
        let body = json!({ "prompt": prompt, "texts": texts }).to_string();
        self.call("POST", "/v1/predict", Some(&body))
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(self) -> i32 {
        self.sigterm();
        self.wait()
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends the signal `sig` (libc's number).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet
        let rc = unsafe { libc::kill(self.child.lock().unwrap().id() as i32, sig) };
        assert_eq!(rc, 0);
    }

    /// host:port
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// A fresh connection that gives up reading after 20 s.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// The server's resident memory in KiB (Linux's /proc).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.lock().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        (status.lines())
            .find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
    }

    /// Whether the server is still running.
    pub fn running(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(None))
    }

    /// The exit code once the server ends within `limit` (stdin left open, so a hold is not
    /// released), or None when it still runs then.
    pub fn wait_for_exit(&self, limit: Duration) -> Option<i32> {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.lock().unwrap().try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (20 s at most) until the metric `series` reads `want` in `GET /metrics`: the
    /// server's own word that it reached a state (a connection part-way through its head, a
    /// request under way), where a test slept and hoped.
    pub fn await_metric(&self, series: &str, want: f64) {
        let start = std::time::Instant::now();
        loop {
            let (status, text) = self.call_text("GET", "/metrics", None);
            assert_eq!(status, 200, "{text}");
            let got = metric(&text, series);
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{series} is {got}, not {want}, after 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit code, once the server ends (a hold not released ends with stdin's end).
    pub fn wait(self) -> i32 {
        drop(self.stdin.lock().unwrap().take());
        let status = self.child.lock().unwrap().wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One request written by hand on a fresh connection: the whole answer, headers included.
pub fn raw_request(server: &Server, method: &str, path: &str, body: &[u8]) -> String {
    let addr = server.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// A served prediction matches `predict`'s line: the same label and truncation, scores
/// within SCORE_TOL.
pub fn assert_same(what: &str, got: &Value, want: &Value) {
    assert_eq!(got["label"], want["label"], "{what}: {got} vs {want}");
    assert_eq!(
        got["truncated"], want["truncated"],
        "{what}: {got} vs {want}"
    );
    let scores = |v: &Value| -> Vec<f64> {
        let obj = v["scores"].as_object().unwrap();
        obj.values().map(|s| s.as_f64().unwrap()).collect()
    };
    let (g, w) = (scores(got), scores(want));
    assert_eq!(
        got["scores"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        want["scores"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    assert!(!w.is_empty());
    super::assert_close(what, &g, &w, SCORE_TOL);
}

/// The value of a metric line (`name{labels} value`) in Prometheus text.
pub fn metric(text: &str, series: &str) -> f64 {
    (text.lines())
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics:\n{text}"))
}

/// The message of an error answer (status, `{"error": ...}`) after checking that its status
/// is `status` and that it holds every needle; `what` prefixes a failure.
pub fn refused_with(what: &str, answer: &(u16, Value), status: u16, needles: &[&str]) -> String {
    let (got, body) = answer;
    assert_eq!(*got, status, "{what}: {body}");
    let msg = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error: {body}"));
    for needle in needles {
        assert!(msg.contains(needle), "{what}: lacks {needle:?}: {msg}");
    }
    msg.to_string()
}

/// Waits (20 s at most) until the server's log `log` (`Server::start_logged`) holds `needle`:
/// the server's own word that it reached a state (the shutdown begun).
pub fn await_log(log: &Path, needle: &str) {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no {needle:?} in the server's log after 20 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
