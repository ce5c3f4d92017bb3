//! A file of leads as a CRM export gives them: CSV with a header row, one lead a line. The
//! training file (`train --deals`) has `created_at`, the features' columns, `budget` and
//! `won`; the file to score (`score --leads`) the same without `won`. Other columns are
//! kept as they are (and written back by `score`). Semicolons, decimal commas and the
//! byte-order mark of Russian Excel are read too.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::csv;
use crate::domain::lead::FieldValue;
use crate::domain::scoring::feature::read_as;
use crate::domain::scoring::{Feature, Observation, PastLead};

/// What is wrong with a leads file.
#[derive(Debug, thiserror::Error)]
pub enum LeadsFileError {
    /// It could not be read.
    #[error("{0}: cannot be read: {1}")]
    Read(PathBuf, std::io::Error),
    /// It is not UTF-8.
    #[error("{0}: not UTF-8 text; save it in UTF-8 encoding")]
    NotUtf8(PathBuf),
    /// It has no header.
    #[error("{0}: the file is empty; its first line must name the columns")]
    Empty(PathBuf),
    /// A column the task needs is missing.
    #[error("{file}: no column `{column}` ({why}); the columns are: {found}")]
    MissingColumn {
        /// The file.
        file: PathBuf,
        /// The column.
        column: String,
        /// What it is for.
        why: String,
        /// The header as found.
        found: String,
    },
    /// A cell or line is wrong.
    #[error("{file}:{line}: {message}")]
    Bad {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A leads file in memory.
#[derive(Debug, Clone)]
pub struct LeadsFile {
    /// Where it came from.
    pub path: PathBuf,
    /// The column names.
    pub header: Vec<String>,
    /// The lines after the header (empty lines skipped), with their line numbers.
    pub rows: Vec<(usize, Vec<String>)>,
}

/// Reads a leads file.
pub fn read(path: &Path) -> Result<LeadsFile, LeadsFileError> {
    let bytes = std::fs::read(path).map_err(|e| LeadsFileError::Read(path.to_owned(), e))?;
    let text = String::from_utf8(bytes).map_err(|_| LeadsFileError::NotUtf8(path.to_owned()))?;
    parse(path, &text)
}

/// Parses the text of a leads file.
pub fn parse(path: &Path, text: &str) -> Result<LeadsFile, LeadsFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_at, header)) = lines.next() else {
        return Err(LeadsFileError::Empty(path.to_owned()));
    };
    let separator = if header.contains(';') && !header.contains(',') {
        ';'
    } else {
        ','
    };
    let bad = |line: usize, message: String| LeadsFileError::Bad {
        file: path.to_owned(),
        line,
        message,
    };
    let header: Vec<String> = csv::fields(header, separator)
        .map_err(|e| bad(header_at + 1, e.to_string()))?
        .into_iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut rows = Vec::new();
    for (i, line) in lines {
        let fields = csv::fields(line, separator).map_err(|e| bad(i + 1, e.to_string()))?;
        if fields.len() > header.len() {
            return Err(bad(
                i + 1,
                format!(
                    "{} cells, but the header names {} columns",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        rows.push((i + 1, fields));
    }
    Ok(LeadsFile {
        path: path.to_owned(),
        header,
        rows,
    })
}

impl LeadsFile {
    fn column(&self, name: &str, why: &str) -> Result<usize, LeadsFileError> {
        self.header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or_else(|| LeadsFileError::MissingColumn {
                file: self.path.clone(),
                column: name.to_owned(),
                why: why.to_owned(),
                found: self.header.join(", "),
            })
    }

    fn bad(&self, line: usize, message: String) -> LeadsFileError {
        LeadsFileError::Bad {
            file: self.path.clone(),
            line,
            message,
        }
    }

    /// The rows' feature values and budgets.
    pub fn observations(
        &self,
        features: &[Feature],
    ) -> Result<Vec<(Observation, Option<f64>)>, LeadsFileError> {
        let columns: Vec<usize> = features
            .iter()
            .map(|f| {
                self.column(
                    &f.name,
                    &format!("the feature \"{}\" of scoring.toml", f.title),
                )
            })
            .collect::<Result<_, _>>()?;
        let budget = self.column(
            "budget",
            "the lead's budget in roubles; leave a cell empty when unknown",
        )?;
        self.rows
            .iter()
            .map(|(line, cells)| {
                let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
                let observation = features
                    .iter()
                    .zip(&columns)
                    .map(|(f, c)| {
                        let text = cell(*c);
                        if text.is_empty() {
                            return Ok(None);
                        }
                        match read_as(f.kind, FieldValue::Text(text.to_owned())) {
                            Some(v) => Ok(Some(v)),
                            None => Err(self.bad(
                                *line,
                                format!("`{}` is \"{text}\", which is not a number", f.name),
                            )),
                        }
                    })
                    .collect::<Result<Observation, _>>()?;
                let budget = number(cell(budget)).map_err(|_| {
                    self.bad(
                        *line,
                        format!(
                            "`budget` is \"{}\", which is not a number of roubles",
                            cell(budget)
                        ),
                    )
                })?;
                Ok((observation, budget))
            })
            .collect()
    }

    /// The rows as past leads, for training.
    pub fn past_leads(&self, features: &[Feature]) -> Result<Vec<PastLead>, LeadsFileError> {
        let observed = self.observations(features)?;
        let created = self.column(
            "created_at",
            "when the lead came, like 2024-03-05 or 2024-03-05T10:00:00Z",
        )?;
        let won = self.column(
            "won",
            "1 if the lead was won and 0 if lost, or the won amount",
        )?;
        self.rows
            .iter()
            .zip(observed)
            .map(|((line, cells), (observation, budget))| {
                let cell = |i: usize| cells.get(i).map(|c| c.trim()).unwrap_or("");
                let created_at = date(cell(created)).ok_or_else(|| {
                    self.bad(*line, format!("`created_at` is \"{}\", which is not a date like 2024-03-05 or 2024-03-05T10:00:00Z", cell(created)))
                })?;
                let won = match number(cell(won)) {
                    Ok(Some(w)) if w >= 0.0 => w,
                    _ => {
                        return Err(self.bad(*line, format!(
                            "`won` is \"{}\": write 1 for won and 0 for lost, or the won amount",
                            cell(won)
                        )));
                    }
                };
                Ok(PastLead {
                    created_at,
                    observation,
                    budget,
                    won,
                })
            })
            .collect()
    }
}

/// A number cell: empty is `None`; spaces between digit groups and a decimal comma are read.
fn number(text: &str) -> Result<Option<f64>, ()> {
    if text.is_empty() {
        return Ok(None);
    }
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{a0}')
        .map(|c| if c == ',' { '.' } else { c })
        .collect();
    cleaned
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .map(Some)
        .ok_or(())
}

/// A date or a moment: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` (read as UTC) or `YYYY-MM-DD`.
fn date(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scoring::{FeatureKind, Source, Value};

    fn features() -> Vec<Feature> {
        let f = |name: &str, kind| Feature {
            name: name.into(),
            title: name.into(),
            kind,
            source: Source::Field(name.into()),
        };
        vec![
            f("brand", FeatureKind::Category),
            f("turnover", FeatureKind::Number),
        ]
    }

    #[test]
    fn a_russian_excel_file_reads() {
        let text = "\u{feff}created_at;brand;turnover;budget;won;comment\n\
                    2024-03-05;Сварог;1 500 000,5;120 000;1;ok\n\
                    2024-03-06 10:15;;;;0;\n";
        let file = parse(Path::new("deals.csv"), text).unwrap();
        let leads = file.past_leads(&features()).unwrap();
        assert_eq!(leads.len(), 2);
        assert_eq!(
            leads[0].observation[0],
            Some(Value::Category("Сварог".into()))
        );
        assert_eq!(leads[0].observation[1], Some(Value::Number(1_500_000.5)));
        assert_eq!(leads[0].budget, Some(120_000.0));
        assert!(leads[0].is_won());
        assert_eq!(leads[1].observation, vec![None, None]);
        assert_eq!(leads[1].budget, None);
    }

    #[test]
    fn mistakes_name_the_line_and_the_column() {
        let file = parse(
            Path::new("deals.csv"),
            "created_at,brand,budget,won\n2024-01-01,A,1,1\n",
        )
        .unwrap();
        let e = file.past_leads(&features()).unwrap_err().to_string();
        assert!(e.starts_with("deals.csv: no column `turnover`"), "{e}");
        let text = "created_at,brand,turnover,budget,won\n2024-01-01,A,много,1,1\n";
        let e = parse(Path::new("deals.csv"), text)
            .unwrap()
            .past_leads(&features())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "deals.csv:2: `turnover` is \"много\", which is not a number"
        );
        let text = "created_at,brand,turnover,budget,won\n05.03.2024,A,1,1,1\n";
        let e = parse(Path::new("deals.csv"), text)
            .unwrap()
            .past_leads(&features())
            .unwrap_err();
        assert!(
            e.to_string().contains("`created_at` is \"05.03.2024\""),
            "{e}"
        );
        let text = "created_at,brand,turnover,budget,won\n2024-01-01,A,1,1,да\n";
        let e = parse(Path::new("deals.csv"), text)
            .unwrap()
            .past_leads(&features())
            .unwrap_err();
        assert!(e.to_string().contains("`won` is \"да\""), "{e}");
    }
}
