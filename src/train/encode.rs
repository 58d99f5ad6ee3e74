//! Rows: a data file's rows through the template and the tokenizer, cut to `max_len`
//! (`batch.rs` pads them into batches).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::data::{Dataset, Example};
use super::encode_text::{byte_cap, capped, shorten_runs, whitespace_prefix};
use super::model_id::{ModelId, TaskStamp};
use super::task::Task;
use crate::error::{Error, GoOn, Result};
use crate::tokenizer::{TokenSpans, Tokenizer};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A task's label names to their indices, made on first use (see `Task::encode_until`).
type LabelIndex<'a> = std::cell::OnceCell<HashMap<&'a str, usize>>;

/// Rows encoded between two questions to `encode_until`'s `go_on`: a few milliseconds of
/// tokenizing, so that Ctrl-C is heard at once and asking costs nothing.
pub const ENCODE_CHUNK: usize = 256;

/// One encoded row. [`Row::new`] makes one by hand (its ids taken as they are); one that
/// `Task::encode` made carries the model whose tokenizer gave its ids
/// ([`Row::model_fingerprint`]) and its task's stamp ([`Row::task_fingerprint`]): every use
/// on another model, or with a task of other labels, template or targets, refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// token ids with the model's special tokens, at most max_len
    pub ids: Vec<i32>,
    /// `pet`: index of [MASK] in `ids`
    pub mask_pos: usize,
    /// class index (None: no label, or free targets)
    pub label: Option<usize>,
    /// `seq2seq`: the target ids (</s> included), empty when unknown
    pub target: Vec<i32>,
    pub line: usize,
    /// the text was cut to max_len
    pub truncated: bool,
    /// the model that encoded it (None: made by hand)
    pub(crate) model: Option<Arc<ModelId>>,
    /// the task that encoded it (None: made by hand)
    pub(crate) task: Option<Arc<TaskStamp>>,
}

impl Row {
    /// A row of token ids made by hand (the model's special tokens included, as
    /// `Model::tokenize` gives them), at line 1, without a label, target or [MASK] position:
    /// set those fields as the task needs. It records no model: every model takes it, its
    /// ids checked against the model's vocabulary.
    pub fn new(ids: Vec<i32>) -> Row {
        Row {
            ids,
            mask_pos: 0,
            label: None,
            target: Vec::new(),
            line: 1,
            truncated: false,
            model: None,
            task: None,
        }
    }

    /// The fingerprint of the model whose tokenizer encoded the row, as
    /// [`crate::Prompt::model_fingerprint`] gives it (None: made by hand).
    pub fn model_fingerprint(&self) -> Option<String> {
        self.model.as_deref().map(ModelId::hex)
    }

    /// The fingerprint of the settings of the task that encoded the row (its kind, template,
    /// labels and targets' words; None: made by hand).
    pub fn task_fingerprint(&self) -> Option<String> {
        self.task.as_deref().map(TaskStamp::hex)
    }

    /// Refused when a task of other settings encoded it (`here`: the stamp of the task it is
    /// used with): its labels are indices into that task's labels, its ids that task's
    /// template. `i` as in `check_model`.
    pub(crate) fn check_task(&self, here: &TaskStamp, i: usize, flag: &str) -> Result<()> {
        let Some(diff) = self.task.as_deref().and_then(|made| made.differs(here)) else {
            return Ok(());
        };
        Err(Error::arg(
            flag,
            format!(
                "row {} was encoded for another task ({diff}): its labels and ids mean \
                 other things here; encode the rows with this task (Model::encode)",
                i + 1
            ),
        ))
    }

    /// Refused when another model encoded it: `i` its index (from 0) in what the caller
    /// passed, said from 1 as the other row errors say it.
    pub(crate) fn check_model(&self, model: &ModelId, i: usize, flag: &str) -> Result<()> {
        let Some(made) = &self.model else {
            return Ok(());
        };
        let what = format!("row {} was encoded by", i + 1);
        let advice = "encode the rows with this model (Model::encode)";
        made.check(model, flag, &what, advice)
    }
}

/// An encoded data file.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub path: PathBuf,
    pub rows: Vec<Row>,
    /// rows whose text was cut to max_len
    pub truncated: usize,
    /// free targets cut to max_target_len
    pub truncated_targets: usize,
}

impl Encoded {
    pub fn lens(&self) -> Vec<usize> {
        self.rows.iter().map(|r| r.ids.len()).collect()
    }
}

/// A pet row with `n` mask tokens (id `m`) where one was expected: the template holds exactly
/// one (checked when the task is made), so more come from the text, which blamed
/// `--template` (a data line or a served text named a flag no one gave).
fn extra_masks(n: usize, m: i32) -> Error {
    if n == 0 {
        return Error::arg(
            "--template",
            "the row has no mask token after filling the template: expected exactly 1",
        );
    }
    Error::data(
        Path::new(""),
        0,
        format!(
            "the text holds the mask token (id {m}) {} time(s): a pet row has exactly one, \
             the template's; take it out of the text",
            n - 1
        ),
    )
}

impl Task {
    /// Encodes every row: fills the template, tokenizes, cuts the text to max_len, and maps the
    /// label. An unknown label is an error naming the file and line.
    pub fn encode(&self, tok: &Tokenizer, data: &Dataset) -> Result<Encoded> {
        self.encode_until(tok, data, &mut |_| true)
    }

    /// As [`Task::encode`], asking `go_on` after every [`ENCODE_CHUNK`] rows (Ctrl-C in a
    /// long list of texts).
    pub fn encode_until(
        &self,
        tok: &Tokenizer,
        data: &Dataset,
        go_on: GoOn<'_>,
    ) -> Result<Encoded> {
        let mut enc = Encoded {
            path: data.path.clone(),
            rows: Vec::with_capacity(data.examples.len()),
            truncated: 0,
            truncated_targets: 0,
        };
        let stamp = Arc::new(TaskStamp::of(&self.spec));
        // each row's label found by hashing: a search of the labels per row took minutes
        // for tens of thousands of labels (hostile pass 19); the map is made at the first
        // labelled row, so unlabelled rows (predict, each request a server encodes) make none
        // (review 12, R12-10)
        let labels = LabelIndex::default();
        for chunk in data.examples.chunks(ENCODE_CHUNK) {
            for ex in chunk {
                let (mut row, cut_target) = self.encode_example(tok, &data.path, ex, &labels)?;
                row.task = Some(stamp.clone());
                enc.truncated += row.truncated as usize;
                enc.truncated_targets += cut_target as usize;
                enc.rows.push(row);
            }
            crate::error::ask(go_on, enc.rows.len(), data.examples.len(), "rows")?;
        }
        Ok(enc)
    }

    /// One example of the file `path` as a row, and whether its free target was cut to
    /// max_target_len.
    fn encode_example<'t>(
        &'t self,
        tok: &Tokenizer,
        path: &Path,
        ex: &Example,
        labels: &LabelIndex<'t>,
    ) -> Result<(Row, bool)> {
        let at = |e: Error| match e {
            // a fault of the text itself, said without a flag
            Error::Data { msg, .. } => Error::data(path, ex.line, msg),
            e => Error::data(path, ex.line, e.to_string()),
        };
        let (ids, mask_pos, cut) = self.encode_text(tok, &ex.text).map_err(at)?;
        let in_table = |ids: &[i32], what: &str| {
            (self.check_in_table(tok, ids, what)).map_err(|msg| Error::data(path, ex.line, msg))
        };
        in_table(&ids, "the text")?;
        if ids.is_empty() {
            // a decoder without a start token, an empty text and no template
            let msg =
                "the text gives no tokens (and the template none): a row needs at least one token";
            return Err(Error::data(path, ex.line, msg));
        }
        let mut row = Row {
            ids,
            mask_pos,
            label: None,
            target: Vec::new(),
            line: ex.line,
            truncated: cut,
            model: Some(self.model.clone()),
            task: None,
        };
        let mut cut_target = false;
        if let Some(label) = &ex.label {
            if self.spec.free_targets {
                let mut t = self.target_ids(tok, label).map_err(at)?;
                in_table(&t, &format!("the target {label:?}"))?;
                if t.is_empty() {
                    let msg = format!("the target {label:?} has no tokens (--target-end none adds no end token): the row would have nothing to learn or score; give it a target text");
                    return Err(Error::data(path, ex.line, msg));
                }
                cut_target = self.cut_target(&mut t);
                row.target = t;
            } else {
                let index = labels.get_or_init(|| {
                    (self.spec.labels.iter().enumerate())
                        .map(|(k, l)| (l.as_str(), k))
                        .collect()
                });
                let k = *index.get(label.as_str()).ok_or_else(|| {
                    let known = super::data::some_labels(&self.spec.labels);
                    Error::data(path, ex.line, format!("unknown label {label:?}: expected one of {known} (set them with --labels)"))
                })?;
                row.label = Some(k);
                if let Some(t) = self.label_targets.get(k) {
                    row.target = t.clone();
                }
            }
        }
        Ok((row, cut_target))
    }

    /// (ids, [MASK] index, truncated) of one text.
    ///
    /// Whatever the text, no more than `max_len * 256` bytes (at least 64 KiB) reach the
    /// tokenizer: a line without whitespace (one 10 MB "word") tokenized whole took gigabytes.
    /// So first every run of more than `max_len * 16` (at least 4096) non-whitespace characters
    /// of one kind (alphanumeric, or not) keeps only its head, and the words after it stay: a
    /// word of more than 100 characters is one `[UNK]` to BERT's WordPiece, a run of unknown
    /// characters one fused `<unk>` to a Unigram, whatever their length, and a run a BPE splits
    /// fills the row long before its end. Where the run's length still mattered (its tokens
    /// change when twice as much of it is kept), the row is counted as cut, and so is a text
    /// that still needed cutting at the byte bound: the tokens are then not the whole text's.
    fn encode_text(&self, tok: &Tokenizer, text: &str) -> Result<(Vec<i32>, usize, bool)> {
        let cap = byte_cap(self.spec.max_len);
        let keep = cap / 16;
        let short = shorten_runs(text, keep);
        let row = self.encode_capped(tok, &short, cap)?;
        if matches!(short, Cow::Borrowed(_)) {
            return Ok(row);
        }
        let longer = self.encode_capped(tok, &shorten_runs(text, keep * 2), cap)?;
        if longer.0 == row.0 {
            return Ok(row);
        }
        Ok((longer.0, longer.1, true))
    }

    /// `encode_by_words` of `text` cut to `cap` bytes (`capped`); the row counts as cut when
    /// the bytes cut off held anything.
    fn encode_capped(
        &self,
        tok: &Tokenizer,
        text: &str,
        cap: usize,
    ) -> Result<(Vec<i32>, usize, bool)> {
        let head = capped(text, cap);
        let (ids, mask_pos, cut) = self.encode_by_words(tok, head)?;
        let rest = text.get(head.len()..).unwrap_or_default();
        let dropped = !rest.trim().is_empty();
        Ok((ids, mask_pos, cut || dropped))
    }

    /// (ids, [MASK] index, truncated) of a text of at most `cap` bytes.
    ///
    /// A long text is tokenized by its first words only, so that a huge line costs no more
    /// than a long row: a prefix cut right after a whitespace character holds whole words,
    /// and the pre-tokenizers (BERT's, T5's Metaspace) split at whitespace with char-local
    /// normalizers, so its tokens are the first tokens of the whole text. When the prefix's
    /// row is cut (more tokens than `max_len`), the kept tokens are those of the whole text;
    /// otherwise the prefix grows fourfold until it is, or until it is the whole text.
    fn encode_by_words(&self, tok: &Tokenizer, text: &str) -> Result<(Vec<i32>, usize, bool)> {
        let mut budget = self.spec.max_len.saturating_mul(64).max(4096);
        while budget < text.len() {
            let Some(prefix) = whitespace_prefix(text, budget) else {
                break;
            };
            if prefix.len() >= text.len() {
                break;
            }
            let row = self.encode_whole(tok, prefix)?;
            if row.2 {
                return Ok(row);
            }
            budget = budget.saturating_mul(4);
        }
        self.encode_whole(tok, text)
    }

    /// Tokens a row holds with an empty text: the template's words and the special tokens.
    pub fn template_tokens(&self, tok: &Tokenizer) -> Result<usize> {
        Ok(self.template_ids(tok)?.len())
    }

    /// The ids of a row with an empty text: the template's words and the special tokens.
    pub(super) fn template_ids(&self, tok: &Tokenizer) -> Result<Vec<i32>> {
        let full = format!("{}{}", self.before, self.after);
        Ok(tok.encode_with_offsets(&full)?.ids)
    }

    /// Checks that a row of max_len tokens holds the template, its special tokens and at
    /// least one token of text: else every text is cut away, or, past max_len, every row is
    /// refused. A saved task meets its model here (`Model::task_for`), so that a prompt whose
    /// task.json cannot hold its template is refused once, not on each row.
    pub fn check_text_room(&self, tok: &Tokenizer) -> Result<()> {
        let fixed = self.template_tokens(tok)?;
        if fixed < self.spec.max_len {
            return Ok(());
        }
        Err(Error::arg(
            "--max-len",
            format!(
                "{} tokens cannot hold the template and special tokens ({fixed} tokens without \
                 the text) and a token of text: use --max-len {} or more",
                self.spec.max_len,
                fixed + 1
            ),
        ))
    }

    /// (ids, [MASK] index, truncated) of one text, tokenized whole.
    fn encode_whole(&self, tok: &Tokenizer, text: &str) -> Result<(Vec<i32>, usize, bool)> {
        let full = format!("{}{}{}", self.before, text, self.after);
        let TokenSpans {
            ids,
            offsets,
            special,
        } = tok.encode_with_offsets(&full)?;
        let span = (self.before.len(), self.before.len() + text.len());
        let mut cut = false;
        let ids = if ids.len() > self.spec.max_len {
            let excess = ids.len() - self.spec.max_len;
            let text_tokens: Vec<usize> = (0..ids.len())
                .filter(|&i| {
                    let inside = offsets.get(i).is_some_and(|o| o.0 < span.1 && o.1 > span.0);
                    inside && special.get(i) == Some(&false)
                })
                .collect();
            if text_tokens.len() < excess {
                return Err(Error::arg("--max-len", format!("{} tokens cannot hold the template and special tokens ({} tokens without the text)", self.spec.max_len, ids.len() - text_tokens.len())));
            }
            let drop: std::collections::BTreeSet<usize> = text_tokens
                .iter()
                .skip(text_tokens.len() - excess)
                .copied()
                .collect();
            cut = true;
            ids.iter()
                .enumerate()
                .filter(|(i, _)| !drop.contains(i))
                .map(|(_, &id)| id)
                .collect()
        } else {
            ids
        };
        let mut mask_pos = 0;
        if let Some(m) = self.mask_id {
            let found: Vec<usize> = ids
                .iter()
                .enumerate()
                .filter(|(_, &id)| id == m)
                .map(|(i, _)| i)
                .collect();
            let &[at] = found.as_slice() else {
                return Err(extra_masks(found.len(), m));
            };
            mask_pos = at;
        }
        Ok((ids, mask_pos, cut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuBackend;
    use crate::train::{Model, TaskKind, TaskSpec};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

    /// Cutting a long text by words before tokenizing keeps exactly the tokens (and the cut
    /// flag) of tokenizing it whole, for BERT's WordPiece and T5's SentencePiece, on texts of
    /// words, CJK, accents and runs of odd whitespace (fixed seed).
    #[test]
    fn cut_by_words_keeps_the_tokens_of_the_whole_text() {
        let be = CpuBackend::<f32>::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let word = prop_oneof![
            "[a-z]{1,9}",
            Just("很好".to_string()),
            Just("café".to_string()),
            Just("e\u{301}".to_string()),
            Just("it's!".to_string()),
            "\\PC{1,3}",
        ];
        let sep = prop_oneof![
            Just(" "),
            Just("\n"),
            Just("\t "),
            Just("\u{3000}"),
            Just("  ")
        ];
        let text = (prop::collection::vec((word, sep), 1..40), 1usize..600).prop_map(|(ws, n)| {
            let t: String = ws.into_iter().map(|(w, s)| format!("{w}{s}")).collect();
            t.repeat(n)
        });
        for (name, kind, max_len) in [
            ("bert_mlm", TaskKind::Pet, 9),
            ("t5_flan", TaskKind::Seq2Seq, 40),
        ] {
            let model = Model::load(&be, &dir.join(name)).expect("fixture model");
            let mut spec = TaskSpec::new(kind, &["negative", "positive"]);
            spec.label_words = vec!["bad".into(), "great".into()];
            spec.max_len = max_len;
            let task = Task::new(spec, &model).expect("task");
            let config = Config {
                cases: 48,
                failure_persistence: None,
                ..Config::default()
            };
            let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
            TestRunner::new_with_rng(config, rng)
                .run(&text, |t| {
                    let cut = task.encode_text(&model.tokenizer, &t).expect("cut");
                    let whole = task.encode_whole(&model.tokenizer, &t).expect("whole");
                    prop_assert_eq!(cut, whole);
                    Ok(())
                })
                .expect("the cut changed the tokens");
        }
    }

    /// A 12 MB line without whitespace tokenizes its first 64 KiB only (it was tokenized
    /// whole, gigabytes for a 10 MB line): the row equals that of the text cut there, and is
    /// cut to max_len. A text with whitespace still cuts after a word.
    #[test]
    fn a_line_without_whitespace_is_cut_by_bytes() {
        let be = CpuBackend::<f32>::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let model = Model::load(&be, &dir.join("bert_mlm")).expect("fixture model");
        let mut spec = TaskSpec::new(TaskKind::Pet, &["negative", "positive"]);
        spec.label_words = vec!["bad".into(), "great".into()];
        spec.max_len = 40;
        let task = Task::new(spec, &model).expect("task");
        let huge = "great!".repeat(2_000_000);
        let t0 = std::time::Instant::now();
        let row = task.encode_text(&model.tokenizer, &huge).expect("huge");
        // tokenizing 12 MB took many seconds; 64 KiB takes milliseconds
        assert!(t0.elapsed().as_secs_f64() < 2.0, "{:?}", t0.elapsed());
        let short = task
            .encode_text(&model.tokenizer, &huge[..1 << 16])
            .expect("short");
        assert_eq!(row, short);
        assert!(row.2 && row.0.len() == 40);
        assert_eq!(capped(&huge, 100), &huge[..100]);
        assert_eq!(capped("ab cd ef", 7), "ab cd ");
        assert_eq!(capped("a bcdefgh", 7), "a bcdef");
        assert_eq!(capped("é", 1), "");
    }

    /// A task of `kind` with `max_len` on fixture `name`.
    fn fixture_task(name: &str, kind: TaskKind, max_len: usize) -> (Model<CpuBackend<f32>>, Task) {
        let be = CpuBackend::<f32>::new();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let model = Model::load(&be, &dir.join(name)).expect("fixture model");
        let mut spec = TaskSpec::new(kind, &["negative", "positive"]);
        spec.label_words = vec!["bad".into(), "great".into()];
        spec.max_len = max_len;
        let task = Task::new(spec, &model).expect("task");
        (model, task)
    }

    /// The words after a 70,000-character run stay (they were cut off with the run's tail at
    /// 64 KiB, the row not counted as cut): the row is the whole text's, for WordPiece (a
    /// word of more than 100 characters is one [UNK]), T5's Unigram (unknown characters fuse
    /// into one <unk>) and byte-level BPE (the run fills the row).
    #[test]
    fn a_long_run_keeps_the_words_after_it() {
        for (name, kind, run, cut) in [
            ("bert_mlm", TaskKind::Cls, "x", false),
            ("bert_mlm", TaskKind::Cls, "x.", true),
            ("t5_flan", TaskKind::Seq2Seq, "X", false),
            ("t5_flan", TaskKind::Seq2Seq, "x", true),
            ("bloom", TaskKind::Causal, "x", true),
        ] {
            let (model, task) = fixture_task(name, kind, 24);
            let text = format!("{} was great", run.repeat(70_000 / run.len()));
            let row = task.encode_text(&model.tokenizer, &text).expect("row");
            let whole = task.encode_whole(&model.tokenizer, &text).expect("whole");
            assert_eq!(row, whole, "{name}: {run:?}");
            assert_eq!(row.2, cut, "{name}: {run:?}");
        }
        let (model, task) = fixture_task("bert_mlm", TaskKind::Cls, 24);
        let tok = &model.tokenizer;
        let row = task.encode_text(tok, &format!("{} was great", "x".repeat(70_000)));
        let want = tok.encode("[UNK] was great", true).expect("ids");
        assert_eq!(row.expect("row").0, want);
        // a run whose length matters: its head alone (control characters, which BERT drops)
        // loses the comma at its end, twice the head keeps it; the longer one is taken, and
        // the row counts as cut since nothing says a longer run would not change it again
        let text = format!("{}, was great", "\u{1}".repeat(5000));
        let row = task.encode_text(tok, &text).expect("row");
        let whole = task.encode_whole(tok, &text).expect("whole");
        assert_eq!(row.0, whole.0);
        assert!(row.2 && !whole.2);
    }

    /// Text past the byte bound that still held anything counts the row as cut (it was scored
    /// as whole); a tail of whitespace alone does not.
    #[test]
    fn a_text_cut_at_the_byte_bound_counts_as_cut() {
        let (model, task) = fixture_task("bert_mlm", TaskKind::Cls, 24);
        // control characters: BERT's normalizer drops them, so these words give no tokens
        let junk = format!("{} ", "\u{1}".repeat(3000)).repeat(30);
        let row = task.encode_text(&model.tokenizer, &format!("{junk}was great"));
        let (ids, _, cut) = row.expect("row");
        assert!(cut && ids.len() == 2, "{ids:?} {cut}");
        let spaces = format!("was great{}", " ".repeat(1 << 17));
        assert!(!task.encode_text(&model.tokenizer, &spaces).expect("row").2);
    }

    #[test]
    fn shorten_runs_keeps_the_head_of_each_kind() {
        assert_eq!(shorten_runs("aaaaa!!!!! bb", 3), "aaa!!! bb");
        assert_eq!(shorten_runs("ab1é\u{301}", 4), "ab1é\u{301}");
        assert_eq!(shorten_runs("éééé \tx", 2), "éé \tx");
        assert!(matches!(shorten_runs("abc def", 3), Cow::Borrowed(_)));
    }
}
