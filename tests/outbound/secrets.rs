//! The Wazzup key and the SMTP password come from the environment and never show: not in the
//! configuration, the secrets or the clients as `Debug` prints them, nor in their errors.

use std::time::Duration;

use sales_robot::adapters::mail::{Email, Mailer, SmtpMailer};
use sales_robot::adapters::wazzup::client::WazzupClient;
use sales_robot::adapters::wazzup::send::{Content, Outgoing, WhatsApp};
use sales_robot::config::{self, Env, Secrets};

use crate::support::smtp::SmtpServer;
use crate::support::wazzup::{CHANNEL_WHATSAPP, WazzupEmulator};

const KEY: &str = "wz-9d1c7e55b0a44f3e";
const PASSWORD: &str = "smtp-Pa55-0d8f";

#[tokio::test]
async fn the_key_and_the_password_never_show() {
    let emu = WazzupEmulator::start().await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let smtp_url = smtp.url_with_login("robot", PASSWORD);
    let env = Env::from_pairs([
        ("ROBOT_WAZZUP_KEY", KEY),
        ("ROBOT_WAZZUP_SEND_CHANNEL_ID", CHANNEL_WHATSAPP),
        ("ROBOT_WAZZUP_BASE_URL", emu.base_url()),
        ("ROBOT_SMTP_URL", smtp_url.as_str()),
        ("ROBOT_SMTP_FROM", "sales@romashka.example"),
    ]);
    let config = config::load(dir.path(), &env).unwrap();
    let secrets = Secrets::from_env(&env);

    let wazzup = WazzupClient::new(
        &config.wazzup.base_url,
        config.wazzup.send_channel_id.as_deref().unwrap(),
        secrets.wazzup_key.clone().unwrap(),
        crate::wazzup::store().await,
    );
    let mail = SmtpMailer::new(
        secrets.smtp_url.as_ref().unwrap(),
        config.smtp.from.as_deref().unwrap(),
        config
            .smtp
            .timeout
            .as_std()
            .unwrap_or(Duration::from_secs(30)),
    )
    .unwrap();

    // The key is the wrong one for the emulator, so the send fails: its error must not
    // show the key either.
    let refused = wazzup
        .send(&Outgoing {
            phone: "79161234567".into(),
            content: Content::Text("x".into()),
            crm_message_id: "k".into(),
        })
        .await
        .unwrap_err();
    let sent = mail
        .send(&Email {
            to: "andrey@client.example".into(),
            subject: "Тема".into(),
            text: "Текст".into(),
            html: None,
            message_id: "secrets.1@robot.example".into(),
        })
        .await;
    assert!(sent.is_ok(), "{sent:?}");

    let shown =
        format!("{config:?}\n{secrets:?}\n{wazzup:?}\n{mail:?}\n{refused}\n{refused:?}\n{env:?}");
    assert!(!shown.contains(KEY), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains("[REDACTED]"), "{shown}");
}
