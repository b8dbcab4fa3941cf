//! What this process committed, counted for `/metrics`: purchases, refunds, points
//! issued, redeemed and expired, job runs, webhook delivery attempts, and the database
//! pool's connections.
//!
//! Counters are per process (Prometheus sums the replicas) and plain relaxed atomics:
//! the purchase path pays one uncontended add per counter, no lock. They move only once
//! a use case's transaction committed, and not for an idempotent replay.

use crate::jobs::JOBS;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Business counters of this process.
#[derive(Default)]
pub struct Business {
    pub purchases: AtomicU64,
    pub refunds: AtomicU64,
    pub points_issued: AtomicU64,
    pub points_redeemed: AtomicU64,
    pub points_expired: AtomicU64,
}

pub static BUSINESS: Business = Business {
    purchases: AtomicU64::new(0),
    refunds: AtomicU64::new(0),
    points_issued: AtomicU64::new(0),
    points_redeemed: AtomicU64::new(0),
    points_expired: AtomicU64::new(0),
};

/// Points are never negative where they are counted; a negative would be a bug
/// elsewhere, and must not wrap the counter round to a huge number.
fn points(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A purchase (or a capture's purchase) committed, earning and redeeming these points.
pub(crate) fn purchase_committed(earned: i64, redeemed: i64) {
    BUSINESS.purchases.fetch_add(1, Relaxed);
    points_moved(earned, redeemed);
}

/// Points issued and redeemed by a committed change that is not a purchase (a reward
/// taken with a hold's points).
pub(crate) fn points_moved(issued: i64, redeemed: i64) {
    if issued > 0 {
        BUSINESS.points_issued.fetch_add(points(issued), Relaxed);
    }
    if redeemed > 0 {
        BUSINESS
            .points_redeemed
            .fetch_add(points(redeemed), Relaxed);
    }
}

pub(crate) fn refund_committed() {
    BUSINESS.refunds.fetch_add(1, Relaxed);
}

pub(crate) fn points_expired(n: i64) {
    BUSINESS.points_expired.fetch_add(points(n), Relaxed);
}

/// How a webhook delivery attempt ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    Delivered,
    /// Failed; it will be tried again.
    Retried,
    /// Given up: attempts used up, or 410 Gone.
    Failed,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 3] = [
        WebhookOutcome::Delivered,
        WebhookOutcome::Retried,
        WebhookOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Delivered => "delivered",
            WebhookOutcome::Retried => "retried",
            WebhookOutcome::Failed => "failed",
        }
    }
}

/// Webhook delivery attempts by outcome (in [`WebhookOutcome::ALL`]'s order).
pub static WEBHOOK_ATTEMPTS: [AtomicU64; 3] =
    [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

pub(crate) fn webhook_attempted(outcome: WebhookOutcome) {
    WEBHOOK_ATTEMPTS[outcome as usize].fetch_add(1, Relaxed);
}

/// How a job run ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    Ok,
    Failed,
    /// Another process held the job's lock and ran it.
    Skipped,
}

impl JobOutcome {
    pub const ALL: [JobOutcome; 3] = [JobOutcome::Ok, JobOutcome::Failed, JobOutcome::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Ok => "ok",
            JobOutcome::Failed => "failed",
            JobOutcome::Skipped => "skipped",
        }
    }
}

/// Runs of one job of [`JOBS`], by outcome (in [`JobOutcome::ALL`]'s order).
pub struct JobRuns([AtomicU64; 3]);

impl JobRuns {
    pub fn get(&self, outcome: JobOutcome) -> u64 {
        self.0[outcome as usize].load(Relaxed)
    }
}

const NO_RUNS: JobRuns = JobRuns([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);

/// One entry per job, in the order of [`JOBS`]: the set of jobs is fixed at compile time.
pub static JOB_RUNS: [JobRuns; JOBS.len()] = [NO_RUNS; JOBS.len()];

pub(crate) fn job_ran(name: &str, outcome: JobOutcome) {
    if let Some(i) = JOBS.iter().position(|job| job.name == name) {
        JOB_RUNS[i].0[outcome as usize].fetch_add(1, Relaxed);
    }
}

/// Runs of the job named `name` that ended with `outcome`.
pub fn job_runs(name: &str, outcome: JobOutcome) -> u64 {
    JOBS.iter()
        .position(|job| job.name == name)
        .map_or(0, |i| JOB_RUNS[i].get(outcome))
}

/// The database pool's connections at this moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub in_use: u64,
    pub idle: u64,
    pub max: u64,
}

/// The pool's connections (sqlx does not say how many callers wait for one).
pub fn pool_usage(db: &DatabaseConnection) -> Option<PoolUsage> {
    let (size, idle, max) = match db.get_database_backend() {
        DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            )
        }
        DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool();
            (
                pool.size(),
                pool.num_idle(),
                pool.options().get_max_connections(),
            )
        }
        _ => return None,
    };
    let (size, idle) = (u64::from(size), idle as u64);
    Some(PoolUsage {
        in_use: size.saturating_sub(idle),
        idle,
        max: u64::from(max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_points_do_not_wrap_the_counters() {
        let before = BUSINESS.points_issued.load(Relaxed);
        points_moved(-5, 0);
        assert_eq!(BUSINESS.points_issued.load(Relaxed), before);
        points_moved(7, 0);
        assert_eq!(BUSINESS.points_issued.load(Relaxed), before + 7);
    }

    #[test]
    fn job_runs_are_counted_by_job_and_outcome() {
        let before = job_runs("expire", JobOutcome::Skipped);
        job_ran("expire", JobOutcome::Skipped);
        job_ran("no-such-job", JobOutcome::Skipped);
        assert_eq!(job_runs("expire", JobOutcome::Skipped), before + 1);
        assert_eq!(job_runs("no-such-job", JobOutcome::Skipped), 0);
    }
}
