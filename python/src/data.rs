//! Data from Python: a file path (jsonl, tsv, csv, read as the command line reads it), a list
//! of texts with an optional list of labels, a list of (text, label) pairs, or an `Encoded`
//! set already made for the task.

use crate::errors::{arg, compute};
use crate::ints::{int, repr};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
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
    sequence(obj, expected)
        .map_err(|e| PyTypeError::new_err(format!("argument '{name}': {at}{}", e.value(obj.py()))))
}

/// The items of a list or tuple, else a TypeError that says what was given and `expected`
/// (a str is refused, not split into characters).
fn sequence<'py>(obj: &Bound<'py, PyAny>, expected: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let text = obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>();
    let got = || {
        let ty = (obj.get_type().name()).map_or_else(|_| "?".into(), |n| n.to_string());
        PyTypeError::new_err(format!("got {ty} {}: expected {expected}", repr(obj)))
    };
    match text {
        true => Err(got()),
        false => obj.extract().map_err(|_| got()),
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
        v.extract::<String>().map_err(|_| {
            PyTypeError::new_err(format!("text {} is {}: expected a str", i + 1, repr(v)))
        })
    };
    items.iter().enumerate().map(each).collect()
}

/// Labels from Python for `from_py_with`: a list of label names or None, one per text.
pub fn label_names(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<Option<String>>>> {
    if obj.is_none() {
        return Ok(None);
    }
    let items = sequence(obj, "a list of label names (str or None), one per text")?;
    let each = |(i, v): (usize, &Bound<'_, PyAny>)| {
        v.extract::<Option<String>>().map_err(|_| {
            let at = i + 1;
            PyTypeError::new_err(format!(
                "row {at}'s label is {}: expected a str or None",
                repr(v)
            ))
        })
    };
    items
        .iter()
        .enumerate()
        .map(each)
        .collect::<PyResult<_>>()
        .map(Some)
}

/// A data set from `data`: a path (read as `spec` says), a list of texts (with `labels`), or
/// a list of (text, label) pairs. `name` stands for the file in messages.
pub fn dataset(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    labels: Option<Vec<Option<String>>>,
    spec: &DataSpec,
    name: &str,
) -> PyResult<Dataset> {
    if data.is_instance_of::<PyString>() || data.hasattr("__fspath__")? {
        let path: PathBuf = data.extract()?;
        return compute(py, || Dataset::load(&path, spec));
    }
    if let Ok(texts) = data.extract::<Vec<String>>() {
        let labels = labels.unwrap_or_else(|| vec![None; texts.len()]);
        if labels.len() != texts.len() {
            return Err(arg(
                "labels",
                format!("has {} entries for {} texts", labels.len(), texts.len()),
            ));
        }
        return Ok(Dataset::from_pairs(name, texts.into_iter().zip(labels)));
    }
    if let Ok(pairs) = data.extract::<Vec<(String, Option<String>)>>() {
        return Ok(Dataset::from_pairs(name, pairs));
    }
    // rows already encoded: this call reads texts (train re-reads its files on resume)
    let encoded = match data.is_instance_of::<PyEncoded>() {
        true => ", not an Encoded (encode's rows are for step, evaluate and predict)",
        false => "",
    };
    Err(arg(
        name,
        format!("expected a file path, a list of texts or a list of (text, label) pairs{encoded}"),
    ))
}
