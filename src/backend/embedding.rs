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

/// Checks per-row prompt lengths (B) against the table's P rows: each in 0..=P.
pub fn check_prompt_lens(lens: &[i32], p: usize) -> Result<()> {
    match lens.iter().position(|&l| l < 0 || l as usize > p) {
        None => Ok(()),
        Some(i) => Err(Error::tensor(
            "prompt lengths",
            format!(
                "row {i} has a prompt of {} rows, outside 0..={p} (the table's rows)",
                lens[i]
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
        /// prompt, as before the table). With `prompt_len` (B, I32) row b's prompt has
        /// P_b <= P rows (the table padded to the longest): the row is [prompt[k_b, 0..P_b],
        /// its T tokens, P - P_b rows of zeros], positions counted from 0 along the row (the
        /// tokens at P_b.., as that prompt's own run puts them); without it every P_b = P.
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
            prompt_len: Option<&Self::Buf>,
            b: usize,
            t: usize,
            k: usize,
            p: usize,
            c: usize,
        ) -> Result<()>;
        /// dprompt (K, P, C) F32 += the prompt rows of dout (B, P+T, C), each row's into its
        /// own prompt k_b = prompt_idx[b] (prompt 0 without an index), summed over the batch
        /// in row order (deterministic): the one gradient that reaches a trainable tensor.
        /// With `prompt_len` (B) only row b's first P_b positions are its prompt's (a table
        /// row s >= P_b gets nothing from row b).
        fn prompt_grad_bwd(
            &self,
            dprompt: &mut Self::Buf,
            dout: &Self::Buf,
            prompt_idx: Option<&Self::Buf>,
            prompt_len: Option<&Self::Buf>,
            b: usize,
            t: usize,
            k: usize,
            p: usize,
            c: usize,
        ) -> Result<()>;
    }
}
