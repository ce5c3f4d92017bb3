use super::*;

fn load_text(text: &str) -> Result<Option<Roster>, Vec<Problem>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
    load(dir.path())
}

fn one_problem(text: &str) -> Problem {
    let mut problems = load_text(text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems.remove(0)
}

const MINIMAL: &str = r#"time_zone = "Europe/Moscow"

[[groups]]
name = "Младшая"
lead = "Анна"

[[managers]]
id = 1
name = "Анна"
group = "Младшая"
week = [ { days = "пн-пт", hours = "09:00-18:00", lunch = "13:00-14:00" } ]
vacations = [ { from = "2026-07-06", to = "2026-07-19" } ]

[[managers]]
id = "2"
name = "Борис"
group = "Младшая"
time_zone = "Asia/Yekaterinburg"
weight = 0.5
week = [ { days = "пн, ср", hours = "10:00-19:00" }, { days = "пт", hours = "10:00-16:00" } ]
"#;

#[test]
fn the_shipped_roster_has_eight_managers_in_three_groups() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let roster = load(&dir).unwrap().unwrap();
    assert_eq!(roster.groups.len(), 3);
    assert_eq!(roster.managers.len(), 8);
    assert!(roster.groups.iter().all(|g| g.lead.is_some()));
    assert!(
        roster
            .managers
            .iter()
            .any(|m| m.zone == chrono_tz::Asia::Yekaterinburg)
    );
    assert!(roster.managers.iter().any(|m| m.weight < 1.0));
}

#[test]
fn a_minimal_file_reads_and_no_file_means_no_roster() {
    let roster = load_text(MINIMAL).unwrap().unwrap();
    assert_eq!(roster.groups[0].lead, Some(0));
    let boris = &roster.managers[1];
    assert_eq!(boris.id, "2");
    assert_eq!(boris.zone, chrono_tz::Asia::Yekaterinburg);
    assert_eq!(boris.weight, 0.5);
    let days: Vec<bool> = boris.week.0.iter().map(Option::is_some).collect();
    assert_eq!(days, [true, false, true, false, true, false, false]);
    assert_eq!(roster.managers[0].vacations.len(), 1);
    let empty = tempfile::tempdir().unwrap();
    assert!(load(empty.path()).unwrap().is_none());
}

#[test]
fn a_misspelt_key_names_the_line_and_the_key_meant() {
    let p = one_problem(&MINIMAL.replace("weight = 0.5", "wieght = 0.5"));
    assert_eq!(p.line, Some(19));
    assert_eq!(p.hint.as_deref(), Some("did you mean `weight`?"));
}

#[test]
fn a_shift_that_ends_before_it_starts_is_placed() {
    let p = one_problem(&MINIMAL.replace("hours = \"09:00-18:00\"", "hours = \"18:00-09:00\""));
    assert_eq!(p.line, Some(11));
    assert!(p.message.contains("ends before it starts"), "{}", p.message);
}

#[test]
fn a_lunch_outside_the_shift_is_placed() {
    let p = one_problem(&MINIMAL.replace("lunch = \"13:00-14:00\"", "lunch = \"18:30-19:00\""));
    assert_eq!(p.line, Some(11));
    assert!(p.message.contains("not inside the shift"), "{}", p.message);
}

#[test]
fn an_unknown_group_is_placed_with_the_near_name() {
    let p = one_problem(&MINIMAL.replace(
        "group = \"Младшая\"\ntime_zone",
        "group = \"Младщая\"\ntime_zone",
    ));
    assert_eq!(p.line, Some(17));
    assert_eq!(p.hint.as_deref(), Some("did you mean `Младшая`?"));
}

#[test]
fn an_unknown_time_zone_is_placed_with_the_near_name() {
    let p = one_problem(&MINIMAL.replace("Asia/Yekaterinburg", "Asia/Ekaterinburg"));
    assert_eq!(p.line, Some(18));
    assert!(p.message.contains("unknown time zone"), "{}", p.message);
    assert_eq!(
        p.hint.as_deref(),
        Some("did you mean `Asia/Yekaterinburg`?")
    );
}

#[test]
fn inverted_and_overlapping_vacations_are_placed() {
    let p = one_problem(&MINIMAL.replace("to = \"2026-07-19\"", "to = \"2026-07-01\""));
    assert_eq!(p.line, Some(12));
    assert!(p.message.contains("ends before it begins"), "{}", p.message);
    let overlapping = MINIMAL.replace(
        "vacations = [ { from = \"2026-07-06\", to = \"2026-07-19\" } ]",
        "vacations = [\n  { from = \"2026-07-06\", to = \"2026-07-19\" },\n  { from = \"2026-07-15\", to = \"2026-07-30\" },\n]",
    );
    let p = one_problem(&overlapping);
    assert_eq!(p.line, Some(14));
    assert!(p.message.contains("overlap"), "{}", p.message);
}

#[test]
fn days_weights_leads_and_duplicates_are_checked() {
    let p = one_problem(&MINIMAL.replace("days = \"пт\"", "days = \"пянтица\""));
    assert!(p.message.contains("not a weekday"), "{}", p.message);
    let p = one_problem(&MINIMAL.replace("days = \"пт\"", "days = \"ср\""));
    assert!(p.message.contains("two shifts on ср"), "{}", p.message);
    let p = one_problem(&MINIMAL.replace("weight = 0.5", "weight = 0"));
    assert!(p.message.contains("above 0"), "{}", p.message);
    let p = one_problem(&MINIMAL.replace("lead = \"Анна\"", "lead = \"Ана\""));
    assert_eq!(p.line, Some(5));
    assert_eq!(p.hint.as_deref(), Some("did you mean `Анна`?"));
    let p = one_problem(&MINIMAL.replace("id = \"2\"", "id = \"1\""));
    assert!(
        p.message.contains("two managers have the id 1"),
        "{}",
        p.message
    );
}
