//! The three layouts of a data file, read into rows: JSON lines (each line one object, a key
//! given twice refused), TSV and CSV (a header naming the fields; quoted fields, which may
//! span lines, as Python's csv module reads them, or under `Quoting::None` quotes as text, as
//! GLUE's TSV files are written). Every error names the file and the line (1-based) at fault.
// The loaders never panic on what a user hands them: no unwrap, no expect, no unchecked
// indexing (tests excepted). See README.md, "Bad input".
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use super::data::{DataSpec, Example, Format, Quoting};
use crate::error::{Error, Result};
use std::path::Path;

/// The rows of a file's text (its BOM removed) in `format`; `path` is used in messages only.
pub(super) fn parse_rows(
    path: &Path,
    text: &str,
    format: Format,
    spec: &DataSpec,
) -> Result<Vec<Example>> {
    let table = |delim| -> Result<Vec<Example>> {
        let quoting = spec.quoting.unwrap_or_default();
        let records = delimited(path, text, delim, quoting)?;
        parse_table(path, records.into_iter().map(Ok), spec)
    };
    match (format, spec.quoting) {
        // minimal, the default, is accepted given; none would set nothing (see
        // `DataSpec::for_file`, which lifts it for a JSON lines file beside a table)
        (Format::Jsonl, Some(Quoting::None)) => Err(Error::arg(
            "--quoting",
            format!(
                "{}: a JSON lines file has no quoting to set (--quoting is for TSV and CSV files)",
                path.display()
            ),
        )),
        (Format::Jsonl, _) => parse_jsonl(path, text, spec),
        (Format::Tsv, _) => table('\t'),
        (Format::Csv, _) => table(','),
    }
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

/// What serde_json's words on an escaped lone surrogate leave out: a lone UTF-16 surrogate,
/// which Python's `json.dumps` writes for a str holding one, is no Unicode character
/// ("unexpected end of hex escape" alone; hostile pass 33, F6).
pub(crate) fn surrogate_hint(e: &serde_json::Error) -> &'static str {
    match e.to_string().contains("hex escape") {
        true => {
            ": a lone UTF-16 surrogate such as \\ud800, which Python's json.dumps writes for a \
             str that holds one, is not a Unicode character"
        }
        false => "",
    }
}

/// The number in field `name` of the JSON object `line` as the file writes it: serde's own
/// number went through float64 and was written again (`123456789012345678901234567890` became
/// `1.2345678901234568e+29`, two such labels one class, `1e2` the text `100.0`; hostile pass
/// 33, F11). Labels are kept as written, numbers too.
fn number_text(line: &str, name: &str) -> Option<String> {
    let raw: std::collections::HashMap<String, &serde_json::value::RawValue> =
        serde_json::from_str(line).ok()?;
    Some(raw.get(name)?.get().trim().to_string())
}

fn parse_jsonl(path: &Path, text: &str, spec: &DataSpec) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            let why = format!("malformed line: not valid JSON ({e}){}", surrogate_hint(&e));
            Error::data(path, n, why)
        })?;
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
                Some(x @ serde_json::Value::Number(_)) => Ok(Some(
                    number_text(line, name).unwrap_or_else(|| x.to_string()),
                )),
                Some(x @ serde_json::Value::Bool(_)) => Ok(Some(x.to_string())),
                Some(_) => Err(Error::data(
                    path,
                    n,
                    format!("field \"{name}\" must be a string, number or boolean"),
                )),
            }
        };
        let keys = || obj.keys().cloned().collect::<Vec<_>>().join(", ");
        let text = field(&spec.text_field)?.ok_or_else(|| {
            let name = &spec.text_field;
            let msg = if obj.get(name).is_some() {
                // present but null: "missing" sent users looking for a typo in the name
                format!("field \"{name}\" is null: every row needs a text")
            } else {
                format!(
                    "missing field \"{name}\" (fields: {}); set it with --text-field",
                    keys()
                )
            };
            Error::data(path, n, msg)
        })?;
        let label = field(&spec.label_field)?;
        if let Some(l) = label.as_deref().filter(|l| l.trim().is_empty()) {
            // it became a class named "" (a prediction printed "label": "")
            return Err(Error::data(
                path,
                n,
                format!(
                    "field \"{}\" is {l:?}: a label needs a name (leave the field out, or \
                     null, for a row without one)",
                    spec.label_field
                ),
            ));
        }
        if label.is_none() && spec.require_label {
            let name = &spec.label_field;
            let msg = match obj.get(name) {
                // present but null: "missing" sent users looking for a typo in the name
                Some(_) => format!("field \"{name}\" is null: every row here needs a label"),
                None => format!(
                    "missing field \"{name}\" (fields: {}); set it with --label-field",
                    keys()
                ),
            };
            return Err(Error::data(path, n, msg));
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
        // a blank cell is no label (a class named "   " was trained)
        let label =
            (label_col.and_then(|c| fields.get(c).cloned())).filter(|l| !l.trim().is_empty());
        if spec.require_label && label.is_none() {
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

/// The records of a CSV (`delim` ',') or TSV ('\t') file as Python's csv module reads them
/// (the excel and excel-tab dialects, which pandas writes): a field that starts with `"` is
/// quoted (a doubled `""` inside is one quote; it may span lines), a quote inside an unquoted
/// field is text. Records end at `\r\n`, `\n` or a lone `\r` (an old Mac file, or a last line
/// that lost its LF: the `\r` made a class "positive\r"). Blank lines are skipped. Stricter than
/// Python where it would guess silently: text after a closing quote, or a quote never closed,
/// is an error naming the line. Under `Quoting::None` (`csv.QUOTE_NONE`) a quote is text.
fn delimited(
    path: &Path,
    text: &str,
    delim: char,
    quoting: Quoting,
) -> Result<Vec<(usize, Vec<String>)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while chars.peek().is_some() {
        let start = line;
        let (fields, blank) = record(path, &mut chars, &mut line, delim, quoting)?;
        if !blank {
            out.push((start, fields));
        }
    }
    Ok(out)
}

/// The hint of the quote errors: GLUE's TSV files hold quotes that open no quoted field.
const NO_QUOTING: &str =
    "for a file written with no quoting at all, as GLUE's TSV files are, pass --quoting none";

/// One record of [`delimited`] from `chars`, counting the lines it spans in `line`; whether it
/// was blank (whitespace only, TSV's tabs included).
fn record(
    path: &Path,
    chars: &mut std::iter::Peekable<std::str::Chars>,
    line: &mut usize,
    delim: char,
    quoting: Quoting,
) -> Result<(Vec<String>, bool)> {
    let quotes = quoting == Quoting::Minimal;
    let start = *line;
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut quoted, mut was_quoted, mut blank) = (false, false, true);
    while let Some(ch) = chars.next() {
        blank &= ch.is_whitespace();
        if quoted {
            match ch {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                // kept as written (Python keeps a quoted "\r\n"); counted once per line end
                '\r' | '\n' => {
                    *line += usize::from(ch == '\n' || chars.peek() != Some(&'\n'));
                    field.push(ch);
                }
                c => field.push(c),
            }
            continue;
        }
        match ch {
            '"' if quotes && field.is_empty() && !was_quoted => (quoted, was_quoted) = (true, true),
            c if c == delim => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' | '\n' => {
                if ch == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                *line += 1;
                fields.push(field);
                return Ok((fields, blank));
            }
            c if was_quoted => {
                return Err(Error::data(
                    path,
                    *line,
                    format!(
                        "malformed line: {c:?} after a closing quote (a field that starts with \" \
                         is quoted, as Python's csv and pandas read it: quote the whole field and \
                         double each quote inside it; {NO_QUOTING})"
                    ),
                ))
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(Error::data(
            path,
            start,
            format!("malformed line: a quoted field is not closed ({NO_QUOTING})"),
        ));
    }
    fields.push(field);
    Ok((fields, blank))
}

#[cfg(test)]
mod tests {
    use crate::train::data::{DataSpec, Dataset, Quoting};
    use std::path::Path;

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
            "a.csv:2: malformed line: a quoted field is not closed (for a file written with no \
             quoting at all, as GLUE's TSV files are, pass --quoting none)"
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

    /// GLUE's TSV files are written with no quoting: under `Quoting::None` (Python's
    /// `csv.QUOTE_NONE`, whose rows these are) a text that starts with a quote is read as
    /// written, a quote left open ends at its line, a quoted field keeps its quotes and a
    /// quoted comma splits it. The default reads the first as an error, joins the second with
    /// the lines after it, and strips the quotes of the third.
    #[test]
    fn quoting_none_reads_quotes_as_text() {
        let none = DataSpec {
            quoting: Some(Quoting::None),
            ..spec()
        };
        let texts =
            |d: &Dataset| -> Vec<String> { d.examples.iter().map(|e| e.text.clone()).collect() };
        let tsv = "text\tlabel\n\"Quoted\" start\tpositive\r\n\"open quote\tnegative\n\n\
                   plain \"\"x\"\"\tpositive\n";
        let d = Dataset::parse(Path::new("g.tsv"), tsv, &none).unwrap();
        assert_eq!(
            texts(&d),
            ["\"Quoted\" start", "\"open quote", "plain \"\"x\"\""]
        );
        assert_eq!(
            d.examples.iter().map(|e| e.line).collect::<Vec<_>>(),
            [2, 3, 5]
        );
        let err = Dataset::parse(Path::new("g.tsv"), tsv, &spec()).unwrap_err();
        assert!(
            err.to_string().contains("g.tsv:2: malformed line: ' '"),
            "{err}"
        );
        let open = "text\tlabel\n\"open quote\tnegative\nnext\tpositive\n";
        let d = Dataset::parse(Path::new("g.tsv"), open, &none).unwrap();
        assert_eq!(texts(&d), ["\"open quote", "next"]);
        let err = Dataset::parse(Path::new("g.tsv"), open, &spec()).unwrap_err();
        assert!(err.to_string().contains("not closed"), "{err}");
        // given as minimal, the default's reading
        let csv = "text,label\n\"a\",positive\n";
        let minimal = DataSpec {
            quoting: Some(Quoting::Minimal),
            ..spec()
        };
        let d = Dataset::parse(Path::new("q.csv"), csv, &minimal).unwrap();
        assert_eq!(texts(&d), ["a"]);
        let d = Dataset::parse(Path::new("q.csv"), csv, &none).unwrap();
        assert_eq!(texts(&d), ["\"a\""]);
        let err = Dataset::parse(Path::new("q.csv"), "text,label\n\"a, b\",positive\n", &none)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "q.csv:2: malformed line: 3 fields, but the header has 2"
        );
        // JSON lines: minimal (the default) given reads as ever; none is refused, naming the
        // file, unless a table is read beside it; an unknown value is named
        let jsonl = "{\"text\":\"\\\"a\\\"\",\"label\":\"x\"}\n";
        let d = Dataset::parse(Path::new("d.jsonl"), jsonl, &minimal).unwrap();
        assert_eq!(texts(&d), ["\"a\""]);
        let err = Dataset::parse(Path::new("d.jsonl"), jsonl, &none).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument --quoting: d.jsonl: a JSON lines file has no quoting to set \
             (--quoting is for TSV and CSV files)"
        );
        let (tsv, dev) = (Path::new("train.tsv"), Path::new("d.jsonl"));
        let beside = none.for_file(dev, &[tsv, dev]);
        assert_eq!(beside.quoting, None);
        assert_eq!(none.for_file(tsv, &[tsv, dev]).quoting, Some(Quoting::None));
        let d = Dataset::parse(dev, jsonl, &beside).unwrap();
        assert_eq!(texts(&d), ["\"a\""]);
        assert_eq!(none.for_file(dev, &[dev, dev]).quoting, Some(Quoting::None));
        // --format tsv makes every file a table
        let as_tsv = DataSpec {
            format: Some(crate::train::data::Format::Tsv),
            ..none.clone()
        };
        assert_eq!(as_tsv.for_file(dev, &[dev]).quoting, Some(Quoting::None));
        let err = "all".parse::<Quoting>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument --quoting: \"all\": expected minimal or none"
        );
    }
}
