//! The one rule for names users give to pipelines, steps, inputs and outputs.
//!
//! Names become folder names (`/in/<name>`, `/out/<name>`) and database keys,
//! so they are deliberately narrow: an ASCII letter, then up to 63 ASCII
//! letters, digits, `_` or `-`. That rules out `..`, `/`, NUL, control
//! characters, whitespace and over-long names in one place.

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// A name that breaks the rule, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name {shown}: {reason}")]
pub struct NameError {
    what: &'static str,
    shown: String,
    reason: &'static str,
}

/// Checks `name` against the rule; `what` says what it names ("step", "output", ...).
pub fn check_name(what: &'static str, name: &str) -> Result<(), NameError> {
    let err = |reason| NameError {
        what,
        shown: format!(
            "{:?}",
            name.chars().take(MAX_NAME_LEN + 8).collect::<String>()
        ),
        reason,
    };
    if name.is_empty() {
        return Err(err("a name cannot be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err("a name is at most 64 characters"));
    }
    let mut chars = name.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(err("a name starts with an ASCII letter"));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(err(
            "a name holds only ASCII letters, digits, '_' and '-' (no '/', '.', spaces or control characters)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["a", "load_csv", "train-model", "Step2", &"x".repeat(64)] {
            assert!(check_name("step", n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        for n in [
            "",
            "..",
            "a/b",
            "a\0b",
            "a\nb",
            " a",
            "1abc",
            "é",
            &"x".repeat(65),
            "a.b",
        ] {
            let e = check_name("step", n).unwrap_err().to_string();
            assert!(e.starts_with("invalid step name"), "{e}");
        }
    }
}
