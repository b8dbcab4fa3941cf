//! Money is exact on both backends.

use crate::support::*;
use serde_json::json;

/// Values with more significant digits than a floating-point REAL keeps (SQLite would
/// round them if money were stored as REAL), within the documented bounds.
#[tokio::test]
async fn money_round_trips_exactly() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let body = json!({"name": "Bank", "kind": "bank", "category": "finance", "earn_points_per_unit": "0.1",
        "issue_price_per_point": "987654.3210987654321", "redemption_value_per_point": "0.0000001"});
    let created = t.post("/v1/partners", &prog.admin, body).await.expect(201);
    let read = t
        .get(
            &format!("/v1/partners/{}", created["id"].as_str().unwrap()),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(
        read["issue_price_per_point"],
        "987654.3210987654321",
        "on {}",
        backend_name()
    );
    assert_eq!(read["earn_points_per_unit"], "0.1");
    assert_eq!(read["redemption_value_per_point"], "0.0000001");

    let shop = t.partner(&prog, "Shop", "0.1").await;
    let (_, card) = t.member_with_card(&shop, "ann@example.org").await;
    let bought = t.purchase(&shop, &card, "987654321.98", 0).await;
    let detail = t
        .get(
            &format!("/v1/purchases/{}", bought["id"].as_str().unwrap()),
            &shop.token,
        )
        .await
        .expect(200);
    assert_eq!(detail["amount"]["amount"], "987654321.98");
    assert_eq!(bought["points_earned"], 98765432_i64);
}
