//! Background jobs: point expiry, expiry reminders, and the one scheduler that runs every
//! job inside `coalition serve` (and `coalition jobs <name>` runs one by hand).
//!
//! Several replicas may run the same job at the same moment. On PostgreSQL the scheduler
//! takes a transaction-scoped advisory lock per job, so normally one replica runs it and
//! the others skip that round; but that lock is an optimisation, not the guarantee. Every
//! row change a job makes is exactly-once by itself: a job locks the member's account
//! (as every change to an account and its lots does, `ledger::lock_account`) and changes
//! lots only with guarded UPDATEs, so two runs over the same lots change them once.
//! A job works one account per transaction (a few accounts at once), a bounded batch of
//! accounts per pass: a big backlog never becomes one huge transaction, and stopping a
//! job half-way leaves every account either done or untouched.
//!
//! Adding a job: write `async fn(&App, DateTime<Utc>) -> AppResult<impl Serialize>` in
//! its own module and add one `job!` line to [`JOBS`].

use crate::error::{AppError, AppResult};
use crate::ledger::{self, AccountState, EntryContext};
use crate::outbox::{self, events};
use crate::App;
use chrono::{DateTime, NaiveDate, Utc};
use coalition_domain::ledger::expiry_entry;
use coalition_domain::lots::{Reminder, REMINDERS, REMINDER_STAGES};
use coalition_domain::Points;
use coalition_store::entities::point_lot;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, Statement, TransactionTrait,
};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use uuid::Uuid;

/// Accounts a job reads per pass; each is then done in its own transaction.
pub const ACCOUNTS_PER_PASS: u64 = 500;
/// Accounts a job works on at once (each holds a pool connection meanwhile): a job's
/// transactions are short and mostly wait on round trips and commits, so a few at once
/// go several times faster than one by one, without taking the pool from requests.
const ACCOUNTS_AT_ONCE: usize = 4;
/// Lots emptied per UPDATE when an account has a backlog of expired lots.
const LOTS_PER_STATEMENT: usize = 500;
/// A run gives up when this many accounts failed in it: something is wrong beyond one
/// account, and the failed ones are excluded from the next pass by id.
const MAX_FAILED_ACCOUNTS: usize = 100;

/// What a job answers, as the CLI prints it and the scheduler logs it.
pub type JobFuture = Pin<Box<dyn Future<Output = AppResult<serde_json::Value>> + Send>>;

/// A job the scheduler runs and `coalition jobs <name>` runs by hand.
pub struct Job {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(App, DateTime<Utc>) -> JobFuture,
}

/// A [`Job`] from a name, a description and an
/// `async fn(&App, DateTime<Utc>) -> AppResult<impl Serialize>`.
macro_rules! job {
    ($name:literal, $about:literal, $run:path) => {
        Job {
            name: $name,
            about: $about,
            run: |app, now| Box::pin(async move { as_json($run(&app, now).await?) }),
        }
    };
}

/// Every job, in the order the scheduler runs them.
pub const JOBS: &[Job] = &[
    // First: a lapsed hold's points may be expiring ones, which expiry leaves alone
    // while they are held.
    job!(
        "release-holds",
        "give back the points of POS holds whose time passed",
        release_lapsed_holds
    ),
    job!(
        "lapse-authorizations",
        "remove the pending points of bank authorizations no clearing followed in time",
        crate::bank::lapse_authorizations
    ),
    job!(
        "expire",
        "move what is left of expired lots to the operator's breakage",
        expire_points
    ),
    job!(
        "requalify",
        "move members' tiers to what their rolling 12-month spend earns, down as well as up",
        requalify_tiers
    ),
    job!(
        "campaigns",
        "record the group of members of running campaigns' segments not assigned yet",
        crate::campaigns::assign_running
    ),
    job!(
        "remind",
        "announce points expiring in 30 and in 7 days (outbox: points.expiring)",
        send_expiry_reminders
    ),
    job!(
        "forget-sign-ins",
        "delete ended sign-in codes, portal sessions and request counters, and ended OAuth codes, refresh tokens and grants",
        forget_sign_ins
    ),
    // Last: what the jobs above announced goes out in the same round. `serve` also
    // delivers on its own short loop (`COALITION_WEBHOOKS_INTERVAL_MS`).
    job!(
        "deliver-webhooks",
        "hand outbox events to webhook endpoints and send the due deliveries",
        crate::webhooks::deliver_due
    ),
];

#[derive(Serialize)]
struct ReleasedHolds {
    released: u64,
}

async fn release_lapsed_holds(app: &App, now: DateTime<Utc>) -> AppResult<ReleasedHolds> {
    let released = crate::holds::release_lapsed(app, now).await?;
    Ok(ReleasedHolds { released })
}

#[derive(Serialize)]
struct ForgottenSignIns {
    codes: u64,
    sessions: u64,
    request_counters: u64,
    #[serde(flatten)]
    grants: crate::oidc::ForgottenGrants,
}

async fn forget_sign_ins(app: &App, now: DateTime<Utc>) -> AppResult<ForgottenSignIns> {
    let (codes, request_counters) = crate::signin::forget_ended(&app.db, now).await?;
    let sessions = crate::member_sessions::forget_ended(app, now).await?;
    let grants = crate::oidc::forget_ended(&app.db, now).await?;
    Ok(ForgottenSignIns {
        codes,
        sessions,
        request_counters,
        grants,
    })
}

async fn requalify_tiers(
    app: &App,
    now: DateTime<Utc>,
) -> AppResult<crate::tiers::RequalifyReport> {
    crate::tiers::requalify(&app.db, now).await
}

fn as_json(report: impl Serialize) -> AppResult<serde_json::Value> {
    serde_json::to_value(report).map_err(|e| AppError::Internal(e.to_string()))
}

pub fn find(name: &str) -> Option<&'static Job> {
    JOBS.iter().find(|job| job.name == name)
}

/// Runs one job by name as of `now`, without the scheduler's lock (the row guards make
/// running it next to the scheduler safe): what `coalition jobs <name>` does.
pub async fn run(app: &App, name: &str, now: DateTime<Utc>) -> AppResult<serde_json::Value> {
    let job = find(name).ok_or_else(|| AppError::Internal(format!("no job named {name}")))?;
    run_counted(app, job, now).await
}

/// Runs `job`, counted by outcome for `/metrics` (`crate::metrics`).
#[tracing::instrument(target = "coalition::trace", name = "job", skip_all, fields(job = job.name))]
async fn run_counted(app: &App, job: &Job, now: DateTime<Utc>) -> AppResult<serde_json::Value> {
    use crate::metrics::{job_ran, JobOutcome};
    let outcome = (job.run)(app.clone(), now).await;
    let counted = if outcome.is_ok() {
        JobOutcome::Ok
    } else {
        JobOutcome::Failed
    };
    job_ran(job.name, counted);
    outcome
}

// ---------------------------------------------------------------------------------------
// The scheduler.

/// The scheduler inside a server: runs every job once per interval until stopped.
pub struct Scheduler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts the scheduler: the first round one `interval` after start, then one every
/// `interval` (a round that overruns delays the next, never doubles it).
pub fn spawn_scheduler(app: App, interval: Duration) -> Scheduler {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(schedule(app, interval, stopped));
    Scheduler { stop, task }
}

impl Scheduler {
    /// Stops it: a job in the middle of an account rolls that account back (it is
    /// untouched, and the next round does it), and this returns once the task is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn schedule(app: App, interval: Duration, mut stopped: tokio::sync::watch::Receiver<bool>) {
    use tokio::time::{interval_at, Instant, MissedTickBehavior};
    let mut ticks = interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        for job in JOBS {
            tokio::select! {
                _ = run_scheduled(&app, job) => {}
                _ = stopped.changed() => {
                    tracing::info!(job = job.name, "job stopped with the server");
                    return;
                }
            }
        }
    }
}

/// One scheduled run of `job`, logged; skipped when another replica holds its lock.
async fn run_scheduled(app: &App, job: &Job) {
    let lock = match JobLock::try_take(app, job.name).await {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::debug!(job = job.name, "another process is running this job");
            crate::metrics::job_ran(job.name, crate::metrics::JobOutcome::Skipped);
            return;
        }
        Err(e) => {
            tracing::warn!(job = job.name, error = %e, "could not take the job's lock");
            return;
        }
    };
    let outcome = run_counted(app, job, Utc::now()).await;
    lock.release().await;
    match outcome {
        Ok(report) if did_something(&report) => {
            tracing::info!(job = job.name, %report, "job done")
        }
        Ok(report) => tracing::debug!(job = job.name, %report, "job found nothing to do"),
        Err(e) => tracing::warn!(job = job.name, error = %e, "job failed"),
    }
}

/// A report counts what it did; all zeros is a round with nothing to do.
fn did_something(report: &serde_json::Value) -> bool {
    report
        .as_object()
        .is_some_and(|fields| fields.values().any(|v| v.as_i64().is_some_and(|n| n != 0)))
}

/// On PostgreSQL, `pg_try_advisory_xact_lock` in a transaction held open for the run (it
/// ends, and frees the lock, when the run ends or the process dies). It takes one pool
/// connection besides those the job uses (the configuration requires two or more).
/// SQLite is one process: nothing to take.
struct JobLock(Option<DatabaseTransaction>);

impl JobLock {
    async fn try_take(app: &App, job: &str) -> AppResult<Option<Self>> {
        if app.db.get_database_backend() != DbBackend::Postgres {
            return Ok(Some(Self(None)));
        }
        let txn = app.db.begin().await?;
        let taken = txn
            .query_one(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_try_advisory_xact_lock($1) AS taken",
                [lock_key(job).into()],
            ))
            .await?
            .map(|row| row.try_get::<bool>("", "taken"))
            .transpose()?
            .unwrap_or(false);
        Ok(taken.then_some(Self(Some(txn))))
    }

    async fn release(self) {
        if let Some(txn) = self.0 {
            let _ = txn.rollback().await;
        }
    }
}

/// The advisory lock key of a job: a stable 64-bit hash (FNV-1a) of its name, so every
/// build and replica agrees on it.
fn lock_key(job: &str) -> i64 {
    let hash = format!("coalition.jobs.{job}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    hash as i64
}

// ---------------------------------------------------------------------------------------
// Passes over accounts.

/// Accounts a run could not do, left out of its later passes (and retried next run).
#[derive(Default)]
struct Failed {
    accounts: Vec<Uuid>,
    /// Accounts with nothing to do until something else happens (expired points all
    /// reserved by POS holds): left out of later passes too, but not failures.
    waiting: Vec<Uuid>,
    /// Accounts found due that had nothing to do (another process did it first). One
    /// found due again in the same run would be a bug making the run loop: it fails.
    idle: std::collections::HashSet<Uuid>,
}

impl Failed {
    fn record(&mut self, job: &str, account_id: Uuid, error: &AppError) -> AppResult<()> {
        tracing::warn!(job, %account_id, error = %error, "account left for the next run");
        self.accounts.push(account_id);
        if self.accounts.len() >= MAX_FAILED_ACCOUNTS {
            return Err(AppError::Internal(format!(
                "{job}: {} accounts failed in one run, the last with: {error}",
                self.accounts.len()
            )));
        }
        Ok(())
    }

    /// An account found due had nothing to do; fails it if that happened before.
    fn idle(&mut self, job: &str, account_id: Uuid) -> AppResult<bool> {
        if self.idle.insert(account_id) {
            return Ok(false);
        }
        let error = AppError::Internal("found due again with nothing to do".into());
        self.record(job, account_id, &error)?;
        Ok(true)
    }
}

/// The next accounts (at most [`ACCOUNTS_PER_PASS`]) with a live lot matching `due`,
/// other than the failed ones.
async fn accounts_with(
    db: &impl ConnectionTrait,
    due: impl Fn(sea_orm::Select<point_lot::Entity>) -> sea_orm::Select<point_lot::Entity>,
    failed: &Failed,
) -> AppResult<Vec<Uuid>> {
    let mut lots = due(point_lot::Entity::find())
        // A literal, so both databases use the partial index `ix_lots_due`.
        .filter(Expr::col(point_lot::Column::PointsRemaining).gt(Expr::cust("0")));
    if !failed.accounts.is_empty() {
        lots = lots.filter(point_lot::Column::AccountId.is_not_in(failed.accounts.clone()));
    }
    if !failed.waiting.is_empty() {
        lots = lots.filter(point_lot::Column::AccountId.is_not_in(failed.waiting.clone()));
    }
    let mut accounts: Vec<Uuid> = lots
        .select_only()
        .column(point_lot::Column::AccountId)
        .limit(ACCOUNTS_PER_PASS)
        .into_tuple()
        .all(db)
        .await?;
    accounts.sort_unstable();
    accounts.dedup();
    Ok(accounts)
}

/// Runs `work` on every account, [`ACCOUNTS_AT_ONCE`] at a time, each answer with its
/// account. Dropping the future (the server stopping) aborts those in flight, whose
/// transactions roll back.
async fn each_account<T, Work, Done>(
    app: &App,
    accounts: Vec<Uuid>,
    work: Work,
) -> AppResult<Vec<(Uuid, AppResult<T>)>>
where
    T: Send + 'static,
    Work: Fn(App, Uuid) -> Done,
    Done: Future<Output = AppResult<T>> + Send + 'static,
{
    let mut answers = Vec::with_capacity(accounts.len());
    let mut running = tokio::task::JoinSet::new();
    for account_id in accounts {
        if running.len() >= ACCOUNTS_AT_ONCE {
            answers.extend(running.join_next().await);
        }
        let done = work(app.clone(), account_id);
        running.spawn(async move { (account_id, done.await) });
    }
    while let Some(joined) = running.join_next().await {
        answers.push(joined);
    }
    answers
        .into_iter()
        .map(|joined| joined.map_err(|e| AppError::Internal(format!("a job's task: {e}"))))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Expiry.

/// What an expiry run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ExpiryReport {
    /// Accounts that lost points (one journal entry and one `points.expired` each).
    pub accounts: u64,
    pub lots: u64,
    pub points: Points,
    /// Accounts left for the next run after an error (logged).
    pub failed_accounts: u64,
}

/// Expires every lot whose `expires_at` is at or before `now` and still holds points:
/// per account, what is left of them goes to the operator's breakage account in one
/// journal entry, announced as `points.expired` in the outbox.
pub async fn expire_points(app: &App, now: DateTime<Utc>) -> AppResult<ExpiryReport> {
    let mut report = ExpiryReport::default();
    let mut failed = Failed::default();
    loop {
        let accounts = accounts_with(&app.db, |lots| expired(lots, now), &failed).await?;
        if accounts.is_empty() {
            return Ok(report);
        }
        let work = |app: App, id| async move { expire_account(&app, id, now).await };
        for (account_id, outcome) in each_account(app, accounts, work).await? {
            match outcome {
                Ok(Some(done)) if done.points > 0 => {
                    report.accounts += 1;
                    report.lots += done.lots;
                    report.points += done.points;
                }
                // Its expired points are all held: they wait for the holds to end.
                Ok(Some(_)) => failed.waiting.push(account_id),
                // Another process expired them first, or they moved with a registration
                // (the account they moved to comes up in a later pass).
                Ok(None) => {
                    if failed.idle("expire", account_id)? {
                        report.failed_accounts += 1;
                    }
                }
                Err(e) => {
                    report.failed_accounts += 1;
                    failed.record("expire", account_id, &e)?;
                }
            }
        }
    }
}

/// Live lots past their expiry. `reminder_stage IN (every stage)` says nothing about the
/// lots, but lets the databases read `ix_lots_due` as a few ranges.
fn expired(
    lots: sea_orm::Select<point_lot::Entity>,
    now: DateTime<Utc>,
) -> sea_orm::Select<point_lot::Entity> {
    lots.filter(point_lot::Column::ReminderStage.is_in(REMINDER_STAGES))
        .filter(point_lot::Column::ExpiresAt.lte(now))
}

struct Expired {
    lots: u64,
    /// 0: every expired point is reserved by a POS hold, and nothing was done.
    points: Points,
}

/// Expires one account's expired lots in one transaction, under the account's lock.
/// `None`: it had no expired lot left (another process was first).
async fn expire_account(
    app: &App,
    account_id: Uuid,
    now: DateTime<Utc>,
) -> AppResult<Option<Expired>> {
    let txn = app.db.begin().await?;
    let mut account = ledger::lock_account(&txn, account_id).await?;
    let lots = expired(ledger::live_lots(account_id), now)
        .all(&txn)
        .await?;
    if lots.is_empty() {
        return Ok(None);
    }
    // A lapsed hold reserves nothing, whether or not `release-holds` ran first (cron may
    // run `expire` alone). Lapsed by the clock, not by `now`: a run as of a later moment
    // must not end holds a till may still capture.
    if account.held > 0 {
        if let Some(released) =
            crate::holds::release_lapsed_in(&txn, account_id, Utc::now()).await?
        {
            account.held = released.held;
        }
    }
    // Points a POS hold reserves stay until the hold is captured, voided or lapses. A
    // capture spends the soonest-expiring lots first, and these expired lots are the
    // soonest: the held points are theirs, so expiry takes only what of them is beyond
    // the holds (soonest lots first) and a later run the rest.
    let due: Points = lots.iter().map(|l| l.points_remaining).sum();
    let points = (due - account.held).max(0);
    if points == 0 {
        return Ok(Some(Expired { lots: 0, points }));
    }
    let lots = take_expired(&txn, &lots, points).await?;
    let state = ledger::spend_and_earn(&txn, account_id, points, 0).await?;
    let entry_id = Uuid::now_v7();
    let entry = expiry_entry(account.programme_id, account_id, points)?;
    let ctx = EntryContext {
        programme_id: account.programme_id,
        reason: format!("{points} points expired"),
        partner_id: None,
        purchase_id: None,
        refund_id: None,
        breakdown: vec![],
    };
    ledger::write_entry(&txn, entry_id, &entry, &ctx, Utc::now()).await?;
    let event = json!({
        "member_id": account.member_id,
        "account_id": account_id,
        "points": points,
        "lots": lots.len(),
        "balance": state.balance,
        "entry_id": entry_id,
        "expired_by": now,
    });
    outbox::append(&txn, account.programme_id, events::POINTS_EXPIRED, event).await?;
    txn.commit().await?;
    crate::metrics::points_expired(points);
    changed(app, state).await;
    Ok(Some(Expired {
        lots: lots.len() as u64,
        points,
    }))
}

/// Takes `points` from the expired lots read, soonest first: the lots it empties in
/// batches, and the one it may take only part of on its own. Each lot changes only if
/// it still holds exactly what was read: a lot that changed since (which the account
/// lock rules out) fails the whole account, so no points are ever taken twice or taken
/// from a lot that someone else emptied. Answers the lots taken from.
async fn take_expired(
    txn: &DatabaseTransaction,
    lots: &[point_lot::Model],
    points: Points,
) -> AppResult<Vec<point_lot::Model>> {
    let mut left = points;
    let mut emptied = Vec::new();
    let mut partly = None;
    for lot in lots {
        if left == 0 {
            break;
        }
        if lot.points_remaining <= left {
            left -= lot.points_remaining;
            emptied.push(lot.clone());
        } else {
            partly = Some((lot.clone(), left));
            left = 0;
        }
    }
    for chunk in emptied.chunks(LOTS_PER_STATEMENT) {
        let as_read = chunk.iter().map(|l| (l.id, l.points_remaining));
        let changed = point_lot::Entity::update_many()
            .col_expr(point_lot::Column::PointsRemaining, Expr::value(0i64))
            .filter(
                Expr::tuple([
                    Expr::col(point_lot::Column::Id).into(),
                    Expr::col(point_lot::Column::PointsRemaining).into(),
                ])
                .in_tuples(as_read),
            )
            .exec(txn)
            .await?;
        if changed.rows_affected != chunk.len() as u64 {
            return Err(lots_changed());
        }
    }
    if let Some((lot, take)) = partly {
        let changed = point_lot::Entity::update_many()
            .col_expr(
                point_lot::Column::PointsRemaining,
                Expr::value(lot.points_remaining - take),
            )
            .filter(point_lot::Column::Id.eq(lot.id))
            .filter(point_lot::Column::PointsRemaining.eq(lot.points_remaining))
            .exec(txn)
            .await?;
        if changed.rows_affected != 1 {
            return Err(lots_changed());
        }
        emptied.push(lot);
    }
    Ok(emptied)
}

fn lots_changed() -> AppError {
    AppError::Internal("expired lots changed while being expired".into())
}

async fn changed(app: &App, state: AccountState) {
    app.cache.changed(state.account_id, state.version).await;
}

// ---------------------------------------------------------------------------------------
// Reminders.

/// What a reminder run did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReminderReport {
    /// `points.expiring` events written: one per account, expiry day and reminder.
    pub reminders: u64,
    pub accounts: u64,
    pub lots: u64,
    pub points: Points,
    pub failed_accounts: u64,
}

/// Announces points about to expire, 30 and 7 days before their expiry day (UTC), each
/// once per lot: one `points.expiring` event per account and expiry day ("N points
/// expire on D"). Lots past their expiry are the expiry job's.
pub async fn send_expiry_reminders(app: &App, now: DateTime<Utc>) -> AppResult<ReminderReport> {
    let mut report = ReminderReport::default();
    let mut failed = Failed::default();
    loop {
        let mut accounts = Vec::new();
        for reminder in REMINDERS {
            let due = |lots| due_for(lots, reminder, now);
            accounts.extend(accounts_with(&app.db, due, &failed).await?);
        }
        accounts.sort_unstable();
        accounts.dedup();
        if accounts.is_empty() {
            return Ok(report);
        }
        let work = |app: App, id| async move { remind_account(&app, id, now).await };
        for (account_id, outcome) in each_account(app, accounts, work).await? {
            match outcome {
                Ok(sent) if sent.is_empty() => {
                    if failed.idle("remind", account_id)? {
                        report.failed_accounts += 1;
                    }
                }
                Ok(sent) => {
                    report.accounts += 1;
                    report.reminders += sent.len() as u64;
                    report.lots += sent.iter().map(|s| s.lots).sum::<u64>();
                    report.points += sent.iter().map(|s| s.points).sum::<Points>();
                }
                Err(e) => {
                    report.failed_accounts += 1;
                    failed.record("remind", account_id, &e)?;
                }
            }
        }
    }
}

/// Live lots that have not had `reminder` (nor a later one) and are due for it: not yet
/// expired, expiring on a day at most `days_before` days from today.
fn due_for(
    lots: sea_orm::Select<point_lot::Entity>,
    reminder: Reminder,
    now: DateTime<Utc>,
) -> sea_orm::Select<point_lot::Entity> {
    let earlier: Vec<i32> = REMINDER_STAGES
        .into_iter()
        .filter(|stage| *stage < reminder.stage)
        .collect();
    lots.filter(point_lot::Column::ReminderStage.is_in(earlier))
        .filter(point_lot::Column::ExpiresAt.gt(now))
        .filter(point_lot::Column::ExpiresAt.lt(reminder.due_before(now)))
}

/// One `points.expiring` event: an account's points expiring on one day.
struct Sent {
    lots: u64,
    points: Points,
}

/// Sends an account's due reminders in one transaction, under the account's lock. The
/// stage of each lot is raised by a guarded UPDATE that answers the lots it raised: a
/// lot another process announced first is not among them.
async fn remind_account(app: &App, account_id: Uuid, now: DateTime<Utc>) -> AppResult<Vec<Sent>> {
    let txn = app.db.begin().await?;
    let account = ledger::lock_account(&txn, account_id).await?;
    let mut sent = Vec::new();
    for reminder in REMINDERS {
        let raised = point_lot::Entity::update_many()
            .col_expr(
                point_lot::Column::ReminderStage,
                Expr::value(reminder.stage),
            )
            .filter(point_lot::Column::AccountId.eq(account_id))
            .filter(Expr::col(point_lot::Column::PointsRemaining).gt(Expr::cust("0")))
            .filter(point_lot::Column::ReminderStage.lt(reminder.stage))
            .filter(point_lot::Column::ExpiresAt.gt(now))
            .filter(point_lot::Column::ExpiresAt.lt(reminder.due_before(now)))
            .exec_with_returning(&txn)
            .await?;
        for (day, lots) in by_expiry_day(raised) {
            let points: Points = lots.iter().map(|l| l.points_remaining).sum();
            let event = json!({
                "member_id": account.member_id,
                "account_id": account_id,
                "points": points,
                "expires_on": day,
                "first_expires_at": lots.iter().map(|l| l.expires_at).min(),
                "reminder_days_before": reminder.days_before,
            });
            outbox::append(&txn, account.programme_id, events::POINTS_EXPIRING, event).await?;
            sent.push(Sent {
                lots: lots.len() as u64,
                points,
            });
        }
    }
    txn.commit().await?;
    Ok(sent)
}

fn by_expiry_day(lots: Vec<point_lot::Model>) -> BTreeMap<NaiveDate, Vec<point_lot::Model>> {
    let mut days: BTreeMap<NaiveDate, Vec<point_lot::Model>> = BTreeMap::new();
    for lot in lots {
        days.entry(lot.expires_at.date_naive())
            .or_default()
            .push(lot);
    }
    days
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_unique_and_lock_keys_differ() {
        for (i, a) in JOBS.iter().enumerate() {
            for b in &JOBS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(lock_key(a.name), lock_key(b.name));
            }
        }
        // Stable across builds: the replicas of one deployment must agree.
        assert_eq!(lock_key("expire"), lock_key("expire"));
        assert!(find("expire").is_some() && find("nothing").is_none());
    }

    #[test]
    fn a_report_of_zeros_did_nothing() {
        assert!(!did_something(&as_json(ExpiryReport::default()).unwrap()));
        let report = ExpiryReport {
            lots: 1,
            ..ExpiryReport::default()
        };
        assert!(did_something(&as_json(report).unwrap()));
    }
}
