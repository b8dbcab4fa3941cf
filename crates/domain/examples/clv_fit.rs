//! Fits BG/NBD and Gamma-Gamma to the CDNOW purchase log and prints the parameters,
//! log-likelihoods and fit times:
//!
//!     cargo run --release -p coalition-domain --example clv_fit -- CDNOW_master.txt
//!
//! Each fit runs `--runs N` times (default 7) and the median and fastest times are
//! printed; `examples/lifetimes_fit.py` times `lifetimes` the same way for comparison.
//!
//! With `--write-fixtures DIR` it also writes the grouped summaries that
//! `tests/clv_cdnow.rs` fits (`cdnow_rf_groups.txt`, `cdnow_spend.txt`).

use std::time::Instant;
use std::{env, fs};

use chrono::NaiveDate;
use coalition_domain::clv::{
    group_by_rf, spend_observations, summarise, BgNbd, CustomerSummary, GammaGamma,
};

/// The calibration period ends here (FHL 2005: the first 39 weeks of 1997).
const CALIBRATION_END: (i32, u32, u32) = (1997, 9, 30);

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let path = args
        .first()
        .expect("usage: clv_fit CDNOW_master.txt [--write-fixtures DIR]");
    let text = fs::read_to_string(path).expect("read the CDNOW file");
    let end =
        NaiveDate::from_ymd_opt(CALIBRATION_END.0, CALIBRATION_END.1, CALIBRATION_END.2).unwrap();

    let started = Instant::now();
    let summaries = summarise(parse(&text), end);
    let groups = group_by_rf(summaries.values());
    let spend = spend_observations(summaries.values());
    println!(
        "summarised {} customers into {} (x, t_x, T) groups and {} spend observations in {:.1} ms",
        summaries.len(),
        groups.len(),
        spend.len(),
        ms(started)
    );

    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(7, |n| n.parse().expect("--runs takes a number"));
    let (bg, bg_ms) = timed(runs, || BgNbd::fit(&groups).expect("BG/NBD fit"));
    let p = bg.params;
    println!(
        "BG/NBD  r = {:.10}  alpha = {:.10}  a = {:.10}  b = {:.10}",
        p.r, p.alpha, p.a, p.b
    );
    println!(
        "BG/NBD  log-likelihood = {:.6}  ({} evaluations, fit {bg_ms})",
        bg.log_likelihood, bg.evaluations
    );

    let (gg, gg_ms) = timed(runs, || GammaGamma::fit(&spend).expect("Gamma-Gamma fit"));
    let q = gg.params;
    println!(
        "GammaGamma  p = {:.10}  q = {:.10}  gamma = {:.10}",
        q.p, q.q, q.gamma
    );
    println!(
        "GammaGamma  log-likelihood = {:.6}  ({} evaluations, fit {gg_ms})",
        gg.log_likelihood, gg.evaluations
    );

    if let Some(i) = args.iter().position(|a| a == "--write-fixtures") {
        let dir = args.get(i + 1).expect("--write-fixtures needs a directory");
        write_fixtures(dir, summaries.values());
    }
}

/// `customer_id date(YYYYMMDD) cds dollars` lines; the header line is skipped.
fn parse(text: &str) -> impl Iterator<Item = (u32, NaiveDate, f64)> + '_ {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        let customer = fields.next()?.parse().ok()?;
        let day = NaiveDate::parse_from_str(fields.next()?, "%Y%m%d").ok()?;
        let dollars = fields.nth(1)?.parse().ok()?;
        Some((customer, day, dollars))
    })
}

/// Grouped `(x, t_x days, T days, count)` lines, and `(x, repeat total in cents)` lines
/// for the Gamma-Gamma fit (the mean is total / x; cents keep it exact).
fn write_fixtures<'a>(dir: &str, summaries: impl Iterator<Item = &'a CustomerSummary> + Clone) {
    let mut counts = std::collections::BTreeMap::<(u32, i64, i64), u64>::new();
    for s in summaries.clone() {
        *counts
            .entry((s.frequency, s.recency_days, s.age_days))
            .or_insert(0) += 1;
    }
    let mut rf = String::from("# CDNOW_master.txt summarised to 1997-09-30 as lifetimes does (freq='D'): x t_x_days T_days customers\n");
    for ((x, t_x, t), n) in counts {
        rf += &format!("{x} {t_x} {t} {n}\n");
    }
    fs::write(format!("{dir}/cdnow_rf_groups.txt"), rf).expect("write cdnow_rf_groups.txt");

    let mut spend =
        String::from("# CDNOW repeaters with positive spend to 1997-09-30: x repeat_total_cents\n");
    for o in spend_observations(summaries) {
        let total_cents = (o.mean_value * f64::from(o.frequency) * 100.0).round() as i64;
        spend += &format!("{} {total_cents}\n", o.frequency);
    }
    fs::write(format!("{dir}/cdnow_spend.txt"), spend).expect("write cdnow_spend.txt");
}

/// Runs `fit` `runs` times: its result and "median X ms, fastest Y ms of N runs".
fn timed<T>(runs: usize, fit: impl Fn() -> T) -> (T, String) {
    let mut times = Vec::with_capacity(runs.max(1));
    let mut result = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        result = Some(fit());
        times.push(ms(started));
    }
    times.sort_by(f64::total_cmp);
    let figures = format!(
        "median {:.2} ms, fastest {:.2} ms of {} runs",
        times[times.len() / 2],
        times[0],
        times.len()
    );
    (result.expect("at least one run"), figures)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
