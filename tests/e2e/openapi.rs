//! The committed OpenAPI document is the one the code serves.

use crate::support::*;

#[tokio::test]
async fn committed_openapi_matches_the_code_and_the_server() {
    let generated = coalition_api::openapi().to_pretty_json().unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is out of date: regenerate it with `cargo run -p coalition-server -- openapi > openapi/openapi.json`"
    );
    let t = spawn_app().await;
    let served: serde_json::Value = t
        .http
        .get(format!("{}/openapi.json", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        served,
        serde_json::from_str::<serde_json::Value>(&generated).unwrap()
    );
    for path in [
        "/oauth/token",
        "/v1/partners",
        "/v1/clients",
        "/v1/members/{id}/balance",
        "/v1/purchases",
        "/v1/purchases/{id}/refunds",
        "/v1/cards/{number}/register",
    ] {
        assert!(
            served["paths"].get(path).is_some(),
            "{path} is not documented"
        );
    }
    let docs = t
        .http
        .get(format!("{}/docs/", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "Swagger UI is served from the binary"
    );
}

#[tokio::test]
async fn health_reports_the_database_and_the_cache() {
    let t = spawn_app().await;
    let live = t
        .http
        .get(format!("{}/health/live", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = t.ready().await;
    let expected_cache = if std::env::var("TEST_REDIS_URL").is_ok_and(|u| !u.is_empty()) {
        "ok"
    } else {
        "not_configured"
    };
    assert_eq!(
        (
            ready["status"].as_str(),
            ready["database"].as_str(),
            ready["cache"].as_str()
        ),
        (Some("ok"), Some("ok"), Some(expected_cache))
    );
}
