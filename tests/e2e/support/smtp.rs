//! A small real SMTP server on loopback for the tests: it speaks enough of RFC 5321
//! (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for lettre to deliver to it, keeps
//! every message, and lets a test wait for the mail to an address and read the
//! 6-digit sign-in code in it.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Delivered {
    pub from: String,
    pub to: Vec<String>,
    /// The message as received (headers and body, dot-unstuffed).
    pub data: String,
}

#[derive(Default)]
struct Inbox {
    messages: Mutex<Vec<Delivered>>,
    arrived: Notify,
}

pub struct SmtpSink {
    port: u16,
    inbox: Arc<Inbox>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMTP sink");
        let port = listener.local_addr().unwrap().port();
        let inbox = Arc::new(Inbox::default());
        let serving = inbox.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let inbox = serving.clone();
                tokio::spawn(async move {
                    let _ = session(stream, inbox).await;
                });
            }
        });
        SmtpSink { port, inbox, task }
    }

    /// `smtp://127.0.0.1:<port>`, for `COALITION_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<Delivered> {
        self.inbox.messages.lock().unwrap().clone()
    }

    /// Messages delivered to `address` so far.
    pub fn messages_to(&self, address: &str) -> Vec<Delivered> {
        let address = address.to_lowercase();
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.to_lowercase() == address))
            .collect()
    }

    /// Waits (up to 10 s) until `address` has received more than `seen` messages; the
    /// newest one.
    pub async fn wait_for(&self, address: &str, seen: usize) -> Delivered {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.inbox.arrived.notified();
            let got = self.messages_to(address);
            if got.len() > seen {
                return got.last().unwrap().clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no mail to {address} within 10 s (have {} messages in all)",
                    self.messages().len()
                );
            }
        }
    }

    /// The code in the next message to `address` (waits for it).
    #[allow(dead_code)]
    pub async fn code_for(&self, address: &str) -> String {
        let seen = self.messages_to(address).len();
        self.next_code_for(address, seen).await
    }

    /// The code in the message to `address` after the first `seen` ones.
    pub async fn next_code_for(&self, address: &str, seen: usize) -> String {
        let message = self.wait_for(address, seen).await;
        code_in(&message.data).unwrap_or_else(|| panic!("no 6-digit code in {}", message.data))
    }
}

/// The 6-digit code standing alone on a line of the message body.
pub fn code_in(data: &str) -> Option<String> {
    let body = data.split_once("\r\n\r\n").map_or(data, |(_, body)| body);
    body.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
}

fn address_in(argument: &str) -> String {
    let start = argument.find('<').map_or(0, |i| i + 1);
    let end = argument[start..]
        .find('>')
        .map_or(argument.len(), |i| start + i);
    argument[start..end].trim().to_owned()
}

async fn session(stream: TcpStream, inbox: Arc<Inbox>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        let verb = command.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                write
                    .write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                    .await?
            }
            "HELO" => write.write_all(b"250 sink.test\r\n").await?,
            "MAIL" => {
                from = address_in(&command[4..]);
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "RCPT" => {
                to.push(address_in(&command[4..]));
                write.write_all(b"250 OK\r\n").await?;
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed);
                }
                inbox.messages.lock().unwrap().push(Delivered {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
                inbox.arrived.notify_waiters();
                write.write_all(b"250 OK queued\r\n").await?;
            }
            "RSET" => {
                from.clear();
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 command not implemented\r\n").await?,
        }
    }
}
