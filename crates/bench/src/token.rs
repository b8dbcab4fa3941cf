//! The token endpoint under attack: 32 attackers on another address (127.0.0.2) post
//! wrong secrets for unknown client ids while genuine clients ask for tokens from
//! 127.0.0.1. Measured: the genuine clients' latency — one client asking again and again
//! (closed loop), and new clients asking for their first token, one every 100 ms.

use crate::load::Figures;
use crate::setup::Error;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ATTACKERS: usize = 32;
const ATTACKER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const FIRST_TOKEN_EVERY: Duration = Duration::from_millis(100);

pub struct TokenRun {
    /// One client asking for a token again and again.
    pub repeated: Figures,
    /// Clients asking for their first token.
    pub first: Figures,
    /// The attackers' answers: 401, 429, anything else.
    pub attacks: [usize; 3],
    pub seconds: f64,
}

impl TokenRun {
    pub fn print(&self) {
        println!();
        println!(
            "token endpoint, {ATTACKERS} attackers on {ATTACKER_ADDRESS} posting wrong secrets for unknown client ids:"
        );
        for (name, f) in [
            ("valid client, repeated", &self.repeated),
            ("valid clients, first token", &self.first),
        ] {
            println!(
                "  {name:<27} {:>6} req  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {}",
                f.requests,
                f.percentile_ms(0.50),
                f.percentile_ms(0.99),
                f.errors
            );
        }
        let [unauthorized, limited, other] = self.attacks;
        println!(
            "  attackers: {:.0} req/s; 401 {unauthorized}, 429 {limited}, other {other}",
            self.attacks.iter().sum::<usize>() as f64 / self.seconds
        );
    }

    /// Every genuine request got its token. (In a smoke run the first-token client may
    /// not get past the warm-up: the attackers' first hashes, before they are limited,
    /// take longer than its one second on a debug build.)
    pub fn ok(&self) -> bool {
        self.repeated.requests > 0 && self.repeated.errors == 0 && self.first.errors == 0
    }
}

/// A programme of its own (created with the CLI, like the main one) and `fresh` more
/// operator clients for the first-token figure, then the attack.
pub async fn run(
    binary: &Path,
    env: &[(&str, String)],
    base: &str,
    warmup: Duration,
    measure: Duration,
) -> Result<TokenRun, Error> {
    let out = Command::new(binary)
        .args(["programme", "create", "--name", "Token bench"])
        .args(["--currency", "EUR", "--point-value", "0.01"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    if !out.status.success() {
        return Err(format!("programme create: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let operator: Value = serde_json::from_slice(&out.stdout)?;
    let operator = credentials(&operator)?;
    let http = reqwest::Client::new();
    let admin = token(&http, base, &operator).await?;
    let wanted = ((warmup + measure).as_millis() / FIRST_TOKEN_EVERY.as_millis()) as usize + 1;
    let mut fresh = Vec::with_capacity(wanted);
    for n in 0..wanted {
        let created = http
            .post(format!("{base}/v1/clients"))
            .bearer_auth(&admin)
            .json(&json!({"name": format!("till {n}")}))
            .send()
            .await?
            .error_for_status()?
            .json::<Value>()
            .await?;
        fresh.push(credentials(&created)?);
    }
    eprintln!(
        "running token endpoint under attack ({} s warm-up, {} s measured)",
        warmup.as_secs(),
        measure.as_secs()
    );
    let measure_from = Instant::now() + warmup;
    let end = measure_from + measure;
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| tokio::spawn(attack(base.to_owned(), end)))
        .collect();
    let base = Arc::new(base.to_owned());
    let repeated = tokio::spawn(repeated(base.clone(), operator, measure_from, end));
    let first = tokio::spawn(first_tokens(base, fresh, measure_from, end));
    let mut attacks = [0; 3];
    for attacker in attackers {
        for (total, n) in attacks.iter_mut().zip(attacker.await?) {
            *total += n;
        }
    }
    Ok(TokenRun {
        repeated: repeated.await?,
        first: first.await?,
        attacks,
        seconds: (warmup + measure).as_secs_f64(),
    })
}

type Credentials = (String, String);

fn credentials(created: &Value) -> Result<Credentials, Error> {
    let field = |name: &str| {
        created[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no {name} in {created}"))
    };
    Ok((field("client_id")?, field("client_secret")?))
}

async fn request(
    http: &reqwest::Client,
    base: &str,
    (id, secret): &Credentials,
) -> reqwest::Result<reqwest::Response> {
    http.post(format!("{base}/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
}

async fn token(http: &reqwest::Client, base: &str, client: &Credentials) -> Result<String, Error> {
    let body: Value = request(http, base, client)
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_owned())
}

/// Wrong secrets for a new unknown client id each time, until `end`: [401, 429, other].
async fn attack(base: String, end: Instant) -> [usize; 3] {
    let http = reqwest::Client::builder()
        .local_address(ATTACKER_ADDRESS)
        .build()
        .expect("an HTTP client");
    let mut answers = [0; 3];
    while Instant::now() < end {
        let guess = (
            format!("cl_{}", uuid::Uuid::new_v4().simple()),
            "cs_guess".to_owned(),
        );
        let slot = match request(&http, &base, &guess)
            .await
            .map(|r| r.status().as_u16())
        {
            Ok(401) => 0,
            Ok(429) => 1,
            _ => 2,
        };
        answers[slot] += 1;
    }
    answers
}

/// Records one genuine token request sent at `sent`, if it was sent after the warm-up.
async fn timed(
    http: &reqwest::Client,
    base: &str,
    client: &Credentials,
    measure_from: Instant,
    figures: &mut Figures,
) {
    let sent = Instant::now();
    let ok = request(http, base, client)
        .await
        .is_ok_and(|r| r.status() == 200);
    if sent < measure_from {
        return;
    }
    figures.requests += 1;
    if ok {
        let micros = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        figures.latencies_us.push(micros);
    } else {
        figures.errors += 1;
    }
}

async fn repeated(
    base: Arc<String>,
    client: Credentials,
    measure_from: Instant,
    end: Instant,
) -> Figures {
    let http = reqwest::Client::new();
    let mut figures = Figures::default();
    while Instant::now() < end {
        timed(&http, &base, &client, measure_from, &mut figures).await;
    }
    figures.latencies_us.sort_unstable();
    figures
}

async fn first_tokens(
    base: Arc<String>,
    clients: Vec<Credentials>,
    measure_from: Instant,
    end: Instant,
) -> Figures {
    let http = reqwest::Client::new();
    let mut figures = Figures::default();
    let mut tick = tokio::time::interval(FIRST_TOKEN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for client in &clients {
        tick.tick().await;
        if Instant::now() >= end {
            break;
        }
        timed(&http, &base, client, measure_from, &mut figures).await;
    }
    figures.latencies_us.sort_unstable();
    figures
}
