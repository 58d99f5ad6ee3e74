//! Data files: a repeated JSON key, a file or stream past the read bound (a FIFO or /dev/zero
//! ate all memory), the mask token in a text, invalid UTF-8 (file:line in every format), and
//! huge lines cut before they are tokenized; `--quoting none` for TSV files written without
//! quoting.

use crate::common::{binary, fixture, refused, ScratchDir};
use crate::{corpus, ok, s, s_static, softprompt, train_args, trained};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// A JSON line that names a key twice is refused naming the file, the line and the key
/// (serde_json kept the last value, so the row trained on one of two labels silently).
#[test]
fn data_duplicate_key_names_line_and_key() {
    let dir = ScratchDir::new("duplicate_key");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let mut args = train_args(&model, &out, &[]);
    let data = s_static(corpus("data/duplicate_key.jsonl"));
    args[4] = data;
    refused(
        &softprompt(&args),
        &["duplicate_key.jsonl:2", "\"label\"", "twice"],
    );
    let run = trained(&dir, &[]);
    refused(
        &softprompt(&["predict", "--prompt", s(&run), "--data", data]),
        &["duplicate_key.jsonl:2", "\"label\""],
    );
}

/// A data path that names no file, or a folder, says what was expected there, not the OS's
/// words alone (review 27, F16).
#[test]
fn a_missing_data_file_or_a_folder_says_a_data_file_was_expected() {
    let dir = ScratchDir::new("data_missing");
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let missing = dir.path().join("nope.jsonl");
    for (data, os) in [
        (missing.as_path(), "No such file or directory"),
        (dir.path(), "Is a directory"),
    ] {
        let mut args = train_args(&model, &out, &[]);
        let at = args.iter().position(|a| *a == "--train").expect("--train") + 1;
        args[at] = s_static(data.to_path_buf());
        let expected = format!(
            "{}: cannot be read as a data file (JSON lines, TSV or CSV): {os}",
            data.display()
        );
        refused(&softprompt(&args), &[&expected]);
    }
}

// ---------------------------------------------------------------------------------------------
// A data file or stream is read to a bound (a FIFO or /dev/zero ate all memory)

#[test]
fn data_past_the_stream_cap_is_refused() {
    let dir = ScratchDir::new("stream_cap");
    let out = dir.path().join("run");
    let model = fixture("bert_mlm");
    let train = corpus("data/train.jsonl");
    let size = std::fs::metadata(&train).expect("train.jsonl").len();
    let run = |cap: &str, data: &Path| {
        let mut args = train_args(&model, &out, &[]);
        let at = args.iter().position(|a| *a == "--train").expect("--train") + 1;
        args[at] = s_static(data.to_path_buf());
        Command::new(binary())
            .args(&args)
            .env("SOFTPROMPT_MAX_STREAM_BYTES", cap)
            .output()
            .expect("run softprompt")
    };
    // an ordinary file one byte past the cap, and a stream without end
    let cap = (size - 1).to_string();
    let err = refused(
        &run(&cap, &train),
        &["train.jsonl", &cap, "SOFTPROMPT_MAX_STREAM_BYTES"],
    );
    assert!(err.contains(&format!("more than {cap} bytes")), "{err}");
    refused(
        &run("4096", Path::new("/dev/zero")),
        &[
            "/dev/zero",
            "more than 4096 bytes",
            "SOFTPROMPT_MAX_STREAM_BYTES",
        ],
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
    // a value that is not a number of bytes is named
    refused(
        &run("lots", &train),
        &[
            "SOFTPROMPT_MAX_STREAM_BYTES",
            "\"lots\"",
            "positive number of bytes",
        ],
    );
    // at the cap exactly, the file is read
    ok(&run(&size.to_string(), &train));
}

/// A text holding the mask token names the file, the line and the text (it blamed
/// `--template`, a flag no one gave).
#[test]
fn data_mask_in_text_names_the_line() {
    let dir = ScratchDir::new("mask_in_text");
    let run = trained(&dir, &[]);
    let data = corpus("data/mask_in_text.jsonl");
    let err = refused(
        &softprompt(&["eval", "--prompt", s(&run), "--data", s(&data)]),
        &[
            "mask_in_text.jsonl:2: the text holds the mask token",
            "take it out of the text",
        ],
    );
    assert!(!err.contains("--template"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Data files: invalid UTF-8 names file:line in every format

fn utf8_case(file: &str, line: usize) {
    let dir = ScratchDir::new("utf8");
    let data = corpus(&format!("data/{file}"));
    let out = dir.path().join("out");
    let model = fixture("bert_mlm");
    let mut args = train_args(&model, &out, &[]);
    args[4] = s_static(data.clone());
    let at = format!("{}:{line}:", data.display());
    refused(&softprompt(&args), &[&at, "UTF-8"]);
}

#[test]
fn invalid_utf8_jsonl_names_the_line() {
    utf8_case("invalid_utf8.jsonl", 3);
}

#[test]
fn invalid_utf8_tsv_names_the_line() {
    utf8_case("invalid_utf8.tsv", 3);
}

#[test]
fn invalid_utf8_csv_names_the_line() {
    utf8_case("invalid_utf8.csv", 3);
}

/// A 10 MB line is cut by words before it is tokenized: train and predict stay small (they
/// peaked at 920 MB), and the kept tokens are those of the whole line.
#[test]
fn huge_line_is_cut_before_tokenizing() {
    let dir = ScratchDir::new("huge_line");
    let run = trained(&dir, &[]);
    let line = "the movie was great and the film was fine. ".repeat(240_000);
    let big = dir.path().join("big.jsonl");
    let short = dir.path().join("short.jsonl");
    let row = |t: &str| serde_json::json!({"text": t, "label": "positive"}).to_string() + "\n";
    std::fs::write(&big, row(&line)).expect("write");
    std::fs::write(&short, row(&line[..2000])).expect("write");
    let (p1, p2) = (dir.path().join("p1.jsonl"), dir.path().join("p2.jsonl"));
    ok(&softprompt(&[
        "predict",
        "--prompt",
        s(&run),
        "--data",
        s(&big),
        "--output",
        s(&p1),
    ]));
    ok(&softprompt(&[
        "predict",
        "--prompt",
        s(&run),
        "--data",
        s(&short),
        "--output",
        s(&p2),
    ]));
    let scores = |p: &Path| -> Value {
        let v: Value =
            serde_json::from_str(std::fs::read_to_string(p).expect("read").trim()).expect("json");
        v["scores"].clone()
    };
    assert_eq!(scores(&p1), scores(&p2), "the cut changed the kept tokens");
    let peak = peak_child_rss_kb();
    // the largest child so far (other tests' children are far smaller than the old 920 MB)
    assert!(peak < 400_000, "a child peaked at {peak} KB");
}

/// A 10 MB line without whitespace (no word boundary to cut at) is cut by bytes before it
/// is tokenized: predict stays small (it peaked at about 5 GB) and scores it as its first
/// 64 KiB.
#[test]
fn huge_line_without_whitespace_is_cut_before_tokenizing() {
    let dir = ScratchDir::new("huge_word");
    let run = trained(&dir, &[]);
    let line = "great!".repeat(1_700_000);
    let row = |t: &str| serde_json::json!({"text": t, "label": "positive"}).to_string() + "\n";
    let (big, short) = (dir.path().join("big.jsonl"), dir.path().join("short.jsonl"));
    std::fs::write(&big, row(&line)).expect("write");
    std::fs::write(&short, row(&line[..1 << 16])).expect("write");
    let scores = |data: &Path| -> Value {
        let p = data.with_extension("out.jsonl");
        ok(&softprompt(&[
            "predict",
            "--prompt",
            s(&run),
            "--data",
            s(data),
            "--output",
            s(&p),
        ]));
        let v: Value =
            serde_json::from_str(std::fs::read_to_string(&p).expect("read").trim()).expect("json");
        v["scores"].clone()
    };
    assert_eq!(scores(&big), scores(&short));
    let peak = peak_child_rss_kb();
    assert!(peak < 400_000, "a child peaked at {peak} KB");
}

/// The largest resident set of any finished child of this process, in KB.
fn peak_child_rss_kb() -> i64 {
    // SAFETY: getrusage only writes the struct it is given
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u.ru_maxrss
    }
}

// ---------------------------------------------------------------------------------------------
// --quoting none: TSV files written without quoting (GLUE's)

/// A TSV file written with no quoting (GLUE's) whose first text starts with a quote it never
/// closes: read as Python's csv reads it (the default), the quote ran to the end of the file,
/// an error; `--quoting none` reads it as written in train, train --task-data, eval and
/// predict. --quoting is for the TSV and CSV files of a command: JSON lines files beside them
/// (a --dev, a --task-data folder) read as they are; `minimal`, the default, is taken by a
/// JSON lines file alone, and `none` is refused naming the file.
#[test]
fn quoting_none_reads_a_glue_tsv_in_every_command() {
    let dir = ScratchDir::new("quoting_none");
    let rows = std::fs::read_to_string(corpus("data/train.jsonl")).expect("train.jsonl");
    let mut tsv = String::from("text\tlabel\n");
    for (i, line) in rows.lines().enumerate() {
        let v: Value = serde_json::from_str(line).expect("json");
        let open = if i == 0 { "\"" } else { "" };
        tsv += &format!(
            "{open}{}\t{}\n",
            v["text"].as_str().expect("text"),
            v["label"].as_str().expect("label")
        );
    }
    let folder = dir.path().join("glue");
    std::fs::create_dir(&folder).expect("mkdir");
    let data = folder.join("train.tsv");
    std::fs::write(&data, tsv).expect("write");
    let data = s_static(data);
    let at = format!(
        "{data}:2: malformed line: a quoted field is not closed (for a file written with no \
         quoting at all, as GLUE's TSV files are, pass --quoting none)"
    );
    let model = fixture("bert_mlm");
    let (out, multi) = (dir.path().join("out"), dir.path().join("multi"));
    let mut args = train_args(&model, &out, &[]);
    args[4] = data;
    refused(&softprompt(&args), &[&at]);
    args.extend(["--quoting", "none"]);
    ok(&softprompt(&args));
    // a JSON lines --dev and --test beside the TSV --train read as they are
    let jsonl = s_static(corpus("data/train.jsonl"));
    let mut mixed = args.clone();
    mixed.extend(["--dev", jsonl, "--test", jsonl, "--overwrite"]);
    let text = ok(&softprompt(&mixed));
    let n = rows.lines().filter(|l| !l.trim().is_empty()).count();
    for split in ["dev  ", "test "] {
        let line = format!("{split} {jsonl}: {n} rows");
        assert!(text.contains(&line), "{line}: {text}");
    }
    let task_data = format!("a={}", folder.display());
    let mut multi_args = train_args(&model, &multi, &["--task-data", &task_data]);
    multi_args.drain(3..5); // --train FILE
    refused(&softprompt(&multi_args), &[&at]);
    multi_args.extend(["--quoting", "none"]);
    ok(&softprompt(&multi_args));
    // beside a JSON lines task folder, --quoting is for the TSV: the JSON lines read as they are
    let json_folder = dir.path().join("json");
    std::fs::create_dir(&json_folder).expect("mkdir");
    std::fs::copy(corpus("data/train.jsonl"), json_folder.join("train.jsonl")).expect("copy");
    let json_data = format!("b={}", json_folder.display());
    multi_args.extend(["--task-data", &json_data, "--overwrite"]);
    ok(&softprompt(&multi_args));
    // JSON lines folders alone refuse it, naming the file
    let json_only = dir.path().join("json_only");
    let mut json_args = train_args(&model, &json_only, &["--task-data", &json_data]);
    json_args.drain(3..5);
    json_args.extend(["--quoting", "none"]);
    refused(
        &softprompt(&json_args),
        &[
            "--quoting",
            "train.jsonl: a JSON lines file has no quoting to set",
        ],
    );
    for cmd in ["eval", "predict"] {
        let args = ["--prompt", s(&out), "--data", data];
        refused(&softprompt(&[&[cmd][..], &args].concat()), &[&at]);
        ok(&softprompt(
            &[&[cmd][..], &args, &["--quoting", "none"]].concat(),
        ));
    }
    let eval = |data: &str, quoting: &str| {
        softprompt(&[
            "eval",
            "--prompt",
            s(&out),
            "--data",
            data,
            "--quoting",
            quoting,
        ])
    };
    let jsonl = corpus("data/train.jsonl");
    refused(
        &eval(s(&jsonl), "none"),
        &[
            "--quoting",
            "train.jsonl: a JSON lines file has no quoting to set",
        ],
    );
    // minimal, the default, given to a JSON lines file: read as ever
    let text = ok(&eval(s(&jsonl), "minimal"));
    assert!(text.contains(&format!("({n} examples")), "{text}");
    refused(
        &eval(data, "all"),
        &["--quoting", "\"all\": expected minimal or none"],
    );
}
