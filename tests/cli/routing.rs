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

/// `route --lead ID --dry-run`: the lead read from the CRM, presence and loads from the
/// store; who would get it, and every manager with the rule that keeps them out. Nothing is
/// written anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_dry_run_names_the_manager_and_why_not_the_others() {
    use crate::support::amocrm::{AmoEmulator, NewLead};
    use sales_robot::adapters::store::Claim;
    use sales_robot::domain::presence::{Presence, PresenceState};

    let amo = AmoEmulator::start().await;
    // A small budget: the junior group (Анна, Дмитрий, Кирилл).
    let lead = amo.seed_lead(NewLead::new("Электроды на объект").price(50_000));
    let mut robot = Robot::new(Backend::Sqlite);
    robot.env.extend([
        (
            "ROBOT_AMOCRM_BASE_URL".to_owned(),
            amo.base_url().to_owned(),
        ),
        ("ROBOT_AMOCRM_TOKEN".to_owned(), amo.long_lived_token()),
    ]);
    let store = robot.store().await;
    let heard = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:59:00+03:00").unwrap();
    for (id, state) in [
        ("8123401", PresenceState::Online),
        ("8123402", PresenceState::Offline),
    ] {
        store
            .set_presence(&Presence {
                manager_id: id.into(),
                state,
                at: heard,
            })
            .await
            .unwrap();
    }
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    for (i, expected) in [0, 1].into_iter().enumerate() {
        let claim = store
            .claim_lead(day, &format!("earlier-{i}"), "8123401", expected)
            .await
            .unwrap();
        assert_eq!(claim, Claim::Claimed);
    }
    let id = lead.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let out = robot.run(&[
            "route",
            "--lead",
            &id,
            "--dry-run",
            "--at",
            "2026-11-23T11:00:00+03:00",
        ]);
        (robot, out)
    })
    .await
    .unwrap();
    let (robot, out) = out;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("«Электроды на объект»"), "{stdout}");
    assert!(stdout.contains("priority 3: not scored"), "{stdout}");
    assert!(stdout.contains("group «Младшая»"), "{stdout}");
    assert!(
        stdout.contains("would go to Анна Соколова (id 8123401)"),
        "{stdout}"
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no roll-call line for {name}:\n{stdout}"))
            .to_owned()
    };
    assert!(
        line("Анна Соколова").contains("today   2  can take it"),
        "{stdout}"
    );
    assert!(
        line("Дмитрий Орлов").contains("excluded: не в сети"),
        "{stdout}"
    );
    assert!(
        line("Кирилл Зайцев").contains("excluded: нет сигнала присутствия"),
        "{stdout}"
    );
    assert!(line("Сергей Морозов").contains("other group"), "{stdout}");
    let writes = amo.requests().iter().filter(|r| r.method != "GET").count();
    assert_eq!(writes, 0, "a dry run writes nothing to the CRM");
    assert_eq!(store.loads(day).await.unwrap()["8123401"], 2);
    assert!(store.pending().await.unwrap().is_empty());

    // Without --dry-run the lead is handed out: responsible, first task, note.
    amo.add_user(8123401, "Анна Соколова");
    let id = lead.to_string();
    let out = tokio::task::spawn_blocking(move || {
        robot.run(&["route", "--lead", &id, "--at", "2026-11-23T11:00:00+03:00"])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("given to 8123401"), "{stdout}");
    assert_eq!(amo.lead(lead).unwrap()["responsible_user_id"], 8123401);
    assert_eq!(amo.notes_of(lead).len(), 1);
    assert_eq!(store.loads(day).await.unwrap()["8123401"], 3);
}
