//! Point expiry and expiry reminders (`coalition_app::jobs`): each lot expires once, to
//! the operator's breakage, whoever runs the job and however often; each reminder goes
//! out once per lot, grouped per member and expiry day. Time passes through the jobs'
//! `now` (the CLI's `--now`), or, for the scheduler, by backdating lots.

use crate::support::*;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use coalition_app::jobs::{self, ExpiryReport, ReminderReport};
use coalition_domain::AccountKind;
use coalition_store::entities::{journal_entry, outbox_event, point_lot};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

impl TestApp {
    /// A programme whose points live `days` days.
    pub(crate) async fn programme_with_expiry(&self, days: i32) -> Programme {
        let name = format!("Expiring in {days} days");
        self.programme_with_terms(&name, "0.01", days).await
    }
}

/// A member's lots, soonest expiry first.
pub(crate) async fn lots_of(db: &DatabaseConnection, member_id: &str) -> Vec<point_lot::Model> {
    let account = stored_account(db, member_id).await;
    point_lot::Entity::find()
        .filter(point_lot::Column::AccountId.eq(account.id))
        .order_by_asc(point_lot::Column::ExpiresAt)
        .all(db)
        .await
        .unwrap()
}

async fn events(db: &DatabaseConnection, programme: Uuid, event_type: &str) -> Vec<Value> {
    outbox_event::Entity::find()
        .filter(outbox_event::Column::ProgrammeId.eq(programme))
        .filter(outbox_event::Column::EventType.eq(event_type))
        .order_by_asc(outbox_event::Column::Id)
        .all(db)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect()
}

pub(crate) async fn breakage(db: &DatabaseConnection, programme: Uuid) -> i64 {
    coalition_app::ledger::posted_balance(db, AccountKind::OperatorBreakage, programme)
        .await
        .unwrap()
}

async fn expiry_entries(db: &DatabaseConnection, programme: Uuid) -> usize {
    journal_entry::Entity::find()
        .filter(journal_entry::Column::ProgrammeId.eq(programme))
        .filter(journal_entry::Column::Kind.eq("expiry"))
        .all(db)
        .await
        .unwrap()
        .len()
}

async fn expire(t: &TestApp, now: DateTime<Utc>) -> ExpiryReport {
    jobs::expire_points(&t.app, now).await.expect("expiry job")
}

async fn remind(t: &TestApp, now: DateTime<Utc>) -> ReminderReport {
    jobs::send_expiry_reminders(&t.app, now)
        .await
        .expect("reminder job")
}

/// Two lots a few milliseconds apart (100 and 50 points), then 30 points spent, which
/// come out of the first: the first holds 70, the second 50.
async fn member_with_two_lots(
    t: &TestApp,
    prog: &Programme,
    email: &str,
) -> (String, String, Partner) {
    let gym = t.partner(prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, email).await;
    t.purchase(&gym, &card, "100.00", 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t.purchase(&gym, &card, "50.00", 0).await;
    t.purchase(&gym, &card, "0.30", 30).await;
    (member, card, gym)
}

#[tokio::test]
async fn expiry_run_twice_expires_only_what_is_left_of_each_expired_lot_once() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(10).await;
    let (member, card, gym) = member_with_two_lots(&t, &prog, "expiring@example.org").await;
    let lots = lots_of(db, &member).await;
    assert_eq!(
        lots.iter()
            .map(|l| (l.points_initial, l.points_remaining))
            .collect::<Vec<_>>(),
        [(100, 70), (50, 50)]
    );
    let (first, second) = (lots[0].expires_at, lots[1].expires_at);
    // Both lots are inside the 30-day window; reading the balance caches the view.
    let before = t
        .get(&format!("/v1/members/{member}/balance"), &gym.token)
        .await
        .expect(200);
    assert_eq!(
        before["expiring_soon"].as_array().unwrap().len(),
        2,
        "{before}"
    );

    // Just before the first lot's expiry nothing expires.
    assert_eq!(
        expire(&t, first - Duration::milliseconds(1)).await,
        ExpiryReport::default()
    );
    // At its expiry, its remainder (70, not the 100 it started with) goes; the other stays.
    let report = expire(&t, first).await;
    assert_eq!((report.accounts, report.lots, report.points), (1, 1, 70));
    assert_eq!(
        expire(&t, first).await,
        ExpiryReport::default(),
        "second run"
    );
    assert_eq!(t.points(&gym.token, &member).await, 50);
    assert_eq!(breakage(db, prog.id).await, 70);
    assert_eq!(expiry_entries(db, prog.id).await, 1);
    assert_accounts_consistent(db, prog.id).await;

    // The balance (its cached view was made stale) lists only the live lot as expiring.
    let after = t
        .get(&format!("/v1/members/{member}/balance"), &gym.token)
        .await
        .expect(200);
    assert_eq!(after["points"], 50);
    let soon = after["expiring_soon"].as_array().unwrap();
    assert_eq!(soon.len(), 1, "{after}");
    assert_eq!(soon[0]["points"], 50);

    // The member's history (as the operator sees it) shows the expiry.
    let history = t
        .get(&format!("/v1/members/{member}/transactions"), &prog.admin)
        .await
        .expect(200);
    let line = &history["data"][0];
    assert_eq!(
        (
            line["kind"].as_str(),
            line["points"].as_i64(),
            line["reason"].as_str()
        ),
        (Some("expired"), Some(-70), Some("70 points expired")),
        "{history}"
    );
    let expired = events(db, prog.id, "points.expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["member_id"], json!(member));
    assert_eq!(
        (
            expired[0]["points"].as_i64(),
            expired[0]["balance"].as_i64()
        ),
        (Some(70), Some(50))
    );

    // Much later, run twice again: the second lot goes, once; nothing is left.
    let later = second + Duration::days(3);
    let report = expire(&t, later).await;
    assert_eq!((report.accounts, report.lots, report.points), (1, 1, 50));
    assert_eq!(expire(&t, later).await, ExpiryReport::default());
    assert_eq!(t.points(&gym.token, &member).await, 0);
    assert_eq!(breakage(db, prog.id).await, 120);
    assert_eq!(expiry_entries(db, prog.id).await, 2);
    assert_eq!(events(db, prog.id, "points.expired").await.len(), 2);
    assert_accounts_consistent(db, prog.id).await;
    // Spending what expired is refused.
    let body = json!({"card_number": card, "amount": {"amount": "0.10", "currency": "EUR"},
        "external_ref": Uuid::new_v4().to_string(), "redeem_points": 10});
    t.post_moving("/v1/purchases", &gym.token, body)
        .await
        .expect_problem(409, "insufficient_points");
}

#[tokio::test]
async fn many_members_expire_in_one_run_each_with_one_entry_and_live_points_kept() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(5).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let mut members = Vec::new();
    for i in 0..6 {
        let (member, card) = t.member_with_card(&gym, &format!("m{i}@example.org")).await;
        for _ in 0..3 {
            t.purchase(&gym, &card, "10.00", 0).await; // three lots of 10
        }
        members.push(member);
    }
    // A member whose lots are all newer than the run's moment keeps them.
    let last = lots_of(db, &members[5]).await[0].expires_at;
    let now = last - Duration::microseconds(1);
    let report = expire(&t, now).await;
    assert_eq!((report.accounts, report.lots, report.points), (5, 15, 150));
    assert_eq!(
        expiry_entries(db, prog.id).await,
        5,
        "one entry per member and run"
    );
    for member in &members[..5] {
        assert_eq!(t.points(&gym.token, member).await, 0);
    }
    assert_eq!(t.points(&gym.token, &members[5]).await, 30);
    assert_eq!(breakage(db, prog.id).await, 150);
    assert_accounts_consistent(db, prog.id).await;
}

#[tokio::test]
async fn two_expiry_runs_at_the_same_moment_expire_each_lot_once() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(5).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    for i in 0..12 {
        let (_, card) = t.member_with_card(&gym, &format!("m{i}@example.org")).await;
        t.purchase(&gym, &card, "10.00", 0).await;
        t.purchase(&gym, &card, "20.00", 0).await;
    }
    let now = Utc::now() + Duration::days(6);
    let (a, b) = tokio::join!(expire(&t, now), expire(&t, now));
    assert_eq!(a.accounts + b.accounts, 12, "{a:?} {b:?}");
    assert_eq!((a.lots + b.lots, a.points + b.points), (24, 360));
    assert_eq!(a.failed_accounts + b.failed_accounts, 0);
    assert_eq!(expiry_entries(db, prog.id).await, 12);
    assert_eq!(breakage(db, prog.id).await, 360);
    assert_accounts_consistent(db, prog.id).await;
}

/// The reminders each lot has had, as (account, expiry day, reminder) → points.
fn reminders(events: &[Value]) -> BTreeMap<(String, String, i64), i64> {
    let mut seen = BTreeMap::new();
    for e in events {
        let key = (
            e["member_id"].as_str().unwrap().to_owned(),
            e["expires_on"].as_str().unwrap().to_owned(),
            e["reminder_days_before"].as_i64().unwrap(),
        );
        let earlier = seen.insert(key.clone(), e["points"].as_i64().unwrap());
        assert!(earlier.is_none(), "{key:?} announced twice");
    }
    seen
}

fn start_of_day(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_time(NaiveTime::MIN).and_utc()
}

#[tokio::test]
async fn reminders_go_out_30_and_7_days_before_each_once_per_member_and_day() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(60).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (ann, ann_card) = t.member_with_card(&gym, "ann@example.org").await;
    let (bob, bob_card) = t.member_with_card(&gym, "bob@example.org").await;
    t.purchase(&gym, &ann_card, "40.00", 0).await;
    t.purchase(&gym, &ann_card, "2.00", 0).await;
    t.purchase(&gym, &bob_card, "7.00", 0).await;
    // What each member has expiring on each day (two purchases a moment apart may fall
    // either side of midnight: the test does not assume they share a day).
    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut last_day = Utc::now();
    for member in [&ann, &bob] {
        for lot in lots_of(db, member).await {
            let day = lot.expires_at.date_naive().to_string();
            *expected.entry((member.to_string(), day)).or_default() += lot.points_remaining;
            last_day = last_day.max(lot.expires_at);
        }
    }
    let first_day = start_of_day(lots_of(db, &ann).await[0].expires_at);

    assert_eq!(
        remind(&t, Utc::now()).await,
        ReminderReport::default(),
        "60 days out"
    );
    // The day before the 30-day reminder's day: nothing yet.
    let eve = first_day - Duration::days(31) + Duration::hours(23);
    assert_eq!(remind(&t, eve).await, ReminderReport::default());
    // 30 days before the last expiry day, every lot has had its 30-day reminder, once.
    let thirty = start_of_day(last_day) - Duration::days(30) + Duration::hours(1);
    let report = remind(&t, thirty).await;
    assert_eq!((report.accounts, report.lots, report.points), (2, 3, 49));
    assert_eq!(
        remind(&t, thirty).await,
        ReminderReport::default(),
        "second run"
    );
    assert_eq!(
        remind(&t, thirty + Duration::days(10)).await,
        ReminderReport::default()
    );
    let sent = reminders(&events(db, prog.id, "points.expiring").await);
    let by_day: BTreeMap<(String, String), i64> = sent
        .iter()
        .map(|((member, day, before), points)| {
            assert_eq!(*before, 30);
            ((member.clone(), day.clone()), *points)
        })
        .collect();
    assert_eq!(by_day, expected, "one reminder per member and expiry day");
    assert_eq!(report.reminders as usize, expected.len());

    // 7 days before: the 7-day reminder, once.
    let seven = start_of_day(last_day) - Duration::days(7) + Duration::hours(1);
    let report = remind(&t, seven).await;
    assert_eq!((report.lots, report.points), (3, 49));
    assert_eq!(remind(&t, seven).await, ReminderReport::default());
    assert_eq!(
        remind(&t, last_day - Duration::seconds(1)).await,
        ReminderReport::default()
    );
    // Expired lots are the expiry job's: no reminder for them.
    assert_eq!(
        remind(&t, last_day + Duration::days(1)).await,
        ReminderReport::default()
    );
    let sent = reminders(&events(db, prog.id, "points.expiring").await);
    assert_eq!(sent.len(), 2 * expected.len());
    assert!(sent.keys().filter(|(_, _, before)| *before == 7).count() == expected.len());
    let payload = &events(db, prog.id, "points.expiring").await[0];
    for field in [
        "member_id",
        "account_id",
        "points",
        "expires_on",
        "first_expires_at",
    ] {
        assert!(!payload[field].is_null(), "{field} missing from {payload}");
    }
}

#[tokio::test]
async fn a_lot_first_seen_inside_7_days_gets_only_the_7_day_reminder() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(3).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "late@example.org").await;
    t.purchase(&gym, &card, "25.00", 0).await;
    t.purchase(&gym, &card, "0.05", 5).await; // spent points are not announced
    let report = remind(&t, Utc::now()).await;
    assert_eq!((report.reminders, report.points), (1, 20));
    assert_eq!(
        remind(&t, Utc::now() + Duration::days(2)).await,
        ReminderReport::default()
    );
    let sent = events(db, prog.id, "points.expiring").await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["reminder_days_before"], 7);
    assert_eq!(sent[0]["member_id"], json!(member));
    assert_eq!(sent[0]["points"], 20);
}

/// Backdates a member's lots by `days`, as if they had been earned that long ago.
pub(crate) async fn backdate_lots(db: &DatabaseConnection, member_id: &str, days: i64) {
    for lot in lots_of(db, member_id).await {
        let moved = lot.expires_at - Duration::days(days);
        point_lot::Entity::update_many()
            .col_expr(
                point_lot::Column::ExpiresAt,
                sea_orm::sea_query::Expr::value(moved),
            )
            .filter(point_lot::Column::Id.eq(lot.id))
            .exec(db)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_scheduler_inside_the_server_expires_and_reminds() {
    let t = spawn_app_with_settings(&[("COALITION_JOBS_INTERVAL_SECONDS", "1")]).await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(30).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (old, old_card) = t.member_with_card(&gym, "old@example.org").await;
    t.purchase(&gym, &old_card, "40.00", 0).await;
    backdate_lots(db, &old, 31).await; // earned 31 days ago: expired a day ago
    let (new, new_card) = t.member_with_card(&gym, "new@example.org").await;
    t.purchase(&gym, &new_card, "15.00", 0).await; // expires in 30 days: reminded
    let mut waited = 0;
    while events(db, prog.id, "points.expiring").await.is_empty()
        || events(db, prog.id, "points.expired").await.is_empty()
    {
        assert!(waited < 100, "the scheduler did not run within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await; // two more rounds
    assert_eq!(t.points(&gym.token, &old).await, 0);
    assert_eq!(t.points(&gym.token, &new).await, 15);
    assert_eq!(breakage(db, prog.id).await, 40);
    assert_eq!(events(db, prog.id, "points.expired").await.len(), 1);
    // (The old lot may have had its 30-day reminder before it was backdated.)
    let reminded: Vec<Value> = events(db, prog.id, "points.expiring")
        .await
        .into_iter()
        .filter(|e| e["member_id"] == json!(new))
        .collect();
    assert_eq!(reminded.len(), 1, "{reminded:?}");
    assert_eq!(reminded[0]["points"], 15);
    assert_accounts_consistent(db, prog.id).await;
}

/// The environment of the CLI and servers of one PostgreSQL + Redis database.
async fn postgres_env() -> Option<(String, Vec<(&'static str, String)>)> {
    let (Some(redis_url), "postgres") = (test_redis_url(), backend_name()) else {
        eprintln!("needs PostgreSQL and Redis: runs in the PostgreSQL + Redis pass of .ci/run");
        return None;
    };
    let database_url = fresh_database_url().await;
    let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
    let env = server_env(&database_url, &redis_url, &prefix);
    Some((database_url, env))
}

/// `coalition jobs <job> --now <now>` in two processes started together: their reports.
fn two_cli_runs(env: &[(&str, String)], job: &str, now: DateTime<Utc>) -> [Value; 2] {
    let now = now.to_rfc3339();
    let started = [0, 1].map(|_| {
        coalition(env)
            .args(["jobs", job, "--now", &now])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("coalition jobs")
    });
    started.map(|child| {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("a JSON report")
    })
}

fn sum(reports: &[Value; 2], field: &str) -> i64 {
    reports.iter().map(|r| r[field].as_i64().unwrap()).sum()
}

#[tokio::test]
async fn two_cli_processes_at_once_expire_and_remind_each_lot_once() {
    let Some((database_url, env)) = postgres_env().await else {
        return;
    };
    let server = start_server(&env).await;
    let t = spawn_client(&server.base);
    let prog = create_programme(&env, &t).await; // 730-day points
    let gym = t.partner(&prog, "Gym", "1").await;
    let members = 40;
    for i in 0..members {
        let (_, card) = t.member_with_card(&gym, &format!("m{i}@example.org")).await;
        t.purchase(&gym, &card, "10.00", 0).await;
        t.purchase(&gym, &card, "5.00", 0).await;
    }
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    let expiry = Utc::now() + Duration::days(730);

    let reports = two_cli_runs(&env, "remind", expiry - Duration::days(20));
    assert_eq!(sum(&reports, "lots"), 2 * members, "{reports:?}");
    assert_eq!(sum(&reports, "points"), 15 * members);
    let sent = reminders(&events(&db, prog.id, "points.expiring").await);
    assert_eq!(sent.values().sum::<i64>(), 15 * members);
    assert_eq!(sum(&reports, "reminders"), sent.len() as i64);

    let reports = two_cli_runs(&env, "expire", expiry + Duration::days(1));
    assert_eq!(sum(&reports, "accounts"), members, "{reports:?}");
    assert_eq!(sum(&reports, "lots"), 2 * members);
    assert_eq!(sum(&reports, "points"), 15 * members);
    assert_eq!(sum(&reports, "failed_accounts"), 0);
    assert_eq!(expiry_entries(&db, prog.id).await, members as usize);
    assert_eq!(breakage(&db, prog.id).await, 15 * members);
    assert_eq!(
        events(&db, prog.id, "points.expired").await.len(),
        members as usize
    );
    assert_accounts_consistent(&db, prog.id).await;
}

#[tokio::test]
async fn two_servers_with_the_scheduler_expire_each_lot_once() {
    let Some((database_url, mut env)) = postgres_env().await else {
        return;
    };
    env.push(("COALITION_JOBS_INTERVAL_SECONDS", "1".to_owned()));
    let a = start_server(&env).await;
    let b = start_server(&env).await;
    let (ta, tb) = (spawn_client(&a.base), spawn_client(&b.base));
    let prog = create_programme(&env, &ta).await;
    let gym = ta.partner(&prog, "Gym", "1").await;
    let mut members = HashMap::new();
    for i in 0..20 {
        let (member, card) = ta
            .member_with_card(&gym, &format!("m{i}@example.org"))
            .await;
        tb.purchase(&gym, &card, "10.00", 0).await;
        members.insert(member, card);
    }
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    // Earned two years and a day ago: expired yesterday. One UPDATE, so that both
    // schedulers find every lot expired in the same round.
    db.execute_unprepared(&format!(
        "UPDATE point_lots SET expires_at = expires_at - interval '731 days' WHERE programme_id = '{}'",
        prog.id
    ))
    .await
    .unwrap();
    let mut waited = 0;
    while breakage(&db, prog.id).await < 200 {
        assert!(
            waited < 100,
            "the schedulers did not expire the lots within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(breakage(&db, prog.id).await, 200);
    assert_eq!(expiry_entries(&db, prog.id).await, 20);
    assert_eq!(events(&db, prog.id, "points.expired").await.len(), 20);
    for member in members.keys() {
        assert_eq!(tb.points(&gym.token, member).await, 0);
    }
    assert_accounts_consistent(&db, prog.id).await;
}

#[tokio::test]
async fn the_cli_names_its_jobs_and_refuses_a_bad_moment() {
    let env = [("DATABASE_URL", fresh_database_url().await)];
    let help = coalition(&env).args(["jobs", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for job in jobs::JOBS {
        assert!(help.contains(job.name), "{help}");
    }
    let bad = coalition(&env)
        .args(["jobs", "expire", "--now", "tomorrow"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
    let unknown = coalition(&env).args(["jobs", "nothing"]).output().unwrap();
    assert!(!unknown.status.success());
    let ran = coalition(&env).args(["jobs", "expire"]).output().unwrap();
    assert!(ran.status.success(), "{ran:?}");
    let report: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(
        report,
        json!({"accounts": 0, "lots": 0, "points": 0, "failed_accounts": 0})
    );
}

#[tokio::test]
async fn serve_stops_its_scheduler_when_it_shuts_down() {
    let settings = HashMap::from([
        ("DATABASE_URL".to_owned(), fresh_database_url().await),
        ("COALITION_JOBS_INTERVAL_SECONDS".to_owned(), "1".to_owned()),
        ("COALITION_MIGRATE_ON_START".to_owned(), "true".to_owned()),
    ]);
    let config = coalition_server::config::Config::from_map(&settings).unwrap();
    let app = coalition_server::build_app(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let jobs = config.jobs_interval;
    let served = tokio::spawn(coalition_server::serve(
        app.clone(),
        listener,
        jobs,
        shutdown,
    ));
    let t = TestApp {
        client: spawn_client(&base),
        app,
        redis_prefix: None,
    };
    let db = &t.app.db;
    let prog = t.programme_with_expiry(30).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (first, first_card) = t.member_with_card(&gym, "first@example.org").await;
    let (second, second_card) = t.member_with_card(&gym, "second@example.org").await;
    t.purchase(&gym, &first_card, "10.00", 0).await;
    t.purchase(&gym, &second_card, "10.00", 0).await;
    // While it serves, the scheduler expires what expired.
    backdate_lots(db, &first, 31).await;
    let mut waited = 0;
    while stored_account(db, &first).await.balance > 0 {
        assert!(waited < 100, "the scheduler did not run within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    stop.send(()).unwrap();
    let done = tokio::time::timeout(std::time::Duration::from_secs(5), served).await;
    done.expect("serve returned").unwrap().unwrap();
    // Once it has returned, no round runs any more.
    backdate_lots(db, &second, 31).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(stored_account(db, &second).await.balance, 10);
}

/// Points a POS hold reserves do not expire under it: expiry takes what is not held,
/// and the rest once the hold ends.
#[tokio::test]
async fn held_points_wait_for_their_hold_before_they_expire() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(10).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "held@example.org").await;
    t.purchase(&gym, &card, "100.00", 0).await;
    let hold = t
        .post_moving(
            "/v1/redemptions",
            &gym.token,
            json!({"card_number": card, "points": 60}),
        )
        .await
        .expect(201);
    let due = lots_of(db, &member).await[0].expires_at;

    let report = expire(&t, due).await;
    assert_eq!((report.accounts, report.points), (1, 40), "{report:?}");
    let account = stored_account(db, &member).await;
    assert_eq!(account.balance, 60, "the held points stay");
    assert_eq!(breakage(db, prog.id).await, 40);
    assert_eq!(expire(&t, due).await.points, 0, "nothing more while held");

    let void = format!("/v1/redemptions/{}/void", hold["id"].as_str().unwrap());
    t.post_moving(&void, &gym.token, json!({}))
        .await
        .expect(200);
    assert_eq!(expire(&t, due).await.points, 60);
    assert_eq!(stored_account(db, &member).await.balance, 0);
    assert_eq!(breakage(db, prog.id).await, 100);
    assert_eq!(expiry_entries(db, prog.id).await, 2);
    assert_accounts_consistent(db, prog.id).await;
}
