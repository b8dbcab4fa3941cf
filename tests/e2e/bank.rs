//! The bank: co-branded cards, Standard Webhooks-signed card events (authorization,
//! clearing, reversal, refund) and what they do to the member's points, PANs refused
//! everywhere. Signatures are computed here with hmac/sha2/base64, independently of the
//! server's code.

use crate::support::*;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{Duration, Utc};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;

const GYM_MID: &str = "MID-GYM-0001";

struct Bank {
    id: Uuid,
    token: String,
    secret: String,
}

struct Setup {
    t: TestApp,
    prog: Programme,
    bank: Bank,
    gym: Partner,
    member: String,
    card_token: String,
    /// The member's programme card, for the POS balance inquiry.
    loyalty_card: String,
}

/// Standard Webhooks: `v1,` and base64(HMAC-SHA256(key, id.timestamp.body)), the key
/// being the base64 after `whsec_`.
fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

async fn bank_partner(t: &Client, prog: &Programme, earn: &str) -> Bank {
    let partner = t
        .post(
            "/v1/partners",
            &prog.admin,
            json!({"name": "Co-brand Bank", "kind": "bank", "category": "bank",
                   "earn_points_per_unit": earn, "issue_price_per_point": "0.01",
                   "redemption_value_per_point": "0.01"}),
        )
        .await
        .expect(201);
    let id: Uuid = partner["id"].as_str().unwrap().parse().unwrap();
    let client = t
        .post(
            "/v1/clients",
            &prog.admin,
            json!({"name": "Bank issuing", "partner_id": id}),
        )
        .await
        .expect(201);
    assert_eq!(client["scope"], "bank");
    let token = t
        .token(
            client["client_id"].as_str().unwrap(),
            client["client_secret"].as_str().unwrap(),
        )
        .await;
    let secret = t
        .post("/v1/bank/signing-secrets", &token, json!({}))
        .await
        .expect(201)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    Bank { id, token, secret }
}

/// A member of the bank with a co-branded card: (member id, card token).
async fn card_holder(t: &Client, bank: &Bank, email: &str) -> (String, String) {
    let member = t
        .post(
            "/v1/members",
            &bank.token,
            json!({"name": "Card Holder", "email": email}),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A random token, never one holding a PAN-like run (digits glued to letters count).
    let token = loop {
        let token = format!("tok_{}", Uuid::new_v4().simple());
        if !coalition_domain::bank::contains_pan(&token) {
            break token;
        }
    };
    let card = t
        .post(
            "/v1/bank/cards",
            &bank.token,
            json!({"member_id": member, "card_token": token, "bin": "492181",
                   "last4": "4242", "expiry_month": "2029-08"}),
        )
        .await
        .expect(201);
    assert_eq!(card["member_id"], json!(member));
    assert_eq!(card["last4"], "4242");
    assert_eq!(card["status"], "active");
    (member, token)
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

async fn setup_with(settings: &[(&str, &str)]) -> Setup {
    let t = spawn_app_with_settings(settings).await;
    let prog = t.programme("Bank coalition").await;
    let gym = t.partner(&prog, "Gym", "2").await;
    let patched = t
        .call(
            Method::PATCH,
            &format!("/v1/partners/{}", gym.id),
            Some(&prog.admin),
            Some(json!({"merchant_ids": [GYM_MID, "MID-GYM-0002"]})),
            None,
        )
        .await
        .expect(200);
    assert_eq!(patched["merchant_ids"], json!([GYM_MID, "MID-GYM-0002"]));
    let bank = bank_partner(&t, &prog, "0.5").await;
    let (member, card_token) = card_holder(&t, &bank, "holder@example.org").await;
    let loyalty_card = t
        .post("/v1/cards", &prog.admin, json!({"member_id": member}))
        .await
        .expect(201)["number"]
        .as_str()
        .unwrap()
        .to_owned();
    Setup {
        t,
        prog,
        bank,
        gym,
        member,
        card_token,
        loyalty_card,
    }
}

fn event(id: &str, kind: &str, txn: &str, card: &str, amount: &str, mid: &str) -> Value {
    json!({"id": id, "type": kind, "transaction_id": txn, "card_token": card,
           "amount": {"amount": amount, "currency": "EUR"},
           "merchant": {"id": mid, "name": "Downtown", "category_code": "7997"},
           "occurred_at": Utc::now().to_rfc3339()})
}

/// Sends a body with these headers (and the bank's token).
async fn send_raw(t: &Client, token: &str, headers: &[(&str, String)], body: &str) -> Resp {
    let mut req = t
        .http
        .post(format!("{}/v1/bank/events", t.base))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    }
}

fn signed_headers(secret: &str, body: &str, at: i64) -> Vec<(&'static str, String)> {
    let id = format!("msg_{}", Uuid::new_v4().simple());
    let signature = sign(secret, &id, at, body);
    vec![
        ("webhook-id", id),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", signature),
    ]
}

/// Sends an event signed with the bank's secret now.
async fn send(t: &Client, bank: &Bank, event: &Value) -> Resp {
    let body = event.to_string();
    let headers = signed_headers(&bank.secret, &body, Utc::now().timestamp());
    send_raw(t, &bank.token, &headers, &body).await
}

/// (points, pending points) of a member, as the operator sees them.
async fn points(t: &Client, prog: &Programme, member: &str) -> (i64, i64) {
    let b = t
        .get(&format!("/v1/members/{member}/balance"), &prog.admin)
        .await
        .expect(200);
    (
        b["points"].as_i64().unwrap(),
        b["pending_points"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn signatures_are_standard_webhooks_and_every_bad_one_is_refused_moving_nothing() {
    let s = setup().await;
    let (t, bank) = (&s.t, &s.bank);
    let body = event(
        "evt-1",
        "authorization",
        "txn-1",
        &s.card_token,
        "10.00",
        GYM_MID,
    )
    .to_string();
    let now = Utc::now().timestamp();
    let good = signed_headers(&bank.secret, &body, now);

    let refused = |r: Resp| {
        r.expect_problem(401, "invalid_signature");
    };
    // A tampered body (same headers).
    let tampered = body.replace("10.00", "99.00");
    refused(send_raw(t, &bank.token, &good, &tampered).await);
    // A wrong secret.
    let wrong = format!("whsec_{}", BASE64.encode([7u8; 32]));
    refused(send_raw(t, &bank.token, &signed_headers(&wrong, &body, now), &body).await);
    // An old and a future timestamp (signed correctly for that time).
    for at in [now - 301, now + 301] {
        refused(
            send_raw(
                t,
                &bank.token,
                &signed_headers(&bank.secret, &body, at),
                &body,
            )
            .await,
        );
    }
    // Each header missing in turn.
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let headers: Vec<_> = good
            .iter()
            .filter(|(n, _)| *n != missing)
            .cloned()
            .collect();
        refused(send_raw(t, &bank.token, &headers, &body).await);
    }
    // A signature made for another id.
    let mut other_id = good.clone();
    other_id[0].1 = "msg_other".into();
    refused(send_raw(t, &bank.token, &other_id, &body).await);
    // A bank token is needed too, and it must be a bank's.
    let no_token = t
        .http
        .post(format!("{}/v1/bank/events", t.base))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    send_raw(t, &s.gym.token, &good, &body)
        .await
        .expect_problem(403, "insufficient_scope");
    send_raw(t, &s.prog.admin, &good, &body)
        .await
        .expect_problem(403, "insufficient_scope");
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0), "nothing moved");

    // Rotation: two secrets; a delivery signed with both (the spec's space-separated list)
    // or with either verifies.
    let second = t
        .post("/v1/bank/signing-secrets", &bank.token, json!({}))
        .await
        .expect(201);
    let new_secret = second["secret"].as_str().unwrap();
    let mut both = signed_headers(&bank.secret, &body, now);
    let by_new = sign(new_secret, &both[0].1, now, &body);
    both[2].1 = format!("{by_new} {}", both[2].1);
    let ok = send_raw(t, &bank.token, &both, &body).await.expect(200);
    assert_eq!(ok["status"], "applied");
    assert_eq!(ok["points_pending"], 20);
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 20));
    // The secrets list shows ids, never secrets.
    let listed = t
        .get("/v1/bank/signing-secrets", &bank.token)
        .await
        .expect(200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains("whsec_"));
    // The old secret deleted: its signatures are refused, the new one's work.
    let first_id = listed["data"][0]["id"].as_str().unwrap();
    t.call(
        Method::DELETE,
        &format!("/v1/bank/signing-secrets/{first_id}"),
        Some(&bank.token),
        None,
        None,
    )
    .await
    .expect(204);
    let body2 = event(
        "evt-2",
        "clearing",
        "txn-1",
        &s.card_token,
        "10.00",
        GYM_MID,
    )
    .to_string();
    refused(
        send_raw(
            t,
            &bank.token,
            &signed_headers(&bank.secret, &body2, now),
            &body2,
        )
        .await,
    );
    send_raw(
        t,
        &bank.token,
        &signed_headers(new_secret, &body2, now),
        &body2,
    )
    .await
    .expect(200);
    assert_eq!(points(t, &s.prog, &s.member).await, (20, 0));
}

#[tokio::test]
async fn a_bank_card_story_authorize_clear_another_amount_refund_twice_and_redeliver_everything() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    let auth = event("e-auth", "authorization", "T-100", card, "100.00", GYM_MID);
    let a = send(t, bank, &auth).await.expect(200);
    assert_eq!(
        (&a["status"], &a["points_pending"], &a["points_posted"]),
        (&json!("applied"), &json!(200), &json!(0))
    );
    assert_eq!(a["partner_id"], json!(s.gym.id), "the MID is the gym's");
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 200));
    // The POS balance inquiry shows the pending points too; they are not spendable.
    let pos = t
        .get(
            &format!("/v1/cards/{}/balance", s.loyalty_card),
            &s.gym.token,
        )
        .await
        .expect(200);
    assert_eq!(
        (&pos["points"], &pos["pending_points"]),
        (&json!(0), &json!(200))
    );
    t.post_moving(
        "/v1/purchases",
        &s.gym.token,
        json!({"card_number": s.loyalty_card, "amount": {"amount": "5.00", "currency": "EUR"},
               "external_ref": "r-1", "redeem_points": 100}),
    )
    .await
    .expect_problem(409, "insufficient_points");

    // Cleared for less than authorized: posted at the cleared amount.
    let clear = event("e-clear", "clearing", "T-100", card, "80.00", GYM_MID);
    let c = send(t, bank, &clear).await.expect(200);
    assert_eq!(
        (
            &c["points_posted"],
            &c["points_reversed"],
            &c["pending_points"]
        ),
        (&json!(160), &json!(0), &json!(0))
    );
    assert_eq!(c["breakdown"][0]["funder"]["partner_id"], json!(s.gym.id));
    assert_eq!(points(t, &s.prog, &s.member).await, (160, 0));

    // Two partial refunds claw back exactly their share.
    let r1 = event("e-ref-1", "refund", "T-100", card, "20.00", GYM_MID);
    let r2 = event("e-ref-2", "refund", "T-100", card, "30.00", GYM_MID);
    assert_eq!(
        send(t, bank, &r1).await.expect(200)["points_clawed_back"],
        40
    );
    assert_eq!(
        send(t, bank, &r2).await.expect(200)["points_clawed_back"],
        60
    );
    assert_eq!(points(t, &s.prog, &s.member).await, (60, 0));

    // A second delivery of every event moves nothing and says so.
    for e in [&auth, &clear, &r1, &r2] {
        let again = send(t, bank, e).await.expect(200);
        assert_eq!(again["status"], "duplicate", "{again}");
        assert_eq!(again["event_id"], e["id"]);
    }
    assert_eq!(points(t, &s.prog, &s.member).await, (60, 0));
    // The same event id with another body is refused.
    let mut changed = r2.clone();
    changed["amount"]["amount"] = json!("31.00");
    send(t, bank, &changed)
        .await
        .expect_problem(422, "event_id_reused");
    // Refunds beyond the cleared amount never take more than was earned.
    let r3 = event("e-ref-3", "refund", "T-100", card, "500.00", GYM_MID);
    assert_eq!(
        send(t, bank, &r3).await.expect(200)["points_clawed_back"],
        60
    );
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
    // Each applied event is in the outbox once, in its own transaction; duplicates none.
    use coalition_store::entities::outbox_event;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let outbox = outbox_event::Entity::find()
        .filter(outbox_event::Column::EventType.eq("bank_event.processed"))
        .all(&t.app.db)
        .await
        .unwrap();
    assert_eq!(outbox.len(), 5, "auth, clearing, three refunds");
    assert!(outbox.iter().all(|o| o.programme_id == s.prog.id));
}

/// The same events in several orders (each on its own card and member): every order
/// ends where the in-order one does.
#[tokio::test]
async fn the_same_events_shuffled_reach_the_same_end_state() {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let s = setup().await;
    let (t, bank) = (&s.t, &s.bank);
    let story = [
        ("authorization", "100.00"),
        ("clearing", "90.00"),
        ("refund", "15.00"),
        ("refund", "25.50"),
        ("reversal", "100.00"),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261203);
    let mut ends = vec![];
    for round in 0..6 {
        let (member, card) = card_holder(t, bank, &format!("shuffle{round}@example.org")).await;
        let mut order: Vec<usize> = (0..story.len()).collect();
        match round {
            0 => {}
            1 => order.reverse(),
            _ => order.shuffle(&mut rng),
        }
        for i in order {
            let (kind, amount) = story[i];
            let e = event(
                &format!("r{round}-e{i}"),
                kind,
                &format!("r{round}"),
                &card,
                amount,
                GYM_MID,
            );
            send(t, bank, &e).await.expect(200);
            // Every delivery twice: the second moves nothing.
            assert_eq!(send(t, bank, &e).await.expect(200)["status"], "duplicate");
        }
        ends.push(points(t, &s.prog, &member).await);
    }
    // 90.00 at 2 points: 180; 40.50 refunded: ⌊180 × 40.5 / 90⌋ = 81 back.
    assert_eq!(ends[0], (99, 0));
    assert!(ends.iter().all(|e| *e == ends[0]), "{ends:?}");
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
}

#[tokio::test]
async fn an_authorization_that_never_clears_lapses_and_a_reversal_removes_pending_points() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    send(
        t,
        bank,
        &event("l-1", "authorization", "L", card, "50.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 100));
    // Not yet: the lapse is 7 days after the authorization.
    let early = coalition_app::jobs::run(
        &t.app,
        "lapse-authorizations",
        Utc::now() + Duration::days(6),
    )
    .await
    .unwrap();
    assert_eq!(early["lapsed"], 0);
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 100));
    let late = coalition_app::jobs::run(
        &t.app,
        "lapse-authorizations",
        Utc::now() + Duration::days(8),
    )
    .await
    .unwrap();
    assert_eq!((&late["lapsed"], &late["points"]), (&json!(1), &json!(100)));
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));

    send(
        t,
        bank,
        &event("v-1", "authorization", "V", card, "30.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 60));
    let reversed = send(
        t,
        bank,
        &event("v-2", "reversal", "V", card, "30.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(reversed["points_reversed"], 60);
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
    // A clearing after a lapse still posts (the bank did charge the card).
    let c = send(
        t,
        bank,
        &event("l-2", "clearing", "L", card, "50.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(c["points_posted"], 100);
    assert_eq!(points(t, &s.prog, &s.member).await, (100, 0));
}

#[tokio::test]
async fn off_the_coalition_the_banks_base_rate_earns_funded_by_the_bank_and_settlement_charges_it()
{
    let start = Utc::now() - Duration::seconds(5);
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    // A bank-funded bonus at the gym: the bank pays it there, the gym its base rate.
    t.post(
        "/v1/rules",
        &s.prog.admin,
        json!({"name": "Card bonus at the gym", "effect": {"kind": "bonus_points", "value": "25"},
               "conditions": {"partner_ids": [s.gym.id]},
               "funder": {"kind": "bank", "partner_id": bank.id}}),
    )
    .await
    .expect(201);
    let elsewhere = send(
        t,
        bank,
        &event("n-1", "clearing", "N", card, "100.00", "MID-SUPERMARKET"),
    )
    .await
    .expect(200);
    assert_eq!(elsewhere["partner_id"], Value::Null);
    assert_eq!(
        elsewhere["points_posted"], 50,
        "0.5 points per EUR, the bank's rate"
    );
    assert_eq!(elsewhere["breakdown"].as_array().unwrap().len(), 1);
    assert_eq!(elsewhere["breakdown"][0]["kind"], "base_rate");
    let at_gym = send(
        t,
        bank,
        &event("g-1", "clearing", "G", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(at_gym["points_posted"], 20 + 25);
    let bonus = at_gym["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["points"] == 25)
        .unwrap();
    assert_eq!(bonus["funder"]["kind"], "bank");
    assert_eq!(points(t, &s.prog, &s.member).await, (95, 0));

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let end = Utc::now();
    let settlement = t
        .post(
            "/v1/settlements",
            &s.prog.admin,
            json!({"period_start": start.to_rfc3339(), "period_end": end.to_rfc3339()}),
        )
        .await
        .expect(201);
    let line = |id: Uuid| {
        settlement["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["partner_id"] == json!(id))
            .cloned()
            .unwrap_or_else(|| panic!("no line for {id}: {settlement}"))
    };
    let bank_line = line(bank.id);
    assert_eq!(bank_line["points_issued"], 50 + 25);
    assert_eq!(
        bank_line["amount_due"]["amount"], "0.75",
        "75 points at 0.01"
    );
    assert_eq!(line(s.gym.id)["points_issued"], 20);
}

#[tokio::test]
async fn merchant_ids_are_unique_per_programme_and_bank_routes_are_the_banks_alone() {
    let s = setup().await;
    let t = &s.t;
    let shop = t.partner(&s.prog, "Shop", "1").await;
    t.call(
        Method::PATCH,
        &format!("/v1/partners/{}", shop.id),
        Some(&s.prog.admin),
        Some(json!({"merchant_ids": ["MID-SHOP", GYM_MID]})),
        None,
    )
    .await
    .expect_problem(409, "merchant_id_taken");
    let shown = t
        .get(&format!("/v1/partners/{}", shop.id), &s.prog.admin)
        .await
        .expect(200);
    assert_eq!(shown["merchant_ids"], json!([]), "nothing changed");
    // Another programme may use the same MID.
    let other = t.programme("Other").await;
    let elsewhere = t.partner(&other, "Gym elsewhere", "1").await;
    t.call(
        Method::PATCH,
        &format!("/v1/partners/{}", elsewhere.id),
        Some(&other.admin),
        Some(json!({"merchant_ids": [GYM_MID]})),
        None,
    )
    .await
    .expect(200);

    // Only the bank calls /v1/bank/*; another programme's bank sees none of this one's.
    let card = t
        .get(
            &format!("/v1/bank/cards?member_id={}", s.member),
            &s.bank.token,
        )
        .await
        .expect(200);
    let card_id = card["data"][0]["id"].as_str().unwrap().to_owned();
    for token in [&s.prog.admin, &s.gym.token] {
        t.get("/v1/bank/cards", token)
            .await
            .expect_problem(403, "insufficient_scope");
        t.post("/v1/bank/signing-secrets", token, json!({}))
            .await
            .expect_problem(403, "insufficient_scope");
    }
    let other_bank = bank_partner(t, &other, "1").await;
    t.get(&format!("/v1/bank/cards/{card_id}"), &other_bank.token)
        .await
        .expect_problem(404, "not_found");
    t.post(
        &format!("/v1/bank/cards/{card_id}/block"),
        &other_bank.token,
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");
    t.post(
        "/v1/bank/cards",
        &other_bank.token,
        json!({"member_id": s.member, "card_token": "t-x", "bin": "492181", "last4": "1111", "expiry_month": "2030-01"}),
    )
    .await
    .expect_problem(404, "not_found");
    send(
        t,
        &other_bank,
        &event("x-1", "authorization", "X", &s.card_token, "10.00", GYM_MID),
    )
    .await
    .expect_problem(404, "not_found");

    // Block and replace; a list per member.
    let blocked = t
        .post(
            &format!("/v1/bank/cards/{card_id}/block"),
            &s.bank.token,
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(blocked["status"], "blocked");
    let replacement = t
        .post(
            &format!("/v1/bank/cards/{card_id}/replace"),
            &s.bank.token,
            json!({"card_token": "tok-new", "bin": "49218100", "last4": "0005", "expiry_month": "2031-02"}),
        )
        .await
        .expect(201);
    assert_eq!(replacement["member_id"], json!(s.member));
    let listed = t
        .get(
            &format!("/v1/bank/cards?member_id={}", s.member),
            &s.bank.token,
        )
        .await
        .expect(200);
    let statuses: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["replaced", "active"]);
    // The replacement earns into the same account.
    send(
        t,
        &s.bank,
        &event("n-1", "clearing", "N", "tok-new", "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(points(t, &s.prog, &s.member).await, (20, 0));
    // Another member's card cannot take part in that transaction.
    let (_, stranger_card) = card_holder(t, &s.bank, "stranger@example.org").await;
    send(
        t,
        &s.bank,
        &event("n-2", "refund", "N", &stranger_card, "10.00", GYM_MID),
    )
    .await
    .expect_problem(422, "validation_failed");
    // Bad card fields name themselves.
    let bad = t
        .post(
            "/v1/bank/cards",
            &s.bank.token,
            json!({"member_id": s.member, "card_token": "t-y", "bin": "12345", "last4": "12a4", "expiry_month": "2030-13"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["bin", "last4", "expiry_month"]);
}

const PAN: &str = "4111111111111111";
const PAN_SPACED: &str = "4111 1111 1111 1111";

/// Every way a PAN can come in is refused with 422 `pan_not_allowed`; afterwards the
/// value is nowhere in the database nor in the server's log (at debug level, SQL
/// included).
#[tokio::test]
async fn a_pan_is_refused_everywhere_and_is_nowhere_in_the_database_or_the_log() {
    let database_url = fresh_database_url().await;
    let env = vec![
        ("DATABASE_URL", database_url.clone()),
        ("COALITION_JOBS_INTERVAL_SECONDS", "0".to_owned()),
        ("COALITION_LOG", "debug".to_owned()),
    ];
    let log_path = std::env::temp_dir().join(format!("coalition-pan-{}.log", Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let server = start_server_logging_to(&env, std::process::Stdio::from(log)).await;
    let t = spawn_client(&server.base);
    let prog = create_programme(&env, &t).await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "pan@example.org").await;
    let bank = bank_partner(&t, &prog, "1").await;
    let (_, token) = card_holder(&t, &bank, "holder@example.org").await;

    let refused = |r: Resp| {
        let body = r.expect_problem(422, "pan_not_allowed");
        assert!(
            !body.to_string().contains("4111"),
            "the answer never quotes it"
        );
    };
    // Bodies: every field of every request, strings (plain, spaced, inside text), numbers.
    refused(
        t.post(
            "/v1/bank/cards",
            &bank.token,
            json!({"member_id": member, "card_token": PAN, "bin": "411111", "last4": "1111", "expiry_month": "2030-01"}),
        )
        .await,
    );
    refused(
        t.post(
            "/v1/members",
            &gym.token,
            json!({"name": PAN_SPACED, "email": "x@example.org"}),
        )
        .await,
    );
    refused(
        t.post(
            "/v1/members",
            &gym.token,
            json!({"name": format!("card {PAN}-ish"), "email": "y@example.org"}),
        )
        .await,
    );
    refused(
        t.post_moving(
            "/v1/purchases",
            &gym.token,
            json!({"card_number": PAN, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "r"}),
        )
        .await,
    );
    refused(
        t.post_moving(
            "/v1/purchases",
            &gym.token,
            json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": PAN}),
        )
        .await,
    );
    refused(
        t.post_moving(
            "/v1/purchases",
            &gym.token,
            json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "r", "redeem_points": 4111111111111111u64}),
        )
        .await,
    );
    // A signed event with a PAN in it.
    let e = event("p-1", "authorization", "P", &token, "10.00", "MID-1");
    let mut with_pan = e.clone();
    with_pan["merchant"]["name"] = json!(format!("Shop {PAN}"));
    refused(send(&t, &bank, &with_pan).await);
    // Paths, queries and the Idempotency-Key header.
    refused(t.get(&format!("/v1/cards/{PAN}"), &gym.token).await);
    refused(t.get(&format!("/v1/cards/{PAN}/balance"), &gym.token).await);
    refused(t.get(&format!("/v1/members/{PAN}"), &gym.token).await);
    refused(
        t.get(&format!("/v1/purchases?external_ref={PAN}"), &gym.token)
            .await,
    );
    refused(
        t.call(
            Method::POST,
            "/v1/purchases",
            Some(&gym.token),
            Some(json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "r2"})),
            Some(PAN),
        )
        .await,
    );
    // The token endpoint answers in its own (RFC 6749) format, and looks nothing up.
    let oauth = t
        .http
        .post(format!("{}/oauth/token", t.base))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", PAN),
            ("client_secret", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(oauth.status(), 400);
    // Our own card numbers (16 digits, Luhn) still work where card numbers belong.
    t.get(&format!("/v1/cards/{card}/balance"), &gym.token)
        .await
        .expect(200);
    t.post_moving(
        "/v1/purchases",
        &gym.token,
        json!({"card_number": card, "amount": {"amount": "1.00", "currency": "EUR"}, "external_ref": "ok"}),
    )
    .await
    .expect(201);
    // A PAN-like request id is replaced, not logged.
    let res = t
        .http
        .get(format!("{}/health/live", t.base))
        .header("x-request-id", PAN)
        .send()
        .await
        .unwrap();
    assert_ne!(res.headers()["x-request-id"], PAN);

    drop(server);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("/v1/bank/cards"), "the log is the server's");
    for needle in [PAN, PAN_SPACED] {
        assert!(!log.contains(needle), "the log holds the PAN");
    }
    let stored = database_text(&database_url).await;
    assert!(
        stored.contains("pan@example.org"),
        "the dump is the database's"
    );
    for needle in [PAN, PAN_SPACED] {
        assert!(!stored.contains(needle), "the database holds the PAN");
    }
    std::fs::remove_file(&log_path).ok();
}

/// Everything the database holds, as text: SQLite's files (the WAL too) or, on
/// PostgreSQL, every row of every table of the schema.
async fn database_text(url: &str) -> String {
    use sea_orm::{ConnectionTrait, Database, Statement};
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap();
        let mut text = String::new();
        for file in [path.to_owned(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        return text;
    }
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let tables = db
        .query_all(Statement::from_string(
            backend,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        ))
        .await
        .unwrap();
    let mut text = String::new();
    for row in tables {
        let table: String = row.try_get("", "table_name").unwrap();
        let rows = db
            .query_all(Statement::from_string(
                backend,
                format!("SELECT CAST(t AS TEXT) AS line FROM \"{table}\" t"),
            ))
            .await
            .unwrap();
        for r in rows {
            let line: String = r.try_get("", "line").unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// Deliveries of one event at the same moment (a bank retrying on a timeout): one
/// applies it, the others answer `duplicate`; the unique key on the event id is the
/// guard, on PostgreSQL across connections.
#[tokio::test]
async fn concurrent_deliveries_of_one_event_move_it_once() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    let clearing = event("c-1", "clearing", "C", card, "40.00", GYM_MID);
    let answers = futures::future::join_all((0..8).map(|_| send(t, bank, &clearing))).await;
    let mut statuses: Vec<String> = answers
        .into_iter()
        .map(|a| a.expect(200)["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(statuses[0], "applied");
    assert!(
        statuses[1..].iter().all(|s| s == "duplicate"),
        "{statuses:?}"
    );
    assert_eq!(points(t, &s.prog, &s.member).await, (80, 0));
    // Different events of one transaction at once: each applies once, in some order.
    let refunds: Vec<Value> = (0..4)
        .map(|i| event(&format!("c-r{i}"), "refund", "C", card, "5.00", GYM_MID))
        .collect();
    let answers = futures::future::join_all(refunds.iter().map(|e| send(t, bank, e))).await;
    for a in answers {
        assert_eq!(a.expect(200)["points_clawed_back"], 10);
    }
    assert_eq!(points(t, &s.prog, &s.member).await, (40, 0));
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
}

/// A refund after the member spent the points takes what is left, never below zero, and
/// records the rest as the shortfall — as a purchase refund does.
#[tokio::test]
async fn a_refund_after_the_points_were_spent_claws_back_what_is_left_and_records_the_shortfall() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    send(
        t,
        bank,
        &event("s-1", "clearing", "S", card, "100.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(points(t, &s.prog, &s.member).await, (200, 0));
    // 150 points (1.50 EUR) spent on a 5.00 purchase at the gym; 3.50 earns 7.
    t.post_moving(
        "/v1/purchases",
        &s.gym.token,
        json!({"card_number": s.loyalty_card, "amount": {"amount": "5.00", "currency": "EUR"},
               "external_ref": "spend-1", "redeem_points": 150}),
    )
    .await
    .expect(201);
    assert_eq!(points(t, &s.prog, &s.member).await, (57, 0));
    let refund = send(
        t,
        bank,
        &event("s-2", "refund", "S", card, "100.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(
        (&refund["points_clawed_back"], &refund["points_shortfall"]),
        (&json!(57), &json!(143))
    );
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
    // Exactly once: a second refund has nothing left to claw back.
    let again = send(
        t,
        bank,
        &event("s-3", "refund", "S", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(again["points_clawed_back"], 0);
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
}

/// An event dated at `at` (RFC 3339 text as sent).
fn event_at(id: &str, kind: &str, txn: &str, card: &str, at: &str) -> Value {
    let mut e = event(id, kind, txn, card, "10.00", GYM_MID);
    e["occurred_at"] = json!(at);
    e
}

#[tokio::test]
async fn occurred_at_is_range_checked_and_the_lapse_job_cannot_spin() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    let yesterday = (Utc::now() - Duration::days(1)).format("%Y-%m-%d");
    let leap = format!("{yesterday}T23:59:60Z");
    let far_future = (Utc::now() + Duration::minutes(10)).to_rfc3339();
    let too_old = (Utc::now() - Duration::days(401)).to_rfc3339();
    for (n, at) in [
        "9999-12-31T00:00:00Z",
        "+262142-01-01T00:00:00Z",
        "-5000-01-01T00:00:00Z",
        leap.as_str(),
        far_future.as_str(),
        too_old.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let r = send(
            t,
            bank,
            &event_at(
                &format!("o-{n}"),
                "authorization",
                &format!("O{n}"),
                card,
                at,
            ),
        )
        .await;
        assert!(
            r.status == 422 || r.status == 400,
            "{at}: {} {}",
            r.status,
            r.body
        );
        if r.status == 422 {
            assert_eq!(r.body["code"], "validation_failed", "{at}");
            assert!(
                r.body.to_string().contains("occurred_at"),
                "{at}: {}",
                r.body
            );
        }
    }
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
    // Within the clock skew allowance, and within the age limit: accepted.
    let soon = (Utc::now() + Duration::minutes(4)).to_rfc3339();
    send(
        t,
        bank,
        &event_at("o-ok-1", "authorization", "OK1", card, &soon),
    )
    .await
    .expect(200);
    let old = (Utc::now() - Duration::days(399)).to_rfc3339();
    send(
        t,
        bank,
        &event_at("o-ok-2", "authorization", "OK2", card, &old),
    )
    .await
    .expect(200);
    // A row the query counts as due but the re-check does not (on SQLite a year-10000
    // timestamp stored as text '+10000-…' sorts before '2026-…'): the job still ends.
    use coalition_store::entities::bank_transaction;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let far = chrono::NaiveDate::from_ymd_opt(10000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    bank_transaction::Entity::update_many()
        .col_expr(
            bank_transaction::Column::LapsesAt,
            sea_orm::sea_query::Expr::value(far),
        )
        .filter(bank_transaction::Column::TransactionId.eq("OK1"))
        .exec(&t.app.db)
        .await
        .unwrap();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        coalition_app::jobs::run(&t.app, "lapse-authorizations", Utc::now()),
    )
    .await
    .expect("the lapse job must end")
    .unwrap();
    // The 399-day-old authorization lapsed; the other is left alone.
    assert_eq!(report["lapsed"], 1, "{report}");
}

#[tokio::test]
async fn a_bank_funded_rule_applies_to_that_banks_card_events_only() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    // Another bank funds a bonus at the gym.
    let other = bank_partner(t, &s.prog, "0.5").await;
    let (other_member, other_card) = card_holder(t, &other, "other-holder@example.org").await;
    t.post(
        "/v1/rules",
        &s.prog.admin,
        json!({"name": "Other bank's bonus at the gym", "effect": {"kind": "bonus_points", "value": "25"},
               "conditions": {"partner_ids": [s.gym.id]},
               "funder": {"kind": "bank", "partner_id": other.id}}),
    )
    .await
    .expect(201);
    // This bank's card at the gym: the gym's rate only; the other bank pays nothing.
    let mine = send(
        t,
        bank,
        &event("b2-1", "clearing", "B2A", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(mine["points_posted"], 20, "{mine}");
    assert_eq!(mine["breakdown"].as_array().unwrap().len(), 1, "{mine}");
    // The other bank's card: its bonus applies.
    let theirs = send(
        t,
        &other,
        &event("b2-2", "clearing", "B2B", &other_card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(theirs["points_posted"], 20 + 25, "{theirs}");
    assert_eq!(points(t, &s.prog, &other_member).await, (45, 0));
    // At the gym's till, no bank pays a bonus.
    let till = t.purchase(&s.gym, &s.loyalty_card, "10.00", 0).await;
    assert_eq!(till["points_earned"], 20, "{till}");
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
}

#[tokio::test]
async fn disguised_pans_are_refused_in_every_field_query_and_duplicate_key() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    let disguised = [
        "tok4111111111111111",
        "4111111111111111x",
        "4111.1111.1111.1111",
        "4111/1111/1111/1111",
        "4111_1111_1111_1111",
        "4111,1111,1111,1111",
        "4111  1111  1111  1111",
        "4111\u{A0}1111\u{A0}1111\u{A0}1111",
        "4111\u{200B}1111\u{200B}1111\u{200B}1111",
        "\u{FF14}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}\u{FF11}",
    ];
    for (n, pan) in disguised.iter().enumerate() {
        let r = t
            .post(
                "/v1/bank/cards",
                &bank.token,
                json!({"member_id": s.member, "card_token": pan, "bin": "411111",
                       "last4": "1111", "expiry_month": "2030-01"}),
            )
            .await;
        r.expect_problem(422, "pan_not_allowed");
        let r = t
            .post(
                "/v1/members",
                &bank.token,
                json!({"name": pan, "email": format!("pan{n}@example.org")}),
            )
            .await;
        r.expect_problem(422, "pan_not_allowed");
        let mut e = event(&format!("p-{n}"), "clearing", pan, card, "10.00", GYM_MID);
        send(t, bank, &e)
            .await
            .expect_problem(422, "pan_not_allowed");
        e["transaction_id"] = json!(format!("P{n}"));
        e["merchant"]["name"] = json!(pan);
        send(t, bank, &e)
            .await
            .expect_problem(422, "pan_not_allowed");
    }
    // A duplicate key: the parsed body keeps the last value, the check sees both.
    let body = format!(
        r#"{{"member_id":"{}","card_token":"4111111111111111","card_token":"tok_ok","bin":"411111","last4":"1111","expiry_month":"2030-01"}}"#,
        s.member
    );
    let r = t
        .http
        .post(format!("{}/v1/bank/cards", t.base))
        .bearer_auth(&bank.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("pan_not_allowed"));
    // A query value with invalid percent-encoding is checked as sent.
    let r = t
        .http
        .get(format!("{}/v1/bank/cards?q=%ZZ4111111111111111", t.base))
        .bearer_auth(&bank.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("pan_not_allowed"));
    // Our own card numbers still pass where they belong.
    t.get(&format!("/v1/cards/{}", s.loyalty_card), &s.prog.admin)
        .await
        .expect(200);
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
}

#[tokio::test]
async fn rule_caps_count_awards_by_the_processing_day_not_occurred_at() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    t.post(
        "/v1/rules",
        &s.prog.admin,
        json!({"name": "Daily gym bonus", "effect": {"kind": "bonus_points", "value": "25"},
               "conditions": {"partner_ids": [s.gym.id]},
               "caps": {"per_member_day": 25},
               "valid_from": (Utc::now() - Duration::days(30)).to_rfc3339()}),
    )
    .await
    .expect(201);
    let first = send(
        t,
        bank,
        &event("c-1", "clearing", "C1", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(first["points_posted"], 45, "{first}");
    // The same processing day: capped, even for a back-dated event.
    let mut back = event("c-2", "clearing", "C2", card, "10.00", GYM_MID);
    back["occurred_at"] = json!((Utc::now() - Duration::days(2)).to_rfc3339());
    let capped = send(t, bank, &back).await.expect(200);
    assert_eq!(capped["points_posted"], 20, "{capped}");
    // Awards made on an earlier day do not count today, whatever day the event is of.
    use coalition_store::entities::rule_award;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let yesterday = Utc::now() - Duration::days(1);
    rule_award::Entity::update_many()
        .col_expr(
            rule_award::Column::CreatedAt,
            sea_orm::sea_query::Expr::value(yesterday),
        )
        .filter(rule_award::Column::Points.gt(0))
        .exec(&t.app.db)
        .await
        .unwrap();
    let mut back = event("c-3", "clearing", "C3", card, "10.00", GYM_MID);
    back["occurred_at"] = json!((Utc::now() - Duration::days(2)).to_rfc3339());
    let fresh = send(t, bank, &back).await.expect(200);
    assert_eq!(fresh["points_posted"], 45, "{fresh}");
}

/// The id of the bank's first card of a member.
async fn card_id_of(t: &Client, bank: &Bank, member: &str) -> String {
    t.get(&format!("/v1/bank/cards?member_id={member}"), &bank.token)
        .await
        .expect(200)["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Erasing a member retires her co-branded cards with her loyalty cards: every event of
/// their tokens is then `409 card_retired` and moves nothing (follow-ups of earlier
/// transactions too: her points were forfeited), her pending points go, and the bank
/// can neither block nor replace the card back into use.
#[tokio::test]
async fn erasure_retires_the_members_co_branded_cards() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    send(
        t,
        bank,
        &event("e-1", "clearing", "E1", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    send(
        t,
        bank,
        &event("e-2", "authorization", "E2", card, "30.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(points(t, &s.prog, &s.member).await, (20, 60));
    let card_id = card_id_of(t, bank, &s.member).await;
    t.call(
        Method::DELETE,
        &format!("/v1/members/{}", s.member),
        Some(&s.prog.admin),
        None,
        None,
    )
    .await
    .expect(204);
    let retired = t
        .get(&format!("/v1/bank/cards/{card_id}"), &bank.token)
        .await
        .expect(200);
    assert_eq!(retired["status"], "retired");
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
    // A new transaction, and follow-ups of both earlier ones: refused, nothing moves.
    for e in [
        event("e-3", "clearing", "E3", card, "10.00", GYM_MID),
        event("e-4", "clearing", "E2", card, "30.00", GYM_MID),
        event("e-5", "refund", "E1", card, "10.00", GYM_MID),
        event("e-6", "reversal", "E2", card, "30.00", GYM_MID),
    ] {
        send(t, bank, &e).await.expect_problem(409, "card_retired");
    }
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
    // The token stays retired: no block or replacement brings it back.
    t.post(
        &format!("/v1/bank/cards/{card_id}/block"),
        &bank.token,
        json!({}),
    )
    .await
    .expect_problem(409, "card_retired");
    t.post(
        &format!("/v1/bank/cards/{card_id}/replace"),
        &bank.token,
        json!({"card_token": "tok-after-erasure", "bin": "492181", "last4": "0001", "expiry_month": "2031-01"}),
    )
    .await
    .expect_problem(409, "card_retired");
    // A refused event was not recorded: sent again, it is refused again.
    send(
        t,
        bank,
        &event("e-3", "clearing", "E3", card, "10.00", GYM_MID),
    )
    .await
    .expect_problem(409, "card_retired");
    t.post(
        "/v1/bank/cards",
        &bank.token,
        json!({"member_id": s.member, "card_token": "tok-erased-2", "bin": "492181",
               "last4": "0002", "expiry_month": "2031-01"}),
    )
    .await
    .expect_problem(409, "member_erased");
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 0));
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
}

/// A blocked or replaced card starts no new transaction (`409 card_blocked` /
/// `card_replaced`, nothing moves), while the follow-ups of a transaction that began
/// before — its clearing, reversal, refund — still apply: no points are stranded.
#[tokio::test]
async fn a_blocked_or_replaced_card_starts_nothing_new_but_its_transactions_finish() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    // Before the block: one authorization (to clear), one (to reverse), one clearing
    // (to refund).
    for e in [
        event("b-1", "authorization", "B1", card, "10.00", GYM_MID),
        event("b-2", "authorization", "B2", card, "20.00", GYM_MID),
        event("b-3", "clearing", "B3", card, "30.00", GYM_MID),
    ] {
        send(t, bank, &e).await.expect(200);
    }
    assert_eq!(points(t, &s.prog, &s.member).await, (60, 60));
    let card_id = card_id_of(t, bank, &s.member).await;
    t.post(
        &format!("/v1/bank/cards/{card_id}/block"),
        &bank.token,
        json!({}),
    )
    .await
    .expect(200);
    // New transactions: refused, whatever their first event.
    for kind in ["authorization", "clearing"] {
        send(
            t,
            bank,
            &event(
                &format!("b-new-{kind}"),
                kind,
                "B-NEW",
                card,
                "50.00",
                GYM_MID,
            ),
        )
        .await
        .expect_problem(409, "card_blocked");
    }
    assert_eq!(points(t, &s.prog, &s.member).await, (60, 60));
    // Follow-ups: the clearing posts, the reversal removes, the refund claws back.
    let cleared = send(
        t,
        bank,
        &event("b-4", "clearing", "B1", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(cleared["points_posted"], 20, "{cleared}");
    send(
        t,
        bank,
        &event("b-5", "reversal", "B2", card, "20.00", GYM_MID),
    )
    .await
    .expect(200);
    let refund = send(
        t,
        bank,
        &event("b-6", "refund", "B3", card, "30.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(refund["points_clawed_back"], 60, "{refund}");
    assert_eq!(points(t, &s.prog, &s.member).await, (20, 0));
    // A refused event was not recorded: sent again, it is refused again.
    send(
        t,
        bank,
        &event(
            "b-new-clearing",
            "clearing",
            "B-NEW",
            card,
            "50.00",
            GYM_MID,
        ),
    )
    .await
    .expect_problem(409, "card_blocked");

    // Replaced: the old token starts nothing, finishes what it began; the new one earns.
    send(
        t,
        bank,
        &event("r-1", "authorization", "R1", card, "10.00", GYM_MID),
    )
    .await
    .expect_problem(409, "card_blocked");
    t.post(
        &format!("/v1/bank/cards/{card_id}/replace"),
        &bank.token,
        json!({"card_token": "tok-replacement", "bin": "492181", "last4": "0003", "expiry_month": "2031-01"}),
    )
    .await
    .expect(201);
    send(
        t,
        bank,
        &event(
            "r-2",
            "authorization",
            "R2",
            "tok-replacement",
            "10.00",
            GYM_MID,
        ),
    )
    .await
    .expect(200);
    send(
        t,
        bank,
        &event("r-3", "authorization", "R3", card, "10.00", GYM_MID),
    )
    .await
    .expect_problem(409, "card_replaced");
    // The old card's refund of its earlier transaction still applies.
    let refund = send(
        t,
        bank,
        &event("r-4", "refund", "B1", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    assert_eq!(refund["points_clawed_back"], 20, "{refund}");
    assert_eq!(points(t, &s.prog, &s.member).await, (0, 20));
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
}

/// First deliveries racing: the same new event eight times at once moves it once, every
/// answer 200 with the same figures; and events of one new transaction naming cards of
/// two members at once (two account locks, so nothing serialises them before the
/// transaction's unique key) give no 500: the loser of the insert tries again and reads
/// the winner's transaction.
#[tokio::test]
async fn first_deliveries_racing_on_a_unique_key_never_answer_500() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    let clearing = event("q-1", "clearing", "Q", card, "40.00", GYM_MID);
    let answers = futures::future::join_all((0..8).map(|_| send(t, bank, &clearing))).await;
    let mut applied = 0;
    let mut figures = vec![];
    for a in answers {
        let mut body = a.expect(200);
        if body["status"] == "applied" {
            applied += 1;
        } else {
            assert_eq!(body["status"], "duplicate", "{body}");
        }
        body["status"] = json!(null);
        figures.push(body);
    }
    assert_eq!(applied, 1);
    assert!(figures.windows(2).all(|w| w[0] == w[1]), "{figures:?}");
    assert_eq!(points(t, &s.prog, &s.member).await, (80, 0));

    let (other, other_card) = card_holder(t, bank, "racer@example.org").await;
    for round in 0..3 {
        let txn = format!("QX-{round}");
        let events: Vec<Value> = (0..8)
            .map(|i| {
                let token = if i % 2 == 0 {
                    card.as_str()
                } else {
                    other_card.as_str()
                };
                event(
                    &format!("qx-{round}-{i}"),
                    "authorization",
                    &txn,
                    token,
                    "10.00",
                    GYM_MID,
                )
            })
            .collect();
        let answers = futures::future::join_all(events.iter().map(|e| send(t, bank, e))).await;
        let mut winners = std::collections::HashSet::new();
        let mut pending = 0;
        for (i, a) in answers.into_iter().enumerate() {
            match a.status.as_u16() {
                200 => {
                    winners.insert(i % 2);
                    pending += a.body["points_pending"].as_i64().unwrap();
                }
                422 => assert_eq!(a.code(), "validation_failed", "{}", a.body),
                _ => panic!("round {round}, event {i}: {} {}", a.status, a.body),
            }
        }
        assert_eq!(winners.len(), 1, "one card's member owns the transaction");
        assert_eq!(pending, 20, "one authorization counts");
    }
    let (_, a) = points(t, &s.prog, &s.member).await;
    let (_, b) = points(t, &s.prog, &other).await;
    assert_eq!(a + b, 60);
    assert_accounts_consistent(&t.app.db, s.prog.id).await;
}

#[tokio::test]
async fn the_bank_hears_its_card_events_by_webhook_and_the_merchant_does_not() {
    use crate::webhooks::{subscribe, subscription_settles, verify, Receiver, DELIVERING};
    let s = setup_with(DELIVERING).await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    let bank_receiver = Receiver::start().await;
    let gym_receiver = Receiver::start().await;
    let (_, secret) = subscribe(
        t,
        &bank.token,
        &bank_receiver.url,
        &["bank_event.processed"],
    )
    .await;
    subscribe(
        t,
        &s.gym.token,
        &gym_receiver.url,
        &["bank_event.processed"],
    )
    .await;
    subscription_settles().await;

    let cleared = send(
        t,
        bank,
        &event("w-1", "clearing", "W1", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    let got = bank_receiver.wait_for(1, 10).await;
    assert_eq!(got.len(), 1, "the bank hears its event once");
    assert!(verify(&secret, &got[0]));
    let body = got[0].json();
    assert_eq!(body["type"], "bank_event.processed");
    assert_eq!(body["data"]["event_id"], "w-1");
    assert_eq!(body["data"]["bank_partner_id"], bank.id.to_string());
    assert_eq!(body["data"]["partner_id"], s.gym.id.to_string());
    assert_eq!(body["data"]["points_posted"], cleared["points_posted"]);
    assert!(
        !got[0].body.contains(card.as_str()),
        "no card token in a message"
    );
    // The gym, where the card was used, hears nothing of the member's card (the message
    // carries her coalition-wide balance).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(gym_receiver.got().is_empty(), "{:?}", gym_receiver.got());
}

#[tokio::test]
async fn the_bank_reads_its_card_holders_balance_and_not_anothers() {
    let s = setup().await;
    let (t, bank, card) = (&s.t, &s.bank, &s.card_token);
    send(
        t,
        bank,
        &event("b-1", "clearing", "B1", card, "10.00", GYM_MID),
    )
    .await
    .expect(200);
    let seen = t
        .get(&format!("/v1/members/{}/balance", s.member), &bank.token)
        .await
        .expect(200);
    assert_eq!(seen["points"], json!(points(t, &s.prog, &s.member).await.0));
    // A member the bank has no link to is not found, as for a partner.
    let (stranger, _) = t.member_with_card(&s.gym, "stranger@example.org").await;
    t.get(&format!("/v1/members/{stranger}/balance"), &bank.token)
        .await
        .expect_problem(404, "not_found");
}
