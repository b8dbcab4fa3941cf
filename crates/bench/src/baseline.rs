//! The machine's own limits, measured in the same run: pgbench's tpcb-like transaction
//! against the same PostgreSQL, redis-benchmark's GET against the same Redis.

use crate::setup::{clean_database, Error};
use std::process::Command;
use std::time::Duration;

pub struct Baseline {
    pub throughput: f64,
    pub detail: String,
}

fn installed(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// pgbench tpcb-like at `clients` for `duration`, on a scratch database.
pub async fn pgbench(
    admin_url: &str,
    database: &str,
    clients: usize,
    duration: Duration,
) -> Result<Option<Baseline>, Error> {
    if !installed("pgbench") {
        return Ok(None);
    }
    let url = clean_database(admin_url, database).await?;
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "16", &url])
        .output()?;
    if !init.status.success() {
        return Err(format!("pgbench -i: {}", String::from_utf8_lossy(&init.stderr)).into());
    }
    let run = Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", "2"])
        .args(["-T", &duration.as_secs().max(1).to_string(), &url])
        .output()?;
    let text = String::from_utf8_lossy(&run.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .ok_or_else(|| format!("no tps in pgbench output: {text}"))?;
    let latency = text
        .lines()
        .find(|l| l.starts_with("latency average"))
        .unwrap_or("")
        .to_owned();
    Ok(Some(Baseline {
        throughput: tps,
        detail: format!("tpcb-like, scale 16, -c {clients} -j 2; {latency}"),
    }))
}

/// redis-benchmark GET at `clients`, `requests` in all.
pub fn redis_get(
    redis_url: &str,
    clients: usize,
    requests: usize,
) -> Result<Option<Baseline>, Error> {
    if !installed("redis-benchmark") {
        return Ok(None);
    }
    let address = redis_url
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:6379");
    let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-t", "get", "--csv"])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row: Vec<String> = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .ok_or_else(|| format!("no GET row in redis-benchmark output: {text}"))?
        .split(',')
        .map(|f| f.trim_matches('"').to_owned())
        .collect();
    let field = |i: usize| row.get(i).cloned().unwrap_or_default();
    Ok(Some(Baseline {
        throughput: field(1).parse()?,
        detail: format!(
            "GET -c {clients} -n {requests}; p50 {} ms, p99 {} ms",
            field(4),
            field(6)
        ),
    }))
}
