//! `/metrics` in the Prometheus text format: what the balance cache is doing.

use coalition_store::cache::CacheStats;
use std::fmt::Write;
use std::sync::atomic::Ordering;

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

#[cfg(test)]
mod tests {
    use super::*;

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
