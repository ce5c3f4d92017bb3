//! What every rule file beside `robot.toml` shares: reading it, and turning a parse error
//! into a [`Problem`] with the line, the column and, for a misspelt key, the key meant.

use std::fs;
use std::io;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::problem::{Problem, did_you_mean};

/// A rule file's text: `None` when the file is absent (the caller decides whether that is
/// allowed), a problem when it cannot be read.
pub fn read(file: &Path) -> Result<Option<String>, Problem> {
    match fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.into_bytes()[..valid]).into_owned();
            Problem::error(file, "the file is not UTF-8 text")
                .at_offset(&text, valid)
                .with_hint("save it in UTF-8 encoding")
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Problem::error(file, format!("cannot be read: {e}"))),
    }
}

/// The file's text parsed as `T`, or the problem placed where the parser stopped.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Problem> {
    toml::from_str(text).map_err(|e| problem(file, text, &e))
}

fn problem(file: &Path, text: &str, error: &toml::de::Error) -> Problem {
    let message = error.message().trim().replace('\n', "; ");
    let hint = unknown_field_hint(&message);
    let p = Problem::error(file, super::humanize(&message)).with_hint_opt(hint);
    match error.span() {
        Some(span) => p.at_offset(text, span.start),
        None => p,
    }
}

/// For serde's "unknown field `scor`, expected one of `score`, …": the near name.
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (word, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    did_you_mean(word, expected.iter().copied()).map(|m| format!("did you mean `{m}`?"))
}

/// The outcome of a rule file's check as its loader gives it: the problems when any is an
/// error, else the rules (or `None` for a file that is not there), the warnings logged.
pub fn accept<T>(checked: (Option<T>, Vec<Problem>)) -> Result<Option<T>, Vec<Problem>> {
    let (rules, problems) = checked;
    if problems.iter().any(Problem::is_error) {
        return Err(problems);
    }
    for warning in &problems {
        tracing::warn!("{warning}");
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        score: f64,
        margin: f64,
    }

    #[test]
    fn a_misspelt_key_is_placed_and_the_near_one_named() {
        let text = "score = 1\nmargn = 0.2\n";
        let p = parse::<Sample>(Path::new("config/x.toml"), text).unwrap_err();
        assert_eq!(p.line, Some(2));
        assert_eq!(p.hint.as_deref(), Some("did you mean `margin`?"));
        let p =
            parse::<Sample>(Path::new("config/x.toml"), "score = \"a\"\nmargin = 1\n").unwrap_err();
        assert_eq!(p.line, Some(1));
        assert!(p.message.contains("expected a number"), "{}", p.message);
    }
}
