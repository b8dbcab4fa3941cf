//! A hostile review of POS holds, point expiry, reminders and the jobs: each test is an
//! attack on one promise of the README ("POS holds", "Expiry", "Reminders", "Background
//! jobs"), with the ledger's invariants checked after it.

use crate::support::*;
use chrono::{DateTime, Utc};
use coalition_app::jobs;
use coalition_domain::AccountKind;
use coalition_store::entities::{hold, outbox_event, point_account, point_lot};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};
use uuid::Uuid;

/// A programme whose points live `days` days.
async fn programme_with_expiry(t: &TestApp, days: i32) -> Programme {
    let input = coalition_app::programmes::NewProgramme {
        name: format!("Review expiring in {days} days"),
        currency: "EUR".into(),
        point_value: "0.01".into(),
        point_expiry_days: days,
    };
    let created = coalition_app::programmes::create(&t.app.db, input)
        .await
        .expect("create programme");
    let admin = t
        .token(&created.operator.client_id, &created.operator.client_secret)
        .await;
    Programme {
        id: created.programme_id,
        admin,
        client_id: created.operator.client_id,
        client_secret: created.operator.client_secret,
    }
}

async fn lots_of(db: &DatabaseConnection, member_id: &str) -> Vec<point_lot::Model> {
    let account = stored_account(db, member_id).await;
    point_lot::Entity::find()
        .filter(point_lot::Column::AccountId.eq(account.id))
        .order_by_asc(point_lot::Column::ExpiresAt)
        .all(db)
        .await
        .unwrap()
}

async fn breakage(db: &DatabaseConnection, programme: Uuid) -> i64 {
    coalition_app::ledger::posted_balance(db, AccountKind::OperatorBreakage, programme)
        .await
        .unwrap()
}

async fn hold(t: &Client, partner: &Partner, card: &str, points: i64) -> Resp {
    t.post_moving(
        "/v1/redemptions",
        &partner.token,
        json!({"card_number": card, "points": points}),
    )
    .await
}

fn id(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

async fn capture(t: &Client, partner: &Partner, hold_id: &str, body: Value) -> Resp {
    t.post_moving(
        &format!("/v1/redemptions/{hold_id}/capture"),
        &partner.token,
        body,
    )
    .await
}

/// Every account's reserved points are exactly its holds still held, never more than its
/// balance; and the ledger's invariants.
async fn assert_holds_consistent(db: &DatabaseConnection, programme_id: Uuid) {
    let accounts = point_account::Entity::find()
        .filter(point_account::Column::ProgrammeId.eq(programme_id))
        .all(db)
        .await
        .unwrap();
    for a in &accounts {
        let held: i64 = hold::Entity::find()
            .filter(hold::Column::AccountId.eq(a.id))
            .filter(hold::Column::Status.eq("held"))
            .all(db)
            .await
            .unwrap()
            .iter()
            .map(|h| h.points)
            .sum();
        assert_eq!(a.held, held, "account {} reserves its holds' points", a.id);
        assert!(0 <= a.held && a.held <= a.balance, "account {}", a.id);
    }
    assert_accounts_consistent(db, programme_id).await;
}

/// A member with two lots: 50 points expiring first, then 50 points a little later.
async fn member_with_an_early_and_a_late_lot(
    t: &TestApp,
    prog: &Programme,
    email: &str,
) -> (String, String, Partner, DateTime<Utc>) {
    let gym = t.partner(prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, email).await;
    t.purchase(&gym, &card, "50.00", 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    t.purchase(&gym, &card, "50.00", 0).await;
    let lots = lots_of(&t.app.db, &member).await;
    assert_eq!(lots.len(), 2);
    assert!(lots[0].expires_at < lots[1].expires_at);
    (member, card, gym, lots[0].expires_at)
}

/// Spending takes the soonest-expiring lots first, and an expired lot stays spendable
/// until the job has run: so the points a till holds are, on capture, those of the
/// expired lot. Expiry running between the hold and its capture must not take them as
/// well — the member would lose the points that were not expiring.
#[tokio::test]
async fn expiry_between_a_hold_and_its_capture_does_not_take_the_points_the_capture_spends() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = programme_with_expiry(&t, 10).await;
    let (member, card, gym, first_expiry) =
        member_with_an_early_and_a_late_lot(&t, &prog, "early-late@example.org").await;

    // Without the job in between, a reward of 50 spends the expiring lot: 50 stay.
    let held = hold(&t, &gym, &card, 50).await.expect(201);
    let report = jobs::expire_points(&t.app, first_expiry).await.unwrap();
    assert_eq!(report.points, 0, "the expired points are the held ones: {report:?}");
    capture(&t, &gym, &id(&held), json!({})).await.expect(200);
    assert_eq!(stored_account(db, &member).await.balance, 50);
    let report = jobs::expire_points(&t.app, first_expiry).await.unwrap();
    assert_eq!(report.points, 0, "{report:?}");
    assert_eq!(stored_account(db, &member).await.balance, 50);
    assert_eq!(breakage(db, prog.id).await, 0);
    assert_holds_consistent(db, prog.id).await;
}

/// Expired points beyond what a hold reserves still expire; those the hold reserves
/// expire once it is voided.
#[tokio::test]
async fn expiry_takes_the_expired_points_beyond_a_hold_and_the_rest_after_a_void() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = programme_with_expiry(&t, 10).await;
    let (member, card, gym, first_expiry) =
        member_with_an_early_and_a_late_lot(&t, &prog, "beyond@example.org").await;
    let held = hold(&t, &gym, &card, 20).await.expect(201);
    let report = jobs::expire_points(&t.app, first_expiry).await.unwrap();
    assert_eq!((report.points, report.failed_accounts), (30, 0), "{report:?}");
    assert_eq!(stored_account(db, &member).await.balance, 70);
    t.post_moving(
        &format!("/v1/redemptions/{}/void", id(&held)),
        &gym.token,
        json!({}),
    )
    .await
    .expect(200);
    let report = jobs::expire_points(&t.app, first_expiry).await.unwrap();
    assert_eq!(report.points, 20, "{report:?}");
    assert_eq!(stored_account(db, &member).await.balance, 50);
    assert_eq!(breakage(db, prog.id).await, 50);
    assert_holds_consistent(db, prog.id).await;
}

/// An account whose expired points are all reserved by a hold is waiting, not failing:
/// the run reports no failed account and logs no failure for it.
#[tokio::test]
async fn an_account_whose_expired_points_are_held_is_not_a_failed_account() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = programme_with_expiry(&t, 10).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let mut expiry = None;
    for n in 0..3 {
        let (member, card) = t.member_with_card(&gym, &format!("held{n}@example.org")).await;
        t.purchase(&gym, &card, "100.00", 0).await;
        hold(&t, &gym, &card, 100).await.expect(201);
        expiry = Some(lots_of(db, &member).await[0].expires_at);
    }
    let report = jobs::expire_points(&t.app, expiry.unwrap()).await.unwrap();
    assert_eq!(
        (report.accounts, report.points, report.failed_accounts),
        (0, 0, 0),
        "{report:?}"
    );
    assert_holds_consistent(db, prog.id).await;
}
