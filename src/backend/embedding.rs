//! Embedding stem: the prompt rows concatenated in front of the token embeddings
//! (reference src/cpu/embedding.rs, kernels kernels/embedding.cu, launchers src/cuda/embedding.rs).

use crate::error::{Error, Result};

/// Checks that every id indexes one of `rows` rows of a table, naming the tensor and the first
/// id that does not. Every op that reads a table by id calls it before touching memory.
pub fn check_ids(name: &str, ids: &[i32], rows: usize) -> Result<()> {
    match ids.iter().position(|&id| id < 0 || id as usize >= rows) {
        None => Ok(()),
        Some(i) => Err(Error::tensor(
            name,
            format!(
                "id {} at flat index {i} is outside the table of {rows} rows",
                ids[i]
            ),
        )),
    }
}

op_family! {
    /// The input embedding with the prompt in front, and the prompt rows' gradient.
    pub trait EmbeddingOps {
        /// out (B, P+T, C) = concat(prompt[k_b] (P, C), wte[ids] (B, T, C)) along the
        /// sequence, plus, for BERT, wpe[position] and wtt[token type] on every row (prompt
        /// rows included: they take positions 0..P-1 and token type 0, as PEFT feeds them).
        /// The prompt is a table of K prompts of P rows each, (K, P, C); row b reads prompt
        /// k_b = prompt_idx[b] (B, I32), every row prompt 0 without an index (K = 1: one
        /// prompt, as before the table).
        fn embedding_fwd(
            &self,
            out: &mut Self::Buf,
            prompt: &Self::Buf,
            wte: &Self::Buf,
            wpe: Option<&Self::Buf>,
            wtt: Option<&Self::Buf>,
            ids: &Self::Buf,
            type_ids: Option<&Self::Buf>,
            prompt_idx: Option<&Self::Buf>,
            b: usize,
            t: usize,
            k: usize,
            p: usize,
            c: usize,
        ) -> Result<()>;
        /// dprompt (K, P, C) F32 += the prompt rows of dout (B, P+T, C), each row's into its
        /// own prompt k_b = prompt_idx[b] (prompt 0 without an index), summed over the batch
        /// in row order (deterministic): the one gradient that reaches a trainable tensor.
        fn prompt_grad_bwd(
            &self,
            dprompt: &mut Self::Buf,
            dout: &Self::Buf,
            prompt_idx: Option<&Self::Buf>,
            b: usize,
            t: usize,
            k: usize,
            p: usize,
            c: usize,
        ) -> Result<()>;
    }
}
