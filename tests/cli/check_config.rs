//! `check-config` and `serve` on a good and a bad config.

use crate::process::{Backend, Robot, repo};

#[test]
fn the_shipped_config_is_ok() {
    let robot = Robot::new(Backend::Sqlite);
    let out = robot.run(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8(out.stdout).unwrap().contains("ok"));
}

#[test]
fn a_typo_names_the_file_the_line_and_the_fix_and_serve_refuses_to_start() {
    let robot = Robot::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(repo().join("config/robot.toml")).unwrap();
    let broken = shipped.replace("listen = \"127.0.0.1:8080\"", "lisen = \"127.0.0.1:8080\"");
    std::fs::write(dir.path().join("robot.toml"), &broken).unwrap();
    let line = broken.lines().position(|l| l.starts_with("lisen")).unwrap() + 1;
    let config = dir.path().to_str().unwrap();

    let out = robot.run(&["check-config", "--config", config]);
    assert!(!out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(&format!("robot.toml:{line}:")), "{stdout}");
    assert!(stdout.contains("did you mean `listen`"), "{stdout}");

    let out = robot.run(&["serve", "--config", config]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("robot.toml:{line}:")), "{stderr}");
}

#[test]
fn dead_list_on_a_fresh_store_says_there_are_none() {
    let robot = Robot::new(Backend::Sqlite);
    let out = robot.run(&["dead", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("no dead letters")
    );
    let out = robot.run(&["dead", "retry", "42"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no dead letter with id 42")
    );
}
