//! `replay`: dry-run over the fixtures, and a live replay against a running robot.

use std::collections::BTreeSet;

use crate::process::{Backend, Robot, repo, terminate};

fn fixture_files(folder: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("fixtures").join(folder))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "form" || x == "json"))
        .map(|p| p.display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn dry_run_prints_every_event_kind_from_the_fixtures() {
    let robot = Robot::new(Backend::Sqlite);
    let mut args = vec!["replay".to_owned(), "--dry-run".to_owned()];
    for folder in ["amocrm", "bitrix24", "wazzup", "presence"] {
        args.extend(fixture_files(folder));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = robot.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut kinds = BTreeSet::new();
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["source", "kind", "entity_id", "dedup_key"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        kinds.insert(v["kind"].as_str().unwrap().to_owned());
    }
    for kind in [
        "lead_created",
        "lead_updated",
        "lead_status_changed",
        "lead_responsible_changed",
        "lead_deleted",
        "contact_created",
        "contact_updated",
        "company_created",
        "company_updated",
        "note_added",
        "task_changed",
        "unsorted_created",
        "client_replied",
        "message_status",
        "presence_changed",
    ] {
        assert!(
            kinds.contains(kind),
            "no fixture yields `{kind}`; got {kinds:?}"
        );
    }
}

#[test]
fn dry_run_says_why_a_bad_body_would_be_refused() {
    let robot = Robot::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let amocrm = dir.path().join("amocrm");
    std::fs::create_dir(&amocrm).unwrap();
    std::fs::copy(
        repo().join("fixtures/bad/amocrm_lead_without_id.form"),
        amocrm.join("bad.form"),
    )
    .unwrap();
    let out = robot.run(&[
        "replay",
        "--dry-run",
        amocrm.join("bad.form").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("leads[add][0][id]"), "{stderr}");
    let out = robot.run(&[
        "replay",
        "--dry-run",
        repo()
            .join("fixtures/bad/not_a_form.form")
            .to_str()
            .unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("names no route")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_posts_the_fixtures_to_a_running_robot() {
    let mut robot = Robot::new(Backend::Sqlite);
    robot
        .env
        .push(("ROBOT_PRESENCE_TOKEN".into(), "cli-presence".into()));
    robot.env.push((
        "ROBOT_BITRIX24_APP_TOKEN".into(),
        "b24-demo-application-token".into(),
    ));
    let mut child = robot.serve(&robot.dir.path().join("serve.log"));
    let mut args = vec!["replay".to_owned(), "--to".to_owned(), robot.base()];
    for folder in ["amocrm", "bitrix24", "wazzup", "presence"] {
        args.extend(fixture_files(folder));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = robot.run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" -> 200 ")).count(),
        args.len() - 3,
        "{stdout}"
    );
    assert!(terminate(&mut child, 30).success());
}
