//! Data files and templates: errors name the file and the line; templates hold one {text}
//! and one [MASK], and long texts are cut at the end of the text.

use crate::common::{fixture, softprompt};
use crate::{s, scratch, sentiment_files};
use softprompt::internals::train::data::{DataSpec, Dataset};
use softprompt::internals::train::{Model, Task, TaskKind, TaskSpec};
use softprompt::internals::CpuBackend;
use std::path::Path;

/// Data errors name the file and the line, and stop with exit code 2.
#[test]
fn data_errors_name_file_and_line() {
    let dir = scratch("errors");
    let (train, _) = sentiment_files(&dir);
    let model = fixture("bert_mlm");
    let run = |data: &Path, extra: &[&str]| -> String {
        let mut args = vec![
            "train",
            "--model",
            s(&model),
            "--train",
            s(data),
            "--out",
            s(&dir),
            "--task",
            "pet",
            "--max-steps",
            "1",
            "--no-progress",
        ];
        args.extend(extra);
        let out = softprompt(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"the movie was great.\", \"label\": \"positive\"}\n{\"text\": \"meh.\", \"label\": \"neutral\"}\n").unwrap();
    let err = run(
        &bad,
        &[
            "--labels",
            "negative,positive",
            "--verbalizer",
            "positive=great,negative=bad",
        ],
    );
    assert!(
        err.contains(&format!("{}:2: unknown label \"neutral\"", bad.display())),
        "{err}"
    );
    std::fs::write(
        &bad,
        "{\"text\": \"the movie was great.\", \"label\": \"positive\"}\n{\"text\": \"meh.\"\n",
    )
    .unwrap();
    assert!(run(&bad, &[]).contains(&format!("{}:2: malformed line", bad.display())));
    // a text present but null is named as null, not as a missing (misspelt?) field
    std::fs::write(
        &bad,
        "{\"text\": \"fine.\", \"label\": \"positive\"}\n{\"text\": null}\n",
    )
    .unwrap();
    let err = run(&bad, &[]);
    assert!(
        err.contains(&format!(
            "{}:2: field \"text\" is null: every row needs a text",
            bad.display()
        )),
        "{err}"
    );
    // so is a training row's null label (a prediction reads it as a row without one)
    std::fs::write(&bad, "{\"text\": \"fine.\", \"label\": null}\n").unwrap();
    let err = run(&bad, &[]);
    let want = "field \"label\" is null: every row here needs a label";
    assert!(
        err.contains(&format!("{}:1: {want}", bad.display())),
        "{err}"
    );
    let tsv = dir.join("bad.tsv");
    std::fs::write(&tsv, "sentence\tlabel\nthe movie was great.\tpositive\n").unwrap();
    assert!(run(&tsv, &[]).contains(&format!("{}:1: missing field \"text\"", tsv.display())));
    assert!(run(
        &tsv,
        &[
            "--text-field",
            "sentence",
            "--verbalizer",
            "positive=great,negative=wonderful"
        ]
    )
    .contains("\"wonderful\" tokenizes to 2 pieces"));
    // labels that are their own words, with no --verbalizer: the refusal says so (review
    // 27, F16: it named a flag the user never gave, alone)
    let own = run(
        &tsv,
        &["--text-field", "sentence", "--labels", "positive,wonderful"],
    );
    assert!(own.contains("\"wonderful\" tokenizes to 2 pieces"), "{own}");
    assert!(own.contains("a label is its own word"), "{own}");
    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    assert!(run(&empty, &[]).contains(&format!(
        "{}:1: the file holds no examples",
        empty.display()
    )));
    // the device flag: no GPU on this machine, and emu needs its feature
    let out = softprompt(&[
        "train",
        "--model",
        s(&model),
        "--train",
        s(&train),
        "--out",
        s(&dir),
        "--device",
        "cuda",
    ]);
    if softprompt::internals::cuda::probe_cuda().is_err() {
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no CUDA device"));
    }
}

/// Templates: one {text} and (pet) one [MASK]; long texts are cut at the end of the text, the
/// template and [MASK] survive, and the cut rows are counted.
#[test]
fn templates_truncation_and_mask() {
    let be = CpuBackend::<f32>::new();
    let model = Model::load(&be, &fixture("bert_mlm")).unwrap();
    let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
    spec.label_words = vec!["bad".into(), "great".into()];
    spec.template = "[MASK] , {text}".into();
    spec.max_len = 9;
    let task = Task::new(spec.clone(), &model).unwrap();
    let data = Dataset::parse(Path::new("t.jsonl"), "{\"text\": \"the movie was great.\", \"label\": \"positive\"}\n{\"text\": \"the film was so so so boring and slow.\", \"label\": \"negative\"}\n", &DataSpec::default()).unwrap();
    let enc = task.encode(&model.tokenizer, &data).unwrap();
    assert_eq!(enc.truncated, 1);
    let tok = &model.tokenizer;
    // [CLS] [MASK] , the movie was great . [SEP]: 9 ids, not cut
    assert_eq!(
        enc.rows[0].ids,
        tok.encode("[MASK] , the movie was great.", true).unwrap()
    );
    assert!(!enc.rows[0].truncated);
    // the second row keeps [CLS] [MASK] , and [SEP] around the first 5 text tokens
    let mut want = tok.encode("[MASK] , the film was so so", true).unwrap();
    assert_eq!(want.len(), 9);
    assert_eq!(enc.rows[1].ids, std::mem::take(&mut want));
    assert!(enc.rows[1].truncated);
    assert_eq!((enc.rows[0].mask_pos, enc.rows[1].mask_pos), (1, 1));
    // PET's Chinese pattern: [MASK] first, then the text
    let zh = Task::new(
        TaskSpec {
            template: "[MASK]满意。{text}".into(),
            max_len: 40,
            ..spec.clone()
        },
        &model,
    )
    .unwrap();
    let data_zh = Dataset::parse(
        Path::new("zh.jsonl"),
        "{\"text\": \"很好的电影\", \"label\": \"positive\"}\n",
        &DataSpec::default(),
    )
    .unwrap();
    let row = &zh.encode(tok, &data_zh).unwrap().rows[0];
    assert_eq!(row.ids, tok.encode("[MASK]满意。很好的电影", true).unwrap());
    assert_eq!(row.ids.len(), 11); // [CLS] [MASK] 满 意 。 很 好 的 电 影 [SEP], one piece per character
    assert_eq!(
        (row.mask_pos, row.ids[1]),
        (1, tok.token_to_id("[MASK]").unwrap())
    );
    // wrong templates
    for (template, msg) in [
        ("{text}", "[MASK] exactly once"),
        ("[MASK] [MASK] {text}", "[MASK] exactly once"),
        ("no slot [MASK]", "{text} exactly once"),
    ] {
        let err = Task::new(
            TaskSpec {
                template: template.into(),
                ..spec.clone()
            },
            &model,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(msg), "{template}: {err}");
    }
    let err = Task::new(
        TaskSpec {
            kind: TaskKind::Cls,
            template: "{text} [MASK]".into(),
            ..spec.clone()
        },
        &model,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pet only"), "{err}");
    let err = Task::new(
        TaskSpec {
            max_len: 3,
            ..spec.clone()
        },
        &model,
    )
    .and_then(|t| t.encode(tok, &data))
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("t.jsonl:1: ") && err.contains("cannot hold the template"),
        "{err}"
    );
    // a head-less BERT cannot do pet; a T5 cannot do cls
    let nohead = Model::load(&be, &fixture("bert_nohead")).unwrap();
    assert!(Task::new(spec.clone(), &nohead)
        .unwrap_err()
        .to_string()
        .contains("use --task cls"));
    let t5 = Model::load(&be, &fixture("t5_flan")).unwrap();
    assert!(Task::new(TaskSpec::new(TaskKind::Cls, &["a", "b"]), &t5)
        .unwrap_err()
        .to_string()
        .contains("--task seq2seq"));
}

/// The records of `text` read as the file `name`: (text, label, line).
fn records(name: &str, text: &str) -> Vec<(String, String, usize)> {
    let d = Dataset::parse(Path::new(name), text, &DataSpec::default()).unwrap();
    (d.examples.into_iter())
        .map(|e| (e.text, e.label.unwrap(), e.line))
        .collect()
}

/// `(text, label, line)` rows from string slices.
fn want(rows: &[(&str, &str, usize)]) -> Vec<(String, String, usize)> {
    (rows.iter())
        .map(|&(t, l, n)| (t.to_string(), l.to_string(), n))
        .collect()
}

/// CSV and TSV line ends as Python's csv module reads them: `\r\n`, `\n` and a lone `\r` (a
/// last line that lost its LF made a class "positive\r"; a CR-only file was one record).
#[test]
fn csv_and_tsv_lone_cr_ends_a_line() {
    let two = want(&[("ok", "positive", 2), ("bad", "negative", 3)]);
    assert_eq!(
        records("a.csv", "text,label\nok,positive\nbad,negative\r"),
        two
    );
    assert_eq!(
        records("a.csv", "text,label\rok,positive\rbad,negative\r"),
        two
    );
    assert_eq!(
        records("a.tsv", "text\tlabel\rok\tpositive\r\nbad\tnegative\r"),
        two
    );
    // a quoted line end stays in the text, as written, and counts as a line; a blank line (TSV:
    // tabs and spaces) is skipped
    assert_eq!(
        records(
            "a.csv",
            "text,label\r\"two\rlines\",positive\r\rbad,negative"
        ),
        want(&[("two\rlines", "positive", 2), ("bad", "negative", 5)])
    );
    assert_eq!(
        records("a.tsv", "text\tlabel\n \t \nbad\tnegative\n"),
        want(&[("bad", "negative", 3)])
    );
}

/// TSV written by pandas (`to_csv(sep="\t")`) or Python's csv module quotes fields: the quotes
/// are read as theirs (excel-tab), not as text; a quote inside an unquoted field is text.
#[test]
fn tsv_quotes_as_python_writes_them() {
    let tsv = "text\tlabel\n\"He said \"\"hi\"\"\"\tpositive\n\"a\tb\nc\"\tnegative\nsay \"no\"\tnegative\n";
    assert_eq!(
        records("a.tsv", tsv),
        want(&[
            ("He said \"hi\"", "positive", 2),
            ("a\tb\nc", "negative", 3),
            ("say \"no\"", "negative", 5),
        ])
    );
    let err = Dataset::parse(
        Path::new("a.tsv"),
        "text\tlabel\nok\tpositive\n\"Great\" film\tpositive\n",
        &DataSpec::default(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "a.tsv:3: malformed line: ' ' after a closing quote (a field that starts with \" is \
         quoted, as Python's csv and pandas read it: quote the whole field and double each quote \
         inside it; for a file written with no quoting at all, as GLUE's TSV files are, pass \
         --quoting none)"
    );
}

/// A UTF-16 file is named as such (with or without its byte-order mark), not as a bad byte.
#[test]
fn utf16_file_named() {
    let dir = scratch("utf16");
    let text = "text,label\nok,positive\n";
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    for (name, bytes, what) in [
        (
            "bom_le.csv",
            [&[0xff, 0xfe][..], &le].concat(),
            "byte-order mark FF FE",
        ),
        (
            "bom_be.csv",
            [&[0xfe, 0xff][..], &be].concat(),
            "byte-order mark FE FF",
        ),
        (
            "le.csv",
            le.clone(),
            "little-endian, without a byte-order mark",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = Dataset::load(&path, &DataSpec::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}:1: the file looks like UTF-16 ({what}",
                path.display()
            )) && err.contains("save it as UTF-8"),
            "{err}"
        );
    }
}

/// Labels that differ only by surrounding whitespace ("positive", CSV's `ok, positive`) are
/// refused, naming both and their lines; labels are otherwise kept as written, as datasets does.
#[test]
fn labels_differing_by_spaces_refused() {
    let model = softprompt::Model::open(fixture("bert_nohead"), softprompt::Device::Cpu).unwrap();
    let opts = softprompt::TaskOptions {
        task: Some(TaskKind::Cls),
        ..Default::default()
    };
    let task = |csv: &str| {
        let d = Dataset::parse(Path::new("a.csv"), csv, &DataSpec::default()).unwrap();
        model.task(&opts, Some(&d), 2).map(|t| t.labels().to_vec())
    };
    let err = task("text,label\nok,positive\nbad,negative\nfine, positive\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "a.csv:4: the label \" positive\" differs from the label \"positive\" (line 2) only \
             by surrounding whitespace"
        ),
        "{err}"
    );
    assert_eq!(
        task("text,label\nok,positive \nbad,negative\n").unwrap(),
        ["negative", "positive "]
    );
    // a lone surrogate, which Python's json.dumps writes, says what it is (hostile pass 33, F6)
    let line = r#"{"text": "abc\ud800def", "label": "x"}"#;
    let err = Dataset::parse(Path::new("a.jsonl"), line, &DataSpec::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("column 20): a lone UTF-16 surrogate such as \\ud800"),
        "{err}"
    );
    // composed and decomposed accents, which look alike (hostile pass 33, F2)
    let err = task("text,label\nok,caf\u{e9}\nbad,negative\nfine,cafe\u{301}\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "a.csv:4: the label \"cafe\\u{301}\" differs from the label \"café\" (line 2) only \
             by Unicode normalisation (canonically equivalent: \"cafe\\u{301}\" and \
             \"caf\\u{e9}\")"
        ),
        "{err}"
    );
    // and named so in a label list (verification 30, F2a)
    let named = softprompt::TaskOptions {
        task: Some(TaskKind::Cls),
        labels: Some(vec!["caf\u{e9}".into(), "cafe\u{301}".into(), "bad".into()]),
        ..Default::default()
    };
    let d = Dataset::parse(
        Path::new("a.csv"),
        "text,label\nok,bad\n",
        &DataSpec::default(),
    );
    let d = d.unwrap();
    let err = (model.task(&named, Some(&d), 2).err().unwrap()).to_string();
    assert!(
        err.contains("labels \"café\" and \"cafe\\u{301}\" differ only by Unicode normalisation"),
        "{err}"
    );
    // the code points in the labels' order: the ANGSTROM SIGN first, then U+00C5 (they were
    // swapped, and the two print alike; verification 32, F2-c)
    let angstrom = softprompt::TaskOptions {
        labels: Some(vec!["\u{212b}".into(), "\u{c5}".into(), "bad".into()]),
        ..named.clone()
    };
    let err = (model.task(&angstrom, Some(&d), 2).err().unwrap()).to_string();
    assert!(
        err.starts_with("invalid argument --labels: labels \"\u{212b}\" and \"\u{c5}\"")
            && err.contains("(canonically equivalent: \"\\u{212b}\" and \"\\u{c5}\")"),
        "{err}"
    );
    // twins a verbalizer lists are the verbalizer's (they named --labels, which the user had
    // not given; F2-d)
    let verbalized = softprompt::TaskOptions {
        task: Some(TaskKind::Pet),
        labels: None,
        verbalizer: Some(vec![
            ("\u{212b}".into(), "good".into()),
            ("\u{c5}".into(), "nice".into()),
            ("bad".into(), "bad".into()),
        ]),
        ..named
    };
    let mlm = softprompt::Model::open(fixture("bert_mlm"), softprompt::Device::Cpu).unwrap();
    let err = (mlm.task(&verbalized, Some(&d), 2).err().unwrap()).to_string();
    assert!(
        err.starts_with("invalid argument --verbalizer: labels \"\u{212b}\" and \"\u{c5}\""),
        "{err}"
    );
}

/// `causal` on a model with a sliding window: the default max_len leaves the targets room, so
/// a long row is cut (it was refused mid-training: "28 positions with sliding_window 24"), and
/// a --max-len that leaves none is refused up front, naming the flag.
#[test]
fn causal_window_counts_the_target() {
    let dir = scratch("window");
    let model_dir = crate::common::windowed_mistral(&dir, 24);
    let data = dir.join("long.jsonl");
    let rows: Vec<(String, &str)> = (0..4)
        .map(|i| ("word ".repeat(40 + i), ["positive", "negative"][i % 2]))
        .collect();
    crate::write_jsonl(&data, &rows);
    let train = |extra: &[&str]| {
        let out_dir = dir.join("out");
        let _ = std::fs::remove_dir_all(&out_dir);
        let mut args = vec![
            "train",
            "--model",
            s(&model_dir),
            "--train",
            s(&data),
            "--out",
            s(&out_dir),
            "--task",
            "causal",
            "--prompt-len",
            "4",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--no-progress",
        ];
        args.extend(extra);
        softprompt(&args)
    };
    let out = train(&[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // the rows were cut to what the window leaves beside the prompt and the longest target
    let m = softprompt::Model::open(&model_dir, softprompt::Device::Cpu).unwrap();
    let opts = softprompt::TaskOptions {
        task: Some(TaskKind::Causal),
        ..Default::default()
    };
    let d = Dataset::load(&data, &DataSpec::default()).unwrap();
    let max_len = m.task(&opts, Some(&d), 4).unwrap().spec().max_len;
    assert!(max_len < 20, "{max_len}");
    assert!(
        stdout.contains(&format!("4 truncated to {max_len} tokens")),
        "{stdout}"
    );
    let out = train(&["--max-len", "20"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid argument --max-len: 20 tokens next to a prompt of 4 rows")
            && err.contains(&format!("use --max-len {max_len} or less")),
        "{err}"
    );
}

/// A number in a JSON lines file is read as the file writes it: serde's float64 wrote it
/// again (digits lost, `1e2` the text `100.0`, two big integer labels one class; hostile pass
/// 33, F11).
#[test]
fn json_numbers_are_read_as_written() {
    let text = "{\"text\": 123456789012345678901234567890, \"label\": 1e2}\n\
                {\"text\": 1.0000000000000001, \"label\": -0}\n\
                {\"text\": 7, \"label\": true}\n";
    let d = Dataset::parse(Path::new("a.jsonl"), text, &DataSpec::default()).unwrap();
    let got: Vec<(&str, Option<&str>)> = (d.examples.iter())
        .map(|e| (e.text.as_str(), e.label.as_deref()))
        .collect();
    let want = [
        ("123456789012345678901234567890", Some("1e2")),
        ("1.0000000000000001", Some("-0")),
        ("7", Some("true")),
    ];
    assert_eq!(got, want);
}
