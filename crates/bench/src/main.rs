//! `coalition-bench`: drives real HTTP load against a release `coalition` server on
//! PostgreSQL + Redis and holds the figures against pgbench and redis-benchmark run on
//! the same machine in the same run. See BENCHMARKS.md.

mod analytics;
mod bank;
mod baseline;
mod http1;
mod load;
mod lots;
mod portal;
mod settle;
mod setup;
mod token;

use baseline::Baseline;
use clap::Parser;
use load::{Figures, Op, Scenario, Target};
use setup::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "coalition-bench",
    about = "Load benchmark of Coalition against the machine's own limits"
)]
struct Args {
    /// A PostgreSQL database to connect to for creating the benchmark's own databases.
    #[arg(
        long,
        env = "COALITION_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[arg(
        long,
        env = "COALITION_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// The database the run drops, creates and drops again (pgbench's is NAME_pgbench):
    /// runs on one PostgreSQL at the same time need different names.
    #[arg(long, default_value = "coalition_bench")]
    database_name: String,
    /// The server binary (default: `coalition` next to this one, i.e. the same build).
    #[arg(long)]
    server: Option<PathBuf>,
    #[arg(long, default_value_t = 100_000)]
    members: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Unmeasured seconds before each scenario (connections, cache).
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Point lots of the member measured against one with a handful (the lots scenario).
    #[arg(long, default_value_t = 10_000)]
    lots: usize,
    /// Rounds of redeem, balance read and refund per member in the lots scenario.
    #[arg(long, default_value_t = 200)]
    lot_rounds: usize,
    /// Run only the lots scenario (no pgbench, redis-benchmark or load scenarios).
    #[arg(long)]
    only_lots: bool,
    /// Give the programme a tier ladder and earning rules (one capped per member per
    /// day) before the load, so purchases take the full economics path.
    #[arg(long)]
    economics: bool,
    /// A seconds-long run on a small programme: checks the benchmark works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Print the server's process id and wait this many seconds before the load, to
    /// attach a profiler (e.g. `perf record -g -p PID`).
    #[arg(long, default_value_t = 0)]
    pause_for_profiler: u64,
    #[command(subcommand)]
    command: Option<BenchCommand>,
}

#[derive(clap::Subcommand)]
enum BenchCommand {
    /// Time `coalition settle` over a period of N postings bulk-loaded into a fresh
    /// PostgreSQL database (with --smoke: 20,000).
    Settlement {
        #[arg(long, default_value_t = 1_000_000)]
        postings: i64,
    },
    /// Signed bank card events per second (authorization then clearing of new card
    /// transactions, half at a partner's merchant id) against a fresh database, with N
    /// co-branded card holders (with --smoke: 50 holders, 2 s).
    BankEvents {
        #[arg(long, default_value_t = 1_000)]
        cards: usize,
    },
    /// Time each retention analytics answer (CLV fit, at-risk, Pareto, ABC/XYZ, RFM,
    /// forecast, staff) over a year of N purchases imported into a fresh PostgreSQL
    /// database (with --smoke: 20,000).
    Analytics {
        #[arg(long, default_value_t = 1_000_000)]
        purchases: usize,
    },
    /// The member portal's home page (`GET /portal`) under N concurrent signed-in
    /// members: N members with purchases, each signed in through the e-mailed one-time
    /// code (a loopback SMTP sink of the bench), each requesting home in a closed loop;
    /// prints requests, p50, p99, max and requests per second (with --smoke: 10
    /// members, 2 s).
    Portal {
        #[arg(long, default_value_t = 50)]
        members: usize,
        /// Purchases made for each member before the load (history, tier, expiring lots).
        #[arg(long, default_value_t = 5)]
        purchases: usize,
    },
}

const EARN_CONCURRENCY: usize = 16;
const READ_CONCURRENCY: usize = 50;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.smoke {
        (args.members, args.seconds, args.warmup) = (300, 2, 1);
        (args.lots, args.lot_rounds) = (1_000, 20);
    }
    let outcome = match args.command {
        Some(BenchCommand::Settlement { postings }) => {
            let postings = if args.smoke { 20_000 } else { postings };
            settlement(&args, postings).await
        }
        Some(BenchCommand::BankEvents { cards }) => {
            let cards = if args.smoke { 50 } else { cards };
            bank_events(&args, cards).await
        }
        Some(BenchCommand::Analytics { purchases }) => {
            let purchases = if args.smoke { 20_000 } else { purchases };
            analytics(&args, purchases).await
        }
        Some(BenchCommand::Portal { members, purchases }) => {
            let members = if args.smoke { 10 } else { members };
            portal(&args, members, purchases).await
        }
        None => run(args).await,
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("coalition-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn settlement(args: &Args, postings: i64) -> Result<bool, Error> {
    let binary = match args.server.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("coalition"),
    };
    settle::run(&binary, &args.database_url, &args.database_name, postings).await
}

async fn analytics(args: &Args, purchases: usize) -> Result<bool, Error> {
    let binary = match args.server.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("coalition"),
    };
    analytics::run(analytics::Settings {
        binary: &binary,
        admin_url: &args.database_url,
        database_name: &args.database_name,
        redis_url: &args.redis_url,
        purchases,
    })
    .await
}

async fn portal(args: &Args, members: usize, purchases: usize) -> Result<bool, Error> {
    let binary = match args.server.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("coalition"),
    };
    portal::run(portal::Settings {
        binary: &binary,
        admin_url: &args.database_url,
        database_name: &args.database_name,
        redis_url: &args.redis_url,
        members,
        purchases_per_member: purchases,
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
    })
    .await
}

async fn bank_events(args: &Args, cards: usize) -> Result<bool, Error> {
    let binary = match args.server.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("coalition"),
    };
    bank::run(bank::Settings {
        binary: &binary,
        admin_url: &args.database_url,
        database_name: &args.database_name,
        redis_url: &args.redis_url,
        cards,
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
    })
    .await
}

struct Row {
    name: &'static str,
    concurrency: usize,
    figures: Figures,
    peak_rss_mb: f64,
}

async fn run(args: Args) -> Result<bool, Error> {
    let name = &args.database_name;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(
            format!("--database-name {name:?}: use lowercase letters, digits and _").into(),
        );
    }
    let binary = match args.server.clone() {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("coalition"),
    };
    let database_url = setup::clean_database(&args.database_url, &args.database_name).await?;
    let env = setup::server_env(&database_url, &args.redis_url);
    let server = setup::start_server(&binary, &env).await?;
    let programme = setup::create_programme(&binary, &env, &server).await?;
    if args.economics {
        setup::configure_economics(&server, &programme).await?;
        println!("economics: 3 tiers, 3 earning rules (one capped per member per day)");
    }
    let seeding = Instant::now();
    let members = setup::seed_members(&database_url, &programme, args.members).await?;
    println!(
        "seeded {} members with cards, 3 partners, in {:.1} s; server {}",
        members.len(),
        seeding.elapsed().as_secs_f64(),
        binary.display()
    );
    let seeding = Instant::now();
    let holders = [
        lots::seed_holder(&database_url, &programme, lots::FEW_LOTS, 10_000).await?,
        lots::seed_holder(&database_url, &programme, args.lots, 100).await?,
    ];
    println!(
        "seeded a member with {} lots and one with {} in {:.1} s",
        lots::FEW_LOTS,
        args.lots,
        seeding.elapsed().as_secs_f64()
    );
    if args.pause_for_profiler > 0 {
        println!("server pid {}", server.pid());
        tokio::time::sleep(Duration::from_secs(args.pause_for_profiler)).await;
    }
    let target = Arc::new(Target {
        base: server.base.clone(),
        partner_tokens: programme.partners.iter().map(|(_, t)| t.clone()).collect(),
        members,
        earners: RwLock::new(Vec::new()),
    });
    let mut ok = true;
    if !args.only_lots {
        ok &= load_scenarios(&args, &target, server.pid()).await?;
        let (warmup, measure) = (
            Duration::from_secs(args.warmup),
            Duration::from_secs(args.seconds),
        );
        let tokens = token::run(&binary, &env, &server.base, warmup, measure).await?;
        tokens.print();
        ok &= tokens.ok();
    }
    ok &= lot_scenario(&target, &holders, args.lot_rounds).await;
    if args.smoke {
        println!("(smoke run: it checks that the benchmark works; its figures measure nothing)");
    }
    drop(server);
    setup::drop_databases(
        &args.database_url,
        &[
            args.database_name.as_str(),
            pgbench_database(&args).as_str(),
        ],
    )
    .await?;
    Ok(ok)
}

/// pgbench, the HTTP load scenarios and redis-benchmark, reported against each other;
/// whether every scenario answered without errors.
async fn load_scenarios(args: &Args, target: &Arc<Target>, pid: u32) -> Result<bool, Error> {
    let (warmup, measure) = (
        Duration::from_secs(args.warmup),
        Duration::from_secs(args.seconds),
    );
    let scenario = |name, concurrency, mix| Scenario {
        name,
        concurrency,
        warmup,
        measure,
        mix,
    };

    eprintln!("running pgbench");
    let pgbench = baseline::pgbench(
        &args.database_url,
        &pgbench_database(args),
        EARN_CONCURRENCY,
        measure,
    )
    .await?;
    let earn = measure_scenario(
        target,
        pid,
        scenario("earn", EARN_CONCURRENCY, |_| Op::Earn),
    )
    .await;
    let redis_requests = (args.seconds as usize * 60_000).max(20_000);
    eprintln!("running redis-benchmark");
    let redis = baseline::redis_get(&args.redis_url, READ_CONCURRENCY, redis_requests)?;
    // A network that has been running has its balances cached; reading each member once
    // gets there, and measures the cold first read on the way.
    let first_reads = load::read_each_once(target.clone(), READ_CONCURRENCY);
    let cold = measured(pid, "first reads", READ_CONCURRENCY, first_reads).await;
    let reads = measure_scenario(
        target,
        pid,
        scenario("balance reads", READ_CONCURRENCY, |_| Op::Read),
    )
    .await;
    let mixed = measure_scenario(
        target,
        pid,
        scenario("mixed 80/15/5", READ_CONCURRENCY, |n| match n {
            0..=79 => Op::Read,
            80..=94 => Op::Earn,
            _ => Op::Redeem,
        }),
    )
    .await;
    let cache = cache_counters(target).await;
    let rows = [earn, reads, mixed, cold];
    report(&rows, pgbench.as_ref(), redis.as_ref(), &cache);
    Ok(rows
        .iter()
        .all(|r| r.figures.errors == 0 && r.figures.requests > 0))
}

/// The member with many lots against the one with a handful, reported side by side;
/// whether every request answered and every balance read missed the cache.
async fn lot_scenario(target: &Target, holders: &[lots::Holder; 2], rounds: usize) -> bool {
    eprintln!("running lots: {rounds} rounds of redeem, balance read, refund per member");
    let misses_before = metric(target, "coalition_balance_cache_misses_total").await;
    let mut figures = Vec::new();
    for holder in holders {
        figures.push(lots::measure(&target.base, &target.partner_tokens, holder, rounds).await);
    }
    let misses = metric(target, "coalition_balance_cache_misses_total").await - misses_before;
    report_lots(&figures, misses);
    let reads: usize = figures.iter().map(|f| f.read.requests).sum();
    figures.iter().all(|f| {
        [&f.redeem, &f.read, &f.refund]
            .iter()
            .all(|x| x.errors == 0 && x.refused == 0 && x.requests > 0)
    }) && misses == reads as f64
}

fn pgbench_database(args: &Args) -> String {
    format!("{}_pgbench", args.database_name)
}

async fn measure_scenario(target: &Arc<Target>, pid: u32, scenario: Scenario) -> Row {
    eprintln!(
        "running {} at concurrency {} ({} s warm-up, {} s measured)",
        scenario.name,
        scenario.concurrency,
        scenario.warmup.as_secs(),
        scenario.measure.as_secs()
    );
    let load = load::run(target.clone(), &scenario);
    measured(pid, scenario.name, scenario.concurrency, load).await
}

/// Runs `load` (futures start when awaited) and takes the server's peak RSS during it.
async fn measured(
    pid: u32,
    name: &'static str,
    concurrency: usize,
    load: impl std::future::Future<Output = Figures>,
) -> Row {
    reset_peak_rss(pid);
    let figures = load.await;
    Row {
        name,
        concurrency,
        figures,
        peak_rss_mb: peak_rss_mb(pid).unwrap_or(f64::NAN),
    }
}

/// Linux keeps a process's peak resident size; writing 5 to clear_refs resets it, so
/// each scenario reports its own peak.
fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

async fn metrics_text(target: &Target) -> Result<String, reqwest::Error> {
    reqwest::Client::new()
        .get(format!("{}/metrics", target.base))
        .send()
        .await?
        .text()
        .await
}

fn metric_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
}

/// One counter of the server's `/metrics`; NaN when it cannot be read.
async fn metric(target: &Target, name: &str) -> f64 {
    let text = metrics_text(target).await.unwrap_or_default();
    metric_value(&text, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

async fn cache_counters(target: &Target) -> String {
    let text = match metrics_text(target).await {
        Ok(text) => text,
        Err(e) => return format!("(no /metrics: {e})"),
    };
    let value = |name: &str| metric_value(&text, name).unwrap_or("?").to_owned();
    format!(
        "cache hits {}, misses {}, errors {}",
        value("coalition_balance_cache_hits_total"),
        value("coalition_balance_cache_misses_total"),
        value("coalition_balance_cache_errors_total")
    )
}

fn report_lots(figures: &[lots::HolderFigures], misses: f64) {
    type Pick = fn(&lots::HolderFigures) -> &Figures;
    let requests: [(&str, Pick); 3] = [
        ("redeem 50 points", |f| &f.redeem),
        ("refund with clawback", |f| &f.refund),
        ("balance read, cache miss", |f| &f.read),
    ];
    println!();
    println!(
        "{:<25} {:>6} {:>7} {:>8} {:>8} {:>8} {:>7}",
        "lots (one at a time)", "lots", "in 30d", "p50 ms", "p95 ms", "p99 ms", "errors"
    );
    for (name, pick) in requests {
        for f in figures {
            let r = pick(f);
            println!(
                "{:<25} {:>6} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>7}",
                name,
                f.lots,
                f.in_window,
                r.percentile_ms(0.50),
                r.percentile_ms(0.95),
                r.percentile_ms(0.99),
                r.errors + r.refused
            );
        }
    }
    let reads: usize = figures.iter().map(|f| f.read.requests).sum();
    println!("cache misses during the lots rounds: {misses} for {reads} balance reads");
    if let [few, many] = figures {
        let ratios: Vec<String> = requests
            .iter()
            .map(|(name, pick)| {
                let ratio = pick(many).percentile_ms(0.5) / pick(few).percentile_ms(0.5);
                format!("{name} {ratio:.1}x")
            })
            .collect();
        println!(
            "p50 with {} lots / with {}: {}",
            many.lots,
            few.lots,
            ratios.join(", ")
        );
    }
}

fn report(rows: &[Row], pgbench: Option<&Baseline>, redis: Option<&Baseline>, cache: &str) {
    println!();
    println!(
        "{:<15} {:>4} {:>10} {:>8} {:>8} {:>8} {:>7} {:>8} {:>9}",
        "scenario", "c", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "refused", "peak RSS"
    );
    for r in rows {
        let f = &r.figures;
        println!(
            "{:<15} {:>4} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>8} {:>6.1} MB",
            r.name,
            r.concurrency,
            f.throughput(),
            f.percentile_ms(0.50),
            f.percentile_ms(0.95),
            f.percentile_ms(0.99),
            f.errors,
            f.refused,
            r.peak_rss_mb
        );
    }
    println!("{cache}");
    println!();
    let (earn, reads) = (&rows[0], &rows[1]);
    match pgbench {
        Some(b) => {
            let ratio = earn.figures.throughput() / b.throughput;
            println!("pgbench        {:>10.1} tps ({})", b.throughput, b.detail);
            println!(
                "earn / pgbench tpcb-like          = {ratio:.2}x   goal >= 1.0x  {}",
                verdict(ratio >= 1.0)
            );
        }
        None => println!("pgbench not installed: no earn ratio"),
    }
    match redis {
        Some(b) => {
            let ratio = reads.figures.throughput() / b.throughput;
            let p99 = reads.figures.percentile_ms(0.99);
            println!("redis-benchmark {:>9.1} rps ({})", b.throughput, b.detail);
            println!(
                "balance reads / redis GET         = {ratio:.2}x   goal >= 0.5x  {}",
                verdict(ratio >= 0.5)
            );
            println!(
                "balance reads p99                 = {p99:.2} ms  goal < 10 ms  {}",
                verdict(p99 < 10.0)
            );
        }
        None => println!("redis-benchmark not installed: no read ratio"),
    }
    let peak = rows.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    println!(
        "server peak RSS                   = {peak:.1} MB  goal < 150 MB {}",
        verdict(peak < 150.0)
    );
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "SHORT"
    }
}
