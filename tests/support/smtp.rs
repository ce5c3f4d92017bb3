//! A real SMTP listener on 127.0.0.1, for tests: it speaks the server's side of a mail
//! submission over plain TCP and keeps what it receives, envelope and raw data, for
//! assertions. It can be told to answer a command with a 4xx or 5xx reply.
//!
//! Where the protocol comes from:
//! - RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321): the greeting 220, `EHLO`/`HELO`,
//!   `MAIL FROM:<…>`, `RCPT TO:<…>`, `DATA` answered 354 and ended by `<CRLF>.<CRLF>` with
//!   dot-stuffing (section 4.5.2), `RSET`, `NOOP`, `QUIT` 221, 502 for an unknown command,
//!   503 for a bad sequence; multi-line replies `250-…` then `250 …` (section 4.2.1).
//! - RFC 4954 (https://www.rfc-editor.org/rfc/rfc4954): `AUTH` with 334 challenges, 235 on
//!   success, 535 for wrong credentials, 530 when a login is required; RFC 4616 for `PLAIN`
//!   (`\0user\0password` in base64); `LOGIN` as lettre speaks it (the challenges
//!   `Username:`/`Password:` in base64).
//! - RFC 6531/6152: `SMTPUTF8` and `8BITMIME` are advertised, as common servers do.
//!
//! It has no TLS: the robot's `smtps://` and STARTTLS settings are lettre's own, and tests
//! reach this listener with `smtp://`.

// Each test target uses a different part of this support module.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_parser::MessageParser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The commands a reply can be forced for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// The end of `DATA` (after the final dot), where a server accepts or refuses the
    /// message itself.
    Data,
}

/// One message the listener accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender, without the angle brackets.
    pub mail_from: String,
    /// The envelope recipients.
    pub rcpt_to: Vec<String>,
    /// The message as it came, after dot-unstuffing.
    pub data: Vec<u8>,
    /// The login it came under, if any.
    pub user: Option<String>,
}

impl Received {
    /// The `From` header's display name (decoded) and address.
    pub fn from(&self) -> Option<(Option<String>, String)> {
        let message = MessageParser::default().parse(&self.data)?;
        let addr = message.from()?.first()?;
        Some((addr.name().map(str::to_owned), addr.address()?.to_owned()))
    }

    /// The decoded subject.
    pub fn subject(&self) -> Option<String> {
        let message = MessageParser::default().parse(&self.data)?;
        message.subject().map(str::to_owned)
    }

    /// The `Message-ID` without its angle brackets.
    pub fn message_id(&self) -> Option<String> {
        let message = MessageParser::default().parse(&self.data)?;
        message.message_id().map(str::to_owned)
    }

    /// The first plain-text body, decoded.
    pub fn text(&self) -> Option<String> {
        let message = MessageParser::default().parse(&self.data)?;
        message.body_text(0).map(|t| t.into_owned())
    }

    /// The first HTML body, decoded.
    pub fn html(&self) -> Option<String> {
        let message = MessageParser::default().parse(&self.data)?;
        message.body_html(0).map(|t| t.into_owned())
    }

    /// The raw data as text (it is 7-bit or UTF-8 in every test).
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Replies forced for the next commands of a stage, in order.
    forced: HashMap<Stage, VecDeque<(u16, String)>>,
    /// When set, only this login is accepted and a login is required.
    login: Option<(String, String)>,
    /// Every command line seen, `AUTH` arguments hidden.
    commands: Vec<String>,
    connections: usize,
}

/// The listener. It serves until dropped.
pub struct SmtpServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    /// Binds 127.0.0.1 on a random port; any login (or none) is accepted.
    pub async fn start() -> SmtpServer {
        Self::serve(None).await
    }

    /// Like [`SmtpServer::start`], but requires this login before `MAIL FROM`.
    pub async fn with_login(user: &str, password: &str) -> SmtpServer {
        Self::serve(Some((user.to_owned(), password.to_owned()))).await
    }

    async fn serve(login: Option<(String, String)>) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP listener");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            login,
            ..State::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = session(stream, state).await;
                });
            }
        });
        SmtpServer { addr, state, task }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// `smtp://USER:PASSWORD@127.0.0.1:PORT`.
    pub fn url_with_login(&self, user: &str, password: &str) -> String {
        format!("smtp://{user}:{password}@{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every message accepted, in order.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Every command line seen, in order (`AUTH` without its secrets).
    pub fn commands(&self) -> Vec<String> {
        self.lock().commands.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Answers the next command of `stage` with `code` and `text` (`550`, `"5.1.1 No such
    /// user"`) instead of accepting it.
    pub fn fail_next(&self, stage: Stage, code: u16, text: &str) {
        self.lock()
            .forced
            .entry(stage)
            .or_default()
            .push_back((code, text.to_owned()));
    }
}

fn forced(state: &Mutex<State>, stage: Stage) -> Option<(u16, String)> {
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    state.forced.get_mut(&stage).and_then(VecDeque::pop_front)
}

/// `<addr>` of `MAIL FROM:<addr> …` or `RCPT TO:<addr> …`; `None` without the brackets.
fn path_of(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].to_owned())
}

/// The user and password of an `AUTH PLAIN` response: `[authzid] \0 user \0 password`.
fn plain(b64: &str) -> Option<(String, String)> {
    let bytes = BASE64.decode(b64.trim()).ok()?;
    let mut parts = bytes.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, password))
}

fn decoded(b64: &str) -> Option<String> {
    String::from_utf8(BASE64.decode(b64.trim()).ok()?).ok()
}

/// One client's session, to `QUIT` or a dropped connection.
async fn session(stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    state.lock().unwrap_or_else(|p| p.into_inner()).connections += 1;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write
        .write_all(b"220 127.0.0.1 ESMTP sales-robot test listener\r\n")
        .await?;

    let required = state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .login
        .clone();
    let mut user: Option<String> = None;
    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();

    // Checks a login against the required one; any login passes when none is required.
    let accept = |given: &(String, String)| required.as_ref().is_none_or(|r| r == given);

    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']).to_owned();
        let (verb, arg) = command
            .split_once(' ')
            .map_or((command.as_str(), ""), |(v, a)| (v, a));
        let verb = verb.to_ascii_uppercase();
        let shown = if verb == "AUTH" {
            format!("AUTH {}", arg.split(' ').next().unwrap_or(""))
        } else {
            command.clone()
        };
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commands
            .push(shown);

        let reply: String = match verb.as_str() {
            "EHLO" => "250-127.0.0.1 greets you\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
                       250-AUTH PLAIN LOGIN\r\n250 SIZE 10485760\r\n"
                .into(),
            "HELO" => "250 127.0.0.1\r\n".into(),
            "AUTH" => {
                let mut parts = arg.split_whitespace();
                let mechanism = parts.next().unwrap_or("").to_ascii_uppercase();
                let initial = parts.next().map(str::to_owned);
                let given = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(r) => r,
                            None => {
                                write.write_all(b"334 \r\n").await?;
                                read_line(&mut lines).await?
                            }
                        };
                        plain(&response)
                    }
                    "LOGIN" => {
                        let name = match initial {
                            Some(r) => r,
                            None => {
                                write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                                read_line(&mut lines).await?
                            }
                        };
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        let password = read_line(&mut lines).await?;
                        decoded(&name).zip(decoded(&password))
                    }
                    _ => None,
                };
                match given {
                    Some(login) if accept(&login) => {
                        user = Some(login.0);
                        "235 2.7.0 Authentication successful\r\n".into()
                    }
                    Some(_) => "535 5.7.8 Authentication credentials invalid\r\n".into(),
                    None => "504 5.5.4 Unrecognized authentication type\r\n".into(),
                }
            }
            "MAIL" => {
                if required.is_some() && user.is_none() {
                    "530 5.7.0 Authentication required\r\n".into()
                } else if let Some((code, text)) = forced(&state, Stage::Mail) {
                    format!("{code} {text}\r\n")
                } else {
                    match path_of(arg) {
                        Some(from) => {
                            mail_from = Some(from);
                            rcpt_to.clear();
                            "250 2.1.0 Ok\r\n".into()
                        }
                        None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
                    }
                }
            }
            "RCPT" => {
                if mail_from.is_none() {
                    "503 5.5.1 Error: need MAIL command\r\n".into()
                } else if let Some((code, text)) = forced(&state, Stage::Rcpt) {
                    format!("{code} {text}\r\n")
                } else {
                    match path_of(arg) {
                        Some(to) => {
                            rcpt_to.push(to);
                            "250 2.1.5 Ok\r\n".into()
                        }
                        None => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
                    }
                }
            }
            "DATA" => {
                if rcpt_to.is_empty() {
                    "503 5.5.1 Error: need RCPT command\r\n".into()
                } else {
                    write
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let data = read_data(&mut lines).await?;
                    let from = mail_from.take().unwrap_or_default();
                    let to = std::mem::take(&mut rcpt_to);
                    match forced(&state, Stage::Data) {
                        Some((code, text)) => format!("{code} {text}\r\n"),
                        None => {
                            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                            s.received.push(Received {
                                mail_from: from,
                                rcpt_to: to,
                                data,
                                user: user.clone(),
                            });
                            format!("250 2.0.0 Ok: queued as {}\r\n", s.received.len())
                        }
                    }
                }
            }
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                "250 2.0.0 Ok\r\n".into()
            }
            "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Error: command not recognized\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

async fn read_line<R: AsyncBufReadExt + Unpin>(lines: &mut R) -> std::io::Result<String> {
    let mut line = String::new();
    lines.read_line(&mut line).await?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The message after `354`, to the line with a lone dot, dot-unstuffed.
async fn read_data<R: AsyncBufReadExt + Unpin>(lines: &mut R) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(content);
    }
}
