use std::path::Path;

use super::*;
use crate::config::managers;
use crate::domain::priority::Priority;

const MANAGERS: &str = r#"
[[groups]]
name = "Младшая"
lead = "Анна"

[[groups]]
name = "Средняя"
lead = 2

[[managers]]
id = 1
name = "Анна"
group = "Младшая"
specialisations = ["Газовые электростанции"]
week = [ { days = "пн-пт", hours = "09:00-18:00" } ]

[[managers]]
id = 2
name = "Борис"
group = "Средняя"
week = [ { days = "пн-пт", hours = "09:00-18:00" } ]
"#;

const ROUTING: &str = r#"guard = "10m"

[[groups]]
name = "Младшая"
when = { field = "budget", lt = 100000 }
wait = "15m"
overflow = "Средняя"

[[groups]]
name = "Средняя"
wait = "15m"
overflow = "руководитель"

[[specialisations]]
name = "Газовые электростанции"
when = { field = "category", eq = "Газовые электростанции" }
across_groups = true

[priority.1]
task = "Позвонить"
deadline = "15m"
"#;

fn check_text(routing: &str) -> (Option<RoutingRules>, Vec<Problem>) {
    check_with(MANAGERS, routing)
}

fn check_with(roster: &str, routing: &str) -> (Option<RoutingRules>, Vec<Problem>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(managers::FILE_NAME), roster).unwrap();
    std::fs::write(dir.path().join(FILE_NAME), routing).unwrap();
    let roster = managers::load(dir.path()).unwrap().unwrap();
    let fields = ["site".to_owned()];
    check(
        dir.path(),
        Known {
            roster: &roster,
            lead_fields: Some(&fields),
            fresh_for: Duration::from_secs(120),
        },
    )
}

fn one_problem(text: &str) -> Problem {
    let (_, mut problems) = check_text(text);
    problems.retain(Problem::is_error);
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems.remove(0)
}

#[test]
fn the_shipped_rules_read_against_the_shipped_roster() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let roster = managers::load(&dir).unwrap().unwrap();
    let fields: Vec<String> = ["site", "channel", "category", "brand"]
        .map(String::from)
        .to_vec();
    let rules = load(
        &dir,
        Known {
            roster: &roster,
            lead_fields: Some(&fields),
            fresh_for: Duration::from_secs(120),
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(rules.guard, TimeDelta::minutes(10));
    assert_eq!(rules.groups.len(), 3);
    assert_eq!(rules.specialisations.len(), 2);
    assert!(rules.specialisations.iter().all(|s| !s.members.is_empty()));
    assert!(!rules.priority(Priority::FIFTH).route);
    let first = rules.priority(Priority::FIRST);
    assert_eq!(
        first.task.as_ref().unwrap().deadline,
        TimeDelta::minutes(15)
    );
    assert!(!first.pause);
    assert_eq!(rules.fresh_for, TimeDelta::minutes(2));
}

#[test]
fn a_minimal_file_reads() {
    let (rules, problems) = check_text(ROUTING);
    assert!(problems.is_empty(), "{problems:?}");
    let rules = rules.unwrap();
    assert_eq!(rules.groups[0].overflow, Some(Fallback::Group(1)));
    assert_eq!(rules.groups[1].overflow, Some(Fallback::GroupLead));
    assert_eq!(rules.specialisations[0].members, vec![0]);
}

#[test]
fn an_unknown_field_in_a_condition_is_placed_with_a_hint() {
    let p = one_problem(&ROUTING.replace("field = \"budget\"", "field = \"budjet\""));
    assert_eq!(p.line, Some(5));
    assert_eq!(p.hint.as_deref(), Some("did you mean `budget`?"));
}

#[test]
fn a_misspelt_key_names_the_line_and_the_key_meant() {
    let p = one_problem(&ROUTING.replace("overflow = \"Средняя\"", "overfow = \"Средняя\""));
    assert_eq!(p.line, Some(7));
    assert_eq!(p.hint.as_deref(), Some("did you mean `overflow`?"));
}

#[test]
fn groups_and_overflow_name_what_exists() {
    let p = one_problem(&ROUTING.replace("overflow = \"Средняя\"", "overflow = \"Среднея\""));
    assert_eq!(p.line, Some(7));
    assert_eq!(p.hint.as_deref(), Some("did you mean `Средняя`?"));
    let p = one_problem(&ROUTING.replace("name = \"Младшая\"", "name = \"Младшия\""));
    assert_eq!(p.line, Some(4));
    // Without a lead in managers.toml, the middle group cannot overflow to its lead.
    let (_, problems) = check_with(&MANAGERS.replace("lead = 2\n", ""), ROUTING);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, Some(12));
    assert!(
        problems[0].message.contains("names none"),
        "{}",
        problems[0].message
    );
}

#[test]
fn a_circle_of_overflow_and_unreachable_groups_are_refused() {
    let circle = ROUTING.replace("overflow = \"руководитель\"", "overflow = \"Младшая\"");
    let p = one_problem(&circle);
    assert!(p.message.contains("circle"), "{}", p.message);
    let no_rest = ROUTING.replace(
        "name = \"Средняя\"\n",
        "name = \"Средняя\"\nwhen = { field = \"budget\", ge = 100000 }\n",
    );
    let (_, problems) = check_text(&no_rest);
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("would never be routed")),
        "{problems:?}"
    );
    let unreachable = ROUTING.replace("when = { field = \"budget\", lt = 100000 }\n", "");
    let p = one_problem(&unreachable);
    assert!(
        p.message.contains("no lead reaches group `Средняя`"),
        "{}",
        p.message
    );
}

#[test]
fn priorities_follow_the_seed() {
    let p = one_problem(&format!("{ROUTING}\n[priority.5]\nroute = true\n"));
    assert!(p.message.contains("never routed"), "{}", p.message);
    let p = one_problem(&ROUTING.replace("deadline = \"15m\"", "deadline = \"1bd\""));
    assert!(p.message.contains("wall-clock"), "{}", p.message);
    let p = one_problem(&ROUTING.replace("deadline = \"15m\"\n", ""));
    assert!(
        p.message.contains("both `task` and `deadline`"),
        "{}",
        p.message
    );
}

#[test]
fn a_specialisation_nobody_has_is_refused_with_the_near_name() {
    let p = one_problem(&ROUTING.replace(
        "name = \"Газовые электростанции\"",
        "name = \"Газовые электростанци\"",
    ));
    assert_eq!(p.line, Some(15));
    assert_eq!(
        p.hint.as_deref(),
        Some("did you mean `Газовые электростанции`?")
    );
}
