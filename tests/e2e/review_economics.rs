//! A hostile review of the economics (issue 8): rules, tiers, purchases and refunds
//! pushed where they may break. Each test names what it found; both backends.

use crate::support::*;
use coalition_domain::AccountKind;
use serde_json::{json, Value};
use uuid::Uuid;

fn eur(amount: &str) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

async fn refund(t: &Client, partner: &Partner, purchase: &Value, amount: &str) -> Value {
    let path = format!("/v1/purchases/{}/refunds", purchase["id"].as_str().unwrap());
    t.post_moving(&path, &partner.token, json!({"amount": eur(amount)}))
        .await
        .expect(201)
}

async fn posted(t: &TestApp, kind: AccountKind, owner: Uuid) -> i64 {
    coalition_app::ledger::posted_balance(&t.app.db, kind, owner)
        .await
        .unwrap()
}

/// Two partial refunds that add up to a full one must give each funder back exactly what
/// it funded. Each refund used to split its clawback over the purchase's funders afresh,
/// so the same funder won every rounding: the seller got back both points, the operator
/// none.
#[tokio::test]
async fn partial_refunds_claw_back_from_each_funder_what_it_gave() {
    let t = spawn_app().await;
    let prog = t.programme("Split").await;
    let gym = t.partner(&prog, "Gym", "0.1").await;
    t.post(
        "/v1/rules",
        &prog.admin,
        json!({"name": "Operator point", "effect": {"kind": "bonus_points", "value": "1"},
               "funder": {"kind": "operator"}, "conditions": {"partner_ids": [gym.id]}}),
    )
    .await
    .expect(201);
    let (_, card) = t.member_with_card(&gym, "split@example.org").await;
    // 10.00 at 0.1 a euro: 1 point from the gym, and 1 from the operator's rule.
    let bought = t.purchase(&gym, &card, "10.00", 0).await;
    assert_eq!(bought["points_earned"], 2, "{bought}");
    assert_eq!(posted(&t, AccountKind::PartnerIssued, gym.id).await, -1);
    assert_eq!(posted(&t, AccountKind::OperatorFunding, prog.id).await, -1);

    let first = refund(&t, &gym, &bought, "5.00").await;
    let second = refund(&t, &gym, &bought, "5.00").await;
    assert_eq!(
        first["points_clawed_back"].as_i64().unwrap()
            + second["points_clawed_back"].as_i64().unwrap(),
        2
    );
    assert_eq!(
        (
            posted(&t, AccountKind::PartnerIssued, gym.id).await,
            posted(&t, AccountKind::OperatorFunding, prog.id).await
        ),
        (0, 0),
        "each funder gets back exactly what it gave"
    );
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

/// A replayed purchase answers what the first one did, even after the rule that priced
/// it changed; the ledger keeps naming the version that gave the points, and that
/// version still reads as it was. (Checked, not broken: both purchase paths.)
#[tokio::test]
async fn a_replay_after_a_rule_change_answers_the_first_price_and_names_the_old_version() {
    use reqwest::Method;
    let t = spawn_app().await;
    let prog = t.programme("Replay").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let rule = t
        .post(
            "/v1/rules",
            &prog.admin,
            json!({"name": "Bonus", "effect": {"kind": "bonus_points", "value": "10"}}),
        )
        .await
        .expect(201);
    let rule_path = format!("/v1/rules/{}", rule["id"].as_str().unwrap());
    let (member, card) = t.member_with_card(&gym, "replay@example.org").await;
    let body = json!({"card_number": card, "amount": eur("1.00"), "external_ref": "r-1"});
    let buy = |key: &'static str| {
        let body = body.clone();
        let t = &t;
        let token = gym.token.clone();
        async move {
            t.call(
                Method::POST,
                "/v1/purchases",
                Some(&token),
                Some(body),
                Some(key),
            )
            .await
        }
    };
    let first = buy("k-1").await.expect(201);
    assert_eq!(first["points_earned"], 11);
    assert_eq!(first["breakdown"][1]["rule_version"], 1);
    t.call(
        Method::PATCH,
        &rule_path,
        Some(&prog.admin),
        Some(json!({"effect": {"kind": "bonus_points", "value": "20"}})),
        None,
    )
    .await
    .expect(200);
    let again = buy("k-1").await.expect(201);
    assert_eq!(again, first, "a replay answers the first price");
    let next = t.purchase(&gym, &card, "1.00", 0).await;
    assert_eq!(
        (
            &next["points_earned"],
            &next["breakdown"][1]["rule_version"]
        ),
        (&json!(21), &json!(2))
    );
    let history = t
        .get(&format!("/v1/members/{member}/transactions"), &prog.admin)
        .await
        .expect(200);
    let versions: Vec<Value> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["breakdown"].as_array())
        .flat_map(|b| b.iter().filter_map(|l| l.get("rule_version").cloned()))
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(versions, vec![json!(2), json!(1)], "{history}");
    let v1 = t
        .get(&format!("{rule_path}/versions/1"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(v1["effect"]["value"], "10");
    assert_eq!(t.points(&prog.admin, &member).await, 32);
}

/// Twenty purchases of one member that each cross Gold's threshold at once: one upgrade,
/// one history row, one outbox event; every purchase is priced with the tier it saw.
/// (Checked, not broken: the spend row and the member row serialise the crossing.)
#[tokio::test]
async fn purchases_crossing_a_threshold_at_once_upgrade_once() {
    use coalition_store::entities::{outbox_event, tier_history};
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let t = spawn_app().await;
    let prog = t.programme("Crossing").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    for (name, rank, spend) in [("Basic", 1, "0"), ("Gold", 2, "100.00")] {
        t.post(
            "/v1/tiers",
            &prog.admin,
            json!({"name": name, "rank": rank, "qualifying_spend": eur(spend),
                   "discount_percent": "0", "earn_multiplier": "1"}),
        )
        .await
        .expect(201);
    }
    let (member, card) = t.member_with_card(&gym, "crossing@example.org").await;
    let buys = (0..20).map(|_| t.purchase(&gym, &card, "150.00", 0));
    futures::future::join_all(buys).await;
    let rows = tier_history::Entity::find()
        .filter(tier_history::Column::ProgrammeId.eq(prog.id))
        .count(&t.app.db)
        .await
        .unwrap();
    let events = outbox_event::Entity::find()
        .filter(outbox_event::Column::ProgrammeId.eq(prog.id))
        .filter(outbox_event::Column::EventType.eq("tier.changed"))
        .count(&t.app.db)
        .await
        .unwrap();
    assert_eq!((rows, events), (1, 1));
    let profile = t
        .get(&format!("/v1/members/{member}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(profile["tier"]["name"], "Gold");
    assert_eq!(
        profile["tier_status"]["qualifying_spend"]["amount"],
        "3000.00"
    );
    assert_accounts_consistent(&t.app.db, prog.id).await;
}

/// Odd and hostile inputs to the economics' routes: each is refused with a problem (or,
/// where it is valid, accepted), never a 500; another programme's ids are never taken.
#[tokio::test]
async fn odd_inputs_to_rules_tiers_floors_and_partners_are_refused_cleanly() {
    use reqwest::Method;
    let t = spawn_app().await;
    let prog = t.programme("Odd").await;
    let other = t.programme("Other").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let foreign = t.partner(&other, "Foreign", "1").await;
    let foreign_tier = t
        .post(
            "/v1/tiers",
            &other.admin,
            json!({"name": "Theirs", "rank": 1, "qualifying_spend": eur("0"),
                   "discount_percent": "0", "earn_multiplier": "1"}),
        )
        .await
        .expect(201);
    let (member, _) = t.member_with_card(&gym, "odd@example.org").await;
    let bonus = json!({"kind": "bonus_points", "value": "1"});
    let many: Vec<Uuid> = (0..101).map(|_| gym.id).collect();
    let refused_rules = [
        json!({"name": "x", "effect": {"kind": "bonus_points", "value": "1e3"}}),
        json!({"name": "x", "effect": {"kind": "bonus_points", "value": " 5"}}),
        json!({"name": "x", "effect": {"kind": "bonus_points", "value": "-5"}}),
        json!({"name": "x", "effect": {"kind": "points_per_unit", "value": "1000001"}}),
        json!({"name": "x", "effect": {"kind": "cashback_percent", "value": "100.0000000000000000000000001"}}),
        json!({"name": "x", "effect": bonus, "conditions": {"days_of_week": [0]}}),
        json!({"name": "x", "effect": bonus, "conditions": {"days_of_week": [8]}}),
        json!({"name": "x", "effect": bonus, "conditions": {"days_of_week": [4294967299i64]}}),
        json!({"name": "x", "effect": bonus, "conditions": {"hours": {"from": "22:00", "to": "22:00"}}}),
        json!({"name": "x", "effect": bonus, "conditions": {"hours": {"from": "24:00", "to": "02:00"}}}),
        json!({"name": "x", "effect": bonus, "conditions": {"partner_ids": many}}),
        json!({"name": "x", "effect": bonus, "conditions": {"partner_ids": [foreign.id]}}),
        json!({"name": "x", "effect": bonus, "conditions": {"tier_ids": [foreign_tier["id"]]}}),
        json!({"name": "x", "effect": bonus, "conditions": {"min_amount": eur("-1")}}),
        json!({"name": "x", "effect": bonus, "conditions": {"min_amount": eur("1000000000.01")}}),
        json!({"name": "x", "effect": bonus, "conditions": {"min_amount": {"amount": "1", "currency": "USD"}}}),
        json!({"name": "x", "effect": bonus, "caps": {"per_purchase": -1}}),
        json!({"name": "x", "effect": bonus, "caps": {"per_member_day": 1_000_000_000_001i64}}),
        json!({"name": "x", "effect": bonus, "caps": {"per_member_month": 1.5}}),
        json!({"name": "x", "effect": bonus, "priority": 2147483648i64}),
        json!({"name": "x", "effect": bonus, "funder": {"kind": "partner", "partner_id": foreign.id}}),
        json!({"name": "x", "effect": bonus, "funder": {"kind": "bank", "partner_id": gym.id}}),
        json!({"name": "x", "effect": bonus, "valid_from": "2026-02-01T00:00:00Z", "valid_to": "2026-01-31T23:59:59Z"}),
        json!({"name": "x", "effect": bonus, "valid_from": "+275760-09-13T00:00:00Z"}),
    ];
    for body in refused_rules {
        let r = t.post("/v1/rules", &prog.admin, body.clone()).await;
        assert!(
            r.status.is_client_error(),
            "{body} answered {} {}",
            r.status,
            r.body
        );
    }
    // A partner's token may not touch the operator's economics.
    let rule_body = json!({"name": "x", "effect": bonus});
    t.post("/v1/rules", &gym.token, rule_body)
        .await
        .expect_problem(403, "insufficient_scope");
    let patch_self = t
        .call(
            Method::PATCH,
            &format!("/v1/partners/{}", gym.id),
            Some(&gym.token),
            Some(json!({"earn_points_per_unit": "1000"})),
            None,
        )
        .await;
    assert_eq!(patch_self.status, 403, "{}", patch_self.body);
    let floor =
        json!({"tier_id": foreign_tier["id"], "reason": "vip", "ends_at": "2030-01-01T00:00:00Z"});
    let path = format!("/v1/members/{member}/tier");
    t.post(&path, &gym.token, floor.clone())
        .await
        .expect_problem(403, "insufficient_scope");
    // Another programme's tier is no tier of this one; a floor must end in the future.
    t.post(&path, &prog.admin, floor)
        .await
        .expect_problem(404, "not_found");
    let mine = t
        .post(
            "/v1/tiers",
            &prog.admin,
            json!({"name": "Gold", "rank": 1, "qualifying_spend": eur("10"),
                   "discount_percent": "10", "earn_multiplier": "2"}),
        )
        .await
        .expect(201);
    for ends_at in ["2000-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        let body = json!({"tier_id": mine["id"], "reason": "vip", "ends_at": ends_at});
        t.post(&path, &prog.admin, body)
            .await
            .expect_problem(422, "validation_failed");
    }
    // Another programme's member has no tiers here.
    let (theirs, _) = t.member_with_card(&foreign, "theirs@example.org").await;
    t.get(&format!("/v1/members/{theirs}/tiers"), &prog.admin)
        .await
        .expect_problem(404, "not_found");
    for (spend, discount, multiplier) in [
        ("-1", "0", "1"),
        ("0.001", "0", "1"),
        ("1e3", "0", "1"),
        ("0", "100.00001", "1"),
        ("0", "0", "0.5"),
        ("0", "0", "101"),
    ] {
        let body = json!({"name": "T", "rank": 7, "qualifying_spend": eur(spend),
                          "discount_percent": discount, "earn_multiplier": multiplier});
        let r = t.post("/v1/tiers", &prog.admin, body.clone()).await;
        assert!(
            r.status.is_client_error(),
            "{body}: {} {}",
            r.status,
            r.body
        );
    }
}

/// A database upgraded to tiers holds purchases whose spend was never counted (there was
/// no `tier_spend_days` yet). Refunding one takes its amount off all the same, so the
/// member's net spend goes below zero. That qualified for "no tier" while the member's
/// stored "no tier" reads as the entry tier: every requalification run saw them out of
/// date and wrote another `requalified` history row and `tier.changed` event, forever
/// (every minute with the scheduler). Net spend counts as never below zero.
#[tokio::test]
async fn a_refund_of_spend_never_counted_does_not_make_requalification_churn() {
    use chrono::Utc;
    use coalition_store::entities::{tier_history, tier_spend_day};
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    let t = spawn_app().await;
    let prog = t.programme("Upgraded").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "upgraded@example.org").await;
    let bought = t.purchase(&gym, &card, "50.00", 0).await;
    // As if bought before the tiers migration: its spend was never recorded.
    let member_id: Uuid = member.parse().unwrap();
    tier_spend_day::Entity::delete_many()
        .filter(tier_spend_day::Column::MemberId.eq(member_id))
        .exec(&t.app.db)
        .await
        .unwrap();
    for (name, rank, spend) in [("Basic", 1, "0"), ("Gold", 2, "100.00")] {
        t.post(
            "/v1/tiers",
            &prog.admin,
            json!({"name": name, "rank": rank, "qualifying_spend": eur(spend),
                   "discount_percent": "5", "earn_multiplier": "1"}),
        )
        .await
        .expect(201);
    }
    refund(&t, &gym, &bought, "50.00").await;
    for _ in 0..3 {
        coalition_app::tiers::requalify(&t.app.db, Utc::now())
            .await
            .unwrap();
    }
    let rows = tier_history::Entity::find()
        .filter(tier_history::Column::MemberId.eq(member_id))
        .count(&t.app.db)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing about the member's tier changed");
    let profile = t
        .get(&format!("/v1/members/{member}"), &prog.admin)
        .await
        .expect(200);
    assert_eq!(profile["tier"]["name"], "Basic");
    assert_eq!(profile["tier_status"]["qualifying_spend"]["amount"], "0.00");
}
