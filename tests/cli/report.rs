//! `report forecast|plans|channels` on a ledger seeded through the store, as the head of
//! sales runs them: the printed tables, the CSV files, and the mistakes a person makes.

use std::process::Output;

use chrono::{DateTime, Utc};
use sales_robot::domain::ledger::{Outcome, Scored};
use sales_robot::domain::priority::Priority;

use crate::process::{Backend, Robot};

struct Lead {
    id: &'static str,
    created_at: &'static str,
    manager: Option<&'static str>,
    source: &'static str,
    channel: &'static str,
    priority: u8,
    forecast: f64,
    expected: f64,
    /// `Some(profit)` won, `Some(0.0)` with `lost` set lost, `None` open.
    won: Option<f64>,
    lost: bool,
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const LEADS: &[Lead] = &[
    Lead {
        id: "1001",
        created_at: "2026-11-01T00:00:00Z",
        manager: Some("8123456"),
        source: "svarka.ru",
        channel: "whatsapp",
        priority: 1,
        forecast: 400_000.0,
        expected: 500_000.0,
        won: Some(420_000.0),
        lost: false,
    },
    Lead {
        id: "1002",
        created_at: "2026-11-05T10:00:00Z",
        manager: Some("8123456"),
        source: "svarka.ru",
        channel: "email",
        priority: 2,
        forecast: 300_000.0,
        expected: 300_000.0,
        won: None,
        lost: true,
    },
    Lead {
        id: "1003",
        created_at: "2026-11-12T12:00:00Z",
        manager: Some("8123457"),
        source: "Сварка, Москва",
        channel: "phone",
        priority: 3,
        forecast: 200_000.0,
        expected: 250_000.0,
        won: Some(190_000.0),
        lost: false,
    },
    Lead {
        id: "1004",
        created_at: "2026-11-30T23:59:59Z",
        manager: None,
        source: "svarka.ru",
        channel: "whatsapp",
        priority: 5,
        forecast: 100_000.0,
        expected: 100_000.0,
        won: None,
        lost: false,
    },
    // Outside November: they count in no figure below.
    Lead {
        id: "0999",
        created_at: "2026-10-31T23:59:59Z",
        manager: Some("8123456"),
        source: "svarka.ru",
        channel: "whatsapp",
        priority: 1,
        forecast: 1_000_000.0,
        expected: 1_000_000.0,
        won: Some(1_000_000.0),
        lost: false,
    },
    Lead {
        id: "1005",
        created_at: "2026-12-01T00:00:00Z",
        manager: Some("8123457"),
        source: "svarka.ru",
        channel: "email",
        priority: 2,
        forecast: 1_000_000.0,
        expected: 1_000_000.0,
        won: None,
        lost: false,
    },
];

/// Writes the ledger through the library, as the robot's scoring will.
async fn seed(robot: &Robot) {
    let store = robot.store().await;
    for lead in LEADS {
        let created_at = at(lead.created_at);
        store
            .record_score(&Scored {
                lead_id: lead.id.into(),
                created_at,
                scored_at: created_at,
                manager_id: lead.manager.map(Into::into),
                channel: Some(lead.channel.into()),
                source: Some(lead.source.into()),
                budget: lead.forecast * 5.0,
                probability: 0.5,
                expected_profit: lead.expected,
                forecast_profit: lead.forecast,
                priority: Priority::new(lead.priority).unwrap(),
            })
            .await
            .unwrap();
        if lead.won.is_some() || lead.lost {
            store
                .record_outcome(&Outcome {
                    lead_id: lead.id.into(),
                    closed_at: created_at + chrono::Duration::days(2),
                    won: lead.won.is_some(),
                    profit: lead.won.unwrap_or(0.0),
                })
                .await
                .unwrap();
        }
    }
    // An outcome of a lead never scored belongs to no month.
    store
        .record_outcome(&Outcome {
            lead_id: "2000".into(),
            closed_at: at("2026-11-15T00:00:00Z"),
            won: true,
            profit: 5_000_000.0,
        })
        .await
        .unwrap();
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The columns of the printed line whose first columns are `first`; columns are separated
/// by at least two spaces.
fn columns(table: &str, first: &[&str]) -> Vec<String> {
    let split = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    table
        .lines()
        .map(split)
        .find(|cols| cols.starts_with(&first.iter().map(|f| f.to_string()).collect::<Vec<_>>()))
        .unwrap_or_else(|| panic!("no line starts with {first:?} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_reports_add_up_the_months_ledger() {
    let robot = Robot::new(Backend::Sqlite);
    seed(&robot).await;
    let dir = robot.dir.path().to_owned();
    let spend = dir.join("spend.csv");
    std::fs::write(
        &spend,
        "source,channel,spend\nsvarka.ru,whatsapp,150000\n\"Сварка, Москва\",,50 000\nyandex-direct,search,30000\n",
    )
    .unwrap();
    let robot = std::sync::Arc::new(robot);
    let r = robot.clone();
    let (forecast, forecast_csv, plans, plans_csv, channels) =
        tokio::task::spawn_blocking(move || {
            let csv = |name: &str| dir.join(name).display().to_string();
            let forecast = stdout(&r.run(&["report", "forecast", "--month", "2026-11"]));
            let forecast_csv =
                stdout(&r.run(&["report", "forecast", "--month", "2026-11", "--csv", "-"]));
            let plans = stdout(&r.run(&[
                "report",
                "plans",
                "--month",
                "2026-11",
                "--csv",
                &csv("plans.csv"),
            ]));
            let plans_csv = std::fs::read_to_string(csv("plans.csv")).unwrap();
            let channels = stdout(&r.run(&[
                "report",
                "channels",
                "--month",
                "2026-11",
                "--spend",
                spend.to_str().unwrap(),
                "--csv",
                &csv("channels.csv"),
            ]));
            (forecast, forecast_csv, plans, plans_csv, channels)
        })
        .await
        .unwrap();

    // The forecast: 4 November leads, 1 000 000 forecast, 420 000 + 190 000 won.
    assert_eq!(
        columns(&forecast, &["2026-11"]),
        [
            "2026-11",
            "4",
            "1 000 000 ₽",
            "610 000 ₽",
            "61,0 %",
            "2",
            "1",
            "1",
            "100 000 ₽"
        ],
        "{forecast}"
    );
    assert!(forecast.contains("Факт / прогноз"), "{forecast}");
    assert_eq!(
        forecast_csv,
        "Месяц,Лидов,Прогноз,Факт,Факт / прогноз,Выиграно,Проиграно,В работе,Прогноз по открытым\n\
         2026-11,4,1000000.00,610000.00,61.0,2,1,1,100000.00\n"
    );

    // The plans: the biggest plan first, nobody's leads under their own name, a total.
    let order: Vec<String> = ["8123456", "8123457", "без менеджера", "Итого"]
        .iter()
        .map(|who| columns(&plans, &[who]).join(" | "))
        .collect();
    assert_eq!(
        order,
        [
            "8123456 | 2 | 700 000 ₽ | 420 000 ₽ | 60,0 %",
            "8123457 | 1 | 200 000 ₽ | 190 000 ₽ | 95,0 %",
            "без менеджера | 1 | 100 000 ₽ | 0 ₽ | 0,0 %",
            "Итого | 4 | 1 000 000 ₽ | 610 000 ₽ | 61,0 %",
        ],
        "{plans}"
    );
    let at = |who: &str| plans.find(who).unwrap();
    assert!(at("8123456") < at("8123457") && at("8123457") < at("без менеджера"));
    assert_eq!(
        plans_csv,
        "Менеджер,Лидов,План,Факт,Факт / план\n\
         8123456,2,700000.00,420000.00,60.0\n\
         8123457,1,200000.00,190000.00,95.0\n\
         без менеджера,1,100000.00,0.00,0.0\n\
         Итого,4,1000000.00,610000.00,61.0\n"
    );

    // The channels: a line per source and channel, the whole-source spend on one line, the
    // money spent on a campaign that brought no lead, and the return on the money.
    assert_eq!(
        columns(&channels, &["svarka.ru", "whatsapp"]),
        [
            "svarka.ru",
            "whatsapp",
            "2",
            "500 000 ₽",
            "0 ₽",
            "0 ₽",
            "0 ₽",
            "100 000 ₽",
            "600 000 ₽",
            "420 000 ₽",
            "150 000 ₽",
            "4,00"
        ],
        "{channels}"
    );
    let channels_csv = std::fs::read_to_string(robot.dir.path().join("channels.csv")).unwrap();
    assert_eq!(
        channels_csv,
        "Источник,Канал,Лидов,П1,П2,П3,П4,П5,Ожидаемая прибыль,Факт,Расход,Прибыль на 1 ₽\n\
         svarka.ru,email,1,0.00,300000.00,0.00,0.00,0.00,300000.00,0.00,,\n\
         svarka.ru,whatsapp,2,500000.00,0.00,0.00,0.00,100000.00,600000.00,420000.00,150000.00,4.00\n\
         yandex-direct,search,0,0.00,0.00,0.00,0.00,0.00,0.00,0.00,30000.00,0.00\n\
         \"Сварка, Москва\",все каналы,1,0.00,0.00,250000.00,0.00,0.00,250000.00,190000.00,50000.00,5.00\n\
         Итого,,4,500000.00,300000.00,250000.00,0.00,100000.00,1150000.00,610000.00,230000.00,3.70\n",
        "{channels}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_month_or_spend_file_says_what_is_wrong() {
    let robot = Robot::new(Backend::Sqlite);
    let spend = robot.dir.path().join("spend.csv");
    std::fs::write(
        &spend,
        "source,channel,spend\nsvarka.ru,whatsapp,150000\nyandex-direct,search,30 тыс\n",
    )
    .unwrap();
    let (month, spend_out) = tokio::task::spawn_blocking(move || {
        let month = robot.run(&["report", "plans", "--month", "11.2026"]);
        let spend_out = robot.run(&[
            "report",
            "channels",
            "--month",
            "2026-11",
            "--spend",
            spend.to_str().unwrap(),
        ]);
        (month, spend_out)
    })
    .await
    .unwrap();
    assert!(!month.status.success());
    let stderr = String::from_utf8_lossy(&month.stderr);
    assert!(
        stderr.contains("a month is written YYYY-MM, such as 2026-11, not \"11.2026\""),
        "{stderr}"
    );
    assert!(!spend_out.status.success());
    let stderr = String::from_utf8_lossy(&spend_out.stderr);
    assert!(
        stderr.contains("spend.csv:3: the spend \"30 тыс\" is not a number of roubles"),
        "{stderr}"
    );
}
