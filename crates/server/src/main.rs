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
    /// Serve the API on COALITION_ADDR (migrating the database first).
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
        /// then: a future moment expires points and ends holds early, for good. Meant
        /// for tests and for catching up, not for previews.
        #[arg(long, value_parser = rfc3339)]
        now: Option<chrono::DateTime<chrono::Utc>>,
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

#[derive(Subcommand)]
enum ProgrammeCommand {
    /// Create a programme and print its first operator client as JSON (secret shown once).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
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
    coalition_server::init_telemetry(&config.log_filter);
    match command {
        Command::Serve => {
            let app = coalition_server::build_app(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.addr)
                .await
                .map_err(|e| format!("COALITION_ADDR {}: {e}", config.addr))?;
            tracing::info!(addr = %config.addr, "coalition listening");
            coalition_server::serve(app, listener, config.jobs_interval, stop_requested())
                .await
                .map_err(|e| e.to_string())
        }
        Command::Migrate => {
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
            let app = coalition_server::build_app(&config).await?;
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
            let app = coalition_server::build_app(&config).await?;
            let now = now.unwrap_or_else(chrono::Utc::now);
            let report = coalition_app::jobs::run(&app, &job, now)
                .await
                .map_err(|e| format!("job {job}: {e}"))?;
            println!("{report}");
            Ok(())
        }
        Command::Openapi => unreachable!("handled above"),
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
