//! The committed OpenAPI document is the one the code serves.

use crate::support::*;
use serde_json::json;

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
    let served = t.served_openapi().await;
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

/// Every operation documents the answers the server gives it, with their real content
/// type: problems as `application/problem+json`, the token endpoint's errors as RFC 6749
/// JSON.
#[test]
fn every_operation_documents_its_refusals_as_problems() {
    let doc = serde_json::to_value(coalition_api::openapi()).unwrap();
    let problem = "#/components/schemas/Problem";
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let label = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap();
            for (status, response) in responses {
                let content = response["content"].as_object().cloned().unwrap_or_default();
                for (media, body) in &content {
                    let is_problem = body["schema"]["$ref"] == problem;
                    assert_eq!(
                        is_problem,
                        media == "application/problem+json",
                        "{label} {status}: {media}"
                    );
                }
            }
            let has = |status: &str| {
                responses.get(status).is_some_and(|r| {
                    r["content"]["application/problem+json"]["schema"]["$ref"] == problem
                })
            };
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            if secured {
                assert!(has("401") && has("403"), "{label}: 401/403");
            }
            if params.iter().any(|p| p["in"] == "path") {
                assert!(has("404"), "{label}: 404");
            }
            if op["requestBody"]["content"]
                .get("application/json")
                .is_some()
            {
                for status in ["400", "413", "415", "422"] {
                    assert!(has(status), "{label}: {status}");
                }
            }
            for p in &params {
                if p["name"] == "Idempotency-Key" {
                    assert_eq!(p["required"], true, "{label}");
                    assert_eq!(
                        (&p["schema"]["minLength"], &p["schema"]["maxLength"]),
                        (&json!(1), &json!(255)),
                        "{label}"
                    );
                    assert!(has("400"), "{label}: 400 for the key");
                }
                if p["name"] == "limit" {
                    assert_eq!(
                        (&p["schema"]["minimum"], &p["schema"]["maximum"]),
                        (&json!(1), &json!(100)),
                        "{label}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} operations");
    let token = &doc["paths"]["/oauth/token"]["post"]["responses"];
    for status in ["400", "401"] {
        assert_eq!(
            token[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/OAuthError"
        );
    }
}
