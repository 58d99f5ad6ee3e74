//! The settings a checkpoint recorded against a run's: the keys whose values differ, for
//! the refusal of a resume that names them.

use serde_json::Value;

/// The keys whose values differ between two settings objects; inside an object both hold,
/// its own keys (`task.max_len: 60 -> 59`: the two whole task objects were printed, a key
/// the user never set hidden among them; review 27, F13).
pub fn config_diff(a: &Value, b: &Value) -> Vec<String> {
    diff_under("", a, b)
}

fn diff_under(prefix: &str, a: &Value, b: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut diff = Vec::new();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (x, y) if same_setting(x, y) => {}
            (Some(x @ Value::Object(_)), Some(y @ Value::Object(_))) => {
                diff.extend(diff_under(&format!("{prefix}{k}."), x, y))
            }
            (x, y) => diff.push(format!(
                "{prefix}{k}: {} -> {}",
                x.unwrap_or(&Value::Null),
                y.unwrap_or(&Value::Null)
            )),
        }
    }
    diff
}

/// Two settings' values alike, a number read back from JSON within one unit in the last
/// place of the one written: a checkpoint written (or resumed) by a build whose JSON reader
/// was not correctly rounded holds Adafactor's eps 1e-30 as 9.999999999999999e-31.
fn same_setting(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) if x != y => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y))
                    if x.is_finite() && y.is_finite() && x.signum() == y.signum() =>
                {
                    x.to_bits().abs_diff(y.to_bits()) <= 1
                }
                _ => false,
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_setting(Some(x), Some(y)))
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len() && x.iter().all(|(k, v)| same_setting(Some(v), y.get(k)))
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_the_keys() {
        let d = config_diff(
            &json!({"lr": 0.3, "seed": 1}),
            &json!({"lr": 0.1, "seed": 1}),
        );
        assert_eq!(d, ["lr: 0.3 -> 0.1"]);
        let nested = config_diff(
            &json!({"task": {"max_len": 60, "kind": "pet"}, "prompt_len": 4}),
            &json!({"task": {"max_len": 59, "kind": "pet"}, "prompt_len": 5}),
        );
        assert_eq!(nested, ["prompt_len: 4 -> 5", "task.max_len: 60 -> 59"]);
    }

    #[test]
    fn settings_read_back_one_bit_off_are_the_same() {
        let written = json!({"eps": 1e-30, "lr": 0.3, "optim": {"eps": [1e-30, 1e-3]}});
        let off = f64::from_bits(1e-30f64.to_bits() - 1);
        let read = json!({"eps": off, "lr": 0.3, "optim": {"eps": [off, 1e-3]}});
        assert!(config_diff(&written, &read).is_empty());
        let other = json!({"eps": 2e-30, "lr": 0.3, "optim": {"eps": [1e-30, 1e-3]}});
        assert_eq!(config_diff(&written, &other), ["eps: 1e-30 -> 2e-30"]);
        assert_eq!(
            config_diff(&json!({"n": 1}), &json!({"n": 2})),
            ["n: 1 -> 2"]
        );
    }
}
