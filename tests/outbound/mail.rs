//! The mail adapter against a real SMTP listener on loopback: what arrives, and how each
//! failure is classed.

use std::time::Duration;

use sales_robot::adapters::mail::{Email, MailError, Mailer, SmtpMailer};
use secrecy::SecretString;

use crate::support::smtp::{SmtpServer, Stage};

fn mailer(url: &str) -> SmtpMailer {
    SmtpMailer::new(
        &SecretString::from(url),
        "Отдел продаж «Ромашка» <sales@romashka.example>",
        Duration::from_secs(5),
    )
    .unwrap()
}

fn letter(message_id: &str) -> Email {
    Email {
        to: "Андрей Ковалёв <andrey@client.example>".into(),
        subject: "Коммерческое предложение: доставка в Подольск — ответ до пятницы".into(),
        text: "Андрей, добрый день!\n\nНапоминаю о коммерческом предложении.\n.\nС уважением, отдел продаж".into(),
        html: None,
        message_id: message_id.into(),
    }
}

#[tokio::test]
async fn a_russian_letter_arrives_intact_with_its_message_id() {
    let server = SmtpServer::start().await;
    let mail = mailer(&server.url());
    mail.send(&letter("chain-kp.lead-1042.step-2@robot.example"))
        .await
        .unwrap();
    let received = server.received();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.mail_from, "sales@romashka.example");
    assert_eq!(m.rcpt_to, ["andrey@client.example"]);
    assert_eq!(
        m.subject().as_deref(),
        Some("Коммерческое предложение: доставка в Подольск — ответ до пятницы")
    );
    assert_eq!(
        m.message_id().as_deref(),
        Some("chain-kp.lead-1042.step-2@robot.example")
    );
    let text = m.text().unwrap().replace("\r\n", "\n");
    assert_eq!(
        text.trim_end(),
        "Андрей, добрый день!\n\nНапоминаю о коммерческом предложении.\n.\nС уважением, отдел продаж"
    );
    assert_eq!(
        m.from(),
        Some((
            Some("Отдел продаж «Ромашка»".to_owned()),
            "sales@romashka.example".to_owned()
        ))
    );
}

#[tokio::test]
async fn a_resend_carries_the_same_message_id() {
    let server = SmtpServer::start().await;
    let mail = mailer(&server.url());
    let with_brackets = letter("<chain-kp.lead-1042.step-2@robot.example>");
    mail.send(&letter("chain-kp.lead-1042.step-2@robot.example"))
        .await
        .unwrap();
    mail.send(&with_brackets).await.unwrap();
    let ids: Vec<Option<String>> = server.received().iter().map(|m| m.message_id()).collect();
    assert_eq!(ids[0], ids[1]);
    assert!(ids[0].is_some());
}

#[tokio::test]
async fn an_html_letter_has_both_bodies() {
    let server = SmtpServer::start().await;
    let mail = mailer(&server.url());
    let email = Email {
        html: Some("<p>Андрей, <b>добрый день</b>!</p>".into()),
        ..letter("html.1@robot.example")
    };
    mail.send(&email).await.unwrap();
    let m = &server.received()[0];
    assert!(m.text().unwrap().starts_with("Андрей, добрый день!"));
    assert!(m.html().unwrap().contains("<b>добрый день</b>"));
}

#[tokio::test]
async fn the_login_in_the_url_is_used_and_a_wrong_one_is_a_credentials_error() {
    let server = SmtpServer::with_login("robot@romashka.example", "pa55-w0rd").await;
    let good = mailer(&server.url_with_login("robot%40romashka.example", "pa55-w0rd"));
    good.send(&letter("login.1@robot.example")).await.unwrap();
    assert_eq!(
        server.received()[0].user.as_deref(),
        Some("robot@romashka.example")
    );

    let bad = mailer(&server.url_with_login("robot%40romashka.example", "wrong-pa55"));
    let e = bad
        .send(&letter("login.2@robot.example"))
        .await
        .unwrap_err();
    assert!(matches!(e, MailError::Credentials(_)), "{e:?}");
    assert!(!e.is_permanent());
    assert!(!e.to_string().contains("wrong-pa55"), "{e}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_5xx_is_permanent() {
    let server = SmtpServer::start().await;
    server.fail_next(
        Stage::Rcpt,
        550,
        "5.1.1 <andrey@client.example>: Recipient address rejected",
    );
    let e = mailer(&server.url())
        .send(&letter("refused.1@robot.example"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MailError::Refused { code, .. } if code == "550"),
        "{e:?}"
    );
    assert!(e.is_permanent());
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_4xx_is_transient() {
    let server = SmtpServer::start().await;
    server.fail_next(Stage::Data, 451, "4.7.1 Greylisted, try again later");
    let mail = mailer(&server.url());
    let e = mail
        .send(&letter("grey.1@robot.example"))
        .await
        .unwrap_err();
    assert!(matches!(e, MailError::Transient(_)), "{e:?}");
    assert!(!e.is_permanent());
    // The next attempt goes through, with the same id.
    mail.send(&letter("grey.1@robot.example")).await.unwrap();
    assert_eq!(
        server.received()[0].message_id().as_deref(),
        Some("grey.1@robot.example")
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // A port that was just free: nothing listens there now.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let e = mailer(&format!("smtp://user:s3cr3t-pw@{addr}"))
        .send(&letter("down.1@robot.example"))
        .await
        .unwrap_err();
    assert!(matches!(e, MailError::Transient(_)), "{e:?}");
    assert!(!e.is_permanent());
    assert!(!e.to_string().contains("s3cr3t-pw"), "{e}");
}

#[tokio::test]
async fn a_bad_address_or_message_id_sends_nothing() {
    let server = SmtpServer::start().await;
    let mail = mailer(&server.url());
    let bad_to = Email {
        to: "андрей на почте".into(),
        ..letter("bad.1@robot.example")
    };
    let e = mail.send(&bad_to).await.unwrap_err();
    assert!(
        matches!(e, MailError::Invalid(_)) && e.is_permanent(),
        "{e:?}"
    );
    let e = mail.send(&letter("no id")).await.unwrap_err();
    assert!(matches!(e, MailError::Invalid(_)), "{e:?}");
    assert_eq!(server.connections(), 0);
}
