//! Keyword arguments: the command line's flags, underscored, with its defaults. A `Kw` takes
//! them one by one from the call's kwargs; a keyword left over (a typo) is a `TypeError`
//! naming it, as Python does for a function's unknown keyword.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use softprompt::{DataSpec, Format, TaskOptions};

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
        v.extract::<T>().map(Some).map_err(|e| {
            let e: PyErr = e.into();
            PyTypeError::new_err(format!("{}(): {key}={}: {e}", self.func, repr(&v)))
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
        let labels = match self.take_any("labels")? {
            None => None,
            Some(v) if v.is_instance_of::<PyString>() => {
                Some(TaskOptions::labels_from_str(&v.extract::<String>()?))
            }
            Some(v) => Some(v.extract::<Vec<String>>()?),
        };
        let verbalizer = match self.take_any("verbalizer")? {
            None => None,
            Some(v) if v.is_instance_of::<PyString>() => Some(
                TaskOptions::verbalizer_from_str(&v.extract::<String>()?)
                    .map_err(crate::errors::to_py)?,
            ),
            Some(v) if v.is_instance_of::<PyDict>() => Some(
                v.cast::<PyDict>()?
                    .iter()
                    .map(|(k, w)| Ok((k.extract::<String>()?, w.extract::<String>()?)))
                    .collect::<PyResult<Vec<_>>>()?,
            ),
            Some(v) => Some(v.extract::<Vec<(String, String)>>()?),
        };
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

    /// The data flags (`format`, `text_field`, `label_field`) for reading a file.
    pub fn data_spec(&mut self, require_label: bool) -> PyResult<DataSpec> {
        Ok(DataSpec {
            format: parse::<Format>(self.take::<String>("format")?, "--format")?,
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

fn repr(v: &Bound<'_, PyAny>) -> String {
    v.repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into())
}
