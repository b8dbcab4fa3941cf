//! Configuration from the environment (and optionally a file of KEY=VALUE lines named by
//! `COALITION_CONFIG_FILE`; the environment wins). A bad value stops start-up with a
//! message naming the setting.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub addr: SocketAddr,
    /// HS256 signing secret for access tokens; generated and kept in the database if unset.
    pub jwt_secret: Option<String>,
    pub token_ttl_seconds: i64,
    /// `COALITION_PUBLIC_URL`: the external base URL (the OpenID issuer, in redirects and
    /// discovery), without a trailing slash; default `http://` + `COALITION_ADDR`.
    pub public_url: String,
    /// `COALITION_MEMBER_SIGNING_KEY`: the ES256 key of member tokens (PKCS#8 PEM);
    /// generated and kept in the database if unset.
    pub member_signing_key: Option<String>,
    pub db_max_connections: u32,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// Failed token requests allowed per client id and per source address in a minute.
    pub token_failures: coalition_app::auth::FailureLimits,
    /// The log filter (tracing `EnvFilter` directives), checked here like every setting.
    pub log_filter: String,
    /// `COALITION_LOG_FORMAT`: one JSON object per line, or text (the default).
    pub log_format: LogFormat,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: where traces go over OTLP/HTTP; none are made unset.
    pub otlp_endpoint: Option<String>,
    /// How often `serve` runs the background jobs (`coalition_app::jobs`); `None` when
    /// `COALITION_JOBS_INTERVAL_SECONDS` is 0 (another process runs them, or nobody).
    pub jobs_interval: Option<std::time::Duration>,
    /// How long a POS hold reserves points unless captured or voided (default 15 minutes).
    pub hold_ttl_seconds: i64,
    /// How long a bank authorization stays pending without a clearing (default 7 days).
    pub bank_authorization_lapse_hours: i64,
    /// Does `serve` (and every other command that opens the database) apply pending
    /// migrations? On by default for SQLite, the embedded single-process set-up; off by
    /// default for PostgreSQL, where a deployment migrates once (`coalition migrate`, the
    /// chart's hook Job) with a DDL-capable role and the app runs with DML rights only.
    pub migrate_on_start: bool,
    /// Outbound webhooks: `COALITION_WEBHOOKS_ALLOW_INSECURE` (plain http and private
    /// addresses, for tests only), `COALITION_WEBHOOKS_INTERVAL_MS` (how often `serve`
    /// delivers; 0: it does not), `COALITION_WEBHOOKS_TIMEOUT_SECONDS` (per attempt).
    pub webhooks: coalition_app::webhooks::Settings,
    /// `COALITION_SMTP_URL`: where sign-in codes are mailed (lettre's URL form:
    /// `smtp://host:port`, `smtp://host?tls=required`, `smtps://user:pass@host`); unset:
    /// the development mailer writes them to the log.
    pub smtp_url: Option<String>,
    /// `COALITION_SMTP_FROM`: the sender of those mails.
    pub smtp_from: String,
    /// `COALITION_SIGNIN_CODES_PER_ADDRESS` and `COALITION_SIGNIN_CODES_PER_SOURCE`:
    /// sign-in code requests allowed per e-mail address and per source IP in 15 minutes.
    pub signin: coalition_app::signin::Settings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration setting {setting}: {message}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub message: String,
}

fn bad(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut values: HashMap<String, String> = HashMap::new();
        if let Ok(path) = std::env::var("COALITION_CONFIG_FILE") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad("COALITION_CONFIG_FILE", format!("cannot read {path}: {e}")))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (k, v) = line.split_once('=').ok_or_else(|| {
                    bad(
                        "COALITION_CONFIG_FILE",
                        format!("line {} is not KEY=VALUE", n + 1),
                    )
                })?;
                values.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        values.extend(std::env::vars());
        Self::from_map(&values)
    }

    pub fn from_map(values: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::read(values, &RefCell::default())
    }

    /// Every environment variable the binary reads as a setting. Found by reading an
    /// empty configuration and noting each name looked up, so the list cannot drift from
    /// what `from_map` does (the Helm chart test checks the chart's names against it).
    pub fn setting_names() -> BTreeSet<String> {
        let names = RefCell::default();
        Self::read(&HashMap::new(), &names).expect("the defaults are a valid configuration");
        let mut names = names.into_inner();
        names.insert("COALITION_CONFIG_FILE".to_owned());
        names
    }

    fn read(
        values: &HashMap<String, String>,
        names: &RefCell<BTreeSet<String>>,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            names.borrow_mut().insert(k.to_owned());
            values
                .get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let database_url =
            get("DATABASE_URL").unwrap_or_else(|| "sqlite://coalition.db?mode=rwc".into());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(bad("DATABASE_URL", "must be a sqlite: or postgres:// URL"));
        }
        let redis_url = get("REDIS_URL");
        if let Some(url) = &redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(bad("REDIS_URL", "must be a redis:// or rediss:// URL"));
            }
        }
        let addr = get("COALITION_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        let addr = addr
            .parse()
            .map_err(|_| bad("COALITION_ADDR", format!("'{addr}' is not host:port")))?;
        let public_url = match get("COALITION_PUBLIC_URL") {
            None => format!("http://{addr}"),
            Some(url) => public_url(&url).map_err(|m| bad("COALITION_PUBLIC_URL", m))?,
        };
        let member_signing_key = get("COALITION_MEMBER_SIGNING_KEY");
        if let Some(pem) = &member_signing_key {
            coalition_app::auth::member_tokens::pkcs8_pem_to_der(pem)
                .map_err(|m| bad("COALITION_MEMBER_SIGNING_KEY", m))?;
        }
        let jwt_secret = get("COALITION_JWT_SECRET");
        if jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(bad(
                "COALITION_JWT_SECRET",
                "must be at least 32 characters",
            ));
        }
        let number = |k: &'static str,
                      default: i64,
                      range: std::ops::RangeInclusive<i64>|
         -> Result<i64, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| bad(k, format!("'{v}' is not a number in {range:?}"))),
            }
        };
        let log_filter = get("COALITION_LOG").unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(bad(
                "COALITION_LOG",
                format!("'{log_filter}' is not a log filter: {e}"),
            ));
        }
        let log_format = match get("COALITION_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                let message = format!("'{other}' is not a log format: json or text");
                return Err(bad("COALITION_LOG_FORMAT", message));
            }
        };
        let otlp_endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        if let Some(url) = &otlp_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                let message = "must be an http:// or https:// URL (OTLP over HTTP)";
                return Err(bad("OTEL_EXPORTER_OTLP_ENDPOINT", message));
            }
        }
        let jobs_interval = number("COALITION_JOBS_INTERVAL_SECONDS", 60, 0..=86_400)?;
        // Migrating and the scheduler each hold one connection for an advisory lock
        // while their work runs on another (SQLite has one connection and no such lock).
        let db_max_connections = number("COALITION_DB_MAX_CONNECTIONS", 20, 2..=500)? as u32;
        let allow_insecure = match get("COALITION_WEBHOOKS_ALLOW_INSECURE").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(bad(
                    "COALITION_WEBHOOKS_ALLOW_INSECURE",
                    format!("'{other}' is not true or false"),
                ))
            }
        };
        let webhooks_interval = number("COALITION_WEBHOOKS_INTERVAL_MS", 1000, 0..=3_600_000)?;
        let webhooks = coalition_app::webhooks::Settings {
            allow_insecure,
            interval: (webhooks_interval > 0)
                .then(|| std::time::Duration::from_millis(webhooks_interval as u64)),
            timeout: std::time::Duration::from_secs(number(
                "COALITION_WEBHOOKS_TIMEOUT_SECONDS",
                10,
                1..=60,
            )? as u64),
        };
        let migrate_on_start = match get("COALITION_MIGRATE_ON_START").as_deref() {
            None => database_url.starts_with("sqlite:"),
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(bad(
                    "COALITION_MIGRATE_ON_START",
                    format!("'{other}' is not true or false"),
                ))
            }
        };
        let smtp_url = get("COALITION_SMTP_URL");
        let smtp_from = get("COALITION_SMTP_FROM")
            .unwrap_or_else(|| coalition_app::mailer::DEFAULT_FROM.into());
        if let Err(message) =
            coalition_app::mailer::Mailer::from_settings(smtp_url.as_deref(), &smtp_from)
        {
            // Which of the two is wrong: the sender alone decides it.
            let setting = if coalition_app::mailer::Mailer::from_settings(None, &smtp_from).is_err()
            {
                "COALITION_SMTP_FROM"
            } else {
                "COALITION_SMTP_URL"
            };
            return Err(bad(setting, message));
        }
        let signin = coalition_app::signin::Settings {
            per_address: number("COALITION_SIGNIN_CODES_PER_ADDRESS", 5, 1..=1000)? as u32,
            per_source: number("COALITION_SIGNIN_CODES_PER_SOURCE", 30, 1..=100_000)? as u32,
        };
        Ok(Config {
            database_url,
            redis_url,
            addr,
            jwt_secret,
            public_url,
            member_signing_key,
            token_ttl_seconds: number("COALITION_TOKEN_TTL_SECONDS", 3600, 60..=86_400)?,
            db_max_connections,
            redis_prefix: get("COALITION_REDIS_PREFIX").unwrap_or_else(|| "coalition:".into()),
            token_failures: coalition_app::auth::FailureLimits {
                per_client: number("COALITION_TOKEN_FAILURES_PER_MINUTE", 10, 1..=10_000)? as u64,
                per_address: number(
                    "COALITION_TOKEN_ADDRESS_FAILURES_PER_MINUTE",
                    30,
                    0..=100_000,
                )? as u64,
            },
            log_filter,
            log_format,
            otlp_endpoint,
            jobs_interval: (jobs_interval > 0)
                .then(|| std::time::Duration::from_secs(jobs_interval as u64)),
            hold_ttl_seconds: number("COALITION_HOLD_TTL_SECONDS", 900, 1..=86_400)?,
            bank_authorization_lapse_hours: number(
                "COALITION_BANK_AUTHORIZATION_LAPSE_HOURS",
                7 * 24,
                1..=90 * 24,
            )?,
            migrate_on_start,
            webhooks,
            smtp_url,
            smtp_from,
            signin,
        })
    }
}

/// An http(s) base URL with a host and nothing after its path; kept without a trailing
/// slash (the issuer is compared as a string by relying parties).
fn public_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{url}' is not an http:// or https:// URL"))?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("'{url}' is not an http:// or https:// URL"));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains('@') {
        return Err(format!(
            "'{url}' names no host (or carries user information)"
        ));
    }
    if rest.contains(['?', '#']) || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "'{url}' must be a plain base URL (no query, no fragment)"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::from_map(&map(&[])).unwrap();
        assert!(c.database_url.starts_with("sqlite:"));
        assert!(c.redis_url.is_none());
        assert_eq!(c.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (c.token_failures.per_client, c.token_failures.per_address),
            (10, 30)
        );
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.otlp_endpoint, None);
        assert_eq!(c.jobs_interval, Some(std::time::Duration::from_secs(60)));
        assert_eq!(c.hold_ttl_seconds, 15 * 60);
        assert!(
            !c.webhooks.allow_insecure,
            "https to public addresses only by default"
        );
        assert_eq!(c.webhooks.interval, Some(std::time::Duration::from_secs(1)));
        assert_eq!(c.webhooks.timeout, std::time::Duration::from_secs(10));
    }

    #[test]
    fn jobs_can_be_turned_off_and_the_pool_has_two_connections_at_least() {
        let off = Config::from_map(&map(&[("COALITION_JOBS_INTERVAL_SECONDS", "0")])).unwrap();
        assert_eq!(off.jobs_interval, None);
        let one = ("COALITION_DB_MAX_CONNECTIONS", "1");
        let err = Config::from_map(&map(&[one])).unwrap_err();
        assert_eq!(err.setting, "COALITION_DB_MAX_CONNECTIONS");
        assert!(Config::from_map(&map(&[("COALITION_DB_MAX_CONNECTIONS", "2")])).is_ok());
    }

    #[test]
    fn logs_can_be_json_and_traces_go_to_an_otlp_endpoint() {
        let c = Config::from_map(&map(&[
            ("COALITION_LOG_FORMAT", "json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ]))
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4318"));
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (k, v) in [
            ("COALITION_ADDR", "nowhere"),
            ("DATABASE_URL", "mysql://x"),
            ("REDIS_URL", "http://x"),
            ("COALITION_JWT_SECRET", "short"),
            ("COALITION_TOKEN_TTL_SECONDS", "0"),
            ("COALITION_TOKEN_FAILURES_PER_MINUTE", "0"),
            ("COALITION_TOKEN_ADDRESS_FAILURES_PER_MINUTE", "-1"),
            ("COALITION_LOG", "info,[{"),
            ("COALITION_JOBS_INTERVAL_SECONDS", "-1"),
            ("COALITION_JOBS_INTERVAL_SECONDS", "86401"),
            ("COALITION_HOLD_TTL_SECONDS", "0"),
            ("COALITION_HOLD_TTL_SECONDS", "soon"),
            ("COALITION_LOG_FORMAT", "logfmt"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
            ("COALITION_MIGRATE_ON_START", "yes"),
            ("COALITION_WEBHOOKS_ALLOW_INSECURE", "1"),
            ("COALITION_WEBHOOKS_INTERVAL_MS", "-5"),
            ("COALITION_WEBHOOKS_TIMEOUT_SECONDS", "0"),
            ("COALITION_PUBLIC_URL", "coalition.example"),
            ("COALITION_PUBLIC_URL", "ftp://coalition.example"),
            ("COALITION_PUBLIC_URL", "https://coalition.example/?x=1"),
            (
                "COALITION_MEMBER_SIGNING_KEY",
                "-----BEGIN EC PRIVATE KEY-----",
            ),
            ("COALITION_SMTP_URL", "mail.example.org"),
            ("COALITION_SMTP_URL", "http://mail.example.org"),
            ("COALITION_SMTP_FROM", "nobody"),
            ("COALITION_SIGNIN_CODES_PER_ADDRESS", "0"),
            ("COALITION_SIGNIN_CODES_PER_SOURCE", "many"),
        ] {
            let err = Config::from_map(&map(&[(k, v)])).unwrap_err();
            assert_eq!(err.setting, k);
            assert!(err.to_string().contains(k));
        }
    }

    #[test]
    fn the_public_url_defaults_to_the_listening_address() {
        let c = Config::from_map(&map(&[("COALITION_ADDR", "127.0.0.1:9000")])).unwrap();
        assert_eq!(c.public_url, "http://127.0.0.1:9000");
        let set = ("COALITION_PUBLIC_URL", "https://loyalty.example/coalition/");
        let c = Config::from_map(&map(&[set])).unwrap();
        assert_eq!(c.public_url, "https://loyalty.example/coalition");
    }

    #[test]
    fn only_the_embedded_sqlite_default_migrates_on_start_unless_told() {
        let pg = ("DATABASE_URL", "postgres://app@db/coalition");
        let sqlite = Config::from_map(&map(&[])).unwrap();
        assert!(sqlite.migrate_on_start);
        assert!(!Config::from_map(&map(&[pg])).unwrap().migrate_on_start);
        let on = ("COALITION_MIGRATE_ON_START", "true");
        assert!(Config::from_map(&map(&[pg, on])).unwrap().migrate_on_start);
        let off = ("COALITION_MIGRATE_ON_START", "false");
        assert!(!Config::from_map(&map(&[off])).unwrap().migrate_on_start);
    }

    #[test]
    fn the_setting_names_are_the_ones_read() {
        let names = Config::setting_names();
        for name in [
            "DATABASE_URL",
            "REDIS_URL",
            "COALITION_ADDR",
            "COALITION_DB_MAX_CONNECTIONS",
            "COALITION_MIGRATE_ON_START",
            "COALITION_HOLD_TTL_SECONDS",
            "COALITION_BANK_AUTHORIZATION_LAPSE_HOURS",
            "COALITION_CONFIG_FILE",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        // A name in the list changes the configuration when set: none is listed idly.
        for name in names.iter().filter(|n| *n != "COALITION_CONFIG_FILE") {
            let set = Config::from_map(&map(&[(name.as_str(), "x")]));
            let default = Config::from_map(&map(&[])).unwrap();
            let changed = set.map_or(true, |c| format!("{c:?}") != format!("{default:?}"));
            assert!(changed, "{name} is listed but setting it changes nothing");
        }
    }
}
