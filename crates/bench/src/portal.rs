//! `coalition-bench portal`: the member portal's home page under N concurrent
//! signed-in members. A fresh database, a release server on it whose mail goes to a
//! loopback SMTP sink of this process, a programme with its partners, N members enrolled
//! and carded over HTTP with a few purchases each (so home has points, a tier and
//! expiring lots to show), each member signed in through the real sign-in (the e-mailed
//! one-time code, read from the sink), and then N closed-loop workers, one per member and
//! each with that member's session cookie, requesting `/portal` for a fixed time.
//!
//! Every member is signed in the way a person is: the sign-in form, the code form, the
//! session cookie it sets. Creating sessions in the database directly would skip the
//! very path that makes the portal's cookie what it is.

use crate::load::Figures;
use crate::setup::{self, Error};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use uuid::Uuid;

pub struct Settings<'a> {
    pub binary: &'a Path,
    pub admin_url: &'a str,
    pub database_name: &'a str,
    pub redis_url: &'a str,
    /// Members signed in, and as many concurrent workers.
    pub members: usize,
    pub purchases_per_member: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// Sign-ins in flight at once while setting up (the server hashes each code).
const SIGN_IN_CONCURRENCY: usize = 8;

pub async fn run(s: Settings<'_>) -> Result<bool, Error> {
    let sink = SmtpSink::start().await?;
    let database_url = setup::clean_database(s.admin_url, s.database_name).await?;
    let mut env = setup::server_env(&database_url, s.redis_url);
    env.push(("COALITION_SMTP_URL", format!("smtp://{}", sink.address)));
    // Every sign-in of the run comes from this one loopback address: the per-source
    // limit of code requests (30 per 15 minutes by default) is meant for the internet,
    // not for a bench signing in N members in a few seconds.
    env.push((
        "COALITION_SIGNIN_CODES_PER_SOURCE",
        (s.members + 10).min(100_000).to_string(),
    ));
    let server = setup::start_server(s.binary, &env).await?;
    let programme = setup::create_programme(s.binary, &env, &server).await?;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let seeding = Instant::now();
    let mut emails = Vec::with_capacity(s.members);
    for i in 0..s.members {
        let (partner, token) = &programme.partners[i % programme.partners.len()];
        let email = format!("member{i}@portal-bench.example.org");
        let member = setup::post(
            &http,
            &base,
            "/v1/members",
            token,
            json!({"name": format!("Portal Member {i}"), "email": email}),
        )
        .await?;
        let card = setup::post(
            &http,
            &base,
            "/v1/cards",
            token,
            json!({"member_id": member["id"]}),
        )
        .await?;
        for p in 0..s.purchases_per_member {
            let cents = 1_000 + (i * 37 + p * 101) % 9_000;
            let res = http
                .post(format!("{base}/v1/purchases"))
                .bearer_auth(token)
                .header("Idempotency-Key", Uuid::new_v4().to_string())
                .json(&json!({
                    "card_number": card["number"],
                    "amount": {"amount": format!("{}.{:02}", cents / 100, cents % 100), "currency": "EUR"},
                    "external_ref": Uuid::new_v4().to_string(),
                    "redeem_points": 0,
                }))
                .send()
                .await?;
            if !res.status().is_success() {
                return Err(format!("purchase: {} {}", res.status(), res.text().await?).into());
            }
        }
        emails.push((email, *partner));
    }
    println!(
        "portal: {} members enrolled with {} purchases each over HTTP in {:.1} s",
        s.members,
        s.purchases_per_member,
        seeding.elapsed().as_secs_f64()
    );

    let signing_in = Instant::now();
    let emails = Arc::new(emails);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cookies = Arc::new(Mutex::new(vec![String::new(); s.members]));
    let mut tasks = Vec::new();
    for _ in 0..SIGN_IN_CONCURRENCY.min(s.members) {
        let (emails, next, cookies, sink, http, base) = (
            emails.clone(),
            next.clone(),
            cookies.clone(),
            sink.clone(),
            http.clone(),
            base.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((email, partner)) = emails.get(i) else {
                    return Ok::<(), Error>(());
                };
                let cookie = sign_in(&http, &base, &sink, email, *partner).await?;
                cookies.lock().expect("cookies")[i] = cookie;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let cookies: Vec<String> = std::mem::take(&mut *cookies.lock().expect("cookies"));
    println!(
        "portal: {} members signed in with e-mailed codes in {:.1} s",
        cookies.len(),
        signing_in.elapsed().as_secs_f64()
    );
    // Each session opens home, with its points on it, before the load.
    for cookie in &cookies {
        let res = http
            .get(format!("{base}/portal"))
            .header("Cookie", format!("coalition_session={cookie}"))
            .send()
            .await?;
        if res.status() != 200 {
            return Err(format!("GET /portal of a signed-in member: {}", res.status()).into());
        }
    }

    let cookies = Arc::new(cookies);
    eprintln!(
        "running portal home at concurrency {} ({} s warm-up, {} s measured)",
        s.members,
        s.warmup.as_secs(),
        s.measure.as_secs()
    );
    load(&base, cookies.clone(), s.warmup).await;
    let figures = load(&base, cookies, s.measure).await;
    println!();
    println!(
        "{:<15} {:>4} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "scenario", "c", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    println!(
        "{:<15} {:>4} {:>9} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>7}",
        "portal home",
        s.members,
        figures.requests,
        figures.throughput(),
        figures.percentile_ms(0.50),
        figures.percentile_ms(0.99),
        figures.percentile_ms(1.0),
        figures.errors
    );
    drop(server);
    setup::drop_databases(s.admin_url, &[s.database_name]).await?;
    Ok(figures.errors == 0 && figures.requests > 0)
}

/// One closed-loop worker per signed-in member for `period`, each keeping one
/// `GET /portal` with its own cookie in flight; a non-200 answer is an error.
async fn load(base: &str, cookies: Arc<Vec<String>>, period: Duration) -> Figures {
    let started = Instant::now();
    let until = started + period;
    let mut workers = Vec::new();
    for w in 0..cookies.len() {
        let cookies = cookies.clone();
        let mut conn = crate::http1::Connection::new(base);
        workers.push(tokio::spawn(async move {
            let request = format!(
                "GET /portal HTTP/1.1\r\nHost: bench\r\nAccept-Language: en\r\n\
                 Cookie: coalition_session={}\r\n\r\n",
                cookies[w]
            )
            .into_bytes();
            let (mut ok, mut failed, mut latencies) = (0usize, 0usize, Vec::new());
            while Instant::now() < until {
                let sent = Instant::now();
                match conn.send(&request).await {
                    Ok(200) => {
                        ok += 1;
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, latencies)
        }));
    }
    let mut figures = Figures::default();
    for worker in workers {
        if let Ok((ok, failed, latencies)) = worker.await {
            figures.requests += ok + failed;
            figures.errors += failed;
            figures.latencies_us.extend(latencies);
        }
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures.latencies_us.sort_unstable();
    figures
}

/// A browser's cookies, by name (enough for one site).
#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn keep(&mut self, res: &reqwest::Response) {
        for header in res.headers().get_all("set-cookie") {
            let Ok(text) = header.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.0.remove(name.trim());
                } else {
                    self.0
                        .insert(name.trim().to_owned(), value.trim().to_owned());
                }
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The real sign-in of one member, as a browser does it: the sign-in page (through the
/// partner's link), its form with the e-mail, the code from the mail, the code form.
/// Returns the `coalition_session` cookie's value.
async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    sink: &SmtpSink,
    email: &str,
    partner: Uuid,
) -> Result<String, Error> {
    let mut jar = Jar::default();
    let res = http
        .get(format!(
            "{base}/portal/sign-in?partner={partner}&next=/portal"
        ))
        .send()
        .await?;
    jar.keep(&res);
    let page = res.text().await?;
    let mut form = html_form(&page, "/portal/sign-in").ok_or("no sign-in form")?;
    form.insert("email".into(), email.into());
    let res = http
        .post(format!("{base}/portal/sign-in"))
        .header("Cookie", jar.header())
        .form(&form)
        .send()
        .await?;
    jar.keep(&res);
    let mut page = res.text().await?;
    // The code form is either the answer itself or where the answer sends the browser.
    if html_form(&page, "/portal/sign-in/code").is_none() {
        return Err(format!("no code form after the e-mail form: {page}").into());
    }
    let code = sink
        .code_for(email, Duration::from_secs(30))
        .await
        .ok_or_else(|| format!("no sign-in code mailed to {email}"))?;
    let mut form = html_form(&page, "/portal/sign-in/code").ok_or("no code form")?;
    form.insert("code".into(), code);
    let res = http
        .post(format!("{base}/portal/sign-in/code"))
        .header("Cookie", jar.header())
        .form(&form)
        .send()
        .await?;
    jar.keep(&res);
    if res.status() != 303 {
        page = res.text().await.unwrap_or_default();
        return Err(format!("the code was not accepted: {page}").into());
    }
    jar.0
        .get("coalition_session")
        .cloned()
        .ok_or_else(|| "no coalition_session cookie after sign-in".into())
}

/// The fields (name → value) of the `<form>` in `page` whose action is `action`,
/// hidden ones (CSRF token, next, partner, …) included.
fn html_form(page: &str, action: &str) -> Option<HashMap<String, String>> {
    let mut rest = page;
    while let Some(start) = rest.find("<form") {
        let tail = &rest[start..];
        let end = tail.find("</form>").unwrap_or(tail.len());
        let form = &tail[..end];
        let open_tag = &form[..form.find('>').unwrap_or(form.len())];
        let form_action = attribute(open_tag, "action").unwrap_or_default();
        if form_action == action || form_action.starts_with(&format!("{action}?")) {
            let mut fields = HashMap::new();
            let mut inputs = form;
            while let Some(i) = inputs.find("<input") {
                let tag_end = inputs[i..].find('>').map_or(inputs.len(), |e| i + e);
                let tag = &inputs[i..tag_end];
                if let Some(name) = attribute(tag, "name") {
                    fields.insert(name, attribute(tag, "value").unwrap_or_default());
                }
                inputs = &inputs[tag_end..];
            }
            return Some(fields);
        }
        rest = &tail[end..];
    }
    None
}

/// The (HTML-unescaped) value of `name="…"` in one tag.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(unescape(&tag[start..start + len]))
}

/// HTML character references as template engines write them in attributes: numeric
/// (`&#x2f;`, `&#47;`) and the few named ones.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A loopback SMTP server that accepts every message and keeps it, so the bench reads
/// the sign-in codes the server mails as a member would.
#[derive(Clone)]
struct SmtpSink {
    address: String,
    /// (recipient, message as received) in arrival order.
    messages: Arc<Mutex<Vec<(String, String)>>>,
    arrived: Arc<Notify>,
}

impl SmtpSink {
    async fn start() -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sink = SmtpSink {
            address: listener.local_addr()?.to_string(),
            messages: Arc::default(),
            arrived: Arc::default(),
        };
        let served = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = served.clone();
                tokio::spawn(async move {
                    let _ = sink.session(stream).await;
                });
            }
        });
        Ok(sink)
    }

    /// One SMTP conversation: greeting, EHLO, MAIL, RCPT, DATA … QUIT (RFC 5321, the
    /// part lettre speaks over plain TCP).
    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 portal-bench ESMTP\r\n").await?;
        let mut recipients = Vec::new();
        while let Some(line) = lines.next_line().await? {
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" | "HELO" => write.write_all(b"250 portal-bench\r\n").await?,
                "MAIL" => {
                    recipients.clear();
                    write.write_all(b"250 OK\r\n").await?
                }
                "RCPT" => {
                    let address = line
                        .split_once('<')
                        .and_then(|(_, r)| r.split_once('>'))
                        .map(|(a, _)| a.to_ascii_lowercase())
                        .unwrap_or_default();
                    recipients.push(address);
                    write.write_all(b"250 OK\r\n").await?
                }
                "DATA" => {
                    write.write_all(b"354 go on\r\n").await?;
                    let mut message = String::new();
                    while let Some(data) = lines.next_line().await? {
                        if data == "." {
                            break;
                        }
                        // Dot-stuffing (RFC 5321 4.5.2).
                        message.push_str(data.strip_prefix('.').unwrap_or(&data));
                        message.push('\n');
                    }
                    {
                        let mut kept = self.messages.lock().expect("messages");
                        for r in &recipients {
                            kept.push((r.clone(), message.clone()));
                        }
                    }
                    self.arrived.notify_waiters();
                    write.write_all(b"250 OK kept\r\n").await?
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await?;
                    return Ok(());
                }
                "RSET" | "NOOP" => write.write_all(b"250 OK\r\n").await?,
                _ => write.write_all(b"502 not here\r\n").await?,
            }
        }
        Ok(())
    }

    /// The newest six-digit code in a message to `email`, waiting up to `within`.
    async fn code_for(&self, email: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let arrived = self.arrived.notified();
            if let Some(code) = self.latest_code(email) {
                return Some(code);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            let _ = tokio::time::timeout(left, arrived).await;
        }
    }

    fn latest_code(&self, email: &str) -> Option<String> {
        let email = email.to_ascii_lowercase();
        let kept = self.messages.lock().expect("messages");
        kept.iter()
            .rev()
            .find(|(to, _)| *to == email)
            .and_then(|(_, message)| six_digits(message_body(message)))
    }
}

/// The body of a message: what follows the first empty line (the headers, with their
/// Message-ID and Date digits, are not searched for a code).
fn message_body(message: &str) -> &str {
    message.split_once("\n\n").map_or("", |(_, body)| body)
}

/// The first run of exactly six ASCII digits.
fn six_digits(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return Some(text[start..i].to_owned());
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_codes_are_read_as_a_browser_and_a_member_would() {
        let page = r#"<form method="post" action="/portal/sign-out"><input type="hidden" name="csrf" value="x"></form>
            <form method="post" action="/portal/sign-in/code"><input type="hidden" name="csrf" value="a&amp;b">
            <input name="next" type="hidden" value="&#x2f;portal&#47;x"><input id="code" name="code" autocomplete="one-time-code"></form>"#;
        let form = html_form(page, "/portal/sign-in/code").unwrap();
        assert_eq!(form["csrf"], "a&b");
        assert_eq!(form["next"], "/portal/x");
        assert_eq!(form["code"], "");
        assert!(html_form(page, "/portal/sign-in").is_none());
        let mail =
            "Message-ID: <123456789@x>\nDate: 3 Dec 2026\n\nYour code: 042917\nValid 10 minutes.\n";
        assert_eq!(six_digits(message_body(mail)).as_deref(), Some("042917"));
        assert_eq!(six_digits("1234567 12345"), None);
    }
}
