//! `/metrics` in the Prometheus text format: HTTP requests by route, the database pool,
//! jobs, business counters (`coalition_app::metrics`) and what the balance cache is doing.

use coalition_app::metrics::{JobOutcome, PoolUsage, BUSINESS, JOB_RUNS};
use coalition_store::cache::CacheStats;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

struct Metric<'a> {
    name: &'a str,
    kind: &'a str,
    help: &'a str,
    value: u64,
}

/// Renders the cache counters, labelled with the cache backend (`redis`, `in_process`).
pub fn render(backend: &str, stats: &CacheStats, cache_in_use: bool) -> String {
    let metrics = [
        Metric {
            name: "coalition_balance_cache_hits_total",
            kind: "counter",
            help: "Balance reads answered from the cache.",
            value: stats.hits.load(Ordering::Relaxed),
        },
        Metric {
            name: "coalition_balance_cache_misses_total",
            kind: "counter",
            help: "Balance reads answered from the database (not cached, or cache bypassed).",
            value: stats.misses.load(Ordering::Relaxed),
        },
        Metric {
            name: "coalition_balance_cache_errors_total",
            kind: "counter",
            help: "Cache calls that failed or timed out.",
            value: stats.errors.load(Ordering::Relaxed),
        },
        Metric {
            name: "coalition_balance_cache_flushes_total",
            kind: "counter",
            help: "Times the cache was emptied after an outage.",
            value: stats.flushes.load(Ordering::Relaxed),
        },
        Metric {
            name: "coalition_balance_cache_up",
            kind: "gauge",
            help: "1 when the cache is in use, 0 while it is bypassed.",
            value: u64::from(cache_in_use),
        },
    ];
    let mut text = String::new();
    for m in metrics {
        let _ = writeln!(text, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(text, "# TYPE {} {}", m.name, m.kind);
        let _ = writeln!(text, "{}{{backend=\"{backend}\"}} {}", m.name, m.value);
    }
    text
}

/// Upper bounds (seconds) of the request latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Requests of this process by route template (bounded: unmatched paths are one route).
pub static HTTP: LazyLock<HttpStats> = LazyLock::new(HttpStats::default);

#[derive(Default)]
pub struct HttpStats {
    routes: RwLock<HashMap<String, Arc<RouteStats>>>,
}

#[derive(Default)]
struct RouteStats {
    /// (method, status, requests); a route answers with a handful of statuses.
    answers: RwLock<Vec<(String, u16, AtomicU64)>>,
    /// Requests per latency bucket, not cumulative; the last one is beyond every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    micros: AtomicU64,
    count: AtomicU64,
}

impl HttpStats {
    /// Counts one answered request. After the first request of a route and status, a
    /// request takes two read locks and atomic adds: no writer waits on the hot path.
    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let stats = self.route(route);
        stats.answered(method, status);
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        stats.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        stats.micros.fetch_add(micros, Ordering::Relaxed);
        stats.count.fetch_add(1, Ordering::Relaxed);
    }

    fn route(&self, route: &str) -> Arc<RouteStats> {
        if let Some(stats) = self.routes.read().expect("http stats").get(route) {
            return stats.clone();
        }
        let mut routes = self.routes.write().expect("http stats");
        routes.entry(route.to_owned()).or_default().clone()
    }

    fn render(&self, text: &mut String) {
        let routes = self.routes.read().expect("http stats");
        let mut sorted: Vec<_> = routes.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let name = "coalition_http_requests_total";
        header(
            text,
            name,
            "counter",
            "HTTP requests answered, by route template, method and status.",
        );
        for (route, stats) in &sorted {
            let route = label_value(route);
            for (method, status, count) in stats.answers.read().expect("http stats").iter() {
                let count = count.load(Ordering::Relaxed);
                let _ = writeln!(
                    text,
                    "{name}{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {count}"
                );
            }
        }
        let name = "coalition_http_request_duration_seconds";
        header(
            text,
            name,
            "histogram",
            "Time to answer a request (until the response head), by route template.",
        );
        for (route, stats) in &sorted {
            stats.render_histogram(text, name, &label_value(route));
        }
    }
}

impl RouteStats {
    fn answered(&self, method: &str, status: u16) {
        let counted = |answers: &[(String, u16, AtomicU64)]| {
            answers
                .iter()
                .find(|(m, s, _)| m == method && *s == status)
                .map(|(_, _, count)| count.fetch_add(1, Ordering::Relaxed))
                .is_some()
        };
        if counted(&self.answers.read().expect("http stats")) {
            return;
        }
        let mut answers = self.answers.write().expect("http stats");
        if !counted(&answers) {
            answers.push((method.to_owned(), status, AtomicU64::new(1)));
        }
    }

    fn render_histogram(&self, text: &mut String, name: &str, route: &str) {
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                text,
                "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            text,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {cumulative}"
        );
        let seconds = self.micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(text, "{name}_sum{{route=\"{route}\"}} {seconds}");
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(text, "{name}_count{{route=\"{route}\"}} {count}");
    }
}

fn header(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// A label value as the exposition format writes it.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything of this process but the cache: HTTP, the database pool, jobs, business.
pub fn render_process(pool: Option<PoolUsage>) -> String {
    let mut text = String::new();
    HTTP.render(&mut text);
    if let Some(pool) = pool {
        let name = "coalition_db_pool_connections";
        header(
            &mut text,
            name,
            "gauge",
            "Database pool connections by state (sqlx does not expose callers waiting for one).",
        );
        let _ = writeln!(text, "{name}{{state=\"in_use\"}} {}", pool.in_use);
        let _ = writeln!(text, "{name}{{state=\"idle\"}} {}", pool.idle);
        let name = "coalition_db_pool_max_connections";
        header(
            &mut text,
            name,
            "gauge",
            "The most connections the pool opens.",
        );
        let _ = writeln!(text, "{name} {}", pool.max);
    }
    let name = "coalition_job_runs_total";
    header(
        &mut text,
        name,
        "counter",
        "Background job runs by job and outcome (skipped: another process held the job's lock).",
    );
    for (job, runs) in coalition_app::jobs::JOBS.iter().zip(&JOB_RUNS) {
        for outcome in JobOutcome::ALL {
            let count = runs.get(outcome);
            let _ = writeln!(
                text,
                "{name}{{job=\"{}\",outcome=\"{}\"}} {count}",
                job.name,
                outcome.as_str()
            );
        }
    }
    let name = "coalition_webhook_deliveries_total";
    header(
        &mut text,
        name,
        "counter",
        "Webhook delivery attempts by outcome (retried: failed, tried again later; failed: given up).",
    );
    for outcome in coalition_app::metrics::WebhookOutcome::ALL {
        let count =
            coalition_app::metrics::WEBHOOK_ATTEMPTS[outcome as usize].load(Ordering::Relaxed);
        let _ = writeln!(text, "{name}{{outcome=\"{}\"}} {count}", outcome.as_str());
    }
    let business = [
        (
            "coalition_purchases_total",
            "Purchases recorded (captures with a purchase included).",
            &BUSINESS.purchases,
        ),
        (
            "coalition_refunds_total",
            "Refunds recorded.",
            &BUSINESS.refunds,
        ),
        (
            "coalition_points_issued_total",
            "Points earned by purchases.",
            &BUSINESS.points_issued,
        ),
        (
            "coalition_points_redeemed_total",
            "Points redeemed by purchases and hold captures.",
            &BUSINESS.points_redeemed,
        ),
        (
            "coalition_points_expired_total",
            "Points moved to breakage by expiry.",
            &BUSINESS.points_expired,
        ),
    ];
    for (name, help, counter) in business {
        header(&mut text, name, "counter", help);
        let _ = writeln!(text, "{name} {}", counter.load(Ordering::Relaxed));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status_with_a_cumulative_histogram() {
        let http = HttpStats::default();
        let route = "/v1/cards/{number}/register";
        http.observe(route, "POST", 201, Duration::from_millis(3));
        http.observe(route, "POST", 201, Duration::from_millis(30));
        http.observe(route, "POST", 404, Duration::from_secs(9));
        let mut text = String::new();
        http.render(&mut text);
        let requests =
            "coalition_http_requests_total{route=\"/v1/cards/{number}/register\",method=\"POST\"";
        assert!(
            text.contains(&format!("{requests},status=\"201\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{requests},status=\"404\"}} 1\n")),
            "{text}"
        );
        let bucket =
            "coalition_http_request_duration_seconds_bucket{route=\"/v1/cards/{number}/register\"";
        assert!(
            text.contains(&format!("{bucket},le=\"0.001\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket},le=\"0.005\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{bucket},le=\"0.05\"}} 2\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{bucket},le=\"5\"}} 2\n")), "{text}");
        assert!(
            text.contains(&format!("{bucket},le=\"+Inf\"}} 3\n")),
            "{text}"
        );
        assert!(text.contains("coalition_http_request_duration_seconds_sum{route=\"/v1/cards/{number}/register\"} 9.033\n"), "{text}");
        assert!(text.contains("coalition_http_request_duration_seconds_count{route=\"/v1/cards/{number}/register\"} 3\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn counters_are_rendered_with_their_backend() {
        let stats = CacheStats::default();
        stats.hits.store(7, Ordering::Relaxed);
        stats.misses.store(3, Ordering::Relaxed);
        let text = render("redis", &stats, false);
        assert!(text.contains("coalition_balance_cache_hits_total{backend=\"redis\"} 7\n"));
        assert!(text.contains("coalition_balance_cache_misses_total{backend=\"redis\"} 3\n"));
        assert!(text.contains("# TYPE coalition_balance_cache_up gauge\n"));
        assert!(text.contains("coalition_balance_cache_up{backend=\"redis\"} 0\n"));
    }
}
