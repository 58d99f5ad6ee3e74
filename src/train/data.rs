//! Labelled text files: JSON lines, TSV and CSV, with settable field names (each layout's
//! parser is in data_formats.rs), and the deterministic batch plan (shuffle, bucket by
//! length, shuffle the batches).
//!
//! Every error names the file and the line (1-based) at fault: a malformed line, a missing
//! field, an empty file; an unknown label is reported the same way when a task encodes the
//! rows (see `task.rs`).
// The loaders and the training loop never panic on what a user hands them: no unwrap, no
// expect, no unchecked indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use crate::error::{Error, Result};
use crate::rng::Rng;
use std::path::{Path, PathBuf};

/// The layout of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// one JSON object per line
    Jsonl,
    /// a header line naming the columns, then tab-separated fields (quoted as Python's csv
    /// excel-tab dialect and pandas' `to_csv(sep="\t")` write them)
    Tsv,
    /// a header line naming the columns, then comma-separated fields (RFC 4180 quoting)
    Csv,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jsonl" | "json" => Ok(Format::Jsonl),
            "tsv" => Ok(Format::Tsv),
            "csv" => Ok(Format::Csv),
            _ => Err(Error::arg(
                "--format",
                format!("\"{s}\": expected jsonl, tsv or csv"),
            )),
        }
    }
}

impl Format {
    /// The format named by the file's extension (.jsonl/.json, .tsv, .csv).
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "json" | "ndjson" => Ok(Format::Jsonl),
            "tsv" => Ok(Format::Tsv),
            "csv" => Ok(Format::Csv),
            _ => Err(Error::file(
                path,
                "cannot tell the format from the extension: pass --format jsonl, tsv or csv",
            )),
        }
    }
}

/// How quotes in a TSV or CSV file are read (Python's `csv.QUOTE_*` on reading).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Quoting {
    /// `csv.QUOTE_MINIMAL`, what pandas and Python's csv write: a field that starts with `"`
    /// is quoted (a doubled `""` inside is one quote; it may span lines)
    #[default]
    Minimal,
    /// `csv.QUOTE_NONE`, for files written with no quoting at all (GLUE's TSV files): a quote
    /// is an ordinary character and a record ends at its line's end
    None,
}

impl std::str::FromStr for Quoting {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "minimal" => Ok(Quoting::Minimal),
            "none" => Ok(Quoting::None),
            _ => Err(Error::arg(
                "--quoting",
                format!("\"{s}\": expected minimal or none"),
            )),
        }
    }
}

/// How to read a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSpec {
    /// None: from the file extension
    pub format: Option<Format>,
    /// TSV and CSV: how quotes are read (None: not given, `Quoting::Minimal`). A JSON lines
    /// file reads as it is, but refuses `Quoting::None` unless [`DataSpec::for_file`] lifted
    /// it for a table beside it
    pub quoting: Option<Quoting>,
    pub text_field: String,
    pub label_field: String,
    /// train and eval need a label on every row; predict does not
    pub require_label: bool,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            format: None,
            quoting: None,
            text_field: "text".into(),
            label_field: "label".into(),
            require_label: true,
        }
    }
}

impl DataSpec {
    /// The spec to read `path` with, one of the files one command or call reads (`files`):
    /// `quoting` is for their TSV and CSV files, and a JSON lines file beside one of them
    /// reads as it is (a GLUE TSV train file, which needs `Quoting::None`, beside a JSON lines
    /// dev file). With no table among `files` the spec is kept: `Quoting::Minimal`, the
    /// default, reads JSON lines as ever, and `Quoting::None` is refused naming the file, as
    /// it then sets nothing.
    pub fn for_file(&self, path: &Path, files: &[&Path]) -> DataSpec {
        let format = |p: &Path| self.format.or_else(|| Format::from_path(p).ok());
        let table = (files.iter()).any(|p| matches!(format(p), Some(Format::Tsv | Format::Csv)));
        let mut spec = self.clone();
        if table && format(path) == Some(Format::Jsonl) {
            spec.quoting = None;
        }
        spec
    }
}

/// One row of a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    /// the label (a class name, or the target text for free seq2seq targets)
    pub label: Option<String>,
    /// 1-based line where the row starts
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub path: PathBuf,
    pub examples: Vec<Example>,
}

impl Dataset {
    /// Reads a whole data file.
    ///
    /// ```
    /// use softprompt::internals::train::data::{Dataset, DataSpec};
    /// let dir = std::env::temp_dir().join(format!("sp_doc_data_{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("tiny.csv");
    /// std::fs::write(&path, "label,review\npositive,\"Great, really great.\"\nnegative,Dull.\n").unwrap();
    /// let spec = DataSpec { text_field: "review".into(), ..DataSpec::default() };
    /// let data = Dataset::load(&path, &spec).unwrap();
    /// assert_eq!(data.examples.len(), 2);
    /// assert_eq!(data.examples[0].text, "Great, really great.");
    /// assert_eq!(data.examples[1].label.as_deref(), Some("negative"));
    /// assert_eq!(data.examples[1].line, 3);
    /// ```
    pub fn load(path: &Path, spec: &DataSpec) -> Result<Dataset> {
        // a missing file or a folder said the OS's words alone, not what was expected there
        // (review 27, F16); the error keeps the OS's kind and number (Python's
        // FileNotFoundError)
        let bytes = crate::fsutil::read_stream(path).map_err(|e| match e {
            Error::Io { path, source }
                if source.get_ref().is_none()
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                    ) =>
            {
                Error::io_doing(
                    path,
                    "cannot be read as a data file (JSON lines, TSV or CSV)",
                    source,
                )
            }
            e => e,
        })?;
        let text = utf8(path, bytes)?;
        Dataset::parse(path, &text, spec)
    }

    /// Rows held in memory: (text, label) pairs, numbered from 1 as lines; `name` stands for
    /// the file in messages.
    pub fn from_pairs<T: Into<String>, L: Into<String>>(
        name: &str,
        rows: impl IntoIterator<Item = (T, Option<L>)>,
    ) -> Dataset {
        Dataset {
            path: PathBuf::from(name),
            examples: (rows.into_iter().enumerate())
                .map(|(i, (text, label))| Example {
                    text: text.into(),
                    label: label.map(Into::into),
                    line: i + 1,
                })
                .collect(),
        }
    }

    /// Parses file contents; `path` is used in messages only.
    pub fn parse(path: &Path, text: &str, spec: &DataSpec) -> Result<Dataset> {
        let format = match spec.format {
            Some(f) => f,
            None => Format::from_path(path)?,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let examples = super::data_formats::parse_rows(path, text, format, spec)?;
        if examples.is_empty() {
            return Err(Error::data(path, 1, "the file holds no examples"));
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            examples,
        })
    }
}

/// `labels` for a message: every one up to 20, else the first 20 and how many more (an
/// "unknown label" error listed 64,000 labels on one line of 820 KB; hostile pass 19).
pub fn some_labels(labels: &[String]) -> String {
    const SHOWN: usize = 20;
    let shown: Vec<&String> = labels.iter().take(SHOWN).collect();
    match labels.len().saturating_sub(SHOWN) {
        0 => format!("{shown:?}"),
        more => format!("{shown:?} and {more} more"),
    }
}

/// The file's text, or an error naming the line (and column) of its first invalid UTF-8 byte;
/// a UTF-16 file (a byte-order mark, or the NUL of every other byte of its first characters)
/// is named as such, since that is what to convert.
pub fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
    if let Some(which) = utf16(&bytes) {
        return Err(Error::data(
            path,
            1,
            format!(
                "the file looks like UTF-16 ({which}): save it as UTF-8 (e.g. `iconv -f UTF-16 \
                 -t UTF-8`, or Python's open(..., encoding=\"utf-8\"))"
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let before = bytes.get(..at).unwrap_or_default();
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        Error::data(
            path,
            line,
            format!(
                "not valid UTF-8 (byte 0x{:02x} at column {}): save the file as UTF-8",
                bytes.get(at).copied().unwrap_or(0),
                at - line_start + 1
            ),
        )
    })
}

/// How `bytes` look like UTF-16, if they do: its byte-order mark (Windows' "Unicode", what
/// Python's `encoding="utf-16"` writes), or, without one, two ASCII characters each beside a
/// NUL, which no text file in UTF-8 starts with.
fn utf16(bytes: &[u8]) -> Option<&'static str> {
    let ascii = |b: u8| b != 0 && b.is_ascii();
    match bytes {
        [0xff, 0xfe, ..] => Some("byte-order mark FF FE, little-endian"),
        [0xfe, 0xff, ..] => Some("byte-order mark FE FF, big-endian"),
        &[a, 0, b, 0, ..] if ascii(a) && ascii(b) => {
            Some("little-endian, without a byte-order mark")
        }
        &[0, a, 0, b, ..] if ascii(a) && ascii(b) => Some("big-endian, without a byte-order mark"),
        _ => None,
    }
}

/// The order of one epoch: batches of row indices. Rows are shuffled, cut into pools of
/// `pool` batches (at most a quarter of the epoch's, `pool_of`), sorted by length inside each
/// pool (less padding), cut into batches, and the batches shuffled. Everything comes from
/// `rng`, so the same state gives the same plan.
///
/// ```
/// use softprompt::internals::rng::Rng;
/// use softprompt::internals::train::data::epoch_plan;
/// let lens = [5, 1, 9, 3, 7, 2, 8];
/// let plan = epoch_plan(&lens, 2, 4, &mut Rng::new(0));
/// let mut seen: Vec<u32> = plan.iter().flatten().copied().collect();
/// seen.sort();
/// assert_eq!(seen, (0..7).collect::<Vec<u32>>());
/// assert_eq!(plan, epoch_plan(&lens, 2, 4, &mut Rng::new(0)));
/// ```
pub fn epoch_plan(lens: &[usize], batch: usize, pool: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let batch = batch.max(1);
    let pool = pool_of(lens.len(), batch, pool);
    let mut idx: Vec<u32> = (0..lens.len() as u32).collect();
    rng.shuffle(&mut idx);
    let mut batches = Vec::new();
    // saturating: a pool larger than the data is one pool (a wrapped product would be 0)
    for chunk in idx.chunks(batch.saturating_mul(pool.max(1))) {
        // a pool short of whole batches (the last): its short batch takes the pool's first
        // rows in the shuffled order, random ones; sorted in with the rest, it held the
        // longest rows of the pool, every epoch and every seed where the data fit one pool,
        // which then weighed more in their step's mean than any other row
        let short = chunk.len() % batch;
        let (leftover, chunk) = chunk.split_at(short);
        let mut chunk = chunk.to_vec();
        // stable: equal lengths keep their shuffled order
        chunk.sort_by_key(|&i| lens.get(i as usize).copied().unwrap_or(0));
        batches.extend(chunk.chunks(batch).map(|c| c.to_vec()));
        if !leftover.is_empty() {
            batches.push(leftover.to_vec());
        }
    }
    rng.shuffle(&mut batches);
    batches
}

/// The batches in a pool of an epoch of `rows` rows: `pool`, but at most a quarter of the
/// epoch's batches (at least 1). A training set of `pool` batches or fewer made one pool,
/// sorted by length: every epoch had the same batches, in another order, where PEFT's
/// shuffling DataLoader draws new ones (review 28); few-shot sets are that small.
fn pool_of(rows: usize, batch: usize, pool: usize) -> usize {
    pool.min(rows.div_ceil(batch) / 4).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A training set of few batches gets new batches every epoch (each epoch's plan of the
    /// same rng stream differs in its batches, not only their order); a large one is
    /// bucketed in pools of `pool` batches.
    #[test]
    fn small_sets_get_new_batches_every_epoch() {
        assert_eq!(pool_of(8, 4, 50), 1);
        assert_eq!(pool_of(400, 8, 50), 12);
        assert_eq!(pool_of(8058, 32, 50), 50);
        assert_eq!(pool_of(8058, 32, 1), 1);
        // lengths all different: one pool sorted by length made the same batches every epoch
        let lens: Vec<usize> = (0..48).map(|i| 3 + (i * 7) % 48).collect();
        let mut rng = Rng::new(3);
        let sets = |plan: Vec<Vec<u32>>| -> std::collections::BTreeSet<Vec<u32>> {
            plan.into_iter()
                .map(|mut b| {
                    b.sort();
                    b
                })
                .collect()
        };
        let first = sets(epoch_plan(&lens, 4, 50, &mut rng));
        let second = sets(epoch_plan(&lens, 4, 50, &mut rng));
        assert_ne!(first, second);
    }

    #[test]
    fn plan_buckets_by_length_and_is_deterministic() {
        let lens: Vec<usize> = (0..100).map(|i| (i * 37) % 61).collect();
        let a = epoch_plan(&lens, 8, 4, &mut Rng::new(7));
        let b = epoch_plan(&lens, 8, 4, &mut Rng::new(7));
        assert_eq!(a, b);
        assert_eq!(a.len(), 13);
        assert_ne!(a, epoch_plan(&lens, 8, 4, &mut Rng::new(8)));
        let mut all: Vec<u32> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // bucketing: the padding of the plan is well below that of random batches
        let pad = |plan: &[Vec<u32>]| -> usize {
            plan.iter()
                .map(|b| {
                    let m = b.iter().map(|&i| lens[i as usize]).max().unwrap();
                    b.iter().map(|&i| m - lens[i as usize]).sum::<usize>()
                })
                .sum()
        };
        // the short batch (100 = 12 x 8 + 4) is not the longest rows every time: over seeds it
        // holds rows of many lengths, as random batches do
        let short_lens: std::collections::BTreeSet<usize> = (0..20)
            .flat_map(|seed| {
                let plan = epoch_plan(&lens, 8, 50, &mut Rng::new(seed));
                let short = plan.into_iter().find(|b| b.len() == 4).unwrap();
                short.into_iter().map(|i| lens[i as usize])
            })
            .collect();
        assert!(short_lens.len() > 30, "{short_lens:?}");
        let random = epoch_plan(&lens, 8, 1, &mut Rng::new(7));
        assert!(
            pad(&a) * 2 < pad(&random),
            "{} vs {}",
            pad(&a),
            pad(&random)
        );
    }
}
