//! `simulate day` on the shipped roster and rules, and `check-config` on a broken roster.

use crate::process::{Backend, Robot, repo};

#[test]
fn a_simulated_day_breaks_no_rule_and_prints_every_manager() {
    let robot = Robot::new(Backend::Sqlite);
    let out = robot.run(&["simulate", "day", "--leads", "500", "--seed", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("нарушений правил: 0\n"), "{stdout}");
    assert!(stdout.contains("лидов: 500"), "{stdout}");
    let roster = std::fs::read_to_string(repo().join("config/managers.toml")).unwrap();
    let names: Vec<&str> = roster
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| n.contains(' '))
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    for name in names {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{stdout}"));
        assert!(
            line.split_whitespace().count() >= 7,
            "the line of {name} lacks figures: {line}"
        );
    }
    // The same seed gives the same day.
    let again = robot.run(&["simulate", "day", "--leads", "500", "--seed", "1"]);
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.starts_with("время:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&stdout),
        strip(&String::from_utf8_lossy(&again.stdout))
    );
}

#[test]
fn check_config_places_a_mistake_in_managers_toml() {
    let robot = Robot::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    for file in ["robot.toml", "scoring.toml", "routing.toml"] {
        std::fs::copy(repo().join("config").join(file), dir.path().join(file)).unwrap();
    }
    let shipped = std::fs::read_to_string(repo().join("config/managers.toml")).unwrap();
    let broken = shipped.replacen("group = \"Средняя\"", "group = \"Средная\"", 1);
    std::fs::write(dir.path().join("managers.toml"), &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("Средная")).unwrap() + 1;
    let out = robot.run(&["check-config", "--config", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("managers.toml:{line}:")),
        "{stdout}"
    );
    assert!(stdout.contains("did you mean `Средняя`"), "{stdout}");
}
