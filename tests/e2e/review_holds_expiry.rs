//! A hostile review of POS holds, point expiry, reminders and the jobs: each test is an
//! attack on one promise of the README ("POS holds", "Expiry", "Reminders", "Background
//! jobs"), with the ledger's invariants checked after it.

use crate::expiry::{breakage, lots_of};
use crate::holds::{assert_holds_consistent, capture, hold, id};
use crate::support::*;
use chrono::{DateTime, Utc};
use coalition_app::jobs;
use coalition_store::entities::{hold, outbox_event, point_account, point_lot};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{json, Value};
use uuid::Uuid;

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
    let prog = t.programme_with_expiry(10).await;
    let (member, card, gym, first_expiry) =
        member_with_an_early_and_a_late_lot(&t, &prog, "early-late@example.org").await;

    // Without the job in between, a reward of 50 spends the expiring lot: 50 stay.
    let held = hold(&t, &gym, &card, 50).await.expect(201);
    let report = jobs::expire_points(&t.app, first_expiry).await.unwrap();
    assert_eq!(
        report.points, 0,
        "the expired points are the held ones: {report:?}"
    );
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
    let prog = t.programme_with_expiry(10).await;
    let (member, card, gym, first_expiry) =
        member_with_an_early_and_a_late_lot(&t, &prog, "beyond@example.org").await;
    let held = hold(&t, &gym, &card, 20).await.expect(201);
    let report = jobs::expire_points(&t.app, first_expiry).await.unwrap();
    assert_eq!(
        (report.points, report.failed_accounts),
        (30, 0),
        "{report:?}"
    );
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
    let prog = t.programme_with_expiry(10).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let mut expiry = None;
    for n in 0..3 {
        let (member, card) = t
            .member_with_card(&gym, &format!("held{n}@example.org"))
            .await;
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

/// The member's (points, held, available) as the API shows them (the cache first).
async fn shown(t: &Client, token: &str, member: &str) -> (i64, i64, i64) {
    let b = t
        .get(&format!("/v1/members/{member}/balance"), token)
        .await
        .expect(200);
    let field = |name: &str| b[name].as_i64().unwrap();
    (
        field("points"),
        field("held_points"),
        field("available_points"),
    )
}

async fn hold_status(t: &Client, partner: &Partner, hold_id: &str) -> String {
    t.get(&format!("/v1/redemptions/{hold_id}"), &partner.token)
        .await
        .expect(200)["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Every way a capture's purchase can be wrong leaves the hold held and moves nothing:
/// too small for the held points, zero, over the limit, another currency, an external
/// reference taken already (also by a purchase of the same partner).
#[tokio::test]
async fn a_refused_capture_leaves_the_hold_held_and_moves_nothing() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme("Refused captures").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "refused@example.org").await;
    let taken = json!({"card_number": card, "amount": {"amount": "1000.00", "currency": "EUR"}, "external_ref": "taken-ref", "redeem_points": 0});
    t.post_moving("/v1/purchases", &shop.token, taken)
        .await
        .expect(201);
    let held = hold(&t, &shop, &card, 500).await.expect(201);
    let before = shown(&t, &prog.admin, &member).await;
    assert_eq!(before, (1000, 500, 500));
    let purchase = |amount: &str, currency: &str, reference: &str| json!({"purchase": {"amount": {"amount": amount, "currency": currency}, "external_ref": reference}});
    let attempts = [
        (
            purchase("4.99", "EUR", "r1"),
            422,
            "redemption_exceeds_amount",
        ),
        (purchase("0", "EUR", "r2"), 422, "validation_failed"),
        (purchase("0.00", "EUR", "r2"), 422, "validation_failed"),
        (
            purchase("1000000000.01", "EUR", "r3"),
            422,
            "validation_failed",
        ),
        (
            purchase("99999999999999999999", "EUR", "r3"),
            422,
            "validation_failed",
        ),
        (purchase("10.00", "USD", "r4"), 422, "currency_mismatch"),
        (purchase("10.001", "EUR", "r5"), 422, "validation_failed"),
        (
            purchase("10.00", "EUR", "taken-ref"),
            409,
            "duplicate_external_ref",
        ),
    ];
    for (body, status, code) in attempts {
        let answer = capture(&t, &shop, &id(&held), body.clone()).await;
        assert_eq!(
            (answer.status.as_u16(), answer.code()),
            (status, code),
            "{body}: {}",
            answer.body
        );
        assert_eq!(hold_status(&t, &shop, &id(&held)).await, "held", "{body}");
        assert_eq!(shown(&t, &prog.admin, &member).await, before, "{body}");
        assert_holds_consistent(db, prog.id).await;
    }
    // Still capturable, once.
    capture(&t, &shop, &id(&held), purchase("10.00", "EUR", "good"))
        .await
        .expect(200);
    capture(&t, &shop, &id(&held), purchase("10.00", "EUR", "again"))
        .await
        .expect_problem(409, "hold_not_held");
    assert_holds_consistent(db, prog.id).await;
}

/// One Idempotency-Key is one request: reused on another hold, for a void after a
/// capture, or for a capture with another body, it is refused and moves nothing.
#[tokio::test]
async fn one_idempotency_key_across_holds_and_operations_is_refused() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme("Keys").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "keys@example.org").await;
    t.purchase(&shop, &card, "1000.00", 0).await;
    let first = id(&hold(&t, &shop, &card, 100).await.expect(201));
    let second = id(&hold(&t, &shop, &card, 200).await.expect(201));
    let post = |path: String, body: Option<Value>, key: &'static str| {
        let token = shop.token.clone();
        let t = &t;
        async move {
            t.call(reqwest::Method::POST, &path, Some(&token), body, Some(key))
                .await
        }
    };
    post(
        format!("/v1/redemptions/{first}/capture"),
        Some(json!({})),
        "k1",
    )
    .await
    .expect(200);
    post(
        format!("/v1/redemptions/{second}/capture"),
        Some(json!({})),
        "k1",
    )
    .await
    .expect_problem(422, "idempotency_key_reused");
    post(format!("/v1/redemptions/{second}/void"), None, "k1")
        .await
        .expect_problem(422, "idempotency_key_reused");
    post(format!("/v1/redemptions/{first}/void"), None, "k1")
        .await
        .expect_problem(422, "idempotency_key_reused");
    // A hold created with a key used by a capture: refused, nothing reserved.
    let body = json!({"card_number": card, "points": 5});
    post("/v1/redemptions".into(), Some(body), "k1")
        .await
        .expect_problem(422, "idempotency_key_reused");
    assert_eq!(hold_status(&t, &shop, &second).await, "held");
    assert_eq!(shown(&t, &prog.admin, &member).await, (900, 200, 700));
    // A hold's replay answers the same hold, and reserves nothing more.
    let body = json!({"card_number": card, "points": 50});
    let a = post("/v1/redemptions".into(), Some(body.clone()), "h1")
        .await
        .expect(201);
    let b = post("/v1/redemptions".into(), Some(body), "h1")
        .await
        .expect(201);
    assert_eq!(a, b);
    assert_eq!(shown(&t, &prog.admin, &member).await, (900, 250, 650));
    assert_holds_consistent(db, prog.id).await;
}

/// Points out of range are refused before anything is read.
#[tokio::test]
async fn holds_of_no_negative_fractional_or_too_many_points() {
    let t = spawn_app().await;
    let prog = t.programme("Ranges").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "ranges@example.org").await;
    t.purchase(&shop, &card, "10.00", 0).await;
    for points in [
        json!(0),
        json!(-1),
        json!(1.5),
        json!("10"),
        json!(1_000_000_000_001_i64),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(null),
    ] {
        let answer = t
            .post_moving(
                "/v1/redemptions",
                &shop.token,
                json!({"card_number": card, "points": points}),
            )
            .await;
        assert_eq!(answer.status.as_u16(), 422, "{points}: {}", answer.body);
    }
    hold(&t, &shop, &card, 11)
        .await
        .expect_problem(409, "insufficient_points");
    assert_eq!(shown(&t, &prog.admin, &member).await, (10, 0, 10));
    assert_holds_consistent(&t.app.db, prog.id).await;
}

/// A card blocked or replaced after the hold: capture takes nothing (the hold stays
/// held), a void frees the points.
#[tokio::test]
async fn a_blocked_or_replaced_card_cannot_capture_its_hold_but_can_void_it() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme("Blocked").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "blocked@example.org").await;
    t.purchase(&shop, &card, "1000.00", 0).await;
    let a = id(&hold(&t, &shop, &card, 100).await.expect(201));
    let b = id(&hold(&t, &shop, &card, 100).await.expect(201));
    let replaced = t
        .post_moving(&format!("/v1/cards/{card}/replace"), &shop.token, json!({}))
        .await;
    assert!(replaced.status.is_success(), "{}", replaced.body);
    let with_purchase = json!({"purchase": {"amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": "r"}});
    for body in [json!({}), with_purchase] {
        capture(&t, &shop, &a, body)
            .await
            .expect_problem(409, "card_replaced");
    }
    assert_eq!(hold_status(&t, &shop, &a).await, "held");
    assert_eq!(shown(&t, &prog.admin, &member).await, (1000, 200, 800));
    t.post_moving(&format!("/v1/redemptions/{a}/void"), &shop.token, json!({}))
        .await
        .expect(200);
    t.post_moving(&format!("/v1/redemptions/{b}/void"), &shop.token, json!({}))
        .await
        .expect(200);
    assert_eq!(shown(&t, &prog.admin, &member).await, (1000, 0, 1000));
    assert_holds_consistent(db, prog.id).await;
}

/// The cached balance follows every change of a hold: create, capture, void, lapse,
/// the release job, and expiry of the points beyond the holds.
#[tokio::test]
async fn the_cached_balance_follows_holds_and_expiry() {
    let t = spawn_app_with_settings(&[("COALITION_HOLD_TTL_SECONDS", "1")]).await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(10).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "cached@example.org").await;
    t.purchase(&shop, &card, "100.00", 0).await;
    let expiring = |b: &Value| -> i64 {
        b["expiring_soon"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["points"].as_i64().unwrap())
            .sum()
    };
    let path = format!("/v1/members/{member}/balance");
    assert_eq!(shown(&t, &prog.admin, &member).await, (100, 0, 100));
    let a = id(&hold(&t, &shop, &card, 30).await.expect(201));
    assert_eq!(shown(&t, &prog.admin, &member).await, (100, 30, 70));
    capture(&t, &shop, &a, json!({})).await.expect(200);
    assert_eq!(shown(&t, &prog.admin, &member).await, (70, 0, 70));
    let b = id(&hold(&t, &shop, &card, 20).await.expect(201));
    assert_eq!(shown(&t, &prog.admin, &member).await, (70, 20, 50));
    t.post_moving(&format!("/v1/redemptions/{b}/void"), &shop.token, json!({}))
        .await
        .expect(200);
    assert_eq!(shown(&t, &prog.admin, &member).await, (70, 0, 70));
    hold(&t, &shop, &card, 10).await.expect(201);
    assert_eq!(shown(&t, &prog.admin, &member).await, (70, 10, 60));
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    assert_eq!(shown(&t, &prog.admin, &member).await, (70, 0, 70), "lapsed");
    assert_eq!(
        jobs::run(&t.app, "release-holds", Utc::now())
            .await
            .unwrap()["released"],
        1
    );
    assert_eq!(shown(&t, &prog.admin, &member).await, (70, 0, 70));
    // Expiry with a live hold: only the points beyond it go, and the view shows it.
    let c = id(&hold(&t, &shop, &card, 25).await.expect(201));
    assert_eq!(expiring(&t.get(&path, &prog.admin).await.expect(200)), 70);
    let due = lots_of(db, &member).await[0].expires_at;
    let report = jobs::expire_points(&t.app, due).await.unwrap();
    assert_eq!(report.points, 45, "{report:?}");
    let after = t.get(&path, &prog.admin).await.expect(200);
    assert_eq!(
        (after["points"].as_i64(), after["held_points"].as_i64()),
        (Some(25), Some(25)),
        "{after}"
    );
    assert_eq!(expiring(&after), 25, "{after}");
    capture(&t, &shop, &c, json!({})).await.expect(200);
    assert_eq!(shown(&t, &prog.admin, &member).await, (0, 0, 0));
    assert_holds_consistent(db, prog.id).await;
}

/// Reminders run twice, and by two runs at once, announce each lot once; expiry run
/// twice writes one `points.expired` per account. Outbox rows are written with their
/// change only.
#[tokio::test]
async fn reminders_and_expiry_twice_and_at_once_write_each_event_once() {
    let t = spawn_app().await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(20).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "outbox@example.org").await;
    t.purchase(&shop, &card, "100.00", 0).await;
    let now = Utc::now();
    let (a, b) = tokio::join!(
        jobs::send_expiry_reminders(&t.app, now),
        jobs::send_expiry_reminders(&t.app, now)
    );
    assert_eq!(a.unwrap().reminders + b.unwrap().reminders, 1);
    assert_eq!(
        jobs::send_expiry_reminders(&t.app, now)
            .await
            .unwrap()
            .reminders,
        0
    );
    let due = lots_of(db, &member).await[0].expires_at;
    let (a, b) = tokio::join!(
        jobs::expire_points(&t.app, due),
        jobs::expire_points(&t.app, due)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.points + b.points, 100);
    assert_eq!(a.failed_accounts + b.failed_accounts, 0);
    assert_eq!(jobs::expire_points(&t.app, due).await.unwrap().points, 0);
    let events = outbox_event::Entity::find()
        .filter(outbox_event::Column::ProgrammeId.eq(prog.id))
        .all(db)
        .await
        .unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.event_type == kind).count();
    assert_eq!((count("points.expiring"), count("points.expired")), (1, 1));
    assert_holds_consistent(db, prog.id).await;
}

/// What a chaotic request may answer: anything but a fault.
fn allowed(answer: &Resp, what: &str) {
    let status = answer.status.as_u16();
    assert!(
        status < 500 && status != 400 && status != 404,
        "{what}: {status} {}",
        answer.body
    );
}

/// Everything at once on one bearer card's account: holds captured (as rewards and
/// with purchases) and voided, purchases paying with points, refunds giving points back
/// and clawing them back, the card's registration, lapsed holds released and expiry
/// (twice) — all racing. No fault, and every invariant holds after; the cached balance
/// is the stored one.
#[tokio::test]
async fn holds_purchases_refunds_registration_and_expiry_racing_on_one_account() {
    let t = spawn_app_with_settings(&[("COALITION_HOLD_TTL_SECONDS", "2")]).await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(10).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let member = enrol(&t, &shop, "chaos@example.org").await;
    let card = bearer_card(&t, &shop).await;
    let mut bought = Vec::new();
    for _ in 0..6 {
        bought.push(
            t.purchase(&shop, &card, "100.00", 0).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The first lots are due at this moment; the job runs with it while the rest happens.
    let due = lots_of_card(db, &card).await;
    let mut work = Vec::new();
    for n in 0..12 {
        let (t, shop, card) = (&t, &shop, &card);
        work.push(Box::pin(async move {
            let held = hold(t, shop, card, 40).await;
            allowed(&held, "hold");
            if held.status != 201 {
                return;
            }
            let path = |op: &str| format!("/v1/redemptions/{}/{op}", id(&held.body));
            let answer = match n % 3 {
                0 => capture(t, shop, &id(&held.body), json!({})).await,
                1 => {
                    let body = json!({"purchase": {"amount": {"amount": "30.00", "currency": "EUR"}, "external_ref": format!("chaos-{n}")}});
                    capture(t, shop, &id(&held.body), body).await
                }
                _ => t.post_moving(&path("void"), &shop.token, json!({})).await,
            };
            allowed(&answer, "capture or void");
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);
    }
    for _ in 0..6 {
        let (t, shop, card) = (&t, &shop, &card);
        work.push(Box::pin(async move {
            let body = json!({"card_number": card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": Uuid::new_v4().to_string(), "redeem_points": 30});
            allowed(&t.post_moving("/v1/purchases", &shop.token, body).await, "purchase");
        }));
    }
    for purchase in bought.iter().take(4) {
        let (t, shop) = (&t, &shop);
        work.push(Box::pin(async move {
            let body = json!({"amount": {"amount": "60.00", "currency": "EUR"}});
            let path = format!("/v1/purchases/{purchase}/refunds");
            allowed(&t.post_moving(&path, &shop.token, body).await, "refund");
        }));
    }
    for _ in 0..3 {
        let (t, shop, card, member) = (&t, &shop, &card, &member);
        work.push(Box::pin(async move {
            allowed(&register(t, shop, card, member).await, "register");
        }));
    }
    for _ in 0..2 {
        let t = &t;
        work.push(Box::pin(async move {
            let report = jobs::expire_points(&t.app, due).await.expect("expiry");
            assert_eq!(report.failed_accounts, 0, "{report:?}");
        }));
        work.push(Box::pin(async move {
            jobs::run(&t.app, "release-holds", Utc::now())
                .await
                .expect("release");
        }));
    }
    futures::future::join_all(work).await;
    assert_holds_consistent(db, prog.id).await;
    // Whatever is left held lapses; then the cached balance is the stored one.
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    jobs::run(&t.app, "release-holds", Utc::now())
        .await
        .unwrap();
    let row = card_account(db, &card).await;
    let view = t
        .get(&format!("/v1/cards/{card}/balance"), &shop.token)
        .await
        .expect(200);
    assert_eq!(
        (view["points"].as_i64(), view["held_points"].as_i64()),
        (Some(row.balance), Some(0)),
        "{view}"
    );
    assert_holds_consistent(db, prog.id).await;
}

async fn card_account(db: &DatabaseConnection, number: &str) -> point_account::Model {
    use coalition_store::entities::card;
    let card = card::Entity::find()
        .filter(card::Column::Number.eq(number))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    point_account::Entity::find_by_id(card.account_id)
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

/// The expiry of the soonest live lot of the card's account.
async fn lots_of_card(db: &DatabaseConnection, number: &str) -> DateTime<Utc> {
    let account = card_account(db, number).await;
    point_lot::Entity::find()
        .filter(point_lot::Column::AccountId.eq(account.id))
        .order_by_asc(point_lot::Column::ExpiresAt)
        .all(db)
        .await
        .unwrap()[2]
        .expires_at
}

/// A balance read less than a second before a hold lapses is cached only until the
/// lapse: read again just after it, the points are free (with Redis too, whose expiry
/// was counted in whole seconds and rounded a short life up to one second).
#[tokio::test]
async fn a_balance_read_just_before_a_hold_lapses_is_not_served_after_it() {
    let t = spawn_app_with_settings(&[("COALITION_HOLD_TTL_SECONDS", "1")]).await;
    let prog = t.programme("Short views").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "short@example.org").await;
    t.purchase(&shop, &card, "100.00", 0).await;
    let held = hold(&t, &shop, &card, 40).await.expect(201);
    let lapses: DateTime<Utc> = held["expires_at"].as_str().unwrap().parse().unwrap();
    let until = |at: DateTime<Utc>| (at - Utc::now()).to_std().unwrap_or_default();
    // Read (and cache) the view 600 ms before the lapse ...
    tokio::time::sleep(until(lapses - chrono::Duration::milliseconds(600))).await;
    assert_eq!(shown(&t, &prog.admin, &member).await, (100, 40, 60));
    // ... and again 150 ms after it.
    tokio::time::sleep(until(lapses + chrono::Duration::milliseconds(150))).await;
    assert_eq!(shown(&t, &prog.admin, &member).await, (100, 0, 100));
}

/// Two server processes, each with its scheduler every second, release lapsed holds:
/// each hold once, the reserved points back exactly once, and both processes show it.
/// (PostgreSQL + Redis; one process on SQLite.)
#[tokio::test]
async fn two_schedulers_release_each_lapsed_hold_once() {
    let database_url = fresh_database_url().await;
    let two = backend_name() == "postgres" && test_redis_url().is_some();
    let mut env = if two {
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        server_env(&database_url, &test_redis_url().unwrap(), &prefix)
    } else {
        vec![("DATABASE_URL", database_url.clone())]
    };
    env.retain(|(name, _)| *name != "COALITION_JOBS_INTERVAL_SECONDS");
    env.push(("COALITION_JOBS_INTERVAL_SECONDS", "1".to_owned()));
    env.push(("COALITION_HOLD_TTL_SECONDS", "1".to_owned()));
    let mut servers = vec![start_server(&env).await];
    if two {
        servers.push(start_server(&env).await);
    }
    let clients: Vec<Client> = servers.iter().map(|s| spawn_client(&s.base)).collect();
    let t = &clients[0];
    let prog = create_programme(&env, t).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "schedulers@example.org").await;
    t.purchase(&shop, &card, "1000.00", 0).await;
    let mut holds = Vec::new();
    for n in 0..20 {
        let client = &clients[n % clients.len()];
        holds.push(id(&hold(client, &shop, &card, 7).await.expect(201)));
    }
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    let mut released = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let account = stored_account(&db, &member).await;
        let row = point_account::Entity::find_by_id(account.id)
            .one(&db)
            .await
            .unwrap()
            .unwrap();
        if row.held == 0 {
            released = true;
            break;
        }
    }
    assert!(released, "the schedulers released the lapsed holds");
    let rows = hold::Entity::find()
        .filter(hold::Column::ProgrammeId.eq(prog.id))
        .all(&db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
    assert!(rows
        .iter()
        .all(|h| h.status == "expired" && h.resolved_at.is_some()));
    for client in &clients {
        assert_eq!(shown(client, &prog.admin, &member).await, (1000, 0, 1000));
    }
    assert_holds_consistent(&db, prog.id).await;
}

/// A lapsed hold reserves nothing, released yet or not: the answers to purchases and to
/// holds made, captured or voided after it lapsed show the points it held as available,
/// as balance reads do.
#[tokio::test]
async fn answers_after_a_hold_lapsed_do_not_count_it_as_held() {
    let t = spawn_app_with_settings(&[("COALITION_HOLD_TTL_SECONDS", "1")]).await;
    let prog = t.programme("Lapsed answers").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t
        .member_with_card(&shop, "lapsed-answers@example.org")
        .await;
    t.purchase(&shop, &card, "100.00", 0).await;
    hold(&t, &shop, &card, 40).await.expect(201);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let pair = |b: &Value| (b["held_points"].as_i64(), b["available_points"].as_i64());
    // Earning only (PostgreSQL: the one-statement path), then paying with points.
    let earned = t.purchase(&shop, &card, "1.00", 0).await;
    assert_eq!(pair(&earned), (Some(0), Some(101)), "{earned}");
    // 40 + 20 + 20 of 101 would be refused if the lapsed hold still counted.
    let a = hold(&t, &shop, &card, 60).await.expect(201);
    assert_eq!(pair(&a), (Some(60), Some(41)), "{a}");
    let b = hold(&t, &shop, &card, 10).await.expect(201);
    assert_eq!(pair(&b), (Some(70), Some(31)), "{b}");
    let voided = t
        .post_moving(
            &format!("/v1/redemptions/{}/void", id(&b)),
            &shop.token,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(pair(&voided), (Some(60), Some(41)), "{voided}");
    let captured = capture(&t, &shop, &id(&a), json!({})).await.expect(200);
    assert_eq!(pair(&captured), (Some(0), Some(41)), "{captured}");
    assert_eq!(shown(&t, &prog.admin, &member).await, (41, 0, 41));
    assert_holds_consistent(&t.app.db, prog.id).await;
}

/// A lapsed hold reserves nothing, released or not: expiry run on its own (by cron,
/// without `release-holds` before it) takes the points a lapsed hold still counted.
#[tokio::test]
async fn expiry_alone_does_not_wait_for_a_lapsed_hold() {
    let t = spawn_app_with_settings(&[("COALITION_HOLD_TTL_SECONDS", "1")]).await;
    let db = &t.app.db;
    let prog = t.programme_with_expiry(10).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "lapsed-expiry@example.org").await;
    t.purchase(&gym, &card, "100.00", 0).await;
    let held = hold(&t, &gym, &card, 60).await.expect(201);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let due = lots_of(db, &member).await[0].expires_at;
    let report = jobs::expire_points(&t.app, due).await.unwrap();
    assert_eq!(
        (report.points, report.failed_accounts),
        (100, 0),
        "{report:?}"
    );
    assert_eq!(stored_account(db, &member).await.balance, 0);
    let status = t
        .get(&format!("/v1/redemptions/{}", id(&held)), &gym.token)
        .await
        .expect(200);
    assert_eq!(status["status"], "expired");
    assert_eq!(shown(&t, &prog.admin, &member).await, (0, 0, 0));
    assert_holds_consistent(db, prog.id).await;
}
