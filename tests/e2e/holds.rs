//! POS holds over HTTP: reserve, capture (a reward, or a purchase), void, lapse; held
//! points are not spendable twice; capture and void of one hold race and exactly one
//! wins (on PostgreSQL across two server processes).

use crate::support::*;
use coalition_store::entities::{hold, point_account};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// A shop (1 point per euro), a member with a card and 1000 points.
struct Till {
    prog: Programme,
    shop: Partner,
    member: String,
    card: String,
}

async fn till(t: &TestApp) -> Till {
    let prog = t.programme("Holds").await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "holder@example.org").await;
    t.purchase(&shop, &card, "1000.00", 0).await;
    Till {
        prog,
        shop,
        member,
        card,
    }
}

pub(crate) async fn hold(t: &Client, partner: &Partner, card: &str, points: i64) -> Resp {
    t.post_moving(
        "/v1/redemptions",
        &partner.token,
        json!({"card_number": card, "points": points}),
    )
    .await
}

pub(crate) fn id(body: &Value) -> String {
    body["id"].as_str().unwrap().to_owned()
}

pub(crate) async fn capture(t: &Client, partner: &Partner, hold_id: &str, body: Value) -> Resp {
    t.post_moving(
        &format!("/v1/redemptions/{hold_id}/capture"),
        &partner.token,
        body,
    )
    .await
}

async fn void(t: &Client, partner: &Partner, hold_id: &str) -> Resp {
    let key = Uuid::new_v4().to_string();
    t.call(
        reqwest::Method::POST,
        &format!("/v1/redemptions/{hold_id}/void"),
        Some(&partner.token),
        None,
        Some(&key),
    )
    .await
}

async fn balance(t: &Client, token: &str, member: &str) -> (i64, i64, i64) {
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

/// The database's word: every account's reserved points are exactly its holds still
/// held, never more than its balance; and the ledger's invariants.
pub(crate) async fn assert_holds_consistent(db: &DatabaseConnection, programme_id: Uuid) {
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
        assert!(
            0 <= a.held && a.held <= a.balance,
            "account {}: held {} of {}",
            a.id,
            a.held,
            a.balance
        );
    }
    assert_accounts_consistent(db, programme_id).await;
}

#[tokio::test]
async fn a_hold_reserves_points_and_a_capture_takes_them_as_a_reward() {
    let t = spawn_app().await;
    let w = till(&t).await;
    let r = hold(&t, &w.shop, &w.card, 300).await;
    let location = r.headers["location"].to_str().unwrap().to_owned();
    let held = r.expect(201);
    assert_eq!(location, format!("/v1/redemptions/{}", id(&held)));
    assert_eq!(held["status"], "held");
    assert_eq!(held["points"], 300);
    let shown = held["card_number"].as_str().unwrap();
    assert!(w.card.ends_with(&shown[shown.len() - 4..]) && !shown.contains(&w.card));
    assert_eq!(
        (held["balance"].as_i64(), held["held_points"].as_i64()),
        (Some(1000), Some(300))
    );
    let expires: chrono::DateTime<chrono::Utc> =
        held["expires_at"].as_str().unwrap().parse().unwrap();
    let lifetime = expires - chrono::Utc::now();
    assert!(lifetime > chrono::Duration::minutes(14) && lifetime <= chrono::Duration::minutes(15));
    assert_eq!(
        balance(&t, &w.prog.admin, &w.member).await,
        (1000, 300, 700)
    );
    let card = t
        .get(&format!("/v1/cards/{}/balance", w.card), &w.shop.token)
        .await
        .expect(200);
    assert_eq!(
        (
            card["held_points"].as_i64(),
            card["available_points"].as_i64()
        ),
        (Some(300), Some(700))
    );

    // A purchase's answer says what is held too (on PostgreSQL, from inside its statement).
    let bought = t.purchase(&w.shop, &w.card, "10.00", 0).await;
    let earned = bought["points_earned"].as_i64().unwrap();
    let members = |b: &Value| {
        (
            b["balance"].as_i64(),
            b["held_points"].as_i64(),
            b["available_points"].as_i64(),
        )
    };
    assert_eq!(
        members(&bought),
        (Some(1000 + earned), Some(300), Some(700 + earned))
    );

    let captured = capture(&t, &w.shop, &id(&held), json!({}))
        .await
        .expect(200);
    assert_eq!(captured["status"], "captured");
    assert_eq!(
        members(&captured),
        (Some(700 + earned), Some(0), Some(700 + earned))
    );
    let after = 700 + earned;
    assert_eq!(
        balance(&t, &w.prog.admin, &w.member).await,
        (after, 0, after)
    );
    let history = t
        .get(
            &format!("/v1/members/{}/transactions", w.member),
            &w.shop.token,
        )
        .await
        .expect(200);
    let first = &history["data"][0];
    assert_eq!(
        (first["kind"].as_str(), first["points"].as_i64()),
        (Some("redeemed"), Some(-300))
    );
    let got = t
        .get(&format!("/v1/redemptions/{}", id(&held)), &w.shop.token)
        .await
        .expect(200);
    assert_eq!(got["status"], "captured");
    assert!(got["resolved_at"].is_string());
    assert_holds_consistent(&t.app.db, w.prog.id).await;
}

#[tokio::test]
async fn a_capture_with_a_purchase_pays_with_the_held_points_and_earns_on_the_rest() {
    let t = spawn_app().await;
    let w = till(&t).await;
    let held = hold(&t, &w.shop, &w.card, 500).await.expect(201);
    // What the same purchase would do paying with 500 points, while they are free.
    let quote_body = json!({"card_number": w.card, "amount": {"amount": "20.00", "currency": "EUR"}, "external_ref": "q", "redeem_points": 0});
    let plain = t
        .post("/v1/purchases/quote", &w.shop.token, quote_body)
        .await
        .expect(200);
    let earned_on_all = plain["points_earned"].as_i64().unwrap();
    // A refused purchase leaves the hold held: nothing of the capture happened.
    let bad = json!({"purchase": {"amount": {"amount": "-1.00", "currency": "EUR"}, "external_ref": "till-0"}});
    let refused = capture(&t, &w.shop, &id(&held), bad)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(refused["errors"][0]["field"], "purchase.amount.amount");
    let small = json!({"purchase": {"amount": {"amount": "2.00", "currency": "EUR"}, "external_ref": "till-0"}});
    capture(&t, &w.shop, &id(&held), small)
        .await
        .expect_problem(422, "redemption_exceeds_amount");
    assert_eq!(
        balance(&t, &w.prog.admin, &w.member).await,
        (1000, 500, 500)
    );
    let purchase = json!({"purchase": {"amount": {"amount": "20.00", "currency": "EUR"}, "external_ref": "till-1"}});
    let captured = capture(&t, &w.shop, &id(&held), purchase).await.expect(200);
    let p = &captured["purchase"];
    assert_eq!(p["points_redeemed"], 500);
    assert_eq!(p["discount"]["amount"], "5.00");
    assert_eq!(p["payable"]["amount"], "15.00");
    let earned = p["points_earned"].as_i64().unwrap();
    assert!(
        earned > 0 && earned < earned_on_all,
        "earns on the remainder: {earned} of {earned_on_all}"
    );
    assert_eq!(captured["purchase_id"], p["id"]);
    assert_eq!(
        balance(&t, &w.prog.admin, &w.member).await,
        (1000 - 500 + earned, 0, 1000 - 500 + earned)
    );
    let recorded = t
        .get(
            &format!("/v1/purchases/{}", p["id"].as_str().unwrap()),
            &w.shop.token,
        )
        .await
        .expect(200);
    assert_eq!(
        (
            recorded["points_redeemed"].as_i64(),
            recorded["external_ref"].as_str()
        ),
        (Some(500), Some("till-1"))
    );
    // A full refund gives the held points back, like any purchase's.
    let refund = t
        .post_moving(
            &format!("/v1/purchases/{}/refunds", p["id"].as_str().unwrap()),
            &w.shop.token,
            json!({"amount": {"amount": "20.00", "currency": "EUR"}}),
        )
        .await
        .expect(201);
    assert_eq!(refund["points_returned"], 500);
    assert_eq!(balance(&t, &w.prog.admin, &w.member).await.0, 1000);
    assert_holds_consistent(&t.app.db, w.prog.id).await;
}

#[tokio::test]
async fn a_void_frees_the_points_and_the_hold_then_refuses_capture_and_void() {
    let t = spawn_app().await;
    let w = till(&t).await;
    let held = hold(&t, &w.shop, &w.card, 400).await.expect(201);
    let voided = void(&t, &w.shop, &id(&held)).await.expect(200);
    assert_eq!(voided["status"], "voided");
    assert_eq!(
        (
            voided["held_points"].as_i64(),
            voided["available_points"].as_i64()
        ),
        (Some(0), Some(1000))
    );
    assert_eq!(balance(&t, &w.prog.admin, &w.member).await, (1000, 0, 1000));
    let again = capture(&t, &w.shop, &id(&held), json!({})).await;
    assert!(again.expect_problem(409, "hold_not_held")["detail"]
        .as_str()
        .unwrap()
        .contains("voided"));
    void(&t, &w.shop, &id(&held))
        .await
        .expect_problem(409, "hold_not_held");
    assert_holds_consistent(&t.app.db, w.prog.id).await;
}

#[tokio::test]
async fn held_points_are_not_spendable_by_a_purchase_a_quote_a_second_hold_or_a_clawback() {
    let t = spawn_app().await;
    let w = till(&t).await;
    let first = hold(&t, &w.shop, &w.card, 800).await.expect(201);
    let spend = json!({"card_number": w.card, "amount": {"amount": "10.00", "currency": "EUR"}, "external_ref": "r1", "redeem_points": 300});
    t.post_moving("/v1/purchases", &w.shop.token, spend.clone())
        .await
        .expect_problem(409, "insufficient_points");
    t.post("/v1/purchases/quote", &w.shop.token, spend)
        .await
        .expect_problem(409, "insufficient_points");
    hold(&t, &w.shop, &w.card, 300)
        .await
        .expect_problem(409, "insufficient_points");
    let second = hold(&t, &w.shop, &w.card, 200).await.expect(201);
    assert_eq!(balance(&t, &w.prog.admin, &w.member).await, (1000, 1000, 0));
    // Refunding the purchase that earned every point claws back none of the held ones.
    let earning = first_purchase(&t, &w).await;
    let refund = t
        .post_moving(
            &format!("/v1/purchases/{earning}/refunds"),
            &w.shop.token,
            json!({"amount": {"amount": "1000.00", "currency": "EUR"}}),
        )
        .await
        .expect(201);
    assert_eq!(
        (
            refund["points_clawed_back"].as_i64(),
            refund["points_shortfall"].as_i64()
        ),
        (Some(0), Some(1000))
    );
    capture(&t, &w.shop, &id(&first), json!({}))
        .await
        .expect(200);
    capture(&t, &w.shop, &id(&second), json!({}))
        .await
        .expect(200);
    assert_eq!(balance(&t, &w.prog.admin, &w.member).await, (0, 0, 0));
    assert_holds_consistent(&t.app.db, w.prog.id).await;
}

/// The purchase that gave the member their first points.
async fn first_purchase(t: &TestApp, w: &Till) -> String {
    use coalition_store::entities::purchase;
    use sea_orm::QueryOrder;
    purchase::Entity::find()
        .filter(purchase::Column::ProgrammeId.eq(w.prog.id))
        .order_by_asc(purchase::Column::CreatedAt)
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

#[tokio::test]
async fn card_rules_are_those_of_purchases_and_a_live_hold_keeps_a_bearer_card_unregistered() {
    let t = spawn_app().await;
    let w = till(&t).await;
    hold(&t, &w.shop, &w.card, 0)
        .await
        .expect_problem(422, "validation_failed");
    let other = t.programme("Other").await;
    let stranger = t.partner(&other, "Elsewhere", "1").await;
    hold(&t, &stranger, &w.card, 10)
        .await
        .expect_problem(404, "not_found");
    let bearer = bearer_card(&t, &w.shop).await;
    t.purchase(&w.shop, &bearer, "50.00", 0).await;
    let held = hold(&t, &w.shop, &bearer, 20).await.expect(201);
    register(&t, &w.shop, &bearer, &w.member)
        .await
        .expect_problem(409, "holds_pending");
    void(&t, &w.shop, &id(&held)).await.expect(200);
    register(&t, &w.shop, &bearer, &w.member).await.expect(200);
    t.post(
        &format!("/v1/cards/{}/block", w.card),
        &w.shop.token,
        json!({}),
    )
    .await
    .expect(200);
    hold(&t, &w.shop, &w.card, 10)
        .await
        .expect_problem(409, "card_blocked");
    assert_holds_consistent(&t.app.db, w.prog.id).await;
}

#[tokio::test]
async fn only_the_partner_that_made_a_hold_sees_captures_or_voids_it() {
    let t = spawn_app().await;
    let w = till(&t).await;
    let held = hold(&t, &w.shop, &w.card, 100).await.expect(201);
    let path = format!("/v1/redemptions/{}", id(&held));
    let neighbour = t.partner(&w.prog, "Neighbour", "1").await;
    t.get(&path, &neighbour.token)
        .await
        .expect_problem(404, "not_found");
    capture(&t, &neighbour, &id(&held), json!({}))
        .await
        .expect_problem(404, "not_found");
    void(&t, &neighbour, &id(&held))
        .await
        .expect_problem(404, "not_found");
    let other = t.programme("Other").await;
    t.get(&path, &other.admin)
        .await
        .expect_problem(404, "not_found");
    assert_eq!(
        t.get(&path, &w.prog.admin).await.expect(200)["status"],
        "held"
    );
    assert_eq!(
        balance(&t, &w.prog.admin, &w.member).await,
        (1000, 100, 900)
    );
}

#[tokio::test]
async fn a_replayed_capture_answers_the_first_capture_again() {
    let t = spawn_app().await;
    let w = till(&t).await;
    let held = hold(&t, &w.shop, &w.card, 250).await.expect(201);
    let path = format!("/v1/redemptions/{}/capture", id(&held));
    let send = |body: Value| {
        t.call(
            reqwest::Method::POST,
            &path,
            Some(&w.shop.token),
            Some(body),
            Some("capture-key-1"),
        )
    };
    let first = send(json!({})).await.expect(200);
    let again = send(json!({})).await.expect(200);
    assert_eq!(first, again);
    send(
        json!({"purchase": {"amount": {"amount": "9.00", "currency": "EUR"}, "external_ref": "x"}}),
    )
    .await
    .expect_problem(422, "idempotency_key_reused");
    assert_eq!(balance(&t, &w.prog.admin, &w.member).await, (750, 0, 750));
    // Without the key, a capture is refused before anything is read.
    t.post(&path, &w.shop.token, json!({}))
        .await
        .expect_problem(400, "idempotency_key_missing");
}

#[tokio::test]
async fn an_expired_hold_frees_its_points_by_itself_and_by_the_job() {
    let t = spawn_app_with_settings(&[("COALITION_HOLD_TTL_SECONDS", "1")]).await;
    let w = till(&t).await;
    let lapsing = hold(&t, &w.shop, &w.card, 600).await.expect(201);
    assert_eq!(
        balance(&t, &w.prog.admin, &w.member).await,
        (1000, 600, 400)
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // Reads count live holds only (the cached view ended when the hold lapsed).
    assert_eq!(balance(&t, &w.prog.admin, &w.member).await, (1000, 0, 1000));
    let got = t
        .get(&format!("/v1/redemptions/{}", id(&lapsing)), &w.shop.token)
        .await
        .expect(200);
    assert_eq!(got["status"], "expired");
    capture(&t, &w.shop, &id(&lapsing), json!({}))
        .await
        .expect_problem(409, "hold_expired");
    void(&t, &w.shop, &id(&lapsing))
        .await
        .expect_problem(409, "hold_expired");
    // A spend the lapsed hold would block releases it and goes through.
    t.purchase(&w.shop, &w.card, "20.00", 1000).await;
    let stored = hold::Entity::find_by_id(id(&lapsing).parse::<Uuid>().unwrap())
        .one(&t.app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, "expired");
    assert_holds_consistent(&t.app.db, w.prog.id).await;

    // The job releases what no spend asked for, once.
    let (points, ..) = balance(&t, &w.prog.admin, &w.member).await;
    hold(&t, &w.shop, &w.card, points).await.expect(201);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = chrono::Utc::now();
    assert_eq!(
        coalition_app::holds::release_lapsed(&t.app, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        coalition_app::holds::release_lapsed(&t.app, now)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        balance(&t, &w.prog.admin, &w.member).await,
        (points, 0, points)
    );
    assert_holds_consistent(&t.app.db, w.prog.id).await;
}

/// Two clients of the same database: two server processes on PostgreSQL + Redis, one
/// in-process server otherwise.
struct Servers {
    a: Client,
    b: Client,
    db: DatabaseConnection,
    _processes: Vec<ServerProcess>,
    _app: Option<TestApp>,
}

async fn servers() -> (Servers, Programme) {
    if let (Some(redis_url), "postgres") = (test_redis_url(), backend_name()) {
        let database_url = fresh_database_url().await;
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        let env = server_env(&database_url, &redis_url, &prefix);
        let first = start_server(&env).await;
        let second = start_server(&env).await;
        let (a, b) = (spawn_client(&first.base), spawn_client(&second.base));
        let prog = create_programme(&env, &a).await;
        let db = sea_orm::Database::connect(&database_url).await.unwrap();
        let servers = Servers {
            a,
            b,
            db,
            _processes: vec![first, second],
            _app: None,
        };
        return (servers, prog);
    }
    let t = spawn_app().await;
    let prog = t.programme("Race").await;
    let servers = Servers {
        a: spawn_client(&t.base),
        b: spawn_client(&t.base),
        db: t.app.db.clone(),
        _processes: vec![],
        _app: Some(t),
    };
    (servers, prog)
}

#[tokio::test]
async fn capture_and_void_of_one_hold_at_once_exactly_one_wins() {
    let (s, prog) = servers().await;
    let shop = s.a.partner(&prog, "Shop", "1").await;
    let (member, card) = s.a.member_with_card(&shop, "racer@example.org").await;
    s.a.purchase(&shop, &card, "1000.00", 0).await;
    let rounds = 24;
    let mut captured = 0;
    for round in 0..rounds {
        let held = hold(&s.a, &shop, &card, 10).await.expect(201);
        let hold_id = id(&held);
        // Alternate which process captures, so neither always starts first.
        let (capturer, voider) = if round % 2 == 0 {
            (&s.a, &s.b)
        } else {
            (&s.b, &s.a)
        };
        let (c, v) = tokio::join!(
            capture(capturer, &shop, &hold_id, json!({})),
            void(voider, &shop, &hold_id)
        );
        let outcome = (c.status.as_u16(), v.status.as_u16());
        match outcome {
            (200, 409) => {
                assert_eq!(v.code(), "hold_not_held", "{}", v.body);
                captured += 1;
            }
            (409, 200) => assert_eq!(c.code(), "hold_not_held", "{}", c.body),
            _ => panic!(
                "round {round}: capture {} {}, void {} {}",
                c.status, c.body, v.status, v.body
            ),
        }
        let status =
            s.a.get(&format!("/v1/redemptions/{hold_id}"), &shop.token)
                .await
                .expect(200);
        let expected = if outcome.0 == 200 {
            "captured"
        } else {
            "voided"
        };
        assert_eq!(status["status"], expected);
    }
    // Both outcomes happened: the two requests really met (about half and half here).
    assert!(
        0 < captured && captured < rounds,
        "capture won {captured} of {rounds}"
    );
    let expected = 1000 - 10 * captured;
    for client in [&s.a, &s.b] {
        assert_eq!(
            balance(client, &prog.admin, &member).await,
            (expected, 0, expected)
        );
    }
    assert_holds_consistent(&s.db, prog.id).await;
}

#[tokio::test]
async fn coalition_jobs_release_holds_releases_lapsed_holds_once() {
    let database_url = fresh_database_url().await;
    let mut env = vec![("DATABASE_URL", database_url.clone())];
    env.push(("COALITION_HOLD_TTL_SECONDS", "1".to_owned()));
    let server = start_server(&env).await;
    let t = spawn_client(&server.base);
    let prog = create_programme(&env, &t).await;
    let shop = t.partner(&prog, "Shop", "1").await;
    let (member, card) = t.member_with_card(&shop, "cli@example.org").await;
    t.purchase(&shop, &card, "100.00", 0).await;
    hold(&t, &shop, &card, 70).await.expect(201);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = || {
        let out = coalition(&env)
            .args(["jobs", "release-holds"])
            .output()
            .expect("coalition jobs release-holds");
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).expect("one JSON object on stdout")
    };
    assert_eq!(run(), json!({"released": 1}));
    assert_eq!(run(), json!({"released": 0}));
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    let account = stored_account(&db, &member).await;
    let row = point_account::Entity::find_by_id(account.id)
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.balance, row.held), (100, 0));
    assert_holds_consistent(&db, prog.id).await;
}

#[tokio::test]
async fn concurrent_holds_and_redemptions_never_promise_more_than_the_balance() {
    let (s, prog) = servers().await;
    let shop = s.a.partner(&prog, "Shop", "1").await;
    let (member, card) = s.a.member_with_card(&shop, "crowd@example.org").await;
    s.a.purchase(&shop, &card, "1000.00", 0).await;
    // 30 requests for 100 points each, half holds and half purchases paying with points,
    // spread over both servers: at most ten can have the points.
    let requests = (0..30).map(|n| {
        let server = if n % 2 == 0 { &s.a } else { &s.b };
        let (shop, card) = (&shop, &card);
        async move {
            let r = if n % 3 == 0 {
                let body = json!({"card_number": card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": format!("crowd-{n}"), "redeem_points": 100});
                server.post_moving("/v1/purchases", &shop.token, body).await
            } else {
                hold(server, shop, card, 100).await
            };
            match r.status.as_u16() {
                201 => (1, r.body["points_earned"].as_i64().unwrap_or(0)),
                _ => {
                    assert_eq!(r.code(), "insufficient_points", "{}", r.body);
                    (0, 0)
                }
            }
        }
    });
    let outcomes = futures::future::join_all(requests).await;
    let granted: i64 = outcomes.iter().map(|o| o.0).sum();
    let earned: i64 = outcomes.iter().map(|o| o.1).sum();
    // Earned points (on what the purchases left to pay) may pay for further requests.
    assert!(granted >= 10, "only {granted} of 30 got points");
    assert!(
        granted * 100 <= 1000 + earned,
        "{granted} requests shared 1000 + {earned} points"
    );
    let (points, held, available) = balance(&s.a, &prog.admin, &member).await;
    assert!(available >= 0 && held + available == points);
    assert_holds_consistent(&s.db, prog.id).await;
}
