//! The facts about a lead that chains read besides the mapped fields, by the robot's names,
//! and how they are read. The engine fills them from the CRM in the lead's [`Facts`].

use chrono::{DateTime, Utc};

use crate::domain::condition::{Facts, TAGS};
use crate::domain::lead::FieldValue;

/// The stage, by its name as the CRM shows it ("5. Встреча назначена").
pub const STAGE: &str = "stage";
/// How the lead ended: [`WON`] or [`LOST`]; absent while it is open.
pub const OUTCOME: &str = "outcome";
/// The value of [`OUTCOME`] for a sold lead.
pub const WON: &str = "won";
/// The value of [`OUTCOME`] for a lost one.
pub const LOST: &str = "lost";
/// The refusal (loss) reason, by its name in the CRM ("Нет контакта").
pub const LOSS_REASON: &str = "loss_reason";
/// When the meeting with the client is set: Unix seconds, or RFC 3339 text.
pub const MEETING_AT: &str = "meeting_at";
/// The lead's priority, 1 to 5, as scoring wrote it.
pub const PRIORITY: &str = "priority";

/// Fact names every lead has for chains, whatever robot.toml maps.
pub const BUILT_IN: [&str; 10] = [
    STAGE,
    OUTCOME,
    LOSS_REASON,
    MEETING_AT,
    PRIORITY,
    TAGS,
    "budget",
    "responsible",
    "channel",
    "category",
];

/// The fact as trimmed text; `None` when absent or empty.
pub fn text(facts: &Facts, name: &str) -> Option<String> {
    let value = facts.get(name)?.as_text();
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Whether two names are the same as the CRM would see them: ignoring case and the spaces
/// around.
pub fn same(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Whether the fact is present and equal to `want` (see [`same`]).
pub fn is(facts: &Facts, name: &str, want: &str) -> bool {
    text(facts, name).is_some_and(|v| same(&v, want))
}

/// Whether the lead has the tag.
pub fn has_tag(facts: &Facts, tag: &str) -> bool {
    match facts.get(TAGS) {
        Some(FieldValue::Many(tags)) => tags.iter().any(|t| same(t, tag)),
        Some(other) => other.as_text().split(',').any(|t| same(t, tag)),
        None => false,
    }
}

/// The fact as an instant: Unix seconds (a number or digits) or RFC 3339 text.
pub fn instant(facts: &Facts, name: &str) -> Option<DateTime<Utc>> {
    match facts.get(name)? {
        FieldValue::Number(n) if n.is_finite() => DateTime::from_timestamp(*n as i64, 0),
        FieldValue::Text(t) => {
            let t = t.trim();
            match t.parse::<i64>() {
                Ok(secs) => DateTime::from_timestamp(secs, 0),
                Err(_) => DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|d| d.with_timezone(&Utc)),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, FieldValue)]) -> Facts {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn names_compare_as_the_crm_shows_them() {
        let f = facts(&[
            (STAGE, FieldValue::Text(" 5. Встреча назначена ".into())),
            (TAGS, FieldValue::Many(vec!["Нет в наличии".into()])),
        ]);
        assert!(is(&f, STAGE, "5. встреча назначена"));
        assert!(!is(&f, OUTCOME, WON));
        assert!(has_tag(&f, "нет в наличии"));
        let joined = facts(&[(TAGS, FieldValue::Text("опт, Нет в наличии".into()))]);
        assert!(has_tag(&joined, "Нет в наличии"));
        assert!(!has_tag(&facts(&[]), "x"));
        assert_eq!(
            text(&facts(&[(STAGE, FieldValue::Text(" ".into()))]), STAGE),
            None
        );
    }

    #[test]
    fn a_meeting_time_reads_from_seconds_or_rfc3339() {
        let at = DateTime::from_timestamp(1_772_600_400, 0).unwrap();
        for v in [
            FieldValue::Number(1_772_600_400.0),
            FieldValue::Text("1772600400".into()),
            FieldValue::Text(at.to_rfc3339()),
        ] {
            assert_eq!(instant(&facts(&[(MEETING_AT, v)]), MEETING_AT), Some(at));
        }
        let word = facts(&[(MEETING_AT, FieldValue::Text("завтра".into()))]);
        assert_eq!(instant(&word, MEETING_AT), None);
    }
}
