//! Data from Python: a file path (jsonl, tsv, csv, read as the command line reads it), a list
//! of texts with an optional list of labels, a list of (text, label) pairs, or an `Encoded`
//! set already made for the task.

use crate::errors::{arg, compute};
use crate::ints::{int, repr};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString};
use softprompt::{DataSpec, Dataset, Encoded, Row};
use std::path::PathBuf;

/// Rows encoded for a task (`Model.encode`): token ids with the model's special tokens, the
/// label index, pet's [MASK] position, seq2seq's and causal's target ids. Slicing gives a
/// batch for `Model.step`.
#[pyclass(name = "Encoded", module = "softprompt", frozen)]
pub struct PyEncoded {
    pub inner: Encoded,
}

#[pymethods]
impl PyEncoded {
    /// Rows from token ids (special tokens included, as `Model.tokenize` gives them):
    /// `labels` the class indices, `mask_positions` pet's [MASK] index in each row (a pet
    /// task refuses a row whose position, 0 when not given, does not hold the mask token),
    /// `targets` the target ids of seq2seq and causal rows. Messages count rows from 1 (as
    /// the engine's row errors and a data file's lines) and a position in a row from 0.
    #[staticmethod]
    #[pyo3(signature = (ids, labels=None, mask_positions=None, targets=None))]
    fn from_ids(
        ids: &Bound<'_, PyAny>,
        labels: Option<&Bound<'_, PyAny>>,
        mask_positions: Option<&Bound<'_, PyAny>>,
        targets: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyEncoded> {
        let ids = id_lists("ids", ids)?;
        let labels = labels.map(|l| indices("labels", l, true)).transpose()?;
        let mask_positions = mask_positions
            .map(|m| indices("mask_positions", m, false))
            .transpose()?;
        let targets = targets.map(|t| id_lists("targets", t)).transpose()?;
        let n = ids.len();
        for (name, len) in [
            ("labels", labels.as_ref().map(Vec::len)),
            ("mask_positions", mask_positions.as_ref().map(Vec::len)),
            ("targets", targets.as_ref().map(Vec::len)),
        ] {
            if let Some(len) = len.filter(|&l| l != n) {
                return Err(arg(name, format!("has {len} entries for {n} rows")));
            }
        }
        let rows = ids
            .into_iter()
            .enumerate()
            .map(|(i, ids)| {
                // made by hand: no model recorded, so every model takes it
                let mut row = Row::new(ids);
                row.mask_pos = mask_positions.as_ref().and_then(|m| m[i]).unwrap_or(0);
                row.label = labels.as_ref().and_then(|l| l[i]);
                row.target = targets.as_ref().map_or(Vec::new(), |t| t[i].clone());
                row.line = i + 1;
                row
            })
            .collect();
        Ok(PyEncoded {
            inner: Encoded {
                path: PathBuf::from("the ids"),
                rows,
                truncated: 0,
                truncated_targets: 0,
            },
        })
    }

    fn __len__(&self) -> usize {
        self.inner.rows.len()
    }

    /// Rows `index` (a slice gives a new `Encoded`, an int one row's ids).
    fn __getitem__(&self, py: Python<'_>, index: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let rows = &self.inner.rows;
        if let Ok(slice) = index.cast::<pyo3::types::PySlice>() {
            let ind = slice.indices(rows.len() as isize)?;
            let picked: Vec<Row> = (0..ind.slicelength)
                .map(|k| rows[(ind.start + k as isize * ind.step) as usize].clone())
                .collect();
            let enc = Encoded {
                rows: picked,
                ..self.inner.clone()
            };
            return Ok(Py::new(py, PyEncoded { inner: enc })?.into_any());
        }
        let i: isize = index.extract().map_err(|e| {
            // an int past isize raised a bare OverflowError
            pyo3::exceptions::PyIndexError::new_err(format!("row index {}: {e}", repr(&index)))
        })?;
        let j = if i < 0 { i + rows.len() as isize } else { i };
        let row = usize::try_from(j)
            .ok()
            .and_then(|j| rows.get(j))
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err("row index out of range"))?;
        Ok(row.ids.clone().into_pyobject(py)?.into_any().unbind())
    }

    /// Every row's token ids.
    #[getter]
    fn ids(&self) -> Vec<Vec<i32>> {
        self.inner.rows.iter().map(|r| r.ids.clone()).collect()
    }

    /// Every row's class index (None: unlabelled or a free target).
    #[getter]
    fn labels(&self) -> Vec<Option<usize>> {
        self.inner.rows.iter().map(|r| r.label).collect()
    }

    /// Rows whose text was cut to max_len.
    #[getter]
    fn truncated(&self) -> usize {
        self.inner.truncated
    }

    fn __repr__(&self) -> String {
        format!(
            "Encoded({} rows from {}, {} truncated)",
            self.inner.rows.len(),
            self.inner.path.display(),
            self.inner.truncated
        )
    }
}

/// The items of argument `name`, a list or tuple (any sequence but a str or bytes), else a
/// TypeError naming the argument, `at` (which row) and `expected` (PyO3's own said "Can't
/// extract `str` to `Vec`", naming neither).
pub fn items<'py>(
    name: &str,
    at: &str,
    obj: &Bound<'py, PyAny>,
    expected: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    // only the TypeError is named after the argument: a KeyboardInterrupt (the isinstance
    // check can import) stays what it is
    sequence(obj, expected).map_err(|e| match e.is_instance_of::<PyTypeError>(obj.py()) {
        true => PyTypeError::new_err(format!("argument '{name}': {at}{}", e.value(obj.py()))),
        false => e,
    })
}

/// The items of a list or tuple, else a TypeError that says what was given and `expected`
/// (a str is refused, not split into characters; a table or mapping is refused: `table`).
fn sequence<'py>(obj: &Bound<'py, PyAny>, expected: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let text = obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>();
    let got = || {
        let ty = (obj.get_type().name()).map_or_else(|_| "?".into(), |n| n.to_string());
        PyTypeError::new_err(format!("got {ty} {}: expected {expected}", repr(obj)))
    };
    if let Some(msg) = table(obj)? {
        return Err(PyTypeError::new_err(format!(
            "{msg}: pass one column (df[\"label\"]) or a list"
        )));
    }
    match text {
        true => Err(got()),
        false => obj.extract().map_err(|_| got()),
    }
}

/// How to pass a table's rows as data.
const TABLE_ROWS: &str = "pass its text column (df[\"text\"], with labels=df[\"label\"] where \
                          the call takes labels) or (text, label) pairs \
                          (list(zip(df[\"text\"], df[\"label\"])))";

/// What is wrong with a table (a pandas DataFrame: it has `columns` and `iloc`) or a mapping
/// (a dict) given for rows: iterating one gives its column names or keys, so it was read as
/// rows named after them (wrong results, no error). None for anything else.
fn table(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    // a dict, or an instance of collections.abc.Mapping; not PyO3's PyMapping check, which
    // imports collections.abc on first use and panics should that import fail (Ctrl-C
    // during it: a PanicException); here the import's error is raised
    let mapping = obj.is_instance_of::<pyo3::types::PyDict>() || {
        let abc = obj.py().import("collections.abc")?;
        obj.is_instance(&abc.getattr("Mapping")?)?
    };
    let frame = obj.hasattr("columns")? && obj.hasattr("iloc")?;
    if !(mapping || frame) {
        return Ok(None);
    }
    let ty = (obj.get_type().name()).map_or_else(|_| "?".into(), |n| n.to_string());
    let what = match frame {
        true => "a table (iterating it gives its column names, not its rows)",
        false => "a mapping (iterating it gives its keys, not rows)",
    };
    Ok(Some(format!("got a {ty}, {what}")))
}

/// `v` as a str, else what is wrong with it in words: not a str, or a str that is not UTF-8
/// (a lone surrogate, which PyO3 reports as "expected a str" of what is a str).
fn utf8(v: &Bound<'_, PyAny>, expected: &str) -> Result<String, String> {
    v.extract::<String>()
        .map_err(|_| match v.is_instance_of::<PyString>() {
            true => format!(
                "{}, which cannot be encoded as UTF-8 (it holds a lone surrogate)",
                repr(v)
            ),
            false => format!("{}: expected {expected}", repr(v)),
        })
}

/// A label from Python: a str, or an int (Hugging Face datasets' ClassLabel, a pandas column
/// of ints, numpy's integers) read as its digits, as a JSON lines file's number is: the most
/// common labels in Python were refused where the file of the same rows trained (hostile
/// pass 33, F9), a Python int of any size included (`str()` of it; verification 30, F9a). A
/// float or a bool is refused (1.0 and 1 would be two labels); `expected` says what else.
pub(crate) fn label_text(v: &Bound<'_, PyAny>, expected: &str) -> Result<String, String> {
    if v.is_instance_of::<PyString>() || v.is_instance_of::<PyBool>() {
        return utf8(v, expected);
    }
    if let Ok(n) = v.extract::<i64>() {
        return Ok(n.to_string());
    }
    if let Ok(n) = v.extract::<u64>() {
        return Ok(n.to_string());
    }
    match v.is_instance_of::<PyInt>() {
        true => v.str().map(|s| s.to_string()).map_err(|e| e.to_string()),
        false => utf8(v, expected),
    }
}

/// Rows of token ids from Python, each an i32 (`ints::int` names the argument, the row and
/// the range); a value that is not a list of lists is a TypeError naming the argument. Rows
/// are counted from 1 in messages, as the engine's row errors and a data file's lines are.
fn id_lists(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<i32>>> {
    let rows = items(
        name,
        "",
        obj,
        "a list of rows, each a list of token ids (ints)",
    )?;
    let each =
        |(r, row): (usize, &Bound<'_, PyAny>)| id_list(name, &format!("row {}, ", r + 1), row);
    rows.iter().enumerate().map(each).collect()
}

/// One list of token ids, each an i32; `row` says which row it is ("" for a lone list).
/// Positions within a row are indices (from 0), as the engine's "at index" says them.
pub fn id_list(name: &str, row: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<i32>> {
    let items = items(name, row, obj, "a list of token ids (ints)")?;
    let each = |(c, v): (usize, &Bound<'_, PyAny>)| int(name, &format!("{row}index {c}"), v);
    items.iter().enumerate().map(each).collect()
}

/// Per-row ints (labels, [MASK] positions) from Python, each a non-negative int; None is kept
/// where `none_ok` (an unlabelled row). Rows counted from 1, as in `id_lists`.
fn indices(name: &str, obj: &Bound<'_, PyAny>, none_ok: bool) -> PyResult<Vec<Option<usize>>> {
    let items = items(name, "", obj, "a list of ints, one per row")?;
    let each = |(r, v): (usize, &Bound<'_, PyAny>)| match v.is_none() {
        true if none_ok => Ok(None),
        _ => int::<usize>(name, &format!("row {}", r + 1), v).map(Some),
    };
    items.iter().enumerate().map(each).collect()
}

/// Texts from Python for `from_py_with` (PyO3 puts the argument's name before the
/// message): a list of str; one str is refused (it is not split into characters). Texts are
/// counted from 1 in messages, as rows are.
pub fn texts(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let items = sequence(obj, "a list of str (one text: [text])")?;
    let each = |(i, v): (usize, &Bound<'_, PyAny>)| {
        utf8(v, "a str").map_err(|e| PyTypeError::new_err(format!("text {} is {e}", i + 1)))
    };
    items.iter().enumerate().map(each).collect()
}

/// Whether a label is missing: None, or pandas' missing value (a float NaN, as a column of
/// str holds one, `pd.NA` or `pd.NaT`): `labels=df["label"]` of a frame with missing labels was
/// refused (hostile pass 22).
fn missing(v: &Bound<'_, PyAny>) -> bool {
    if v.is_instance_of::<PyString>() {
        return false;
    }
    v.is_none()
        || v.extract::<f64>().is_ok_and(f64::is_nan)
        || v.get_type()
            .name()
            .is_ok_and(|n| n == "NAType" || n == "NaTType")
}

/// Labels from Python for `from_py_with`: a list of label names or None, one per text.
pub fn label_names(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<Option<String>>>> {
    if obj.is_none() {
        return Ok(None);
    }
    let items = sequence(obj, "a list of label names (str or None), one per text")?;
    let each = |(i, v): (usize, &Bound<'_, PyAny>)| match missing(v) {
        true => Ok(None),
        false => (label_text(v, "a str, an int or None").map(Some))
            .map_err(|e| PyTypeError::new_err(format!("row {}'s label is {e}", i + 1))),
    };
    items
        .iter()
        .enumerate()
        .map(each)
        .collect::<PyResult<_>>()
        .map(Some)
}

/// A data set from `data`: a path (read as `spec` says), a list of texts (with `labels`), or
/// a list of (text, label) pairs (tuples, or 2-item lists as `json.load` and
/// `df.values.tolist()` give them). `name` stands for the argument in messages, whose rows
/// are counted from 1.
pub fn dataset(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    labels: Option<Vec<Option<String>>>,
    spec: &DataSpec,
    name: &str,
) -> PyResult<Dataset> {
    if let Some(path) = crate::paths::path_if_any(data)? {
        // a file that is there: refused before it is read (review 14, R14-12)
        if labels.is_some() && path.is_file() {
            return Err(labels_unread(name, "a file, whose rows"));
        }
        let loaded = compute(py, || Dataset::load(&path, spec)).map_err(|e| {
            match data.is_instance_of::<PyString>() && looks_like_text(&path) {
                true => not_a_file(py, e, name),
                false => e,
            }
        })?;
        // after the load otherwise: a text passed as a str is told to pass [text] first
        // (review 13), and /dev/stdin is a file too
        if labels.is_some() {
            return Err(labels_unread(name, "a file, whose rows"));
        }
        return Ok(loaded);
    }
    // rows already encoded: this call reads texts (train re-reads its files on resume)
    let expected = match data.is_instance_of::<PyEncoded>() {
        true => ", not an Encoded (encode's rows are for step, evaluate and predict)",
        false => "",
    };
    let expected =
        format!("expected a file path, a list of texts or a list of (text, label) pairs{expected}");
    if let Some(msg) = table(data)? {
        return Err(PyTypeError::new_err(format!(
            "argument '{name}': {msg}: {TABLE_ROWS}"
        )));
    }
    // what was given, said only when refused (the repr of a million texts took 90 MB): a
    // zip or a generator (one pass, no length) is a common slip
    let got = || match data.hasattr("__next__").unwrap_or(false) {
        true => format!("; got {}, an iterator: pass list(...) of it", repr(data)),
        false => format!("; got {}", repr(data)),
    };
    let rows: Vec<Bound<'_, PyAny>> = match data.is_instance_of::<PyEncoded>() {
        true => Err(arg(name, &expected)),
        false => (data.extract()).map_err(|_| arg(name, format!("{expected}{}", got()))),
    }?;
    if let Some(flag) = file_flag(spec) {
        return Err(unread_flag(flag, name));
    }
    // the first row says which: texts, or (text, label) pairs
    let pairs = rows
        .first()
        .is_some_and(|r| !r.is_instance_of::<PyString>());
    if pairs {
        if labels.is_some() {
            return Err(labels_unread(name, "(text, label) pairs, which"));
        }
        let each = |(i, r): (usize, &Bound<'_, PyAny>)| pair(name, i + 1, r);
        let pairs: Vec<(String, Option<String>)> =
            rows.iter().enumerate().map(each).collect::<PyResult<_>>()?;
        return Ok(Dataset::from_pairs(name, pairs));
    }
    let each = |(i, r): (usize, &Bound<'_, PyAny>)| {
        utf8(r, "a str (a text), as row 1 is")
            .map_err(|e| arg(name, format!("row {} is {e}", i + 1)))
    };
    let texts: Vec<String> = rows.iter().enumerate().map(each).collect::<PyResult<_>>()?;
    let labels = labels.unwrap_or_else(|| vec![None; texts.len()]);
    if labels.len() != texts.len() {
        return Err(arg(
            "labels",
            format!("has {} entries for {} texts", labels.len(), texts.len()),
        ));
    }
    Ok(Dataset::from_pairs(name, texts.into_iter().zip(labels)))
}

/// The first data flag (`format`, `quoting`, `text_field`, `label_field`) `spec` gives,
/// which only a file reads.
pub fn file_flag(spec: &DataSpec) -> Option<&'static str> {
    let d = DataSpec::default();
    [
        ("format", spec.format.is_some()),
        ("quoting", spec.quoting.is_some()),
        ("text_field", spec.text_field != d.text_field),
        ("label_field", spec.label_field != d.label_field),
    ]
    .into_iter()
    .find_map(|(flag, given)| given.then_some(flag))
}

/// `labels=` given next to the data `name`, whose rows (`rows`: what they are, then "whose
/// rows" or "which") hold their own labels: the call would ignore it.
pub fn labels_unread(name: &str, rows: &str) -> PyErr {
    arg(
        "labels",
        format!("is for a list of texts, and {name} is {rows} hold their labels: leave labels out"),
    )
}

/// A data flag given where `what` holds rows in memory: the call would ignore it.
pub fn unread_flag(flag: &str, what: &str) -> PyErr {
    arg(
        flag,
        format!("is for reading a file, and {what} holds rows in memory: leave it out"),
    )
}

/// Row `at` (counted from 1) of argument `name` as a (text, label) pair: a tuple or a 2-item
/// list of a str and a str or None.
fn pair(name: &str, at: usize, row: &Bound<'_, PyAny>) -> PyResult<(String, Option<String>)> {
    let items: Vec<Bound<'_, PyAny>> = match row.is_instance_of::<PyString>() {
        true => Vec::new(),
        false => row.extract().unwrap_or_default(),
    };
    let [text, label] = items.as_slice() else {
        let expected = match at {
            1 => "a str (a text) or a (text, label) pair",
            _ => "a (text, label) pair, as row 1 is",
        };
        return Err(arg(
            name,
            format!("row {at} is {}: expected {expected}", repr(row)),
        ));
    };
    let text = utf8(text, "a str").map_err(|e| arg(name, format!("row {at}'s text is {e}")))?;
    let label = match missing(label) {
        true => None,
        false => {
            let text = label_text(label, "a str, an int or None");
            Some(text.map_err(|e| arg(name, format!("row {at}'s label is {e}")))?)
        }
    };
    Ok((text, label))
}

/// Whether `path`, a str given as data, names no file and looks like a text meant as one
/// (not in a folder, no data file's extension): `predict(task, prompt, "a great movie")`.
fn looks_like_text(path: &std::path::Path) -> bool {
    let data_file = (path.extension()).is_some_and(|e| {
        ["jsonl", "json", "tsv", "csv", "txt"]
            .contains(&e.to_string_lossy().to_lowercase().as_str())
    });
    matches!(path.try_exists(), Ok(false)) && path.components().count() == 1 && !data_file
}

/// `e`, the engine's "no such file" for a str given as `name`, with the hint that a str is
/// read as a file path (one text is `[text]`).
fn not_a_file(py: Python<'_>, e: PyErr, name: &str) -> PyErr {
    let value = e.value(py);
    let msg = value
        .str()
        .map_or_else(|_| String::new(), |s| s.to_string());
    let msg = format!("{msg} ({name}: a str is read as a file path; for one text, pass [text])");
    let path = value
        .getattr("filename")
        .and_then(|p| p.extract::<std::ffi::OsString>());
    match path {
        Ok(path) => crate::errors::raise_os("FileNotFound", msg, &path, Some(2)),
        Err(_) => crate::errors::raise("FileNotFound", msg),
    }
}
