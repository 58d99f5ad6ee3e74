//! The prompt on the host, and its values as numpy arrays that share its memory.

use crate::errors::{arg, compute, raise};
use numpy::ndarray::{ArrayView1, ArrayView2};
use numpy::{PyArray1, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use softprompt::Prompt;
use std::path::PathBuf;

/// A soft prompt: P rows of the model's width, float32, on the host (with a `cls` task's
/// head). `values` is a writable numpy view of its memory: writes change the prompt the next
/// `Model.step`, `evaluate` or `save_prompt` uses.
#[pyclass(name = "Prompt", module = "softprompt", weakref)]
pub struct PyPrompt {
    /// never replaced once made: the numpy views point into its buffers
    pub inner: Prompt,
}

impl PyPrompt {
    /// What the engine reads: a copy taken under the GIL, since the numpy views stay writable
    /// from other threads while a call runs with the GIL released.
    pub fn engine_copy(&self) -> Prompt {
        self.inner.clone()
    }
}

/// A numpy view of `len` floats at `ptr`, shaped `shape`, that keeps `owner` alive.
///
/// Safety: `ptr` points into a buffer `owner` holds and never reallocates (a `Prompt`'s
/// values and head are fixed in size and the `PyPrompt` never replaces its prompt).
unsafe fn view<'py>(
    owner: Bound<'py, PyAny>,
    ptr: *const f32,
    shape: (usize, usize),
) -> Bound<'py, PyArray2<f32>> {
    // SAFETY: see the function's contract; the view's base is `owner`
    unsafe {
        let a = ArrayView2::from_shape_ptr(shape, ptr);
        PyArray2::borrow_from_array(&a, owner)
    }
}

/// The prompt to change, else, while a call on another thread holds it (its GIL released),
/// a `SoftpromptError` that says so (PyO3's own was a bare "Already borrowed").
fn mutable<'py>(slf: &Bound<'py, PyPrompt>, what: &str) -> PyResult<PyRefMut<'py, PyPrompt>> {
    slf.try_borrow_mut().map_err(|_| {
        raise(
            "SoftpromptError",
            format!(
                "{what}: the prompt is in use by a call on another thread (Model.step, \
                 evaluate, predict, generate or save_prompt): change it once that call \
                 returns, or give the other thread prompt.copy()"
            ),
        )
    })
}

/// A (P, d) float32 array, else a TypeError that says what was given (numpy's own said
/// "'ndarray' object cannot be cast as 'ndarray'" for a float64 or 1-D array).
fn f32_matrix<'py>(v: &Bound<'py, PyAny>, what: &str) -> PyResult<PyReadonlyArray2<'py, f32>> {
    v.extract::<PyReadonlyArray2<'py, f32>>().map_err(|_| {
        let got = match (v.getattr("ndim"), v.getattr("dtype")) {
            (Ok(n), Ok(d)) => format!("a {n}-D array of {d}"),
            _ => v
                .get_type()
                .name()
                .map_or_else(|_| "another type".into(), |n| format!("a {n}")),
        };
        PyTypeError::new_err(format!(
            "{what}: expected a 2-D numpy array of float32, shape (P, d); got {got} \
             (convert it with numpy.asarray(x, dtype=numpy.float32))"
        ))
    })
}

#[pymethods]
impl PyPrompt {
    /// A prompt from a (P, d) float32 array (copied); a value that is not finite is an
    /// `InvalidArgument` naming `values`.
    #[staticmethod]
    fn from_values(values: &Bound<'_, PyAny>) -> PyResult<PyPrompt> {
        let values = f32_matrix(values, "values")?;
        let [p, d] = [values.shape()[0], values.shape()[1]];
        let data = values.as_array().iter().copied().collect();
        Ok(PyPrompt {
            inner: Prompt::from_values(p, d, data).map_err(crate::errors::to_py)?,
        })
    }

    /// Reads a prompt folder: one softprompt saved (task.json, head.safetensors for cls) or
    /// one PEFT saved (adapter_config.json and adapter_model.safetensors; a pickled .bin is
    /// refused: PEFT's `save_pretrained(..., safe_serialization=True)` writes the file). An
    /// unstamped adapter whose values are not those its task.json (and head) were saved with
    /// is read with a UserWarning, as the command line warns of it.
    #[staticmethod]
    fn load(
        py: Python<'_>,
        #[pyo3(from_py_with = crate::paths::path)] dir: PathBuf,
    ) -> PyResult<PyPrompt> {
        let inner = compute(py, || Prompt::load(&dir))?;
        if let Some(w) = inner.load_warning() {
            user_warning(py, w)?;
        }
        Ok(PyPrompt { inner })
    }

    /// P, the number of rows.
    #[getter]
    fn rows(&self) -> usize {
        self.inner.rows()
    }

    /// d, the width of a row.
    #[getter]
    fn width(&self) -> usize {
        self.inner.width()
    }

    /// The values, a (P, d) float32 numpy array sharing the prompt's memory (no copy):
    /// writing it changes the prompt.
    #[getter]
    fn values<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (ptr, shape) = {
            // a call on another thread holding the prompt makes this an exception, not a wait
            let mut me = mutable(&slf, "Prompt.values")?;
            let shape = (me.inner.rows(), me.inner.width());
            (me.inner.values_mut().as_mut_ptr() as *const f32, shape)
        };
        // SAFETY: the prompt's values buffer lives as long as `slf` and is never resized
        Ok(unsafe { view(slf.into_any(), ptr, shape) })
    }

    /// Sets the values from a (P, d) array (copied into the prompt's memory).
    #[setter]
    fn set_values(slf: Bound<'_, Self>, values: &Bound<'_, PyAny>) -> PyResult<()> {
        let values = f32_matrix(values, "values")?;
        let mut me = mutable(&slf, "Prompt.values")?;
        let want = [me.inner.rows(), me.inner.width()];
        if values.shape() != want {
            return Err(arg(
                "values",
                format!("shape {:?}, expected {want:?}", values.shape()),
            ));
        }
        // read whole before writing: `values` may be a view of this very prompt (reversed
        // rows read back rows already overwritten, a silently wrong prompt)
        let src: Vec<f32> = values.as_array().iter().copied().collect();
        // as from_values refuses them: a NaN set here was refused only by the next step,
        // evaluate or save, away from the write (hostile pass 24, F6)
        if let Some((i, v)) = src.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(arg(
                "values",
                format!("the value at flat index {i} is {v}: expected a finite number"),
            ));
        }
        me.inner.values_mut().copy_from_slice(&src);
        Ok(())
    }

    /// A `cls` prompt's head: (weight (K, d), bias (K)) as numpy views of its memory, or
    /// None.
    #[getter]
    #[allow(clippy::type_complexity)]
    fn head<'py>(
        slf: Bound<'py, Self>,
    ) -> PyResult<Option<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<f32>>)>> {
        let (w, b, k, d) = {
            let mut me = mutable(&slf, "Prompt.head")?;
            let d = me.inner.width();
            let Some((w, b)) = me.inner.head_mut() else {
                return Ok(None);
            };
            (
                w.as_mut_ptr() as *const f32,
                b.as_mut_ptr() as *const f32,
                b.len(),
                d,
            )
        };
        // SAFETY: the head's buffers live as long as `slf` and are never resized
        let weight = unsafe { view(slf.clone().into_any(), w, (k, d)) };
        let bias = unsafe {
            let a = ArrayView1::from_shape_ptr(k, b);
            PyArray1::borrow_from_array(&a, slf.into_any())
        };
        Ok(Some((weight, bias)))
    }

    /// The folder it was loaded from, if any.
    #[getter]
    fn dir(&self) -> Option<PathBuf> {
        self.inner.dir().map(PathBuf::from)
    }

    /// The model folder the prompt belongs to (its task.json's record, else the model it was
    /// made on or given by set_model, else PEFT's base_model_name_or_path).
    fn model_dir(&self) -> PyResult<PathBuf> {
        self.inner.model_dir().map_err(crate::errors::to_py)
    }

    /// How it was initialised, in PEFT's words (RANDOM, TEXT, SAMPLE_VOCAB).
    #[getter]
    fn init_name(&self) -> String {
        self.inner.init_name().to_string()
    }

    /// Records `model` as the prompt's own, to run a prompt made or saved on another model on
    /// it on purpose (every use on another model is refused); returns what it replaced, in
    /// words (the warning), when it recorded another model, else None.
    fn set_model(
        slf: Bound<'_, Self>,
        model: PyRef<'_, crate::model::PyModel>,
    ) -> PyResult<Option<String>> {
        Ok(mutable(&slf, "Prompt.set_model")?
            .inner
            .set_model(&model.inner))
    }

    /// An independent copy.
    fn copy(&self) -> PyPrompt {
        PyPrompt {
            inner: self.inner.clone(),
        }
    }

    /// `copy.copy(prompt)`: an independent copy, as `copy()` (a shallow copy would share the
    /// values' memory, which `copy()` does not either).
    fn __copy__(&self) -> PyPrompt {
        self.copy()
    }

    /// `copy.deepcopy(prompt)`: `copy()`.
    fn __deepcopy__(&self, _memo: &Bound<'_, PyAny>) -> PyPrompt {
        self.copy()
    }

    /// Pickling is refused, saying what to do instead.
    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "cannot pickle 'softprompt.Prompt' object: save it (Model.save_prompt) and read it \
             back (Prompt.load), or send prompt.values (a numpy array) and rebuild it with \
             Prompt.from_values (a prompt of the model's width: a prefix prompt goes by \
             save_prompt and load); copy.deepcopy and prompt.copy() give a copy",
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "Prompt({} x {}{}{})",
            self.inner.rows(),
            self.inner.width(),
            if self.inner.head().is_some() {
                ", with head"
            } else {
                ""
            },
            self.inner
                .dir()
                .map_or(String::new(), |d| format!(", from {}", d.display()))
        )
    }
}

/// Raises `msg` as a Python UserWarning: what the command line prints as a warning or note,
/// in Python's words.
pub fn user_warning(py: Python<'_>, msg: &str) -> PyResult<()> {
    let msg = crate::errors::python_words(msg);
    let msg = std::ffi::CString::new(msg.replace('\0', " ")).unwrap_or_default();
    let category = py.get_type::<pyo3::exceptions::PyUserWarning>();
    PyErr::warn(py, &category, &msg, 1)
}
