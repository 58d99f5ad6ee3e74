//! What one training step trains against, and what it returns besides the prompt gradient.

use super::heads::{ClsHead, Pooling};
use crate::error::Error;

/// The loss of a training step, one variant per head. BERT runs `Mlm`, `Pet` and `Cls`; T5
/// runs `Seq2Seq`. Sizes: B batch, T real-token positions, L decoder length.
#[derive(Clone, Copy, Debug)]
pub enum Objective<'a> {
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
        head: &'a ClsHead,
        pooling: Pooling,
        labels: &'a [i32],
    },
    /// The decoder's cross-entropy against `labels` (B, L), -100 ignored.
    Seq2Seq { labels: &'a [i32], l: usize },
}

impl Objective<'_> {
    /// The name a reference file gives the objective.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Mlm { .. } => "mlm",
            Objective::Pet { .. } => "pet",
            Objective::Cls { .. } => "cls",
            Objective::Seq2Seq { .. } => "seq2seq",
        }
    }

    /// The error for a model that has no head for this objective.
    pub(crate) fn unsupported(&self) -> Error {
        match self {
            Objective::Seq2Seq { .. } => {
                Error::Unsupported("objective seq2seq needs a T5 model, not BERT".into())
            }
            other => Error::Unsupported(format!(
                "objective {} needs a BERT model, not T5",
                other.name()
            )),
        }
    }
}

/// What a training step returns; the prompt gradient it adds into its `dprompt` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct StepOutput {
    /// the mean loss over the counted rows
    pub loss: f64,
    /// `Objective::Cls`: d loss / d head weight (K, C) and d loss / d head bias (K)
    pub head_grads: Option<(Vec<f32>, Vec<f32>)>,
}
