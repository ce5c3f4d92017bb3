//! What is wrong with a rule file, in words a head of sales can act on.

use std::fmt;
use std::path::PathBuf;

/// Whether a problem stops the robot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// The configuration cannot be used: `load` fails.
    Error,
    /// Probably a mistake (e.g. a misspelt environment variable), but the robot can run.
    Warning,
}

/// One thing wrong with the configuration.
///
/// Displays as `config/robot.toml:3:1: unknown field `lisen` in [server], … (did you mean
/// `listen`?)`; without a line when the value came from an environment variable or the
/// problem concerns the whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The rule file concerned.
    pub file: PathBuf,
    /// 1-based line, when the problem is at a place in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters), when the problem is at a place in the file.
    pub column: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
    /// A likely fix, e.g. `did you mean `listen`?`.
    pub hint: Option<String>,
    /// Whether it stops the robot.
    pub severity: Severity,
}

impl Problem {
    /// An error about `file` as a whole.
    pub fn error(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: None,
            column: None,
            message: message.into(),
            hint: None,
            severity: Severity::Error,
        }
    }

    /// A warning about `file` as a whole.
    pub fn warning(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, message)
        }
    }

    /// The same problem, placed at `line`:`column` (both 1-based).
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// The same problem, placed at a byte offset of `text` (the file's contents).
    pub fn at_offset(self, text: &str, offset: usize) -> Self {
        let (line, column) = line_column(text, offset);
        self.at(line, column)
    }

    /// The same problem with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same problem with a hint, when there is one.
    pub fn with_hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    /// Whether this problem stops the robot.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        f.write_str(": ")?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Every error that stopped a configuration from loading, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct ConfigErrors(pub Vec<Problem>);

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// 1-based line and column (in characters) of a byte offset; an offset past the end points
/// just after the last character, as an "unexpected end of file" should.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    // A span from the parser always starts on a character boundary; this guards the rest.
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    // A third of the word's length: `lisen`→`listen` yes, `port`→`listen` no.
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&word, &c.to_lowercase()), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_a_place() {
        let p = Problem::error("config/robot.toml", "unknown field `lisen` in [server]")
            .at(3, 1)
            .with_hint("did you mean `listen`?");
        assert_eq!(
            p.to_string(),
            "config/robot.toml:3:1: unknown field `lisen` in [server] (did you mean `listen`?)"
        );
        let w = Problem::warning("config/robot.toml", "ROBOT_LISTN is not a setting");
        assert_eq!(
            w.to_string(),
            "config/robot.toml: warning: ROBOT_LISTN is not a setting"
        );
        let all = ConfigErrors(vec![p, w]);
        assert_eq!(all.to_string().lines().count(), 2);
    }

    #[test]
    fn line_and_column_count_characters() {
        let text = "a = 1\n# Адрес\nb = 2";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        let b = text.find('b').unwrap();
        assert_eq!(line_column(text, b), (3, 1));
        assert_eq!(line_column(text, b + 4), (3, 5));
        assert_eq!(line_column(text, 999), (3, 6));
    }

    #[test]
    fn suggestions_only_for_near_names() {
        let keys = ["listen", "public_url", "data_dir"];
        assert_eq!(did_you_mean("lisen", keys), Some("listen"));
        assert_eq!(did_you_mean("datadir", keys), Some("data_dir"));
        assert_eq!(did_you_mean("port", keys), None);
    }
}
