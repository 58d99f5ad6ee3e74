//! One row's prediction as JSON: the fields `softprompt predict` prints on each line and
//! `softprompt serve` answers for each text, so the two agree by construction.

use serde_json::{json, Map, Value};
use softprompt::{Model, Prediction, Result};

/// `label` and `scores` (label → score) for a ranked prediction; `label`, `output` (the
/// generated text) and `score` for greedy decoding; `truncated: true` when the text was cut
/// to the task's max_len. `labels` are the task's, in score order.
pub fn prediction_json(
    model: &Model,
    labels: &[String],
    p: &Prediction,
    truncated: bool,
) -> Result<Map<String, Value>> {
    let mut obj = Map::new();
    let label = p.class.and_then(|c| labels.get(c)).cloned();
    if p.scores.is_empty() {
        let text = model.detokenize(&p.ids)?;
        obj.insert("label".into(), json!(label.unwrap_or_else(|| text.clone())));
        obj.insert("output".into(), json!(text));
        obj.insert("score".into(), json!(p.score));
    } else {
        obj.insert("label".into(), json!(label.unwrap_or_default()));
        let scores: Map<String, Value> = (labels.iter().zip(&p.scores))
            .map(|(k, &s)| (k.clone(), json!(s)))
            .collect();
        obj.insert("scores".into(), Value::Object(scores));
    }
    if truncated {
        obj.insert("truncated".into(), json!(true));
    }
    Ok(obj)
}
