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

/// Text that came from a guest or a script (a file name, an error, a log
/// line, a metric name) made inert for a terminal: control characters
/// (ESC, BEL, CR, ...) and Unicode direction overrides are shown escaped
/// (`\u{1b}`), so printing it cannot move the cursor, retitle the window,
/// clear the screen or reorder what follows. `newlines` keeps line breaks
/// and tabs (multi-line messages); without it they are escaped too (a
/// name must stay on its line). The one rule every printer uses.
pub fn inert(text: &str, newlines: bool) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c.is_control() && !(newlines && (c == '\n' || c == '\t')))
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(bad) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod inert_tests {
    use super::inert;

    #[test]
    fn control_characters_and_direction_overrides_are_escaped() {
        assert_eq!(inert("plain é", false), "plain é");
        assert_eq!(inert("a\x1b]0;t\x07b", false), "a\\u{1b}]0;t\\u{7}b");
        assert_eq!(inert("x\ny\tz\r", true), "x\ny\tz\\r");
        assert_eq!(inert("x\ny", false), "x\\ny");
        assert_eq!(inert("ab\u{202e}cd", true), "ab\\u{202e}cd");
    }
}

/// A unit's name as records, events and the API carry it: a step's own
/// name, or `step[label]` for a child of map step `step` (step names have
/// no `[`, so the two never mix). The one encoding, read back by
/// [`UnitName::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnitName<'a> {
    /// The plan step: the step itself, or the map step of a child.
    pub step: &'a str,
    /// A map child's label (the item's name, or its zero-padded index).
    pub child: Option<&'a str>,
}

impl<'a> UnitName<'a> {
    /// The name of map step `step`'s child `label`.
    pub fn child(step: &str, label: &str) -> String {
        format!("{step}[{label}]")
    }

    /// Reads a unit's name back: `"train"` or `"each[a.csv]"`.
    pub fn parse(name: &'a str) -> UnitName<'a> {
        match name.split_once('[') {
            Some((step, rest)) => UnitName {
                step,
                child: Some(rest.strip_suffix(']').unwrap_or(rest)),
            },
            None => UnitName {
                step: name,
                child: None,
            },
        }
    }
}

#[cfg(test)]
mod unit_name_tests {
    use super::*;

    #[test]
    fn a_child_name_reads_back_as_its_step_and_label() {
        let n = UnitName::child("each", "a[1].csv");
        assert_eq!(n, "each[a[1].csv]");
        let u = UnitName::parse(&n);
        assert_eq!((u.step, u.child), ("each", Some("a[1].csv")));
        let s = UnitName::parse("train");
        assert_eq!((s.step, s.child), ("train", None));
    }
}
