//! Ints from Python, checked in one place: PyO3's own extraction raised a bare OverflowError
//! for -1 or 2**70 and a TypeError for 1.5, naming neither the argument nor the range. Here
//! any value that is not an int in the argument's range is an `InvalidArgument` naming the
//! argument, where (for a list's item) and the range expected.
//!
//! A function's unsigned parameter reads through `#[pyo3(from_py_with = ints::NAME)]` (PyO3
//! hands an extractor the value but not the parameter's name, so each name has its own
//! extractor, all made by `unsigned_args!`); a keyword argument through `Kw::uint`.

use crate::errors::arg;
use pyo3::prelude::*;
use pyo3::types::PyBool;

/// An int type an argument can have, with its range as messages say it (in powers of two: a
/// Python user reads "below 2^64" more easily than 18446744073709551615; an argument that
/// also refuses 0 says so in its own check, as the command line does).
pub trait Int: Sized {
    fn range() -> String;
    fn of(v: &Bound<'_, PyAny>) -> PyResult<Self>;
}

macro_rules! int_types {
    ($($t:ty: $range:expr),*) => {$(
        impl Int for $t {
            fn range() -> String {
                $range
            }
            fn of(v: &Bound<'_, PyAny>) -> PyResult<Self> {
                v.extract()
            }
        }
    )*};
}

int_types!(
    usize: format!("a non-negative int below 2^{}", usize::BITS),
    u64: "a non-negative int below 2^64".to_string(),
    u32: "a non-negative int below 2^32".to_string(),
    i32: "an int from -2^31 to 2^31-1".to_string()
);

/// Whether `v` is a bool, Python's or numpy's (`np.True_`, whose type is numpy.bool or, before
/// numpy 2, numpy.bool_): True is a 1 to Python, so `lr=True` ran at 1.0.
pub fn is_bool(v: &Bound<'_, PyAny>) -> bool {
    v.is_instance_of::<PyBool>()
        || v.get_type()
            .name()
            .is_ok_and(|n| n == "bool_" || n == "bool")
}

/// Argument `name`'s value `v` as a `T`; `at` says where in the argument it sits (a list's
/// row), empty for the whole argument.
/// A bool is refused: Python's True is an int 1, so `prompt_len=True` trained one row.
pub fn int<T: Int>(name: &str, at: &str, v: &Bound<'_, PyAny>) -> PyResult<T> {
    let is_bool = is_bool(v);
    let value = if is_bool { None } else { T::of(v).ok() };
    value.ok_or_else(|| {
        let what = match at {
            "" => format!("got {}", repr(v)),
            at => format!("{at} holds {}", repr(v)),
        };
        let not_bool = if is_bool { " (not a bool)" } else { "" };
        arg(name, format!("{what}: expected {}{not_bool}", T::range()))
    })
}

/// One extractor per unsigned parameter name, for `from_py_with`.
macro_rules! unsigned_args {
    ($($name:ident: $t:ty),*) => {$(
        pub fn $name(v: &Bound<'_, PyAny>) -> PyResult<$t> {
            int(stringify!($name), "", v)
        }
    )*};
}

unsigned_args!(
    threads: usize,
    prompt_len: usize,
    seed: u64,
    batch_size: usize,
    max_new_tokens: usize
);

/// A value's repr, cut short (a huge int or list would flood the message).
pub fn repr(v: &Bound<'_, PyAny>) -> String {
    let text = v.repr().map_or_else(|_| "?".into(), |r| r.to_string());
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}
