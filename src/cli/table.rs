//! The reports' tables: aligned text for the terminal (money as `1 234 567 ₽`) and the same
//! rows as CSV with plain numbers for a spreadsheet.

use crate::adapters::csv;

/// A cell of a table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Words, left-aligned.
    Text(String),
    /// A count of things.
    Count(u64),
    /// Roubles: whole ones in the text, kopecks in the CSV.
    Money(f64),
    /// A percentage.
    Percent(f64),
    /// A plain ratio, such as roubles per rouble.
    Ratio(f64),
    /// Nothing to show (no plan, no spend).
    Empty,
}

impl Cell {
    /// Text, or `Empty` when there is none.
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }

    /// A percentage, or `Empty` when there is none.
    pub fn percent(p: Option<f64>) -> Cell {
        p.map_or(Cell::Empty, Cell::Percent)
    }

    /// Money, or `Empty` when there is none.
    pub fn money(m: Option<f64>) -> Cell {
        m.map_or(Cell::Empty, Cell::Money)
    }

    /// A ratio, or `Empty` when there is none.
    pub fn ratio(r: Option<f64>) -> Cell {
        r.map_or(Cell::Empty, Cell::Ratio)
    }

    fn for_people(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Count(n) => grouped(&n.to_string()),
            Cell::Money(m) => format!("{} ₽", grouped(&format!("{m:.0}"))),
            Cell::Percent(p) => format!("{} %", format!("{p:.1}").replace('.', ",")),
            Cell::Ratio(r) => format!("{r:.2}").replace('.', ","),
            Cell::Empty => "—".to_owned(),
        }
    }

    fn for_csv(&self) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Count(n) => n.to_string(),
            Cell::Money(m) => plain(format!("{m:.2}")),
            Cell::Percent(p) => plain(format!("{p:.1}")),
            Cell::Ratio(r) => plain(format!("{r:.2}")),
            Cell::Empty => String::new(),
        }
    }

    fn right_aligned(&self) -> bool {
        !matches!(self, Cell::Text(_))
    }
}

/// `-0.00` comes from rounding a tiny negative sum; nobody wants to read it.
fn plain(number: String) -> String {
    if number
        .trim_start_matches('-')
        .bytes()
        .all(|b| b == b'0' || b == b'.')
    {
        number.trim_start_matches('-').to_owned()
    } else {
        number
    }
}

/// Digits grouped by three with spaces, the Russian way: `1 234 567`.
fn grouped(number: &str) -> String {
    let number = plain(number.to_owned());
    let (sign, digits) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number.as_str()),
    };
    let mut out = String::from(sign);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(d);
    }
    out
}

/// A table with a header, rows and an optional total line.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
    total: Option<Vec<Cell>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            ..Table::default()
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Sets the total line, printed under a rule.
    pub fn total(&mut self, cells: Vec<Cell>) {
        self.total = Some(cells);
    }

    /// The table for a terminal: columns aligned, numbers to the right.
    pub fn text(&self) -> String {
        let body: Vec<(Vec<String>, &[Cell])> = self
            .rows
            .iter()
            .chain(&self.total)
            .map(|r| (r.iter().map(Cell::for_people).collect(), r.as_slice()))
            .collect();
        let width = |i: usize| {
            let cells = body.iter().filter_map(|(t, _)| t.get(i));
            cells
                .chain(self.headers.get(i))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |texts: &[String], right: &dyn Fn(usize) -> bool| {
            let padded: Vec<String> = texts
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (t, &w))| {
                    let pad = " ".repeat(w.saturating_sub(t.chars().count()));
                    if right(i) {
                        format!("{pad}{t}")
                    } else {
                        format!("{t}{pad}")
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        // A header sits over its column's numbers the way they are aligned.
        let numeric = |i: usize| {
            body.iter()
                .any(|(_, cells)| cells.get(i).is_some_and(Cell::right_aligned))
        };
        let rule = "─".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1));
        let mut out = vec![line(&self.headers, &numeric), rule.clone()];
        for (i, (texts, cells)) in body.iter().enumerate() {
            if i == self.rows.len() && i > 0 {
                out.push(rule.clone());
            }
            out.push(line(texts, &|c| {
                cells.get(c).is_some_and(Cell::right_aligned)
            }));
        }
        out.join("\n") + "\n"
    }

    /// The same rows as CSV, the header first and the total last, numbers plain.
    pub fn csv(&self) -> String {
        let mut out = csv::record(&self.headers) + "\n";
        for row in self.rows.iter().chain(&self.total) {
            let cells: Vec<String> = row.iter().map(Cell::for_csv).collect();
            out += &csv::record(&cells);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["Менеджер", "Лидов", "План", "%"]);
        t.row(vec![
            Cell::text("Вася"),
            Cell::Count(40),
            Cell::Money(1_000_000.4),
            Cell::Percent(97.26),
        ]);
        t.row(vec![
            Cell::text("Петя, старший"),
            Cell::Count(3),
            Cell::Money(-1_500.0),
            Cell::Empty,
        ]);
        t.total(vec![
            Cell::text("Итого"),
            Cell::Count(43),
            Cell::Money(998_500.4),
            Cell::Percent(97.4),
        ]);
        t
    }

    #[test]
    fn the_text_table_is_aligned() {
        let text = sample().text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Менеджер       Лидов         План       %");
        assert!(lines[1].starts_with("────"));
        assert_eq!(lines[2], "Вася              40  1 000 000 ₽  97,3 %");
        assert_eq!(lines[3], "Петя, старший      3     -1 500 ₽       —");
        assert_eq!(lines[5], "Итого             43    998 500 ₽  97,4 %");
    }

    #[test]
    fn the_csv_has_plain_numbers_and_quotes_where_needed() {
        assert_eq!(
            sample().csv(),
            "Менеджер,Лидов,План,%\nВася,40,1000000.40,97.3\n\"Петя, старший\",3,-1500.00,\nИтого,43,998500.40,97.4\n"
        );
    }

    #[test]
    fn without_rows_the_total_sits_under_the_header() {
        let mut t = Table::new(&["Менеджер", "План"]);
        t.total(vec![Cell::text("Итого"), Cell::Money(0.0)]);
        assert_eq!(t.text(), "Менеджер  План\n──────────────\nИтого      0 ₽\n");
        assert_eq!(t.csv(), "Менеджер,План\nИтого,0.00\n");
    }

    #[test]
    fn numbers_are_grouped_by_three() {
        assert_eq!(grouped("1234567"), "1 234 567");
        assert_eq!(grouped("123"), "123");
        assert_eq!(grouped("-1234"), "-1 234");
        assert_eq!(grouped("-0"), "0");
        assert_eq!(Cell::Money(-0.2).for_people(), "0 ₽");
        assert_eq!(Cell::Money(-0.001).for_csv(), "0.00");
    }
}
