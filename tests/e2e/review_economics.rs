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
