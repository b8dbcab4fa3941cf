//! `coalition-bench analytics`: the retention analytics over a year of N purchases
//! (default 1,000,000) on PostgreSQL. A fresh database and a release server; a year of
//! purchases by N/20 members at the programme's three partners (stores and staff named)
//! is written as a CSV file and loaded with `coalition import purchases`; then each
//! analytics answer is timed over HTTP, as an operator's dashboard would ask for it.
//!
//! The history is random but shaped like a customer base: each member starts on a day
//! of the year, buys at their own rate (exponentially distributed across members) and
//! may stop for good after any purchase, so the CLV models have something to find.

use crate::setup::{self, Error};
use chrono::{Duration, NaiveDate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

pub struct Settings<'a> {
    pub binary: &'a Path,
    pub admin_url: &'a str,
    pub database_name: &'a str,
    pub redis_url: &'a str,
    pub purchases: usize,
}

/// The year of history: its first and last day.
const FIRST_DAY: (i32, u32, u32) = (2025, 11, 1);
const DAYS: i64 = 365;

pub async fn run(s: Settings<'_>) -> Result<bool, Error> {
    let name = format!("{}_analytics", s.database_name);
    let database_url = setup::clean_database(s.admin_url, &name).await?;
    let env = setup::server_env(&database_url, s.redis_url);
    let server = setup::start_server(s.binary, &env).await?;
    let programme = setup::create_programme(s.binary, &env, &server).await?;
    let first = NaiveDate::from_ymd_opt(FIRST_DAY.0, FIRST_DAY.1, FIRST_DAY.2).ok_or("day")?;
    let last = first + Duration::days(DAYS - 1);

    let partners: Vec<String> = programme
        .partners
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let (csv, rows, members) = history(s.purchases, &partners, first);
    let file = std::env::temp_dir().join(format!("{name}.csv"));
    std::fs::write(&file, csv)?;
    let importing = Instant::now();
    let out = Command::new(s.binary)
        .args(["import", "purchases", "--format", "csv"])
        .args(["--programme-id", &programme.id.to_string()])
        .args(["--partner-id", &partners[0]])
        .arg(&file)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let import_took = importing.elapsed().as_secs_f64();
    std::fs::remove_file(&file).ok();
    if !out.status.success() {
        return Err(format!("import: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let report: Value = serde_json::from_slice(&out.stdout)?;
    println!(
        "imported {} purchases of {members} members over {DAYS} days in {import_took:.1} s \
         (`coalition import purchases --format csv`; {} members created)",
        report["imported"], report["members_created"]
    );
    let mut ok = report["imported"].as_u64() == Some(rows as u64);

    let http = reqwest::Client::new();
    let base = server.base.clone();
    let admin = programme.admin.as_str();
    let period = format!("from={first}&to={last}");
    let timed_post = |path: &'static str, body: Value| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let started = Instant::now();
            let res = http
                .post(format!("{base}{path}"))
                .bearer_auth(admin)
                .json(&body)
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            Ok::<_, Error>((status, body, started.elapsed().as_secs_f64()))
        }
    };
    let (status, model, took) = timed_post(
        "/v1/analytics/clv-models",
        json!({"calibration_end": last.to_string()}),
    )
    .await?;
    println!(
        "{:<58} {took:>7.2} s  {status} (fit {} ms over {} members)",
        "POST /v1/analytics/clv-models", model["fit_millis"], model["members"]
    );
    ok &= status.is_success();
    let member = model_member(&http, &base, admin).await;
    let mut reads = vec![
        "/v1/analytics/at-risk?p_alive_below=0.3&limit=50".to_owned(),
        format!("/v1/analytics/pareto?{period}"),
        format!("/v1/analytics/pareto?{period}&partner_id={}", partners[1]),
        format!("/v1/analytics/abc-xyz?{period}"),
        format!("/v1/analytics/abc-xyz/members?{period}&class=AX&limit=50"),
        format!("/v1/analytics/rfm?as_of={last}&limit=50"),
        "/v1/analytics/forecast?weeks=12".to_owned(),
        format!("/v1/analytics/forecast?weeks=12&partner_id={}", partners[2]),
        format!("/v1/analytics/staff?{period}"),
    ];
    if let Some(member) = member {
        reads.push(format!("/v1/members/{member}/clv?weeks=52"));
    }
    for path in reads {
        let started = Instant::now();
        let res = http
            .get(format!("{base}{path}"))
            .bearer_auth(admin)
            .send()
            .await?;
        let status = res.status();
        let _ = res.bytes().await?;
        let took = started.elapsed().as_secs_f64();
        let shown = path.replace(&partners[1], "P").replace(&partners[2], "P");
        let shown = shown
            .split("&partner_id")
            .next()
            .unwrap_or(&shown)
            .to_owned()
            + if path.contains("partner_id") {
                " (one partner)"
            } else {
                ""
            };
        println!("GET {shown:<54} {took:>7.2} s  {status}");
        ok &= status.is_success();
    }
    drop(server);
    setup::drop_databases(s.admin_url, &[name.as_str()]).await?;
    Ok(ok)
}

/// A member of the at-risk list, for the per-member CLV read.
async fn model_member(http: &reqwest::Client, base: &str, admin: &str) -> Option<String> {
    let page: Value = http
        .get(format!(
            "{base}/v1/analytics/at-risk?p_alive_below=1&limit=1"
        ))
        .bearer_auth(admin)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(page["items"][0]["member_id"].as_str()?.to_owned())
}

/// The CSV of `purchases` purchases (about 20 a member): (text, rows, members).
fn history(purchases: usize, partners: &[String], first: NaiveDate) -> (String, usize, usize) {
    let mean_per_member = 20.0;
    let mut rng = StdRng::seed_from_u64(20_261_203);
    let mut csv = String::with_capacity(purchases * 80);
    csv.push_str("customer_ref,date,amount,partner_id,store_ref,staff_ref\n");
    let (mut rows, mut m) = (0, 0);
    while rows < purchases {
        m += 1;
        let start = rng.gen_range(0..DAYS);
        let days_left = (DAYS - start) as f64;
        // Purchases per year of this member; dropout after each purchase.
        let rate = -rng.gen::<f64>().max(1e-12).ln() * mean_per_member * 1.6;
        let dropout = rng.gen_range(0.0..0.12);
        let favourite = rng.gen_range(0..partners.len());
        // Each member's own typical basket (heterogeneous spend, as Gamma-Gamma assumes).
        let basket = rng.gen_range(10.0..120.0);
        let mut day = start as f64;
        loop {
            let i = if rng.gen_bool(0.7) {
                favourite
            } else {
                rng.gen_range(0..partners.len())
            };
            let cents = (basket * rng.gen_range(0.5..1.5) * 100.0) as u32;
            let date = first + Duration::days(day as i64);
            let _ = writeln!(
                csv,
                "c{m},{date},{}.{:02},{},store-{i}-{},staff-{}",
                cents / 100,
                cents % 100,
                partners[i],
                rng.gen_range(0..6),
                rng.gen_range(0..120)
            );
            rows += 1;
            if rows >= purchases || rng.gen_bool(dropout) {
                break;
            }
            day += -rng.gen::<f64>().max(1e-12).ln() * DAYS as f64 / rate.max(0.5);
            if day >= days_left + start as f64 {
                break;
            }
        }
    }
    (csv, rows, m)
}
