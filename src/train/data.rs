//! Labelled text files: JSON lines, TSV and CSV, with settable field names, and the
//! deterministic batch plan (shuffle, bucket by length, shuffle the batches).
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
    /// a header line naming the columns, then tab-separated fields (no quoting)
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

/// How to read a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSpec {
    /// None: from the file extension
    pub format: Option<Format>,
    pub text_field: String,
    pub label_field: String,
    /// train and eval need a label on every row; predict does not
    pub require_label: bool,
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec {
            format: None,
            text_field: "text".into(),
            label_field: "label".into(),
            require_label: true,
        }
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
        let bytes = crate::fsutil::read_stream(path)?;
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
        let examples = match format {
            Format::Jsonl => parse_jsonl(path, text, spec)?,
            Format::Tsv => {
                let records = text
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| !l.trim().is_empty())
                    .map(|(i, l)| {
                        Ok((
                            i + 1,
                            l.trim_end_matches('\r')
                                .split('\t')
                                .map(String::from)
                                .collect(),
                        ))
                    });
                parse_table(path, records, spec)?
            }
            Format::Csv => parse_table(path, csv_records(path, text)?.into_iter().map(Ok), spec)?,
        };
        if examples.is_empty() {
            return Err(Error::data(path, 1, "the file holds no examples"));
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            examples,
        })
    }
}

/// The file's text, or an error naming the line (and column) of its first invalid UTF-8 byte.
pub fn utf8(path: &Path, bytes: Vec<u8>) -> Result<String> {
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

/// The first key a JSON object repeats, at any depth: serde_json keeps the last value without
/// a word, so a row with two labels would train on one of them silently (and a settings file
/// would use one of two values). Keys are compared unescaped.
pub fn repeated_key(text: &str) -> Option<String> {
    let mut found = None;
    let mut d = serde_json::Deserializer::from_str(text);
    serde::de::DeserializeSeed::deserialize(FindRepeated(&mut found), &mut d).ok()?;
    found
}

/// Walks a JSON value, noting in its slot the first key an object repeats.
struct FindRepeated<'a>(&'a mut Option<String>);

impl<'de> serde::de::DeserializeSeed<'de> for FindRepeated<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FindRepeated<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        let slot = self.0;
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if slot.is_none() && !seen.insert(k.clone()) {
                *slot = Some(k);
            }
            map.next_value_seed(FindRepeated(&mut *slot))?;
        }
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<(), A::Error> {
        let slot = self.0;
        while seq.next_element_seed(FindRepeated(&mut *slot))?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> std::result::Result<(), E> {
        Ok(())
    }
}

fn parse_jsonl(path: &Path, text: &str, spec: &DataSpec) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::data(path, n, format!("malformed line: not valid JSON ({e})")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::data(path, n, "malformed line: expected a JSON object"))?;
        if let Some(k) = repeated_key(line) {
            return Err(Error::data(
                path,
                n,
                format!("the key \"{k}\" appears twice in the object: which value is meant?"),
            ));
        }
        let field = |name: &str| -> Result<Option<String>> {
            match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(x @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    Ok(Some(x.to_string()))
                }
                Some(_) => Err(Error::data(
                    path,
                    n,
                    format!("field \"{name}\" must be a string, number or boolean"),
                )),
            }
        };
        let keys = || obj.keys().cloned().collect::<Vec<_>>().join(", ");
        let text = field(&spec.text_field)?.ok_or_else(|| {
            Error::data(
                path,
                n,
                format!(
                    "missing field \"{}\" (fields: {}); set it with --text-field",
                    spec.text_field,
                    keys()
                ),
            )
        })?;
        let label = field(&spec.label_field)?;
        if label.is_none() && spec.require_label {
            return Err(Error::data(
                path,
                n,
                format!(
                    "missing field \"{}\" (fields: {}); set it with --label-field",
                    spec.label_field,
                    keys()
                ),
            ));
        }
        out.push(Example {
            text,
            label,
            line: n,
        });
    }
    Ok(out)
}

/// Header + records, each record with its starting line.
fn parse_table(
    path: &Path,
    mut records: impl Iterator<Item = Result<(usize, Vec<String>)>>,
    spec: &DataSpec,
) -> Result<Vec<Example>> {
    let (hline, header) = match records.next() {
        Some(r) => r?,
        None => {
            return Err(Error::data(
                path,
                1,
                "the file holds no examples (not even a header line)",
            ))
        }
    };
    let col = |name: &str, flag: &str| -> Result<Option<usize>> {
        // a repeated column would leave which one is read to chance
        let named: Vec<usize> = (0..header.len())
            .filter(|&i| header.get(i).is_some_and(|h| h.trim() == name))
            .collect();
        if named.len() > 1 {
            return Err(Error::data(
                path,
                hline,
                format!(
                    "the header names the column \"{name}\" {} times (columns {:?}): rename \
                     all but one",
                    named.len(),
                    named.iter().map(|i| i + 1).collect::<Vec<_>>()
                ),
            ));
        }
        match named.first().copied() {
            Some(i) => Ok(Some(i)),
            None if flag == "--label-field" && !spec.require_label => Ok(None),
            None => Err(Error::data(
                path,
                hline,
                format!(
                    "missing field \"{name}\": the header names {:?}; set it with {flag}",
                    header
                ),
            )),
        }
    };
    let text_col = col(&spec.text_field, "--text-field")?.unwrap_or(0);
    let label_col = col(&spec.label_field, "--label-field")?;
    let mut out = Vec::new();
    for rec in records {
        let (n, fields) = rec?;
        if fields.len() != header.len() {
            return Err(Error::data(
                path,
                n,
                format!(
                    "malformed line: {} fields, but the header has {}",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        // every record has the header's width (checked above), so the columns exist
        let label = label_col.and_then(|c| fields.get(c).cloned());
        if spec.require_label && label.as_deref().is_none_or(|l| l.is_empty()) {
            return Err(Error::data(
                path,
                n,
                format!("missing field \"{}\": the value is empty", spec.label_field),
            ));
        }
        out.push(Example {
            text: fields.get(text_col).cloned().unwrap_or_default(),
            label,
            line: n,
        });
    }
    Ok(out)
}

/// RFC 4180 records: fields separated by commas, optionally quoted with `"` (a doubled `""`
/// inside quotes is one quote; quoted fields may span lines). Blank lines are skipped.
fn csv_records(path: &Path, text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while chars.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut was_quoted = false;
        loop {
            let Some(ch) = chars.next() else {
                if quoted {
                    return Err(Error::data(
                        path,
                        start,
                        "malformed line: a quoted field is not closed",
                    ));
                }
                break;
            };
            if quoted {
                match ch {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    '\n' => {
                        line += 1;
                        field.push('\n');
                    }
                    c => field.push(c),
                }
                continue;
            }
            match ch {
                '"' if field.is_empty() && !was_quoted => {
                    quoted = true;
                    was_quoted = true;
                }
                '"' => {
                    return Err(Error::data(
                        path,
                        line,
                        "malformed line: a quote inside an unquoted field",
                    ))
                }
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    was_quoted = false;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    line += 1;
                    break;
                }
                c if was_quoted => {
                    return Err(Error::data(
                        path,
                        line,
                        format!("malformed line: {c:?} after a closing quote"),
                    ))
                }
                c => field.push(c),
            }
        }
        fields.push(field);
        if !(fields.len() == 1
            && fields.first().is_some_and(|f| f.trim().is_empty())
            && !was_quoted)
        {
            out.push((start, fields));
        }
    }
    Ok(out)
}

/// The order of one epoch: batches of row indices. Rows are shuffled, cut into pools of
/// `pool` batches, sorted by length inside each pool (less padding), cut into batches, and
/// the batches shuffled. Everything comes from `rng`, so the same state gives the same plan.
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
    let mut idx: Vec<u32> = (0..lens.len() as u32).collect();
    rng.shuffle(&mut idx);
    let mut batches = Vec::new();
    // saturating: a pool larger than the data is one pool (a wrapped product would be 0)
    for chunk in idx.chunks(batch.saturating_mul(pool.max(1))) {
        let mut chunk = chunk.to_vec();
        // stable: equal lengths keep their shuffled order
        chunk.sort_by_key(|&i| lens.get(i as usize).copied().unwrap_or(0));
        batches.extend(chunk.chunks(batch).map(|c| c.to_vec()));
    }
    rng.shuffle(&mut batches);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DataSpec {
        DataSpec::default()
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let p = Path::new("d/train.jsonl");
        let err = Dataset::parse(
            p,
            "{\"text\":\"a\",\"label\":\"x\"}\n\n{\"text\": \"b\"\n",
            &spec(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d/train.jsonl:3: malformed line"),
            "{err}"
        );
        let err = Dataset::parse(
            p,
            "{\"text\":\"a\",\"label\":\"x\"}\n{\"txt\":\"b\",\"label\":\"y\"}\n",
            &spec(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d/train.jsonl:2: missing field \"text\""),
            "{err}"
        );
        let err = Dataset::parse(p, "{\"text\":\"a\"}\n", &spec()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("d/train.jsonl:1: missing field \"label\""),
            "{err}"
        );
        let err = Dataset::parse(p, "\n  \n", &spec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d/train.jsonl:1: the file holds no examples"
        );
        let err = Dataset::parse(p, "[1, 2]\n", &spec()).unwrap_err();
        assert!(
            err.to_string()
                .contains(":1: malformed line: expected a JSON object"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_fields_settable_and_numeric_labels() {
        let s = DataSpec {
            text_field: "sentence".into(),
            label_field: "y".into(),
            ..spec()
        };
        let d = Dataset::parse(
            Path::new("x.jsonl"),
            "{\"sentence\":\"ok\",\"y\":1}\n{\"sentence\":\"no\",\"y\":0}\n",
            &s,
        )
        .unwrap();
        assert_eq!(d.examples[0].label.as_deref(), Some("1"));
        assert_eq!(d.examples[1].text, "no");
        let p = DataSpec {
            require_label: false,
            ..spec()
        };
        let d = Dataset::parse(Path::new("x.jsonl"), "{\"text\":\"only text\"}\n", &p).unwrap();
        assert_eq!(d.examples[0].label, None);
    }

    #[test]
    fn tsv_and_csv() {
        let d = Dataset::parse(
            Path::new("a.tsv"),
            "label\ttext\npositive\tgood, fine\nnegative\tbad\n",
            &spec(),
        )
        .unwrap();
        assert_eq!(d.examples.len(), 2);
        assert_eq!(d.examples[0].text, "good, fine");
        assert_eq!(d.examples[1].line, 3);
        let err = Dataset::parse(
            Path::new("a.tsv"),
            "label\ttext\npositive\tgood\textra\n",
            &spec(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.tsv:2: malformed line: 3 fields, but the header has 2"
        );
        let err =
            Dataset::parse(Path::new("a.tsv"), "y\ttext\npositive\tgood\n", &spec()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a.tsv:1: missing field \"label\""),
            "{err}"
        );
        let csv = "text,label\n\"He said \"\"wow\"\"\",positive\n\"two\nlines\",negative\n\nplain,negative\n";
        let d = Dataset::parse(Path::new("a.csv"), csv, &spec()).unwrap();
        assert_eq!(
            d.examples
                .iter()
                .map(|e| e.text.as_str())
                .collect::<Vec<_>>(),
            ["He said \"wow\"", "two\nlines", "plain"]
        );
        assert_eq!(
            d.examples.iter().map(|e| e.line).collect::<Vec<_>>(),
            [2, 3, 6]
        );
        let err = Dataset::parse(Path::new("a.csv"), "text,label\n\"open,positive\n", &spec())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.csv:2: malformed line: a quoted field is not closed"
        );
        let err = Dataset::parse(Path::new("a.csv"), "text,label\nfine,\n", &spec()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a.csv:2: missing field \"label\""),
            "{err}"
        );
        // a repeated column is refused, naming it (the first one was read silently)
        let err = Dataset::parse(
            Path::new("a.csv"),
            "text,label,text\nx,positive,y\n",
            &spec(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.csv:1: the header names the column \"text\" 2 times (columns [1, 3]): rename all \
             but one"
        );
        let err = Dataset::parse(Path::new("a.csv"), "", &spec()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a.csv:1: the file holds no examples"),
            "{err}"
        );
        let err = Dataset::parse(Path::new("a.txt"), "x", &spec()).unwrap_err();
        assert!(err.to_string().contains("--format"), "{err}");
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
        let random = epoch_plan(&lens, 8, 1, &mut Rng::new(7));
        assert!(
            pad(&a) * 2 < pad(&random),
            "{} vs {}",
            pad(&a),
            pad(&random)
        );
    }
}
