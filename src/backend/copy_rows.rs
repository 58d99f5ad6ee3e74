//! Copying rows between buffers of the activations' type and float32, cast on the device: a
//! row's keys and values (activations) into a float32 store the attention op reads as a
//! prefix, or a float32 prefix's rows into a cache of activations. Reference
//! src/cpu/copy_rows.rs, kernels kernels/copy_rows.cu, launchers src/cuda/copy_rows.rs.

use crate::error::{Error, Result};

op_family! {
    /// Copies rows by index, with the cast between the two buffers' types.
    pub trait CopyRowsOps {
        /// out[dst[m]] = inp[src[m]] for inp (N, C), out (R, C), src and dst (M) I32, each of
        /// `out` and `inp` in the activations' type or F32 (the value rounded to `out`'s
        /// type); the other rows of `out` keep their values. `dst` holds no index twice.
        fn copy_rows(
            &self,
            out: &mut Self::Buf,
            inp: &Self::Buf,
            src: &Self::Buf,
            dst: &Self::Buf,
            m: usize,
            c: usize,
        ) -> Result<()>;
    }
}

/// Checks that `dst` names rows of a table of `rows`, none twice (two writes of one row would
/// race on a device).
pub fn check_distinct(what: &str, dst: &[i32], rows: usize) -> Result<()> {
    crate::backend::check_ids(what, dst, rows)?;
    let mut seen = vec![false; rows];
    for (i, &r) in dst.iter().enumerate() {
        let slot = &mut seen[r as usize];
        if *slot {
            return Err(Error::tensor(
                what,
                format!("row {r} at flat index {i} is written twice"),
            ));
        }
        *slot = true;
    }
    Ok(())
}
