//! Loading and unloading prompts in a running `softprompt serve` over real HTTP
//! (`common::serve`): a loaded prompt is served as `predict` scores it and an unloaded one is
//! gone; a folder that cannot be served (a FIFO among its files, a prompt of another
//! architecture) is refused with a 400 naming it, and the server goes on.
#![cfg(feature = "serve")]

mod common;

use common::serve::*;
use common::ScratchDir;
use serde_json::{json, Value};
use softprompt::prelude::*;
use std::time::{Duration, Instant};

#[test]
fn prompts_load_and_unload_at_run_time() {
    let scratch = ScratchDir::new("serve_load");
    let (pet, cls) = make_prompts(scratch.path());
    let want_cls = predict_cli(&cls, &TEXTS[..3], scratch.path());
    let server = Server::start(&[("pet", &pet)], &[]);
    let (_, list) = server.call("GET", "/v1/prompts", None);
    let names = |list: &Value| -> Vec<String> {
        (list["prompts"].as_array().unwrap().iter())
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&list), ["pet"]);
    assert_eq!(list["prompts"][0]["task"], "pet");
    assert_eq!(
        list["prompts"][0]["labels"],
        json!(["negative", "positive"])
    );
    assert_eq!(server.predict("cls", &TEXTS[..3]).0, 404);

    let body = json!({ "name": "cls", "path": cls }).to_string();
    let (status, loaded) = server.call("POST", "/v1/prompts", Some(&body));
    assert_eq!(status, 201, "{loaded}");
    assert_eq!(loaded["loaded"]["task"], "cls");
    assert_eq!(loaded["loaded"]["prompt_len"], 3);
    assert_eq!(
        names(&server.call("GET", "/v1/prompts", None).1),
        ["cls", "pet"]
    );
    let (status, got) = server.predict("cls", &TEXTS[..3]);
    assert_eq!(status, 200, "{got}");
    for (i, (g, w)) in got["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&want_cls)
        .enumerate()
    {
        assert_same(&format!("loaded cls text {i}"), g, w);
    }
    // the name is taken until it is unloaded
    let (status, err) = server.call("POST", "/v1/prompts", Some(&body));
    assert_eq!(status, 409, "{err}");

    let (status, gone) = server.call("DELETE", "/v1/prompts/cls", None);
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["unloaded"]["name"], "cls");
    let (status, err) = server.predict("cls", &TEXTS[..1]);
    assert_eq!(status, 404);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("unknown prompt \"cls\""),
        "{err}"
    );
    assert_eq!(server.predict("pet", &TEXTS[..1]).0, 200);
    let (_, h) = server.call("GET", "/health", None);
    assert_eq!(
        (h["status"].as_str(), h["prompts"].as_u64()),
        (Some("ok"), Some(1))
    );
    assert_eq!(server.terminate(), 0);
}

/// A prompt folder whose files are not ordinary files (a FIFO: opening it blocked until a
/// writer came, and the engine with it, so every later request hung) is refused at once with
/// a 400 naming the file, and the server goes on serving and loading.
#[test]
fn a_fifo_in_a_loaded_folder_is_refused_and_the_server_goes_on() {
    let scratch = ScratchDir::new("serve_fifo");
    let (pet, _) = make_prompts(scratch.path());
    let server = Server::start(&[("pet", &pet)], &[]);
    for file in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "task.json",
    ] {
        let slow = scratch
            .path()
            .join(format!("slow_{}", file.replace('.', "_")));
        std::fs::create_dir(&slow).unwrap();
        for f in std::fs::read_dir(&pet).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, slow.join(f.file_name().unwrap())).unwrap();
        }
        let fifo = slow.join(file);
        std::fs::remove_file(&fifo).unwrap();
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) on a NUL-terminated path we own
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let start = Instant::now();
        let body = json!({ "name": "slow", "path": slow }).to_string();
        let answer = server.call("POST", "/v1/prompts", Some(&body));
        refused_with(file, &answer, 400, &[file, "not an ordinary file"]);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        let (status, ok) = server.predict("pet", &TEXTS[..2]);
        assert_eq!(status, 200, "{ok}");
    }
    // loading and unloading still work
    let body = json!({ "name": "again", "path": pet }).to_string();
    let (status, loaded) = server.call("POST", "/v1/prompts", Some(&body));
    assert_eq!(status, 201, "{loaded}");
    let (status, gone) = server.call("DELETE", "/v1/prompts/again", None);
    assert_eq!(status, 200, "{gone}");
    assert_eq!(server.terminate(), 0);
}

/// A prompt of another architecture loaded over HTTP: the 400 named the command line's
/// `--max-len` (a request passes no flags); it names the prompt and the architectures. One of
/// the model's own width (BLOOM's on Llama) was loaded with a warning on the server's stderr
/// only, and answered meaningless scores.
#[test]
fn load_of_another_architecture_names_the_mismatch() {
    let dir = ScratchDir::new("serve_other_arch");
    let opts = TaskOptions {
        labels: Some(vec!["negative".into(), "positive".into()]),
        ..TaskOptions::default()
    };
    let server = Server::start(&[], &[]);
    for arch in ["llama", "t5_v1_1"] {
        let model = Model::open(common::fixture(arch), Device::Cpu).unwrap();
        let task = model.task(&opts, None, 3).unwrap();
        let prompt = model
            .new_prompt(&task, 3, &PromptInit::Random { std: 0.5 }, 1)
            .unwrap();
        let path = dir.path().join(arch);
        model.save_prompt(&path, &prompt, &task).unwrap();
        let body = json!({ "name": arch, "path": path }).to_string();
        let named = format!("prompt \"{arch}\" ({})", path.display());
        let msg = refused_with(
            arch,
            &server.call("POST", "/v1/prompts", Some(&body)),
            400,
            &[
                &named,
                "does not fit this server's bert model",
                "but the model is bert",
            ],
        );
        assert!(!msg.contains("--"), "{arch}: names a flag: {msg}");
    }
    assert_eq!(server.terminate(), 0);
    let llama = Model::open(common::fixture("llama"), Device::Cpu).unwrap();
    let bloom = Model::open(common::fixture("bloom"), Device::Cpu).unwrap();
    assert_eq!(llama.hidden_size(), bloom.hidden_size());
    let task = bloom.task(&opts, None, 3).unwrap();
    let prompt = (bloom.new_prompt(&task, 3, &PromptInit::Random { std: 0.5 }, 1)).unwrap();
    let path = dir.path().join("bloom");
    bloom.save_prompt(&path, &prompt, &task).unwrap();
    let server = Server::start_on(&common::fixture("llama"), &[], &[]);
    let body = json!({ "name": "b", "path": path }).to_string();
    refused_with(
        "bloom on llama",
        &server.call("POST", "/v1/prompts", Some(&body)),
        400,
        &[
            "prompt \"b\"",
            "this server's llama model",
            "`arch` is \"bloom\"",
        ],
    );
    assert_eq!(server.terminate(), 0);
}
