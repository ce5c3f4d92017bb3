//! `crm lead`, `crm check` and `auth amocrm` against the amoCRM emulator.

use serde_json::json;

use crate::process::{Backend, Robot};
use crate::support::amocrm::{self as emu, AmoEmulator, NewContact, NewLead};

fn robot_on(amo: &AmoEmulator) -> Robot {
    let mut robot = Robot::new(Backend::Sqlite);
    robot
        .env
        .push(("ROBOT_AMOCRM_BASE_URL".into(), amo.base_url().to_owned()));
    robot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_lead_prints_the_lead_with_our_field_names() {
    let amo = AmoEmulator::start().await;
    let contact = amo.seed_contact(NewContact::new("Ольга Смирнова").phone("+79161234567"));
    let lead = amo.seed_lead(
        NewLead::new("Заявка с сайта")
            .price(90_000)
            .field(emu::FIELD_BRAND, json!("Сварог"))
            .contact(contact),
    );
    let mut robot = robot_on(&amo);
    robot
        .env
        .push(("ROBOT_AMOCRM_TOKEN".into(), amo.long_lived_token()));
    let out = tokio::task::spawn_blocking(move || robot.run(&["crm", "lead", &lead.to_string()]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["fields"]["brand"], "Сварог");
    assert_eq!(printed["budget"], 90000.0);
    assert_eq!(printed["contacts"][0]["phones"][0], "+79161234567");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_check_names_the_fields_the_account_lacks() {
    let amo = AmoEmulator::start().await;
    let mut robot = robot_on(&amo);
    robot
        .env
        .push(("ROBOT_AMOCRM_TOKEN".into(), amo.long_lived_token()));
    let out = tokio::task::spawn_blocking(move || robot.run(&["crm", "check"]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.contains("ok: credentials work"), "{stdout}");
    // The emulated account has the lead fields of the shipped config, not the company ones.
    assert!(!stdout.contains("«Категория»"), "{stdout}");
    assert!(stdout.contains("«ИНН»"), "{stdout}");
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_the_crm_commands_say_what_to_set() {
    let amo = AmoEmulator::start().await;
    let robot = robot_on(&amo);
    let out = tokio::task::spawn_blocking(move || robot.run(&["crm", "check"]))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ROBOT_AMOCRM_TOKEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_exchanges_a_code_and_the_robot_then_reads_with_oauth() {
    let amo = AmoEmulator::start().await;
    let lead = amo.seed_lead(NewLead::new("Заявка"));
    let client = amo.oauth_client();
    let mut robot = robot_on(&amo);
    robot
        .env
        .push(("ROBOT_AMOCRM_CLIENT_ID".into(), client.client_id.clone()));
    robot.env.push((
        "ROBOT_AMOCRM_REDIRECT_URI".into(),
        client.redirect_uri.clone(),
    ));
    robot.env.push((
        "ROBOT_AMOCRM_CLIENT_SECRET".into(),
        client.client_secret.clone(),
    ));
    let code = amo.issue_code();
    let robot = std::sync::Arc::new(robot);
    let r = robot.clone();
    let out = tokio::task::spawn_blocking(move || r.run(&["auth", "amocrm", "--code", &code]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    amo.expire_access_tokens();
    let r = robot.clone();
    let out = tokio::task::spawn_blocking(move || r.run(&["crm", "lead", &lead.to_string()]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the stored refresh token renews the access: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !logs.contains(&client.client_secret),
        "the client secret never shows"
    );
    assert_eq!(amo.refresh_reuses(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_bitrix24_crm_lead_reads_the_deal_through_the_inbound_webhook() {
    use crate::support::bitrix24::B24Emulator;
    let b24 = B24Emulator::start().await;
    let deal = b24
        .seed_deal(json!({"TITLE": "Заявка с сайта", "OPPORTUNITY": "120000", "COMPANY_ID": 11}));
    let mut robot = Robot::new(Backend::Sqlite);
    robot.env.push(("ROBOT_CRM_KIND".into(), "bitrix24".into()));
    robot
        .env
        .push(("ROBOT_BITRIX24_WEBHOOK".into(), b24.webhook_url()));
    let out = tokio::task::spawn_blocking(move || robot.run(&["crm", "lead", &deal.to_string()]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["name"], "Заявка с сайта");
    assert_eq!(printed["budget"], 120000.0);
    assert_eq!(printed["company"]["name"], "ООО Сварка-Про");
    assert!(
        !stderr.contains(&b24.webhook_code()),
        "the webhook's code never shows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_names_the_mapped_fields_the_account_lacks_at_start() {
    let amo = AmoEmulator::start().await;
    let mut robot = robot_on(&amo);
    robot
        .env
        .push(("ROBOT_AMOCRM_TOKEN".into(), amo.long_lived_token()));
    let log = robot.dir.path().join("serve.log");
    let mut child = robot.serve(&log);
    crate::process::wait_for_log(&log, "«ИНН»", 15).await;
    assert!(crate::process::terminate(&mut child, 30).success());
    let out = std::fs::read_to_string(log.with_extension("out")).unwrap();
    assert!(out.contains("CRM: amoCRM"), "{out}");
}

/// A robot on the Bitrix24 emulator as its local application, without tokens yet.
fn robot_on_b24_application(b24: &crate::support::bitrix24::B24Emulator) -> Robot {
    let (client_id, client_secret) = b24.oauth_client();
    let mut robot = Robot::new(Backend::Sqlite);
    robot.env.extend([
        ("ROBOT_CRM_KIND".into(), "bitrix24".into()),
        ("ROBOT_BITRIX24_CLIENT_ID".into(), client_id),
        ("ROBOT_BITRIX24_CLIENT_SECRET".into(), client_secret),
        ("ROBOT_BITRIX24_CLIENT_ENDPOINT".into(), b24.rest_url()),
        ("ROBOT_BITRIX24_TOKEN_URL".into(), b24.oauth_token_url()),
    ]);
    robot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_bitrix24_auth_keeps_the_install_tokens_and_the_robot_refreshes_them() {
    use crate::support::bitrix24::B24Emulator;
    let b24 = B24Emulator::start().await;
    let deal = b24.seed_deal(json!({"TITLE": "Заявка с сайта", "OPPORTUNITY": "120000"}));
    let (_, client_secret) = b24.oauth_client();
    let robot = std::sync::Arc::new(robot_on_b24_application(&b24));
    let (access, refresh) = b24.issue_oauth_tokens();
    let r = robot.clone();
    let (a, rt) = (access.clone(), refresh.clone());
    let auth = tokio::task::spawn_blocking(move || {
        r.run(&[
            "auth",
            "bitrix24",
            "--access-token",
            &a,
            "--refresh-token",
            &rt,
        ])
    })
    .await
    .unwrap();
    assert!(
        auth.status.success(),
        "{}",
        String::from_utf8_lossy(&auth.stderr)
    );
    b24.expire_access_tokens();
    let r = robot.clone();
    let out = tokio::task::spawn_blocking(move || r.run(&["crm", "lead", &deal.to_string()]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "the stored refresh token renews the access: {stdout}\n{stderr}"
    );
    let printed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["name"], "Заявка с сайта");
    let logs = [&auth.stdout, &auth.stderr, &out.stdout, &out.stderr]
        .iter()
        .map(|bytes| String::from_utf8_lossy(bytes).to_string())
        .collect::<String>();
    for secret in [&access, &refresh, &client_secret] {
        assert!(!logs.contains(secret.as_str()), "{secret} shows: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_bitrix24_refuses_a_robot_that_is_not_a_bitrix24_application() {
    use crate::support::bitrix24::B24Emulator;
    let b24 = B24Emulator::start().await;
    let mut robot = Robot::new(Backend::Sqlite);
    robot.env.push(("ROBOT_CRM_KIND".into(), "bitrix24".into()));
    robot
        .env
        .push(("ROBOT_BITRIX24_WEBHOOK".into(), b24.webhook_url()));
    let args = [
        "auth",
        "bitrix24",
        "--access-token",
        "a",
        "--refresh-token",
        "r",
    ];
    let out = tokio::task::spawn_blocking(move || robot.run(&args))
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("inbound webhook"), "{stderr}");

    let amo = Robot::new(Backend::Sqlite);
    let out = tokio::task::spawn_blocking(move || amo.run(&args))
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("crm.kind is `amocrm`"), "{stderr}");
}
