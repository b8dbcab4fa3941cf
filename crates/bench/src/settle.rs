//! `coalition-bench settlement`: the time `coalition settle` takes over a period of N
//! postings on PostgreSQL. The ledger is bulk-loaded in SQL (generate_series) into a
//! fresh database: 20 partners whose prices change mid-period, purchases (a tenth of
//! them funded by another partner), redemptions and expiries, two postings an entry, in
//! time order as the server writes them; plus a tenth as many postings before the
//! period (the liability's opening is computed from them).

use crate::setup::{self, Error};
use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const PARTNERS: i64 = 20;

pub async fn run(
    binary: &Path,
    admin_url: &str,
    database_name: &str,
    postings: i64,
) -> Result<bool, Error> {
    let name = format!("{database_name}_settle");
    let url = setup::clean_database(admin_url, &name).await?;
    // A fresh database: the commands migrate it (PostgreSQL's default is not to).
    let env = [
        ("DATABASE_URL", url.clone()),
        ("COALITION_MIGRATE_ON_START", "true".to_owned()),
    ];
    let out = Command::new(binary)
        .args(["programme", "create", "--name", "Settlement bench"])
        .args(["--currency", "EUR", "--point-value", "0.01"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    if !out.status.success() {
        return Err(format!("programme create: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let created: Value = serde_json::from_slice(&out.stdout)?;
    let programme = created["programme_id"].as_str().ok_or("programme id")?;
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse()?;
    let end = start + Duration::days(30);
    let loading = Instant::now();
    load(&url, programme, start, end, postings).await?;
    println!(
        "loaded {postings} postings in the period (+{} before it) in {:.1} s",
        postings / 10,
        loading.elapsed().as_secs_f64()
    );
    let settling = Instant::now();
    let out = Command::new(binary)
        .args(["settle", "--programme-id", programme])
        .args(["--from", &start.to_rfc3339(), "--to", &end.to_rfc3339()])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let took = settling.elapsed();
    if !out.status.success() {
        return Err(format!("settle: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let settlement: Value = serde_json::from_slice(&out.stdout)?;
    let counted = settlement["postings"].as_i64().unwrap_or(-1);
    let sums_to_zero = nets_sum_to_zero(&settlement);
    println!(
        "settlement of {counted} postings ({} lines, {} payments): {:.3} s for the whole \
         `coalition settle` command; nets sum to zero: {sums_to_zero}",
        settlement["lines"].as_array().map_or(0, Vec::len),
        settlement["payments"].as_array().map_or(0, Vec::len),
        took.as_secs_f64()
    );
    setup::drop_databases(admin_url, &[name.as_str()]).await?;
    Ok(sums_to_zero && counted == postings / 2)
}

fn nets_sum_to_zero(s: &Value) -> bool {
    let amount = |v: &Value| -> Option<rust_decimal::Decimal> { v.as_str()?.parse().ok() };
    let lines = s["lines"].as_array().cloned().unwrap_or_default();
    let partners: Option<Vec<_>> = lines.iter().map(|l| amount(&l["net"])).collect();
    match (partners, amount(&s["operator"]["net"])) {
        (Some(p), Some(o)) => p.into_iter().sum::<rust_decimal::Decimal>() + o == 0.into(),
        _ => false,
    }
}

fn uuid_sql(prefix: &str, n: &str) -> String {
    format!("('00000000-0000-4000-{prefix}-' || lpad(to_hex({n}), 12, '0'))::uuid")
}

/// Entries `from..=to` spread over [at, at + span), and their two postings each.
fn ledger_sql(
    programme: &str,
    from: i64,
    to: i64,
    at: DateTime<Utc>,
    span: Duration,
) -> [String; 2] {
    let count = (to - from + 1).max(1);
    let step_us = span.num_microseconds().unwrap_or(0) / count;
    let at = at.to_rfc3339();
    let partner = uuid_sql("8000", &format!("(g % {PARTNERS}) + 1"));
    let funder = uuid_sql("8000", &format!("((g + 1) % {PARTNERS}) + 1"));
    let entry = uuid_sql("a000", "g");
    let member = uuid_sql("b000", "g % 10000");
    let time = format!("'{at}'::timestamptz + (g - {from}) * interval '{step_us} microseconds'");
    let entries = format!(
        "INSERT INTO journal_entries (id, programme_id, kind, reason, partner_id, purchase_id, refund_id, breakdown, created_at) \
         SELECT {entry}, '{programme}', \
                CASE WHEN g % 10 < 7 THEN 'purchase' WHEN g % 10 < 9 THEN 'redemption' ELSE 'expiry' END, \
                'bench', CASE WHEN g % 10 = 9 THEN NULL ELSE {partner} END, NULL, NULL, '[]', {time} \
         FROM generate_series({from}, {to}) g"
    );
    let postings = format!(
        "INSERT INTO postings (entry_id, programme_id, account_kind, account_id, amount, created_at) \
         SELECT {entry}, '{programme}', \
                CASE WHEN side = 2 THEN 'member' WHEN g % 10 < 7 THEN 'partner_issued' \
                     WHEN g % 10 < 9 THEN 'partner_redeemed' ELSE 'operator_breakage' END, \
                CASE WHEN side = 2 THEN {member} WHEN g % 10 = 6 THEN {funder} \
                     WHEN g % 10 < 9 THEN {partner} ELSE '{programme}'::uuid END, \
                (CASE WHEN g % 10 < 7 THEN -1 ELSE 1 END) * (CASE WHEN side = 2 THEN -1 ELSE 1 END) * (g % 97 + 1), \
                {time} \
         FROM generate_series({from}, {to}) g CROSS JOIN (VALUES (1), (2)) AS sides(side) \
         ORDER BY g, side"
    );
    [entries, postings]
}

async fn load(
    url: &str,
    programme: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    postings: i64,
) -> Result<(), Error> {
    let db = Database::connect(url).await?;
    let partner = uuid_sql("8000", "p");
    let changed = uuid_sql("9000", "p");
    let created = (start - Duration::days(60)).to_rfc3339();
    let mid = (start + (end - start) / 2).to_rfc3339();
    let history = postings / 20;
    let in_period = postings / 2;
    let mut statements = vec![
        format!(
            "INSERT INTO partners (id, programme_id, name, kind, category, earn_points_per_unit, \
               issue_price_per_point, redemption_value_per_point, created_at) \
             SELECT {partner}, '{programme}', 'Partner ' || p, 'merchant', 'retail', '1', \
               (0.010 + p * 0.0001)::text, (0.008 + p * 0.0001)::text, '{created}' \
             FROM generate_series(1, {PARTNERS}) p"
        ),
        format!(
            "INSERT INTO partner_prices (id, programme_id, partner_id, valid_from, issue_price_per_point, redemption_value_per_point) \
             SELECT id, programme_id, id, created_at, issue_price_per_point, redemption_value_per_point \
             FROM partners WHERE programme_id = '{programme}'"
        ),
        format!(
            "INSERT INTO partner_prices (id, programme_id, partner_id, valid_from, issue_price_per_point, redemption_value_per_point) \
             SELECT {changed}, '{programme}', {partner}, '{mid}', (0.011 + p * 0.0001)::text, (0.0085 + p * 0.0001)::text \
             FROM generate_series(1, {PARTNERS}) p"
        ),
    ];
    statements.extend(ledger_sql(
        programme,
        1,
        history,
        start - Duration::days(30),
        Duration::days(30),
    ));
    statements.extend(ledger_sql(
        programme,
        history + 1,
        history + in_period,
        start,
        end - start,
    ));
    statements.push("ANALYZE partners, partner_prices, journal_entries, postings".into());
    for sql in statements {
        db.execute_unprepared(&sql).await?;
    }
    db.close().await?;
    Ok(())
}
