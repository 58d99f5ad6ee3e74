//! What one training step trains against, and what it returns besides the prompt gradient.

use super::cls_head::ClsHead;
use super::heads::Pooling;
use crate::backend::Backend;
use crate::error::Error;

/// The loss of a training step, one variant per head. BERT runs `Mlm`, `Pet` and `Cls`; T5
/// runs `Seq2Seq`; the decoder-only models (BLOOM, Llama) run `Causal`. Sizes: B batch, T
/// real-token positions, L decoder length.
pub enum Objective<'a, B: Backend> {
    /// The masked-LM head over the whole vocabulary: `labels` (B, T), -100 where unlabelled.
    Mlm { labels: &'a [i32] },
    /// PET: the masked-LM head at one [MASK] per row (`mask_positions` (B), among the real
    /// tokens), over the verbalizer rows only; `labels` (B) index `verbalizer_ids`.
    Pet {
        mask_positions: &'a [i32],
        verbalizer_ids: &'a [i32],
        labels: &'a [i32],
    },
    /// A linear classifier on the pooled real tokens, trained with the prompt; `labels` (B).
    Cls {
        head: &'a ClsHead<B>,
        pooling: Pooling,
        labels: &'a [i32],
    },
    /// The decoder's cross-entropy against `labels` (B, L), -100 ignored.
    Seq2Seq { labels: &'a [i32], l: usize },
    /// A causal LM's next-token cross-entropy against `labels` (B, T), -100 ignored, with P
    /// labels of -100 in front (PEFT's CAUSAL_LM: the last prompt row predicts label 0).
    Causal { labels: &'a [i32] },
}

// by hand: a derive would ask `B: Copy`, and only references are copied
impl<B: Backend> Clone for Objective<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Objective<'_, B> {}

impl<B: Backend> Objective<'_, B> {
    /// The name a reference file gives the objective.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Mlm { .. } => "mlm",
            Objective::Pet { .. } => "pet",
            Objective::Cls { .. } => "cls",
            Objective::Seq2Seq { .. } => "seq2seq",
            Objective::Causal { .. } => "causal",
        }
    }

    /// The error for a model (`arch`) that has no head for this objective.
    pub(crate) fn unsupported(&self, arch: &str) -> Error {
        let needs = match self {
            Objective::Seq2Seq { .. } => "a T5 model",
            Objective::Causal { .. } => "a decoder-only model (BLOOM, Llama)",
            _ => "a BERT model",
        };
        Error::Unsupported(format!(
            "objective {} needs {needs}, not {arch}",
            self.name()
        ))
    }
}

/// What a training step returns; the prompt gradient it adds into its `dprompt` argument.
pub struct StepOutput<B: Backend> {
    /// the mean loss over the counted rows
    pub loss: f64,
    /// `Objective::Cls`: d loss / d head weight (K, C) and d loss / d head bias (K), on the
    /// device
    pub head_grads: Option<ClsHead<B>>,
}
