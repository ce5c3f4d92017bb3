//! Comma-separated values: the part of RFC 4180 that the reports write and the spend file is
//! read with. A field holding the separator, a quote or a line break is quoted, its quotes
//! doubled; records are read one line at a time, so a quoted field cannot span lines.

use std::borrow::Cow;

/// Why a line is not a CSV record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A quoted field has no closing quote on its line.
    #[error("a quoted field is not closed on this line")]
    UnclosedQuote,
    /// Something follows a quoted field's closing quote other than the separator.
    #[error("after the closing quote of field {0} comes something other than the separator")]
    AfterQuote(usize),
}

/// One record as a line (without the line break), the fields separated by commas.
pub fn record<S: AsRef<str>>(fields: &[S]) -> String {
    let quoted: Vec<Cow<'_, str>> = fields.iter().map(|f| quote(f.as_ref(), ',')).collect();
    quoted.join(",")
}

fn quote(field: &str, separator: char) -> Cow<'_, str> {
    if field.contains([separator, '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// The fields of one line separated by `separator`, unquoted. A field is quoted when it
/// starts with a quote; elsewhere a quote is taken as it is.
pub fn fields(line: &str, separator: char) -> Result<Vec<String>, CsvError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(CsvError::UnclosedQuote),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(c) if c == separator => out.push(field),
                Some(_) => return Err(CsvError::AfterQuote(out.len() + 1)),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(c) if c == separator => break,
                    Some(c) => field.push(c),
                }
            }
            out.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(record(&["a", "b c", "1.5"]), "a,b c,1.5");
        assert_eq!(
            record(&["Сварка, сайт", "say \"hi\"", ""]),
            "\"Сварка, сайт\",\"say \"\"hi\"\"\","
        );
        assert_eq!(record(&["two\nlines"]), "\"two\nlines\"");
    }

    #[test]
    fn what_is_written_reads_back() {
        let original = ["Сварка, сайт", "say \"hi\"", "", "plain"];
        assert_eq!(fields(&record(&original), ',').unwrap(), original);
    }

    #[test]
    fn a_line_splits_into_fields() {
        assert_eq!(fields("a,,c", ',').unwrap(), ["a", "", "c"]);
        assert_eq!(fields("a;b,c;", ';').unwrap(), ["a", "b,c", ""]);
        assert_eq!(fields("", ',').unwrap(), [""]);
        assert_eq!(fields("\"x\"", ',').unwrap(), ["x"]);
        assert_eq!(fields("a b\"c", ',').unwrap(), ["a b\"c"]);
    }

    #[test]
    fn broken_quotes_are_errors() {
        assert_eq!(fields("a,\"b", ','), Err(CsvError::UnclosedQuote));
        assert_eq!(fields("a,\"b\"c,d", ','), Err(CsvError::AfterQuote(2)));
    }
}
