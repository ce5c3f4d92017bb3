use std::path::Path;

use super::*;

fn load_text(text: &str) -> Result<Option<ScoringRules>, Vec<Problem>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
    let fields = [
        "score".to_owned(),
        "priority".to_owned(),
        "expected_profit".to_owned(),
    ];
    load(dir.path(), Some(&fields))
}

fn one_problem(text: &str) -> Problem {
    let mut problems = load_text(text).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    problems.remove(0)
}

const MINIMAL: &str = r#"
[[features]]
name = "brand"
kind = "category"
field = "brand"

[margins]
default = 0.18

[priority.thresholds]
1 = 60000
2 = 20000
3 = 6000
4 = 1500

[report]
channel = "brand"
source = "brand"
"#;

#[test]
fn the_shipped_file_declares_the_seed_s_features() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let fields: Vec<String> = [
        "site",
        "channel",
        "category",
        "brand",
        "score",
        "priority",
        "expected_profit",
    ]
    .map(String::from)
    .to_vec();
    let rules = load(&dir, Some(&fields)).unwrap().unwrap();
    assert_eq!(rules.features, crate::synth::features());
    assert_eq!(rules.margins.of_brand(Some("Сварог")), 0.22);
    assert_eq!(rules.margins.of_brand(Some("Неизвестный")), 0.18);
    assert_eq!(
        rules.priority.thresholds,
        [60000.0, 20000.0, 6000.0, 1500.0]
    );
    assert_eq!(rules.priority.refusals.len(), 8);
    assert_eq!(rules.training.half_life_days, Some(365.0));
    assert_eq!(
        rules
            .write
            .tag(crate::domain::priority::Priority::FIRST)
            .as_deref(),
        Some("Приоритет 1")
    );
}

#[test]
fn a_minimal_file_loads_and_no_file_means_no_scoring() {
    let rules = load_text(MINIMAL).unwrap().unwrap();
    assert_eq!(rules.features.len(), 1);
    assert_eq!(rules.training.learn, Learn::Sale);
    let empty = tempfile::tempdir().unwrap();
    assert!(load(empty.path(), None).unwrap().is_none());
}

#[test]
fn shares_read_as_fractions_or_percents() {
    let text = MINIMAL.replace("default = 0.18", "default = \"18,5%\"");
    let rules = load_text(&text).unwrap().unwrap();
    assert!((rules.margins.default - 0.185).abs() < 1e-12);
    let p = one_problem(&MINIMAL.replace("default = 0.18", "default = \"18\""));
    assert_eq!(p.line, Some(8));
    assert!(p.message.contains("percent in quotes"), "{}", p.message);
}

#[test]
fn a_misspelt_key_names_the_line_and_the_key_meant() {
    let p = one_problem(&MINIMAL.replace("kind = \"category\"", "knd = \"category\""));
    assert_eq!(p.line, Some(4));
    assert_eq!(p.hint.as_deref(), Some("did you mean `kind`?"));
}

#[test]
fn thresholds_must_be_one_to_four_and_fall() {
    let p = one_problem(&MINIMAL.replace("2 = 20000", "2 = 90000"));
    assert!(p.message.contains("must fall"), "{}", p.message);
    let problems = load_text(&MINIMAL.replace("4 = 1500", "5 = 1500")).unwrap_err();
    assert!(
        problems[0]
            .message
            .contains("needs the expected profit for priorities 4")
    );
    assert!(
        problems[1].message.contains("not `5`"),
        "{}",
        problems[1].message
    );
}

#[test]
fn a_refusal_on_an_unknown_field_is_placed_with_a_hint() {
    let text = format!(
        "{MINIMAL}\n[[refuse]]\nname = \"Мелочь\"\nwhen = {{ field = \"budjet\", lt = 1000 }}\n"
    );
    let p = one_problem(&text);
    assert_eq!(p.line, Some(22));
    assert_eq!(p.hint.as_deref(), Some("did you mean `budget`?"));
}

#[test]
fn written_fields_must_be_mapped_in_robot_toml() {
    let text = format!("{MINIMAL}\n[crm]\nprobability = \"chance\"\n");
    let p = one_problem(&text);
    assert!(p.message.contains("does not map"), "{}", p.message);
    assert_eq!(p.line, Some(21));
}

#[test]
fn a_feature_needs_exactly_one_source() {
    let text = MINIMAL.replace("field = \"brand\"", "field = \"brand\"\ntags = [\"a\"]");
    let p = load_text(&text).unwrap_err().remove(0);
    assert!(p.message.contains("exactly one source"), "{}", p.message);
    assert_eq!(p.line, Some(2));
}
