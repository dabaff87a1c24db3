//! Gates (`.when` / `.unless`): a step's condition, evaluated when its
//! dependencies are done, over facts the scheduler supplies ([`Facts`]: the
//! upstream steps' metrics and JSON files). No I/O of its own, so it is
//! tested alone.

use crate::plan::{CmpOp, Condition, Operand};
use crate::records::Metric;
use serde_json::Value;

/// The biggest JSON file a condition reads.
pub(crate) const JSON_MAX: u64 = 1 << 20;

/// What a condition can read about finished steps.
pub(crate) trait Facts {
    /// The metrics step `step` recorded, in order (`Err`: it has not run).
    fn metrics(&self, step: &str) -> Result<&[Metric], String>;
    /// The bytes of `file` in output `output` of step `step` (at most
    /// [`JSON_MAX`]).
    fn json_file(&self, step: &str, output: &str, file: &str) -> Result<Vec<u8>, String>;
}

/// Whether `c` holds, and the condition with the values it read (for the
/// record of a skipped step): "`metric(train, f1) > 0.8` is false (... = 0.7)".
pub(crate) fn evaluate(c: &Condition, facts: &dyn Facts) -> Result<(bool, String), String> {
    let mut values = Vec::new();
    let holds = eval(c, facts, &mut values)?;
    let mut why = format!("`{c}` is {holds}");
    if !values.is_empty() {
        why.push_str(&format!(" ({})", values.join(", ")));
    }
    Ok((holds, why))
}

fn eval(c: &Condition, facts: &dyn Facts, values: &mut Vec<String>) -> Result<bool, String> {
    match c {
        Condition::Compare { left, op, right } => {
            let l = operand(left, facts, values)?;
            let r = operand(right, facts, values)?;
            compare(&l, *op, &r)
        }
        Condition::All(cs) => {
            for c in cs {
                if !eval(c, facts, values)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Condition::Any(cs) => {
            for c in cs {
                if eval(c, facts, values)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Condition::Not(c) => Ok(!eval(c, facts, values)?),
    }
}

fn operand(o: &Operand, facts: &dyn Facts, values: &mut Vec<String>) -> Result<Value, String> {
    let v = match o {
        Operand::Value(v) => return Ok(v.clone()),
        Operand::Metric { step, name } => {
            let metrics = facts.metrics(step)?;
            let m = metrics
                .iter()
                .rev()
                .find(|m| &m.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
                    format!(
                        "step '{step}' recorded no metric '{name}'{}",
                        crate::plan::suggest(name, names.iter().copied())
                    )
                })?;
            Value::from(m.value)
        }
        Operand::Json {
            step,
            output,
            file,
            pointer,
        } => {
            let bytes = facts.json_file(step, output, file)?;
            let json: Value = serde_json::from_slice(&bytes)
                .map_err(|err| format!("'{file}' of step '{step}' is not JSON: {err}"))?;
            json.pointer(pointer)
                .cloned()
                .ok_or_else(|| format!("'{file}' of step '{step}' has no value at '{pointer}'"))?
        }
    };
    values.push(format!("{o} = {v}"));
    Ok(v)
}

/// `l op r`: numbers by value, strings by bytes; `==` and `!=` for any two
/// values; ordering anything else is an error.
pub(crate) fn compare(l: &Value, op: CmpOp, r: &Value) -> Result<bool, String> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (l, r) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&b)
        }
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    Ok(match (op, ord) {
        (CmpOp::Eq, _) => l == r || ord == Some(Ordering::Equal),
        (CmpOp::Ne, _) => !(l == r || ord == Some(Ordering::Equal)),
        (_, None) => return Err(format!("cannot order {l} and {r}")),
        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    /// Facts from memory: metrics and files by step.
    #[derive(Default)]
    struct Fake {
        metrics: HashMap<&'static str, Vec<Metric>>,
        files: HashMap<(&'static str, &'static str, &'static str), &'static str>,
    }

    impl Facts for Fake {
        fn metrics(&self, step: &str) -> Result<&[Metric], String> {
            self.metrics
                .get(step)
                .map(Vec::as_slice)
                .ok_or_else(|| format!("step '{step}' has not run"))
        }
        fn json_file(&self, step: &str, output: &str, file: &str) -> Result<Vec<u8>, String> {
            self.files
                .iter()
                .find(|((s, o, f), _)| *s == step && *o == output && *f == file)
                .map(|(_, v)| v.as_bytes().to_vec())
                .ok_or_else(|| format!("output '{output}' of step '{step}' has no file '{file}'"))
        }
    }

    fn metric(step: &str, name: &str) -> Operand {
        Operand::Metric {
            step: step.into(),
            name: name.into(),
        }
    }

    fn cmp(left: Operand, op: CmpOp, right: Value) -> Condition {
        Condition::Compare {
            left,
            op,
            right: Operand::Value(right),
        }
    }

    fn facts() -> Fake {
        let m = |name: &str, value: f64| Metric {
            name: name.into(),
            value,
        };
        Fake {
            // The last value of a metric counts.
            metrics: HashMap::from([("train", vec![m("f1", 0.5), m("f1", 0.9), m("loss", 0.1)])]),
            files: HashMap::from([(
                ("eval", "report", "scores.json"),
                r#"{"f1": 0.7, "label": "churn"}"#,
            )]),
        }
    }

    #[test]
    fn a_metric_gate_reads_the_last_value_and_says_what_it_saw() {
        let f = facts();
        let c = cmp(metric("train", "f1"), CmpOp::Ge, json!(0.8));
        let (holds, why) = evaluate(&c, &f).unwrap();
        assert!(holds);
        assert!(why.contains("is true") && why.contains("= 0.9"), "{why}");
        let c = cmp(metric("train", "f1"), CmpOp::Lt, json!(0.8));
        assert!(!evaluate(&c, &f).unwrap().0);
    }

    #[test]
    fn a_json_gate_reads_a_value_by_pointer() {
        let f = facts();
        let json_op = |pointer: &str| Operand::Json {
            step: "eval".into(),
            output: "report".into(),
            file: "scores.json".into(),
            pointer: pointer.into(),
        };
        let c = cmp(json_op("/label"), CmpOp::Eq, json!("churn"));
        assert!(evaluate(&c, &f).unwrap().0);
        let c = cmp(json_op("/f1"), CmpOp::Gt, json!(0.75));
        assert!(!evaluate(&c, &f).unwrap().0);
        let e = evaluate(&cmp(json_op("/nope"), CmpOp::Eq, json!(1)), &f).unwrap_err();
        assert!(e.contains("no value at '/nope'"), "{e}");
    }

    #[test]
    fn all_any_and_not_combine_and_short_circuit() {
        let f = facts();
        let yes = cmp(metric("train", "loss"), CmpOp::Lt, json!(1));
        let no = cmp(metric("train", "loss"), CmpOp::Gt, json!(1));
        // Never read: an unknown step would be an error.
        let broken = cmp(metric("ghost", "x"), CmpOp::Eq, json!(1));
        let all = Condition::All(vec![no.clone(), broken.clone()]);
        assert!(!evaluate(&all, &f).unwrap().0);
        let any = Condition::Any(vec![yes.clone(), broken.clone()]);
        assert!(evaluate(&any, &f).unwrap().0);
        assert!(!evaluate(&Condition::Not(Box::new(yes)), &f).unwrap().0);
        let e = evaluate(&Condition::All(vec![broken]), &f).unwrap_err();
        assert!(e.contains("step 'ghost' has not run"), "{e}");
    }

    #[test]
    fn a_missing_metric_is_an_error_with_a_suggestion() {
        let e = evaluate(&cmp(metric("train", "f2"), CmpOp::Gt, json!(0)), &facts()).unwrap_err();
        assert!(
            e.contains("recorded no metric 'f2'") && e.contains("f1"),
            "{e}"
        );
    }

    #[test]
    fn comparisons_order_numbers_and_strings_and_refuse_the_rest() {
        assert!(compare(&json!(1), CmpOp::Eq, &json!(1.0)).unwrap());
        assert!(compare(&json!("a"), CmpOp::Lt, &json!("b")).unwrap());
        assert!(compare(&json!(true), CmpOp::Ne, &json!(false)).unwrap());
        assert!(compare(&json!([1]), CmpOp::Eq, &json!([1])).unwrap());
        let e = compare(&json!(true), CmpOp::Lt, &json!(1)).unwrap_err();
        assert!(e.contains("cannot order"), "{e}");
    }
}
