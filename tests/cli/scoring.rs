//! `train` and `score` as a head of sales (or the analyst) runs them: a CSV export in, the
//! measurement printed, a model written, leads scored with their reasons.

use std::path::Path;

use chrono::{TimeZone, Utc};
use sales_robot::domain::scoring::Value;
use sales_robot::synth::{FEATURES, Generator};

use crate::process::{Backend, Robot};

/// Writes `months × per_month` synthetic past leads as the CRM export `train` reads.
fn export(path: &Path, months: u32, per_month: usize) {
    let mut generator =
        Generator::new(11, Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(), 12.0);
    let mut text = format!("created_at,{},budget,won\n", FEATURES.join(","));
    for s in generator.leads(months, per_month) {
        let cells: Vec<String> = s
            .lead
            .observation
            .iter()
            .map(|v| match v {
                Some(Value::Category(c)) => c.clone(),
                Some(Value::Number(n)) => n.to_string(),
                None => String::new(),
            })
            .collect();
        text.push_str(&format!(
            "{},{},{},{}\n",
            s.lead.created_at.to_rfc3339(),
            cells.join(","),
            s.lead.budget.unwrap(),
            s.lead.won
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn train_measures_and_writes_a_model_that_score_uses() {
    let robot = Robot::new(Backend::Sqlite);
    let deals = robot.dir.path().join("deals.csv");
    export(&deals, 12, 400);
    let out = robot.run(&["train", "--deals", deals.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let printed = stdout(&out);
    for expected in ["AUC", "Brier", "log loss", "decile", "actual/expected"] {
        assert!(
            printed.contains(expected),
            "`{expected}` missing from:\n{printed}"
        );
    }
    let model = robot.dir.path().join("scoring-model.json");
    assert!(
        model.exists(),
        "the model goes to the data folder by default"
    );

    let leads = robot.dir.path().join("leads.csv");
    std::fs::write(
        &leads,
        "id,site,channel,category,brand,client_type,activity,profile,turnover,history_requests,history_won_share,budget,tags\n\
         big,weld-pro.ru,почта,Сварочное оборудование,Сварог,Юрлицо,производство,профильная,200000000,3,1,900000,\n\
         small,elektrody.shop,WhatsApp,Расходные материалы,Ресанта,Физлицо,,,,0,,3000,\n\
         spam,weld-pro.ru,почта,Сварочное оборудование,Сварог,Юрлицо,производство,профильная,200000000,3,1,900000,спам\n\
         new-brand,новый-сайт.рф,почта,Генераторы,Неведомый бренд,Юрлицо,услуги,,,0,,,\n",
    )
    .unwrap();
    let scored = robot.dir.path().join("scored.csv");
    let out = robot.run(&[
        "score",
        "--leads",
        leads.to_str().unwrap(),
        "--out",
        scored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&scored).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    assert!(
        header.ends_with("tags,probability,expected_profit,priority,reasons"),
        "{header}"
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| sales_robot::adapters::csv::fields(l, ',').unwrap())
        .collect();
    let row = |id: &str| rows.iter().find(|r| r[0] == id).unwrap().clone();
    let p = |id: &str| row(id)[13].parse::<f64>().unwrap();
    let priority = |id: &str| row(id)[15].clone();
    let reasons = |id: &str| row(id)[16].clone();

    assert!(p("big") > 0.5 && p("big") < 1.0, "{}", p("big"));
    assert!(p("small") < 0.25 && p("small") > 0.0, "{}", p("small"));
    assert_eq!(priority("big"), "1");
    assert_eq!(
        priority("small"),
        "5",
        "a person buying consumables for 3 000 ₽ is refused"
    );
    assert!(
        reasons("small").contains("Физлицо с мелкой покупкой"),
        "{}",
        reasons("small")
    );
    assert_eq!(priority("spam"), "5");
    assert!(
        reasons("spam").starts_with("отказ: Спам"),
        "{}",
        reasons("spam")
    );
    // An unseen site and brand and no budget: scored, not 0 % or 100 %, and said so.
    let unseen = p("new-brand");
    assert!(unseen > 0.02 && unseen < 0.9, "{unseen}");
    assert!(
        reasons("new-brand").contains("бюджет не указан"),
        "{}",
        reasons("new-brand")
    );
    assert!(reasons("big").contains('↑'), "{}", reasons("big"));
}

#[test]
fn too_little_data_and_a_missing_column_are_clear_errors() {
    let robot = Robot::new(Backend::Sqlite);
    let deals = robot.dir.path().join("deals.csv");
    export(&deals, 1, 50);
    let out = robot.run(&["train", "--deals", deals.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("50 past leads are too few"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        &deals,
        "created_at,site,budget,won\n2025-01-01,a.ru,1000,1\n",
    )
    .unwrap();
    let out = robot.run(&["train", "--deals", deals.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no column `channel`"),
        "{}",
        stderr(&out)
    );

    let leads = robot.dir.path().join("leads.csv");
    std::fs::write(&leads, "site\nx\n").unwrap();
    let out = robot.run(&["score", "--leads", leads.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no trained model"),
        "{}",
        stderr(&out)
    );
}

/// `train --from-crm`: the won and lost leads of the account, read through its API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_from_the_crm_reads_the_closed_leads() {
    use crate::support::amocrm::{self as emu, AmoEmulator, NewLead};
    let amo = AmoEmulator::start().await;
    let start = Utc
        .with_ymd_and_hms(2025, 3, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let brands = ["Сварог", "Fubag", "Kemppi"];
    for i in 0..30i64 {
        let won = i % 3 != 0;
        let mut lead = NewLead::new(&format!("Заявка {i}"))
            .price(50_000 + i * 1_000)
            .field(
                emu::FIELD_BRAND,
                serde_json::json!(brands[(i % 3) as usize]),
            );
        lead.status_id = if won {
            emu::STATUS_WON
        } else {
            emu::STATUS_LOST
        };
        lead.created_at = Some(start + i * 86_400);
        lead.updated_at = Some(start + i * 86_400 + 3_600);
        amo.seed_lead(lead);
    }
    // One open lead: it has no outcome to learn from.
    amo.seed_lead(NewLead::new("Открытая"));

    // The shipped rules, with the least data lowered for a small account.
    let mut robot = Robot::new(Backend::Sqlite);
    let config = robot.dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    for file in ["robot.toml", "scoring.toml"] {
        let text =
            std::fs::read_to_string(crate::process::repo().join("config").join(file)).unwrap();
        let text = text
            .replace("min_leads = 500", "min_leads = 20")
            .replace("min_won = 30", "min_won = 5");
        std::fs::write(config.join(file), text).unwrap();
    }
    robot.env.extend([
        ("ROBOT_CONFIG_DIR".to_owned(), config.display().to_string()),
        (
            "ROBOT_AMOCRM_BASE_URL".to_owned(),
            amo.base_url().to_owned(),
        ),
        ("ROBOT_AMOCRM_TOKEN".to_owned(), amo.long_lived_token()),
    ]);
    let out = tokio::task::spawn_blocking(move || {
        let out = robot.run(&["train", "--from-crm", "--since", "2025-01-01"]);
        (out, robot)
    })
    .await
    .unwrap();
    let (out, robot) = out;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("31 leads created since 2025-01-01, 30 of them won or lost"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("learned from all 30 leads"),
        "{}",
        stdout(&out)
    );
    assert!(robot.dir.path().join("scoring-model.json").exists());
}

/// `score --lead ID`: one lead of the CRM, explained, and nothing written to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_lead_explains_one_lead_of_the_crm() {
    use crate::support::amocrm::{self as emu, AmoEmulator, NewLead};
    let amo = AmoEmulator::start().await;
    let company = amo.seed_company("ООО Металлоконструкции");
    let lead = amo.seed_lead(
        NewLead::new("Сварочные полуавтоматы")
            .price(400_000)
            .company(company)
            .field(emu::FIELD_BRAND, serde_json::json!("Сварог")),
    );
    let mut robot = Robot::new(Backend::Sqlite);
    robot.env.extend([
        (
            "ROBOT_AMOCRM_BASE_URL".to_owned(),
            amo.base_url().to_owned(),
        ),
        ("ROBOT_AMOCRM_TOKEN".to_owned(), amo.long_lived_token()),
    ]);
    let deals = robot.dir.path().join("deals.csv");
    export(&deals, 12, 300);
    let out = tokio::task::spawn_blocking(move || {
        let trained = robot.run(&["train", "--deals", deals.to_str().unwrap()]);
        assert!(trained.status.success(), "{}", stderr(&trained));
        robot.run(&["score", "--lead", &lead.to_string()])
    })
    .await
    .unwrap();
    let printed = stdout(&out);
    assert!(out.status.success(), "{printed}{}", stderr(&out));
    assert!(printed.contains("«Сварочные полуавтоматы»"), "{printed}");
    assert!(printed.contains("expected profit"), "{printed}");
    assert!(printed.contains("400 000 ₽"), "{printed}");
    assert!(printed.contains("margin 22 %"), "{printed}");
    assert!(
        printed.contains("Бренд") && printed.contains("Сварог"),
        "{printed}"
    );
    assert!(
        printed.contains("Клиент") && printed.contains("Юрлицо"),
        "{printed}"
    );
    let writes = amo.requests().iter().filter(|r| r.method != "GET").count();
    assert_eq!(writes, 0, "explaining writes nothing");
}
