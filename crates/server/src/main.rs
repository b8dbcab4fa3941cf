//! `coalition`: serve the API, migrate the database, create programmes, run a background
//! job, print the OpenAPI document.

use clap::{Parser, Subcommand};
use coalition_server::config::Config;
use std::process::ExitCode;

/// mimalloc rather than glibc malloc: allocation was a fifth of the server's CPU time
/// under purchase load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "coalition",
    version,
    about = "Coalition loyalty network backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on COALITION_ADDR. Migrates the database first when
    /// COALITION_MIGRATE_ON_START is true (the default for SQLite only); otherwise refuses
    /// to start on a schema older than this binary.
    Serve,
    /// Apply the database migrations to DATABASE_URL.
    Migrate,
    /// Manage programmes (tenants).
    Programme {
        #[command(subcommand)]
        command: ProgrammeCommand,
    },
    /// Print the OpenAPI document (the committed openapi/openapi.json).
    Openapi,
    /// Run one background job once and print its report as JSON (`serve` runs them all
    /// every COALITION_JOBS_INTERVAL_SECONDS; running one by hand next to it is safe).
    Jobs {
        /// The job.
        #[arg(value_parser = job_names())]
        job: String,
        /// The moment the job runs as of (RFC 3339), instead of now. It really acts as of
        /// then: a future moment expires points, ends holds and signs members out
        /// (sessions, codes, OAuth grants) early, for good. Meant for tests and for
        /// catching up, not for previews.
        #[arg(long, value_parser = rfc3339)]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Import historical data; prints a JSON report.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Settle the half-open period [--from, --to) of a programme; prints the settlement
    /// as JSON (the same period again prints the first settlement).
    Settle {
        #[arg(long)]
        programme_id: uuid::Uuid,
        #[arg(long, value_parser = rfc3339)]
        from: chrono::DateTime<chrono::Utc>,
        #[arg(long, value_parser = rfc3339)]
        to: chrono::DateTime<chrono::Utc>,
    },
}

/// Every job of `coalition_app::jobs::JOBS`, with its description for `--help`.
fn job_names() -> clap::builder::PossibleValuesParser {
    let names = coalition_app::jobs::JOBS
        .iter()
        .map(|job| clap::builder::PossibleValue::new(job.name).help(job.about));
    clap::builder::PossibleValuesParser::new(names)
}

fn rfc3339(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| format!("not an RFC 3339 time (e.g. 2027-01-31T00:00:00Z): {e}"))
}

fn iso_4217(text: &str) -> Result<String, String> {
    coalition_domain::Currency::parse_iso_4217(text)
        .map(|c| c.code().to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import dated historical purchases of a partner: members are found or created by
    /// their customer reference, purchases keep their day and earn no points (unless
    /// --earn). Checks the
    /// whole file first (a bad row: its line, nothing imported), then writes batches of
    /// 1000 rows, each in one transaction; run it again after a failure and what was
    /// imported is skipped. Prints {"rows","imported","skipped","members_created","points_earned"}.
    Purchases {
        #[arg(long)]
        programme_id: uuid::Uuid,
        #[arg(long)]
        partner_id: uuid::Uuid,
        /// `cdnow` (whitespace-separated customer id, YYYYMMDD, CDs, dollars) or `csv`
        /// (header customer_ref,date,amount + optional partner_id, store_ref, staff_ref).
        #[arg(long, value_parser = ["cdnow", "csv"])]
        format: String,
        /// Earn points at the standing earning rules in force on each purchase's day
        /// (base rate and rules valid that day; no campaigns, tiers, first-purchase or
        /// per-member-capped rules), posted now; the points expire counting from today.
        #[arg(long)]
        earn: bool,
        /// The file to import.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum ProgrammeCommand {
    /// Create a programme and print its first operator client as JSON (secret shown once).
    Create {
        #[arg(long)]
        name: String,
        /// An active ISO 4217 code, e.g. EUR.
        #[arg(long, value_parser = iso_4217)]
        currency: String,
        /// Money value of one point, e.g. 0.01.
        #[arg(long)]
        point_value: String,
        /// Days a point lives after it is earned.
        #[arg(long, default_value_t = coalition_app::programmes::DEFAULT_POINT_EXPIRY_DAYS)]
        point_expiry_days: i32,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    if let Command::Openapi = command {
        let doc = coalition_api::openapi()
            .to_pretty_json()
            .map_err(|e| e.to_string())?;
        println!("{doc}");
        return Ok(());
    }
    // The log filter is a setting like the others (environment or COALITION_CONFIG_FILE,
    // a bad one stops start-up), so logging starts once the configuration is read.
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let telemetry = coalition_server::init_telemetry(&config)?;
    announce_database(&config);
    let outcome = run_configured(command, &config).await;
    telemetry.shutdown();
    outcome
}

async fn run_configured(command: Command, config: &Config) -> Result<(), String> {
    match command {
        Command::Serve => {
            let app = coalition_server::build_app(config).await?;
            let listener = tokio::net::TcpListener::bind(config.addr)
                .await
                .map_err(|e| format!("COALITION_ADDR {}: {e}", config.addr))?;
            tracing::info!(addr = %config.addr, "coalition listening");
            if app.mailer.is_development() {
                tracing::info!(mail = %app.mailer.describe(), "mail goes to the log: sign-in codes are written there, not sent (set COALITION_SMTP_URL)");
            } else {
                tracing::info!(mail = %app.mailer.describe(), "mail goes out by SMTP");
            }
            coalition_server::serve(app, listener, config.jobs_interval, stop_requested())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate => {
            // Two connections: one holds the advisory lock while the other migrates.
            let db = coalition_store::connect(&config.database_url, 2)
                .await
                .map_err(|e| format!("DATABASE_URL: {e}"))?;
            coalition_store::migrate(&db)
                .await
                .map_err(|e| format!("migrating: {e}"))?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Programme {
            command:
                ProgrammeCommand::Create {
                    name,
                    currency,
                    point_value,
                    point_expiry_days,
                },
        } => {
            let app = coalition_server::build_app(config).await?;
            let input = coalition_app::programmes::NewProgramme {
                name,
                currency,
                point_value,
                point_expiry_days,
            };
            let created = coalition_app::programmes::create(&app.db, input)
                .await
                .map_err(|e| match e {
                    coalition_app::AppError::Validation(fields) => fields
                        .iter()
                        .map(|f| format!("--{}: {}", f.field.replace('_', "-"), f.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                })?;
            let out = serde_json::json!({
                "programme_id": created.programme_id,
                "client_id": created.operator.client_id,
                "client_secret": created.operator.client_secret,
            });
            println!("{out}");
            Ok(())
        }
        Command::Jobs { job, now } => {
            let app = coalition_server::build_app(config).await?;
            let now = now.unwrap_or_else(chrono::Utc::now);
            let report = coalition_app::jobs::run(&app, &job, now)
                .await
                .map_err(|e| format!("job {job}: {e}"))?;
            println!("{report}");
            Ok(())
        }
        Command::Settle {
            programme_id,
            from,
            to,
        } => {
            let app = coalition_server::build_app(&config).await?;
            let progress = Progress::new();
            let settled =
                coalition_app::settlements::settle(&app, programme_id, from, to, |step| {
                    progress.step(step)
                })
                .await
                .map_err(|e| match e {
                    coalition_app::AppError::Validation(fields) => fields
                        .iter()
                        .map(|f| format!("{}: {}", f.field, f.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                })?;
            let out =
                serde_json::to_string_pretty(&settled.settlement).map_err(|e| e.to_string())?;
            println!("{out}");
            Ok(())
        }
        Command::Import {
            command:
                ImportCommand::Purchases {
                    programme_id,
                    partner_id,
                    format,
                    earn,
                    file,
                },
        } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let app = coalition_server::build_app(config).await?;
            let format = coalition_app::imports::Format::parse(&format)
                .ok_or_else(|| format!("--format {format}: must be cdnow or csv"))?;
            let request = coalition_app::imports::ImportRequest {
                programme_id,
                partner_id,
                format,
                text: &text,
                earn,
            };
            let bar = Bar::new();
            let report =
                coalition_app::imports::import(&app, request, |done, total| bar.show(done, total))
                    .await
                    .map_err(|e| match e {
                        coalition_app::AppError::ImportRow { line, message } => {
                            format!("{}:{line}: {message}", file.display())
                        }
                        coalition_app::AppError::NotFound(what) => {
                            format!("{what} not found in programme {programme_id}")
                        }
                        other => other.to_string(),
                    })?;
            bar.finish();
            println!(
                "{}",
                serde_json::to_string(&report).map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::Openapi => unreachable!("handled above"),
    }
}

/// Says on stderr which database this command opens: run from another directory, the
/// default relative SQLite path is a different, new file, and nothing else would say so.
/// With JSON logs it is a log event like any other, so every stderr line stays JSON.
fn announce_database(config: &Config) {
    let database_url = &config.database_url;
    let fresh = coalition_server::sqlite_file(database_url).is_some_and(|path| !path.exists());
    let database = coalition_server::describe_database(database_url);
    if config.log_format == coalition_server::config::LogFormat::Json {
        if fresh {
            tracing::warn!(%database, new_file = true, "database (a new file: it did not exist)");
        } else {
            tracing::info!(%database, "database");
        }
        return;
    }
    let note = if fresh {
        " (a new file: it did not exist; a server on another database will not know what is written here)"
    } else {
        ""
    };
    eprintln!("coalition: database {database}{note}");
}

/// Steps of a settlement run on stderr, only when a person watches a terminal. Four
/// steps of a command that takes about a second: a line per step says enough, without
/// a progress-bar crate.
struct Progress {
    shown: bool,
    started: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            shown: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
        }
    }

    fn step(&self, step: coalition_app::settlements::Step) {
        use coalition_app::settlements::Step;
        if !self.shown {
            return;
        }
        let (n, what) = match step {
            Step::Locked => (1, "period checked"),
            Step::Aggregated => (2, "postings summed"),
            Step::History => (3, "liability opened"),
            Step::Stored => (4, "settlement stored"),
        };
        let bar = format!("{}{}", "#".repeat(n * 5), "-".repeat((4 - n) * 5));
        eprintln!(
            "[{bar}] {n}/4 {what} ({:.2} s)",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// A progress bar of an import on stderr, only when a person watches a terminal.
struct Bar {
    shown: bool,
    started: std::time::Instant,
}

impl Bar {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            shown: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
        }
    }

    fn show(&self, done: u64, total: u64) {
        if !self.shown || total == 0 {
            return;
        }
        let filled = (done * 30 / total) as usize;
        eprint!(
            "\r[{}{}] {done}/{total} rows ({:.1} s)",
            "#".repeat(filled),
            "-".repeat(30 - filled),
            self.started.elapsed().as_secs_f64()
        );
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// Ctrl-C, or SIGTERM (what Kubernetes sends): stop accepting, finish what is in flight.
async fn stop_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("stopping: finishing requests in flight");
}
