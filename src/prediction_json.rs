//! One row's prediction as JSON: the fields `softprompt predict` prints on each line and
//! `softprompt serve` answers for each text, so the two agree by construction.

use serde_json::{json, Map, Value};
use softprompt::{Error, Model, Prediction, Result};

/// `label` and `scores` (label → score) for a ranked prediction; `label` (null when the
/// output is no label's target; the text under free targets), `output` (the generated text)
/// and `score` for greedy decoding; `truncated: true` when the text was cut
/// to the task's max_len. `labels` are the task's, in score order. A score that is not a
/// finite number is an error naming the label (`Error::NonFinite`): JSON has no NaN or inf,
/// and serde writes them as `null`, a score lost without a word.
pub fn prediction_json(
    model: &Model,
    labels: &[String],
    p: &Prediction,
    truncated: bool,
) -> Result<Map<String, Value>> {
    let mut obj = Map::new();
    let label = p.class.and_then(|c| labels.get(c)).cloned();
    if p.scores.is_empty() {
        let text = model.detokenize(p.output_ids())?;
        obj.insert("label".into(), json!(p.greedy_label(labels, &text)));
        obj.insert("output".into(), json!(text));
        obj.insert("score".into(), json!(finite("the output", p.score)?));
    } else {
        obj.insert("label".into(), json!(label.unwrap_or_default()));
        let scores = (labels.iter().zip(&p.scores))
            .map(|(k, &s)| Ok((k.clone(), json!(finite(&format!("label {k:?}"), s)?))))
            .collect::<Result<Map<String, Value>>>()?;
        obj.insert("scores".into(), Value::Object(scores));
    }
    if truncated {
        obj.insert("truncated".into(), json!(true));
    }
    Ok(obj)
}

/// `score` when it is a finite number, else an error naming `what` was scored.
fn finite(what: &str, score: f32) -> Result<f32> {
    if score.is_finite() {
        return Ok(score);
    }
    Err(Error::NonFinite(format!(
        "the score of {what} is {score}, not a finite number: the model's numbers overflow on \
         this row (a prompt or head of huge values?)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use softprompt::Device;

    /// A score of -inf (the log-probability of a label whose logit lies ~1e38 below another's,
    /// in float32) was written as `null`, the line still a prediction: an error naming the
    /// label, as NaN scores are.
    #[test]
    fn a_score_that_is_not_finite_is_an_error_naming_the_label() {
        let model = Model::open("tests/fixtures/bert_mlm", Device::Cpu).unwrap();
        let labels = ["neg".to_string(), "pos".to_string()];
        let pred = |scores: Vec<f32>| Prediction {
            class: Some(1),
            score: scores[1],
            scores,
            ids: Vec::new(),
            stopped: false,
        };
        let ok = prediction_json(&model, &labels, &pred(vec![-2.5, -0.1]), false).unwrap();
        assert_eq!(ok["scores"]["neg"], json!(-2.5f32));
        for bad in [f32::NEG_INFINITY, f32::INFINITY, f32::NAN] {
            let err = prediction_json(&model, &labels, &pred(vec![bad, 0.0]), false).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::NonFinite(_)), "{msg}");
            assert!(msg.contains("the score of label \"neg\" is"), "{msg}");
        }
        let greedy = Prediction {
            class: None,
            scores: Vec::new(),
            ids: vec![5],
            stopped: false,
            score: f32::NEG_INFINITY,
        };
        let msg = (prediction_json(&model, &labels, &greedy, false).unwrap_err()).to_string();
        assert!(msg.contains("the score of the output is -inf"), "{msg}");
    }
}
