//! Regression tests for what the second hostile review pass (token endpoint, card rules,
//! the document, configuration, the rest of the API) found: each test names the hole it
//! guards, and runs on both backends.

use crate::support::*;
use serde_json::json;
use std::process::{Command, Output};

/// A `coalition programme create` with exactly this environment (nothing inherited, so
/// no `COALITION_LOG` but the one given).
fn programme_create(env: &[(&str, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coalition-under-test"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["programme", "create", "--name", "Logs"])
        .args(["--currency", "EUR", "--point-value", "0.01"])
        .output()
        .expect("run coalition programme create")
}

/// `COALITION_LOG` is a setting like the others: a filter that does not parse stopped
/// nothing (logging silently fell back to `info`), and the value in
/// `COALITION_CONFIG_FILE` was ignored (only the environment was read).
#[tokio::test]
async fn the_log_filter_is_a_checked_setting_the_config_file_may_give() {
    let database_url = fresh_database_url().await;
    let bad = programme_create(&[
        ("DATABASE_URL", database_url.clone()),
        ("COALITION_LOG", "info,[{".into()),
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "a bad log filter was accepted");
    assert!(stderr.contains("COALITION_LOG"), "{stderr}");
    assert!(bad.stdout.is_empty(), "nothing is created: {bad:?}");

    let file = std::env::temp_dir().join(format!("coalition-{}.env", uuid::Uuid::new_v4()));
    let with_filter = |filter: &str| {
        std::fs::write(
            &file,
            format!(
                "DATABASE_URL={database_url}\nCOALITION_LOG={filter}\nCOALITION_MIGRATE_ON_START=true\n"
            ),
        )
        .unwrap();
        let run = programme_create(&[("COALITION_CONFIG_FILE", file.display().to_string())]);
        assert!(run.status.success(), "{run:?}");
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    // Migrating logs at INFO; the file's filter decides whether that shows.
    let quiet = with_filter("warn");
    assert!(
        !quiet.contains("INFO"),
        "the file's filter was ignored: {quiet}"
    );
    let chatty = with_filter("info");
    assert!(chatty.contains("INFO"), "{chatty}");
    std::fs::remove_file(&file).ok();
}

/// The authentication scheme is case-insensitive (RFC 9110 §11.1): `BEARER <token>` was
/// refused as if no token had been sent.
#[tokio::test]
async fn the_bearer_scheme_is_matched_whatever_its_case() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    for scheme in ["Bearer", "bearer", "BEARER", "BeArEr"] {
        let res = t
            .http
            .get(format!("{}/v1/partners", t.base))
            .header("Authorization", format!("{scheme} {}", prog.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "scheme {scheme}");
    }
    for value in [
        format!("Bearerx {}", prog.admin),
        format!("Basic {}", prog.admin),
        prog.admin.clone(),
    ] {
        let res = t
            .http
            .get(format!("{}/v1/partners", t.base))
            .header("Authorization", value.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{value}");
    }
}

/// `POST /v1/clients` answered `Location: /v1/clients/{id}`, a URL that names nothing
/// (404): a client cannot be read back, its secret is shown once.
#[tokio::test]
async fn a_created_client_points_to_no_url_that_names_nothing() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    let created = t
        .post("/v1/clients", &prog.admin, json!({"name": "Back office"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    if let Some(location) = created.headers.get("location") {
        let location = location.to_str().unwrap();
        let res = t.get(location, &prog.admin).await;
        assert_eq!(res.status, 200, "Location {location}: {}", res.body);
    }
}

/// Every character of a URL's query may be percent-encoded, and a client library may do
/// so: `limit=%31` is `limit=1`, and a cursor escaped character by character is the same
/// cursor. Both were refused with 422.
#[tokio::test]
async fn list_queries_are_percent_decoded() {
    let t = spawn_app().await;
    let prog = t.programme("Coalition").await;
    for name in ["Gym", "Shop", "Diet store"] {
        t.partner(&prog, name, "1").await;
    }
    let first = t.get("/v1/partners?limit=1", &prog.admin).await.expect(200);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();

    let escaped = t
        .get("/v1/partners?%6Cimit=%31", &prog.admin)
        .await
        .expect(200);
    assert_eq!(escaped, first);

    let every_byte: String = cursor.bytes().map(|b| format!("%{b:02X}")).collect();
    let plain = t
        .get(
            &format!("/v1/partners?limit=1&cursor={cursor}"),
            &prog.admin,
        )
        .await
        .expect(200);
    let decoded = t
        .get(
            &format!("/v1/partners?limit=1&cursor={every_byte}"),
            &prog.admin,
        )
        .await
        .expect(200);
    assert_eq!(decoded, plain);
    assert_ne!(plain["data"][0]["id"], first["data"][0]["id"]);

    // What does not decode to text is no cursor and no number.
    t.get("/v1/partners?cursor=%FF", &prog.admin)
        .await
        .expect_problem(422, "validation_failed");
    t.get("/v1/partners?limit=%FF", &prog.admin)
        .await
        .expect_problem(422, "validation_failed");
}
