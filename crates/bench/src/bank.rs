//! `coalition-bench bank-events`: signed bank card events per second. A fresh database,
//! a release server on it, a programme with a gym whose merchant id the bank's events
//! name, a bank partner with a signing secret and N members holding co-branded cards;
//! then closed-loop workers each send, for a new card transaction, an authorization and
//! its clearing (half at the gym's MID, half off the coalition), every event signed
//! (Standard Webhooks) as a bank would sign it. Each event is one measured request.

use crate::load::Figures;
use crate::setup::{self, Error};
use chrono::Utc;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CONCURRENCY: usize = 16;
const GYM_MID: &str = "MID-BENCH-GYM";

pub struct Settings<'a> {
    pub binary: &'a Path,
    pub admin_url: &'a str,
    pub database_name: &'a str,
    pub redis_url: &'a str,
    pub cards: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

struct Bank {
    base: String,
    token: String,
    secret: String,
    cards: Vec<String>,
}

pub async fn run(s: Settings<'_>) -> Result<bool, Error> {
    let database_url = setup::clean_database(s.admin_url, s.database_name).await?;
    let env = setup::server_env(&database_url, s.redis_url);
    let server = setup::start_server(s.binary, &env).await?;
    let programme = setup::create_programme(s.binary, &env, &server).await?;
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let gym = programme.partners[0].0;
    let res = http
        .patch(format!("{base}/v1/partners/{gym}"))
        .bearer_auth(&programme.admin)
        .json(&json!({"merchant_ids": [GYM_MID]}))
        .send()
        .await?;
    if !res.status().is_success() {
        return Err(format!("PATCH merchant_ids: {}", res.status()).into());
    }
    let partner = setup::post(
        &http,
        &base,
        "/v1/partners",
        &programme.admin,
        json!({"name": "Bench Bank", "kind": "bank", "category": "bank",
               "earn_points_per_unit": "0.5", "issue_price_per_point": "0.01",
               "redemption_value_per_point": "0.01"}),
    )
    .await?;
    let client = setup::post(
        &http,
        &base,
        "/v1/clients",
        &programme.admin,
        json!({"name": "Bench Bank events", "partner_id": partner["id"]}),
    )
    .await?;
    let token = setup::token(&http, &base, &client).await?;
    let secret = setup::post(&http, &base, "/v1/bank/signing-secrets", &token, json!({})).await?
        ["secret"]
        .as_str()
        .ok_or("no secret")?
        .to_owned();
    let seeding = Instant::now();
    let mut cards = Vec::with_capacity(s.cards);
    for i in 0..s.cards {
        let member = setup::post(
            &http,
            &base,
            "/v1/members",
            &token,
            json!({"name": "Card Holder", "email": format!("holder{i}@bench.example")}),
        )
        .await?;
        let card_token = format!("tok_{}", Uuid::new_v4().simple());
        setup::post(
            &http,
            &base,
            "/v1/bank/cards",
            &token,
            json!({"member_id": member["id"], "card_token": card_token, "bin": "492181",
                   "last4": "4242", "expiry_month": "2030-12"}),
        )
        .await?;
        cards.push(card_token);
    }
    println!(
        "bank events: {} card holders enrolled and carded over HTTP in {:.1} s",
        cards.len(),
        seeding.elapsed().as_secs_f64()
    );
    let bank = Arc::new(Bank {
        base,
        token,
        secret,
        cards,
    });
    eprintln!(
        "running bank events at concurrency {CONCURRENCY} ({} s warm-up, {} s measured)",
        s.warmup.as_secs(),
        s.measure.as_secs()
    );
    load(bank.clone(), s.warmup).await;
    let figures = load(bank, s.measure).await;
    println!();
    println!(
        "{:<15} {:>4} {:>10} {:>8} {:>8} {:>8} {:>7}",
        "scenario", "c", "events/s", "p50 ms", "p95 ms", "p99 ms", "errors"
    );
    println!(
        "{:<15} {:>4} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>7}",
        "bank events",
        CONCURRENCY,
        figures.throughput(),
        figures.percentile_ms(0.50),
        figures.percentile_ms(0.95),
        figures.percentile_ms(0.99),
        figures.errors + figures.refused
    );
    drop(server);
    setup::drop_databases(s.admin_url, &[s.database_name]).await?;
    Ok(figures.errors == 0 && figures.refused == 0 && figures.requests > 0)
}

/// `CONCURRENCY` closed-loop workers for `period`: authorization then clearing of a new
/// transaction on a random card, each event one request.
async fn load(bank: Arc<Bank>, period: Duration) -> Figures {
    let started = Instant::now();
    let until = started + period;
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let bank = bank.clone();
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64 + 1);
            let (mut ok, mut failed, mut latencies) = (0usize, 0usize, Vec::new());
            while Instant::now() < until {
                let card = &bank.cards[rng.gen_range(0..bank.cards.len())];
                let txn = Uuid::new_v4().simple().to_string();
                let mid = if rng.gen_bool(0.5) { GYM_MID } else { "MID-ELSEWHERE" };
                let cents: u32 = rng.gen_range(500..20_000);
                for kind in ["authorization", "clearing"] {
                    let body = json!({
                        "id": format!("{txn}-{kind}"), "type": kind, "transaction_id": txn,
                        "card_token": card,
                        "amount": {"amount": format!("{}.{:02}", cents / 100, cents % 100), "currency": "EUR"},
                        "merchant": {"id": mid, "name": "Somewhere", "category_code": "5999"},
                        "occurred_at": Utc::now().to_rfc3339()
                    })
                    .to_string();
                    let msg_id = format!("msg_{}", Uuid::new_v4().simple());
                    let ts = Utc::now().timestamp();
                    let key = coalition_domain::bank::secret_key(&bank.secret).unwrap_or_default();
                    let signature = coalition_domain::bank::sign(&key, &msg_id, ts, body.as_bytes());
                    let sent = Instant::now();
                    let res = http
                        .post(format!("{}/v1/bank/events", bank.base))
                        .bearer_auth(&bank.token)
                        .header("content-type", "application/json")
                        .header("webhook-id", msg_id)
                        .header("webhook-timestamp", ts.to_string())
                        .header("webhook-signature", signature)
                        .body(body)
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            ok += 1;
                            latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        _ => failed += 1,
                    }
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
