//! The SMTP listener, driven by hand over TCP as a mail client would, so that the mail
//! adapter's tests can trust what it records.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::smtp::{SmtpServer, Stage};

struct Client {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Client {
    async fn connect(server: &SmtpServer) -> (Client, String) {
        let stream = TcpStream::connect(server.addr()).await.unwrap();
        let (read, write) = stream.into_split();
        let mut client = Client {
            read: BufReader::new(read),
            write,
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// One reply, all of its lines.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.read.read_line(&mut line).await.unwrap();
            all.push_str(&line);
            // The last line of a reply has a space after its code.
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    }

    async fn say(&mut self, line: &str) -> String {
        self.write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }
}

fn code(reply: &str) -> &str {
    &reply[..3]
}

#[tokio::test]
async fn a_session_stores_the_envelope_and_the_unstuffed_data() {
    let server = SmtpServer::start().await;
    let (mut c, greeting) = Client::connect(&server).await;
    assert_eq!(code(&greeting), "220");
    let ehlo = c.say("EHLO client.example").await;
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(ehlo.lines().last().unwrap().starts_with("250 "), "{ehlo}");
    assert_eq!(code(&c.say("RCPT TO:<a@b.ru>").await), "503");
    assert_eq!(
        code(&c.say("MAIL FROM:<robot@example.ru> BODY=8BITMIME").await),
        "250"
    );
    assert_eq!(code(&c.say("DATA").await), "503");
    assert_eq!(code(&c.say("RCPT TO:<client@example.ru>").await), "250");
    assert_eq!(code(&c.say("DATA").await), "354");
    let data = "Subject: =?utf-8?b?0J/RgNC40LLQtdGC?=\r\nMessage-ID: <m1@robot.ru>\r\n\
                Content-Type: text/plain; charset=utf-8\r\n\r\nПервая\r\n..точка\r\n.\r\n";
    c.write.write_all(data.as_bytes()).await.unwrap();
    assert_eq!(code(&c.reply().await), "250");
    assert_eq!(code(&c.say("NOOP").await), "250");
    assert_eq!(code(&c.say("VRFY x").await), "502");
    assert_eq!(code(&c.say("QUIT").await), "221");

    let received = server.received();
    assert_eq!(received.len(), 1);
    let m = &received[0];
    assert_eq!(m.mail_from, "robot@example.ru");
    assert_eq!(m.rcpt_to, ["client@example.ru"]);
    assert_eq!(m.subject().as_deref(), Some("Привет"));
    assert_eq!(m.message_id().as_deref(), Some("m1@robot.ru"));
    assert_eq!(m.text().as_deref(), Some("Первая\r\n.точка\r\n"));
}

#[tokio::test]
async fn a_required_login_is_checked_in_both_mechanisms() {
    let server = SmtpServer::with_login("robot", "s3cr3t").await;
    let (mut c, _) = Client::connect(&server).await;
    c.say("EHLO client.example").await;
    assert_eq!(code(&c.say("MAIL FROM:<robot@example.ru>").await), "530");
    // PLAIN: \0robot\0wrong, then \0robot\0s3cr3t.
    assert_eq!(code(&c.say("AUTH PLAIN AHJvYm90AHdyb25n").await), "535");
    assert_eq!(code(&c.say("AUTH PLAIN AHJvYm90AHMzY3IzdA==").await), "235");
    assert_eq!(code(&c.say("MAIL FROM:<robot@example.ru>").await), "250");

    let (mut c, _) = Client::connect(&server).await;
    c.say("EHLO client.example").await;
    assert_eq!(code(&c.say("AUTH LOGIN").await), "334");
    assert_eq!(code(&c.say("cm9ib3Q=").await), "334");
    assert_eq!(code(&c.say("czNjcjN0").await), "235");
    // The secrets stay out of the command log.
    let commands = server.commands().join("\n");
    assert!(!commands.contains("AHMzY3IzdA"), "{commands}");
}

#[tokio::test]
async fn forced_replies_refuse_one_command_each() {
    let server = SmtpServer::start().await;
    server.fail_next(Stage::Rcpt, 550, "5.1.1 No such user");
    server.fail_next(Stage::Data, 451, "4.3.0 Try again later");
    let (mut c, _) = Client::connect(&server).await;
    c.say("EHLO client.example").await;
    c.say("MAIL FROM:<robot@example.ru>").await;
    assert_eq!(
        c.say("RCPT TO:<nobody@example.ru>").await,
        "550 5.1.1 No such user\r\n"
    );
    assert_eq!(code(&c.say("RCPT TO:<client@example.ru>").await), "250");
    c.say("DATA").await;
    c.write
        .write_all(b"Subject: x\r\n\r\nx\r\n.\r\n")
        .await
        .unwrap();
    assert_eq!(code(&c.reply().await), "451");
    assert!(server.received().is_empty());
}
