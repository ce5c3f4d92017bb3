//! The marketing spend file that `report channels --spend` reads: a CSV with the header
//! `source,channel,spend`, one line per source (channel empty) or per channel of a source,
//! the spend in roubles. Russian Excel saves CSV with semicolons and decimal commas; both
//! are read, as is its byte-order mark.

use std::path::{Path, PathBuf};

use crate::adapters::csv::{self, CsvError};
use crate::domain::report::Spend;

/// The header the file starts with.
pub const HEADER: &str = "source,channel,spend";

/// What is wrong on a line of the spend file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendProblem {
    /// The file has no lines.
    #[error("the file is empty; it starts with the header `{HEADER}`")]
    Empty,
    /// The first line is not the header.
    #[error("the first line is the header `{HEADER}`, not {0:?}")]
    Header(String),
    /// The bytes are not UTF-8 text.
    #[error("the file is not UTF-8 text (in Excel: save as «CSV UTF-8»)")]
    NotUtf8,
    /// The line is not CSV.
    #[error("{0}")]
    Csv(#[from] CsvError),
    /// More fields than source, channel and spend.
    #[error("a line has 3 fields (source, channel, spend), this one has {0}")]
    Fields(usize),
    /// No source.
    #[error("the source is empty (the channel may be empty, meaning the whole source)")]
    NoSource,
    /// No spend.
    #[error("the spend is empty")]
    NoSpend,
    /// The spend is not a number.
    #[error("the spend {0:?} is not a number of roubles (write it like 150000 or 150000.50)")]
    NotANumber(String),
    /// The spend is below zero.
    #[error("the spend {0:?} is below zero")]
    Negative(String),
}

/// A problem and the line it is on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct SpendError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong there.
    pub problem: SpendProblem,
}

/// The spend file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpendFileError {
    /// It could not be read.
    #[error("cannot read the spend file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of it is wrong.
    #[error("{}:{}: {}", path.display(), error.line, error.problem)]
    Line {
        /// The file.
        path: PathBuf,
        /// The line and what is wrong on it.
        error: SpendError,
    },
}

/// Reads and checks the spend file at `path`.
pub fn read(path: &Path) -> Result<Vec<Spend>, SpendFileError> {
    let bytes = std::fs::read(path).map_err(|source| SpendFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes).map_err(|error| SpendFileError::Line {
        path: path.to_owned(),
        error,
    })
}

/// The spends in a spend file's bytes. Blank lines are skipped.
pub fn parse(bytes: &[u8]) -> Result<Vec<Spend>, SpendError> {
    let text = std::str::from_utf8(bytes).map_err(|e| SpendError {
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        problem: SpendProblem::NotUtf8,
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let at = |line: usize| move |problem: SpendProblem| SpendError { line, problem };
    let (header_line, header) = lines
        .find(|(_, l)| !l.trim().is_empty())
        .ok_or_else(|| at(1)(SpendProblem::Empty))?;
    let separator = if header.contains(';') && !header.contains(',') {
        ';'
    } else {
        ','
    };
    let names = csv::fields(header, separator).map_err(|e| at(header_line)(e.into()))?;
    let names: Vec<String> = names.iter().map(|n| n.trim().to_lowercase()).collect();
    if names != ["source", "channel", "spend"] {
        return Err(at(header_line)(SpendProblem::Header(header.to_owned())));
    }
    let mut spends = Vec::new();
    for (n, line) in lines {
        let fields = csv::fields(line, separator).map_err(|e| at(n)(e.into()))?;
        let fields: Vec<&str> = fields.iter().map(|f| f.trim()).collect();
        // Spreadsheets pad rows with empty cells; an empty row is skipped.
        let used = fields
            .iter()
            .rposition(|f| !f.is_empty())
            .map_or(0, |i| i + 1);
        if used == 0 {
            continue;
        }
        if used > 3 {
            return Err(at(n)(SpendProblem::Fields(used)));
        }
        let field = |i: usize| fields.get(i).copied().unwrap_or_default();
        let (source, channel, spend) = (field(0), field(1), field(2));
        if source.is_empty() {
            return Err(at(n)(SpendProblem::NoSource));
        }
        spends.push(Spend {
            source: source.to_owned(),
            channel: (!channel.is_empty()).then(|| channel.to_owned()),
            roubles: roubles(spend).map_err(at(n))?,
        });
    }
    Ok(spends)
}

/// A sum of roubles: digits with spaces between thousands, and kopecks after a point or a
/// comma. `150,000` is refused: read either way, it would be a thousand times off.
fn roubles(text: &str) -> Result<f64, SpendProblem> {
    let compact: String = text
        .trim_end_matches('₽')
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}'))
        .collect();
    if compact.is_empty() {
        return Err(SpendProblem::NoSpend);
    }
    if let Some(rest) = compact.strip_prefix('-')
        && roubles(rest).is_ok()
    {
        return Err(SpendProblem::Negative(text.to_owned()));
    }
    let not_a_number = || SpendProblem::NotANumber(text.to_owned());
    let (whole, kopecks) = match compact.split_once(['.', ',']) {
        Some((whole, kopecks)) => (whole, kopecks),
        None => (compact.as_str(), ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(kopecks) || kopecks.len() > 2 {
        return Err(not_a_number());
    }
    if compact.contains(['.', ',']) && kopecks.is_empty() {
        return Err(not_a_number());
    }
    format!("{whole}.{kopecks}0")
        .parse()
        .map_err(|_| not_a_number())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(source: &str, channel: Option<&str>, roubles: f64) -> Spend {
        Spend {
            source: source.into(),
            channel: channel.map(Into::into),
            roubles,
        }
    }

    fn problem(text: &str) -> SpendError {
        parse(text.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_spend_file_reads_into_spends() {
        let text = "source,channel,spend\r\nsvarka.ru,whatsapp,150000\r\n\r\n\"Авито, Москва\",,\"20 000,50\"\r\n";
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            [
                spend("svarka.ru", Some("whatsapp"), 150_000.0),
                spend("Авито, Москва", None, 20_000.5),
            ]
        );
    }

    #[test]
    fn russian_excel_files_read_too() {
        let text = "\u{feff}Source;Channel;Spend\nsvarka.ru;;1 500,5;;\n;;;\n";
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            [spend("svarka.ru", None, 1_500.5)]
        );
    }

    #[test]
    fn each_problem_names_its_line() {
        assert_eq!(problem("").problem, SpendProblem::Empty);
        let e = problem("src,chan,money\n");
        assert_eq!(
            (e.line, e.problem),
            (1, SpendProblem::Header("src,chan,money".into()))
        );
        let e = problem("source,channel,spend\na,b,100\na,b,сто\n");
        assert_eq!(
            (e.line, &e.problem),
            (3, &SpendProblem::NotANumber("сто".into()))
        );
        assert_eq!(
            e.to_string(),
            "line 3: the spend \"сто\" is not a number of roubles (write it like 150000 or 150000.50)"
        );
        assert_eq!(
            problem("source,channel,spend\n,b,100").problem,
            SpendProblem::NoSource
        );
        assert_eq!(
            problem("source,channel,spend\na,b,").problem,
            SpendProblem::NoSpend
        );
        assert_eq!(
            problem("source,channel,spend\na,b,1,2").problem,
            SpendProblem::Fields(4)
        );
        assert_eq!(
            problem("source,channel,spend\na,b,-5").problem,
            SpendProblem::Negative("-5".into())
        );
        assert_eq!(
            problem("source,channel,spend\n\"a,b,5").problem,
            SpendProblem::Csv(CsvError::UnclosedQuote)
        );
        let e = parse(b"source,channel,spend\na,b,5\n\xff,c,1\n").unwrap_err();
        assert_eq!((e.line, e.problem), (3, SpendProblem::NotUtf8));
    }

    #[test]
    fn sums_are_roubles_and_kopecks() {
        assert_eq!(roubles("150000"), Ok(150_000.0));
        assert_eq!(roubles("150 000.5"), Ok(150_000.5));
        assert_eq!(roubles("150\u{a0}000,05 ₽"), Ok(150_000.05));
        assert_eq!(roubles("0"), Ok(0.0));
        for bad in ["150,000", "1.2.3", "12.", ".5", "1e5", "abc", "1-2"] {
            assert_eq!(
                roubles(bad),
                Err(SpendProblem::NotANumber(bad.into())),
                "{bad}"
            );
        }
    }
}
