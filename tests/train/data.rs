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
