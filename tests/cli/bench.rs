//! `bench leads`: the synthetic leads file the scoring benchmark compares models on; `bench
//! chains`: every step of its chains run once through Redis.

use chrono::{DateTime, Datelike, Utc};
use sales_robot::adapters::{csv, leads_file};
use sales_robot::synth;

use crate::process::{Backend, Robot};

fn written(robot: &Robot, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let path = robot.dir.path().join(name);
    let mut args = vec!["bench", "leads", "--out", path.to_str().unwrap()];
    args.extend(extra);
    let out = robot.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn bench_leads_writes_a_year_that_train_can_read_and_the_next_one() {
    let robot = Robot::new(Backend::Sqlite);
    let path = written(&robot, "train.csv", &["--months", "3", "--per-month", "7"]);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert_eq!(
        header,
        format!(
            "created_at,{},budget,won,true_chance",
            synth::FEATURES.join(",")
        )
    );
    let rows: Vec<Vec<String>> = lines.map(|l| csv::fields(l, ',').unwrap()).collect();
    assert_eq!(rows.len(), 21);
    let width = synth::FEATURES.len() + 4;
    for row in &rows {
        assert_eq!(row.len(), width, "{row:?}");
        let at: DateTime<Utc> = DateTime::parse_from_rfc3339(&row[0]).unwrap().into();
        assert!(row[0].ends_with('Z'), "{}", row[0]);
        assert_eq!(at.year(), 2024);
        assert!(at.month() <= 3, "{at}");
        assert!(["0", "1"].contains(&row[width - 2].as_str()), "{row:?}");
        let chance: f64 = row[width - 1].parse().unwrap();
        assert!(chance > 0.0 && chance < 1.0, "{chance}");
    }

    // The robot's own reader takes it as past leads with the shipped features.
    let leads = leads_file::read(&path)
        .unwrap()
        .past_leads(&synth::features())
        .unwrap();
    assert_eq!(leads.len(), 21);
    assert!(leads.iter().all(|l| l.budget.is_some_and(|b| b > 0.0)));
    assert!(
        leads.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "oldest first"
    );

    // The next year, with lifetime values: the won amount instead of 1.
    let next = written(
        &robot,
        "next.csv",
        &[
            "--leads",
            "40",
            "--offset-months",
            "12",
            "--seed",
            "8",
            "--lifetime",
        ],
    );
    let leads = leads_file::read(&next)
        .unwrap()
        .past_leads(&synth::features())
        .unwrap();
    assert_eq!(leads.len(), 40);
    assert!(leads.iter().all(|l| l.created_at.year() == 2025));
    assert!(leads.iter().any(|l| l.is_won()));
    assert!(
        leads.iter().all(|l| !l.is_won() || l.won >= 500.0),
        "a won lead brings at least its budget"
    );
}

#[test]
fn bench_chains_runs_every_step_once_through_redis() {
    let robot = Robot::new(Backend::Sqlite);
    let redis = crate::process::redis_url();
    let out = robot.run(&[
        "bench",
        "chains",
        "--enrolments",
        "200",
        "--spread",
        "1",
        "--redis",
        &redis,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("200 enrolments × 4 steps"), "{stdout}");
    assert!(stdout.contains("800 steps in "), "{stdout}");
    assert!(stdout.contains("steps/s"), "{stdout}");
    assert!(stdout.contains("p50") && stdout.contains("p99"), "{stdout}");
    assert!(
        stdout.contains("records: 800 done of 800 expected; CRM actions: 800, 800 distinct steps, 0 acted more than once"),
        "{stdout}"
    );
    assert!(
        stdout.contains("check: every step ran exactly once"),
        "{stdout}"
    );
    assert!(stdout.contains("not the CRM"), "{stdout}");

    // Its namespace is gone afterwards.
    let client = redis::Client::open(redis).unwrap();
    let mut conn = client.get_connection().unwrap();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("bench-chains-*")
        .query(&mut conn)
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
