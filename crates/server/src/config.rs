//! Configuration from the environment (and optionally a file of KEY=VALUE lines named by
//! `COALITION_CONFIG_FILE`; the environment wins). A bad value stops start-up with a
//! message naming the setting.

use std::collections::HashMap;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub addr: SocketAddr,
    /// HS256 signing secret for access tokens; generated and kept in the database if unset.
    pub jwt_secret: Option<String>,
    pub token_ttl_seconds: i64,
    pub db_max_connections: u32,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_prefix: String,
    /// Failed token requests allowed per client id and per source address in a minute.
    pub token_failures: coalition_app::auth::FailureLimits,
    /// The log filter (tracing `EnvFilter` directives), checked here like every setting.
    pub log_filter: String,
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
        let get = |k: &str| {
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
        Ok(Config {
            database_url,
            redis_url,
            addr,
            jwt_secret,
            token_ttl_seconds: number("COALITION_TOKEN_TTL_SECONDS", 3600, 60..=86_400)?,
            db_max_connections: number("COALITION_DB_MAX_CONNECTIONS", 20, 2..=500)? as u32,
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
        })
    }
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
        ] {
            let err = Config::from_map(&map(&[(k, v)])).unwrap_err();
            assert_eq!(err.setting, k);
            assert!(err.to_string().contains(k));
        }
    }
}
