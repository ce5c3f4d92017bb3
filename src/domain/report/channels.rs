//! What marketing brought: for each source and channel, the leads and the profit they are
//! expected to bring by priority, and with the money spent on them, the expected profit per
//! rouble. From the seed interview: "Маркетинг, вы получили миллион — покажите мне, на какую
//! потенциальную прибыль эти лиды?"

use std::collections::{HashMap, HashSet};

use crate::domain::ledger::LedgerRow;
use crate::domain::priority::Priority;

/// Money spent on a source of leads in the month.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    /// The source, as the leads carry it.
    pub source: String,
    /// The channel of that source; `None` for the whole source.
    pub channel: Option<String>,
    /// Roubles spent.
    pub roubles: f64,
}

/// Which of a source's leads a line of the report covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// The leads that came by this channel.
    Named(String),
    /// The leads whose channel is not known.
    Unknown,
    /// Every channel of the source together: its money was given for the whole source.
    All,
}

/// The figures of one line of the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelFigures {
    /// Leads created in the month.
    pub leads: u64,
    /// Their expected profit by priority: index 0 is priority 1, index 4 priority 5.
    pub expected_by_priority: [f64; 5],
    /// The profit of the won ones.
    pub won_profit: f64,
    /// The roubles spent, when a spend was given for these leads.
    pub spend: Option<f64>,
}

impl ChannelFigures {
    /// The expected profit of the leads of priority `p`.
    pub fn expected_of(&self, p: Priority) -> f64 {
        self.expected_by_priority[usize::from(p.number() - 1)]
    }

    /// The expected profit of every lead, whatever its priority.
    pub fn expected(&self) -> f64 {
        self.expected_by_priority.iter().sum()
    }

    /// Expected profit per rouble spent; `None` without a spend or with a spend of 0.
    pub fn per_rouble(&self) -> Option<f64> {
        self.spend.filter(|&s| s > 0.0).map(|s| self.expected() / s)
    }

    fn add(&mut self, row: &LedgerRow) {
        self.leads += 1;
        self.expected_by_priority[usize::from(row.scored.priority.number() - 1)] +=
            row.scored.expected_profit;
        self.won_profit += super::won_profit(row);
    }

    fn add_spend(&mut self, roubles: f64) {
        self.spend = Some(self.spend.unwrap_or(0.0) + roubles);
    }

    fn add_figures(&mut self, other: &ChannelFigures) {
        self.leads += other.leads;
        for (sum, part) in self
            .expected_by_priority
            .iter_mut()
            .zip(other.expected_by_priority)
        {
            *sum += part;
        }
        self.won_profit += other.won_profit;
        if let Some(spend) = other.spend {
            self.add_spend(spend);
        }
    }
}

/// One line: a source and a channel of it (or all its channels).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    /// The source; `None` for the leads whose source is not known.
    pub source: Option<String>,
    /// The channel, or all of them.
    pub channel: Channel,
    /// Its figures.
    pub figures: ChannelFigures,
}

/// The report: a line per source and channel, and the total.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Channels {
    /// By source, then channel, in alphabetical order; unknown ones last.
    pub rows: Vec<ChannelRow>,
    /// Every line together. Its spend is the whole spend.
    pub total: ChannelFigures,
}

impl Channels {
    /// The expected profit per rouble over the lines that have a spend: leads that came
    /// for free must not make the money spent look better. `None` when nothing was spent.
    pub fn per_rouble(&self) -> Option<f64> {
        let paid = self.rows.iter().filter(|r| r.figures.spend.is_some());
        let expected: f64 = paid.map(|r| r.figures.expected()).sum();
        self.total.spend.filter(|&s| s > 0.0).map(|s| expected / s)
    }
}

/// Adds up the given rows (one month's) by source and channel, with the money spent.
///
/// A spend with a channel goes to that channel's line. A spend for a whole source (no
/// channel) makes the source one line with all its channels together, since its money cannot
/// be split among them; any channel spends of that source then add to that line. Several
/// spends for the same line add up. A spend for leads that did not come is a line of its
/// own with no leads: money spent for nothing.
pub fn channels(rows: &[LedgerRow], spend: &[Spend]) -> Channels {
    let whole_sources: HashSet<&str> = spend
        .iter()
        .filter(|s| s.channel.is_none())
        .map(|s| s.source.as_str())
        .collect();
    let line = |source: Option<&str>, channel: Option<&str>| {
        let channel = match (source, channel) {
            (Some(s), _) if whole_sources.contains(s) => Channel::All,
            (_, Some(c)) => Channel::Named(c.to_owned()),
            (_, None) => Channel::Unknown,
        };
        (source.map(str::to_owned), channel)
    };
    let mut lines: HashMap<(Option<String>, Channel), ChannelFigures> = HashMap::new();
    for row in rows {
        let key = line(known(&row.scored.source), known(&row.scored.channel));
        lines.entry(key).or_default().add(row);
    }
    for s in spend {
        let key = line(Some(s.source.as_str()), s.channel.as_deref());
        lines.entry(key).or_default().add_spend(s.roubles);
    }
    let mut total = ChannelFigures::default();
    let mut rows: Vec<ChannelRow> = lines
        .into_iter()
        .map(|((source, channel), figures)| {
            total.add_figures(&figures);
            ChannelRow {
                source,
                channel,
                figures,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        super::none_last(&a.source, &b.source).then_with(|| a.channel.cmp(&b.channel))
    });
    Channels { rows, total }
}

/// A source or channel that says something: a blank one is as good as none.
fn known(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::sample::{Sample, lead};
    use super::*;

    fn spend(source: &str, channel: Option<&str>, roubles: f64) -> Spend {
        Spend {
            source: source.into(),
            channel: channel.map(Into::into),
            roubles,
        }
    }

    fn keys(c: &Channels) -> Vec<(Option<&str>, Channel)> {
        c.rows
            .iter()
            .map(|r| (r.source.as_deref(), r.channel.clone()))
            .collect()
    }

    fn named(c: &str) -> Channel {
        Channel::Named(c.into())
    }

    // Expected profit is twice the forecast in the sample rows.
    #[test]
    fn expected_profit_is_split_by_priority() {
        let rows = [
            lead("1", 100.0)
                .from("svarka.ru", Some("whatsapp"))
                .priority(1),
            lead("2", 50.0)
                .from("svarka.ru", Some("whatsapp"))
                .priority(1)
                .won(90.0),
            lead("3", 10.0)
                .from("svarka.ru", Some("whatsapp"))
                .priority(4)
                .lost(),
            lead("4", 30.0).from("svarka.ru", Some("email")).priority(2),
        ];
        let c = channels(&rows, &[]);
        assert_eq!(
            keys(&c),
            [
                (Some("svarka.ru"), named("email")),
                (Some("svarka.ru"), named("whatsapp"))
            ]
        );
        let wa = &c.rows[1].figures;
        assert_eq!(wa.leads, 3);
        assert_eq!(wa.expected_by_priority, [300.0, 0.0, 0.0, 20.0, 0.0]);
        assert_eq!(wa.expected_of(Priority::FIRST), 300.0);
        assert_eq!(wa.expected(), 320.0);
        assert_eq!(wa.won_profit, 90.0);
        assert_eq!(wa.spend, None);
        assert_eq!(wa.per_rouble(), None);
        assert_eq!(c.total.leads, 4);
        assert_eq!(c.total.expected(), 380.0);
        assert_eq!(c.per_rouble(), None);
    }

    #[test]
    fn spend_gives_the_expected_profit_per_rouble() {
        let rows = [
            lead("1", 1_000.0).from("svarka.ru", Some("whatsapp")),
            lead("2", 500.0).from("svarka.ru", Some("email")),
        ];
        let c = channels(
            &rows,
            &[
                spend("svarka.ru", Some("whatsapp"), 400.0),
                spend("svarka.ru", Some("whatsapp"), 100.0),
            ],
        );
        let wa = &c.rows[1].figures;
        assert_eq!(wa.spend, Some(500.0), "two spends of one line add up");
        assert_eq!(wa.per_rouble(), Some(4.0));
        assert_eq!(c.rows[0].figures.spend, None);
        assert_eq!(c.total.spend, Some(500.0));
        // The e-mail leads cost nothing and do not count in the return on the money.
        assert_eq!(c.per_rouble(), Some(4.0));
    }

    #[test]
    fn a_spend_without_leads_is_a_line_of_its_own() {
        let rows = [lead("1", 100.0).from("svarka.ru", Some("phone"))];
        let c = channels(
            &rows,
            &[
                spend("yandex-direct", Some("search"), 30_000.0),
                spend("avito", None, 5_000.0),
            ],
        );
        assert_eq!(
            keys(&c),
            [
                (Some("avito"), Channel::All),
                (Some("svarka.ru"), named("phone")),
                (Some("yandex-direct"), named("search")),
            ]
        );
        let direct = &c.rows[2].figures;
        assert_eq!((direct.leads, direct.expected()), (0, 0.0));
        assert_eq!(direct.spend, Some(30_000.0));
        assert_eq!(direct.per_rouble(), Some(0.0));
        assert_eq!(c.total.spend, Some(35_000.0));
        assert_eq!(c.per_rouble(), Some(0.0));
    }

    #[test]
    fn a_spend_for_a_whole_source_puts_its_channels_together() {
        let rows = [
            lead("1", 100.0).from("svarka.ru", Some("phone")),
            lead("2", 200.0).from("svarka.ru", Some("email")),
            lead("3", 300.0).from("svarka.ru", None),
            lead("4", 400.0).from("tig.ru", Some("phone")),
        ];
        let c = channels(
            &rows,
            &[
                spend("svarka.ru", None, 1_000.0),
                spend("svarka.ru", Some("phone"), 200.0),
            ],
        );
        assert_eq!(
            keys(&c),
            [
                (Some("svarka.ru"), Channel::All),
                (Some("tig.ru"), named("phone"))
            ]
        );
        let svarka = &c.rows[0].figures;
        assert_eq!(svarka.leads, 3);
        assert_eq!(svarka.expected(), 1_200.0);
        assert_eq!(svarka.spend, Some(1_200.0));
        assert_eq!(svarka.per_rouble(), Some(1.0));
    }

    #[test]
    fn unknown_sources_and_channels_come_last() {
        let rows = [
            lead("1", 1.0),
            lead("2", 1.0).from("b", None),
            lead("3", 1.0).from("b", Some("x")),
            lead("4", 1.0).from("a", Some("")),
            lead("5", 1.0).from(" ", Some("y")),
        ];
        let c = channels(&rows, &[]);
        assert_eq!(
            keys(&c),
            [
                (Some("a"), Channel::Unknown),
                (Some("b"), named("x")),
                (Some("b"), Channel::Unknown),
                (None, named("y")),
                (None, Channel::Unknown),
            ]
        );
    }

    #[test]
    fn an_empty_month_is_an_empty_report() {
        let c = channels(&[], &[]);
        assert!(c.rows.is_empty());
        assert_eq!(c.total, ChannelFigures::default());
    }

    #[test]
    fn a_spend_of_nothing_has_no_return() {
        let rows = [lead("1", 100.0).from("a", Some("x"))];
        let c = channels(&rows, &[spend("a", Some("x"), 0.0)]);
        assert_eq!(c.rows[0].figures.spend, Some(0.0));
        assert_eq!(c.rows[0].figures.per_rouble(), None);
        assert_eq!(c.per_rouble(), None);
    }
}
