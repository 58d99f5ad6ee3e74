//! `softprompt.parity`: a PyTorch reference file's batch through the engine, every tensor
//! compared, as `softprompt parity` does.

use crate::errors::{compute, to_py};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use softprompt::Device;
use std::path::PathBuf;

/// Runs `reference` (scripts/torch_reference.py's file) through the model in `model_dir` and
/// compares every tensor at `tol` (default: 1e-4 in float32, 2e-2 in bf16 and mixed). The
/// device flags default as `softprompt parity`'s (cpu; mixed precision on cuda and emu).
/// Returns {"passed", "rows": [{"name", "shape", "rel_err", "max_abs", "tol", "passed"}],
/// "skipped", "table"}.
#[pyfunction]
#[pyo3(signature = (model_dir, reference, device="cpu", precision="mixed", tol=None))]
pub fn parity<'py>(
    py: Python<'py>,
    #[pyo3(from_py_with = crate::paths::path)] model_dir: PathBuf,
    #[pyo3(from_py_with = crate::paths::path)] reference: PathBuf,
    device: &str,
    precision: &str,
    tol: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    // a bool is refused: tol=True compared at 1.0, which passes every tensor
    let tol = match tol.filter(|t| !t.is_none()) {
        Some(t) if crate::ints::is_bool(&t) => {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "parity(): tol={}: expected a number, not a bool",
                crate::ints::repr(&t)
            )))
        }
        Some(t) => Some(t.extract::<f64>().map_err(|e| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "parity(): tol={}: {}",
                crate::ints::repr(&t),
                e.value(py)
            ))
        })?),
        None => None,
    };
    let kind = Device::parse(device, precision).map_err(to_py)?;
    // the environment checked and the GEMM path chosen as a Model's are: a SOFTPROMPT_GEMM
    // that does not load ran the gemm crate and passed
    crate::threads::setup(0)?;
    let report = compute(py, || softprompt::parity(&model_dir, &reference, kind, tol))?;
    let rows = PyList::empty(py);
    for r in &report.rows {
        let d = PyDict::new(py);
        d.set_item("name", &r.name)?;
        d.set_item("shape", r.shape.clone())?;
        d.set_item("rel_err", r.rel_err)?;
        d.set_item("max_abs", r.max_abs)?;
        d.set_item("tol", r.tol)?;
        d.set_item("passed", r.passed())?;
        rows.append(d)?;
    }
    let out = PyDict::new(py);
    out.set_item("passed", report.passed())?;
    out.set_item("rows", rows)?;
    out.set_item("skipped", report.skipped.clone())?;
    out.set_item("table", report.table())?;
    Ok(out)
}
