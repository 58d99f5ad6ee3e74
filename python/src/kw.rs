//! Keyword arguments: the command line's flags, underscored, with its defaults. A `Kw` takes
//! them one by one from the call's kwargs; a keyword left over (a typo) is a `TypeError`
//! naming it, as Python does for a function's unknown keyword.

use crate::errors::arg;
use crate::ints::repr;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use softprompt::{DataSpec, Format, Quoting, TaskOptions};

pub struct Kw<'py> {
    dict: Option<Bound<'py, PyDict>>,
    /// the function's name, for messages
    func: &'static str,
}

impl<'py> Kw<'py> {
    pub fn new(func: &'static str, dict: Option<&Bound<'py, PyDict>>) -> PyResult<Kw<'py>> {
        // a copy: the caller's dict is left as it was
        let dict = dict.map(|d| d.copy()).transpose()?;
        Ok(Kw { dict, func })
    }

    /// The value of `key` (None when absent or None), removed from the dict.
    pub fn take<T: for<'a> FromPyObject<'a, 'py>>(&mut self, key: &str) -> PyResult<Option<T>>
    where
        for<'a> <T as FromPyObject<'a, 'py>>::Error: Into<PyErr>,
    {
        let Some(d) = &self.dict else { return Ok(None) };
        let Some(v) = d.get_item(key)? else {
            return Ok(None);
        };
        d.del_item(key)?;
        if v.is_none() {
            return Ok(None);
        }
        let py = d.py();
        let wrong = |why: String| {
            PyTypeError::new_err(format!("{}(): {key}={}: {why}", self.func, repr(&v)))
        };
        // True is a 1 to Python: a number given as a bool is a mistake (lr=True ran at 1.0)
        let float = matches!(std::any::type_name::<T>(), "f64" | "f32");
        if float && crate::ints::is_bool(&v) {
            return Err(wrong("expected a number, not a bool".into()));
        }
        v.extract::<T>().map(Some).map_err(|e| {
            let e: PyErr = e.into();
            // the exception's message alone: its Display put "TypeError: " in twice
            wrong(e.value(py).to_string())
        })
    }

    /// `key`, else `default`.
    pub fn get<T: for<'a> FromPyObject<'a, 'py>>(&mut self, key: &str, default: T) -> PyResult<T>
    where
        for<'a> <T as FromPyObject<'a, 'py>>::Error: Into<PyErr>,
    {
        Ok(self.take(key)?.unwrap_or(default))
    }

    /// The int value of `key` (None when absent or None), removed; not an int of `T`'s range:
    /// `InvalidArgument` naming the keyword (`ints::int`).
    pub fn uint<T: crate::ints::Int>(&mut self, key: &str) -> PyResult<Option<T>> {
        self.take_any(key)?
            .map(|v| crate::ints::int(key, "", &v))
            .transpose()
    }

    /// The raw object of `key`, removed.
    pub fn take_any(&mut self, key: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(d) = &self.dict else { return Ok(None) };
        let v = d.get_item(key)?;
        if v.is_some() {
            d.del_item(key)?;
        }
        Ok(v.filter(|v| !v.is_none()))
    }

    /// Every keyword was read; one left is an unknown keyword.
    pub fn finish(self) -> PyResult<()> {
        let Some(d) = self.dict else { return Ok(()) };
        match d.keys().iter().next() {
            None => Ok(()),
            Some(k) => Err(PyTypeError::new_err(format!(
                "{}() got an unexpected keyword argument {}",
                self.func,
                repr(&k)
            ))),
        }
    }

    /// The task flags (`task`, `template`, `labels`, `verbalizer`, `pooling`, `free_targets`,
    /// `max_len`, `max_target_len`, `decode`, `target_end`) as `TaskOptions`.
    pub fn task_options(&mut self) -> PyResult<TaskOptions> {
        let labels = self.take_any("labels")?.map(|v| labels(&v)).transpose()?;
        let verbalizer = (self.take_any("verbalizer")?)
            .map(|v| verbalizer(&v))
            .transpose()?;
        Ok(TaskOptions {
            task: parse(self.take::<String>("task")?, "--task")?,
            template: self.take("template")?,
            labels,
            verbalizer,
            pooling: parse(self.take::<String>("pooling")?, "--pooling")?,
            free_targets: self.get("free_targets", false)?,
            max_len: self.uint("max_len")?,
            max_target_len: self.uint("max_target_len")?,
            decode: parse(self.take::<String>("decode")?, "--decode")?,
            target_end: parse(self.take::<String>("target_end")?, "--target-end")?,
        })
    }

    /// The data flags (`format`, `quoting`, `text_field`, `label_field`) for reading a file.
    pub fn data_spec(&mut self, require_label: bool) -> PyResult<DataSpec> {
        Ok(DataSpec {
            format: parse::<Format>(self.take::<String>("format")?, "--format")?,
            quoting: parse::<Quoting>(self.take::<String>("quoting")?, "--quoting")?,
            text_field: self.get("text_field", "text".to_string())?,
            label_field: self.get("label_field", "label".to_string())?,
            require_label,
        })
    }
}

/// A flag's text form parsed as the command line parses it.
pub fn parse<T>(v: Option<String>, _flag: &str) -> PyResult<Option<T>>
where
    T: std::str::FromStr<Err = softprompt::Error>,
{
    v.map(|s| s.parse::<T>().map_err(crate::errors::to_py))
        .transpose()
}

/// `labels`: a list of names, or one string of them comma-separated (`--labels`).
fn labels(v: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if v.is_instance_of::<PyString>() {
        return Ok(TaskOptions::labels_from_str(&v.extract::<String>()?));
    }
    let expected = "a list of label names, or one string of them comma-separated";
    let items = list("labels", v, expected)?;
    // ints, as the rows' labels may be (verification 30, F9b)
    let name = |(i, x): (usize, &Bound<'_, PyAny>)| {
        crate::data::label_text(x, "a str or an int")
            .map_err(|e| arg("labels", format!("item {i} holds {e}")))
    };
    items.iter().enumerate().map(name).collect()
}

/// `verbalizer`: a dict {label: word}, a list of (label, word) pairs (tuples, or task.json's
/// [label, word] lists), or one string "label=word,..." or JSON (`--verbalizer`).
fn verbalizer(v: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    const KEY: &str = "verbalizer";
    if v.is_instance_of::<PyString>() {
        let text = v.extract::<String>()?;
        return TaskOptions::verbalizer_from_str(&text).map_err(crate::errors::to_py);
    }
    let pair = |k: &Bound<'_, PyAny>, w: &Bound<'_, PyAny>| {
        let label = crate::data::label_text(k, "a str or an int")
            .map_err(|e| arg(KEY, format!("a label holds {e}")))?;
        Ok((label, string(KEY, &format!("the word of {}", repr(k)), w)?))
    };
    if let Ok(d) = v.cast::<PyDict>() {
        return d.iter().map(|(k, w)| pair(&k, &w)).collect();
    }
    let expected = "a dict {label: word}, a list of (label, word) pairs or one string \
                    \"label=word,...\"";
    let items = list(KEY, v, expected)?;
    // a tuple, or task.json's [label, word] list (a str is not taken for a sequence)
    let each = |(i, x): (usize, &Bound<'_, PyAny>)| {
        let kw = x.extract::<Vec<Bound<'_, PyAny>>>().unwrap_or_default();
        match kw.as_slice() {
            [k, w] => pair(k, w),
            _ => Err(arg(
                KEY,
                format!("item {i} holds {}: expected a (label, word) pair", repr(x)),
            )),
        }
    };
    items.iter().enumerate().map(each).collect()
}

/// The items of keyword `key`'s list (or tuple); anything else is `InvalidArgument` naming
/// it and what was `expected`.
fn list<'py>(key: &str, v: &Bound<'py, PyAny>, expected: &str) -> PyResult<Vec<Bound<'py, PyAny>>> {
    v.extract()
        .map_err(|_| arg(key, format!("got {}: expected {expected}", repr(v))))
}

/// `v`, a str `at` (where it sits) in keyword `key`, else `InvalidArgument` naming both.
fn string(key: &str, at: &str, v: &Bound<'_, PyAny>) -> PyResult<String> {
    v.extract()
        .map_err(|_| arg(key, format!("{at} holds {}: expected a str", repr(v))))
}
