//! Deploying: migrating on start only where wanted, running with a PostgreSQL role that
//! may not change the schema, and the CLI's currency check and naming of its database.

use crate::support::*;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use uuid::Uuid;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `serve`, which must stop by itself: it refuses to start. A server that starts
/// instead is stopped and the test fails (rather than waiting for ever).
async fn serve_refused(mut command: Command) -> Output {
    let mut child = command
        .arg("serve")
        .env("COALITION_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coalition serve");
    for _ in 0..600 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().ok();
    panic!(
        "serve started: {}",
        stderr(&child.wait_with_output().unwrap())
    );
}

fn assert_refused_as_behind(out: &Output) {
    assert!(!out.status.success(), "{out:?}");
    let text = stderr(out);
    assert!(text.contains("schema is behind"), "{text}");
    assert!(text.contains("`coalition migrate`"), "{text}");
    assert!(text.contains("COALITION_MIGRATE_ON_START"), "{text}");
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("coalition-cli-{}", Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    dir
}

fn create_programme_in(dir: &Path, env: &[(&str, String)], currency: &str) -> Output {
    bare_coalition(env)
        .current_dir(dir)
        .args(["programme", "create", "--name", "Coalition"])
        .args(["--currency", currency, "--point-value", "0.01"])
        .output()
        .unwrap()
}

#[tokio::test]
async fn serve_refuses_a_schema_behind_it_until_coalition_migrate_ran() {
    let database_url = fresh_database_url().await;
    let off = [
        ("DATABASE_URL", database_url.clone()),
        ("COALITION_MIGRATE_ON_START", "false".to_owned()),
    ];
    assert_refused_as_behind(&serve_refused(bare_coalition(&off)).await);
    // Refusing changed nothing: still behind, and every migration still pending.
    assert_refused_as_behind(&serve_refused(bare_coalition(&off)).await);

    let migrated = bare_coalition(&off[..1]).arg("migrate").output().unwrap();
    assert!(migrated.status.success(), "{}", stderr(&migrated));
    let server = start_serving(bare_coalition(&off)).await;
    let client = spawn_client(&server.base);
    let programme = create_programme(&off, &client).await;
    assert!(!programme.admin.is_empty());
}

#[tokio::test]
async fn postgres_is_not_migrated_on_start_unless_told() {
    if backend_name() != "postgres" {
        eprintln!("needs PostgreSQL: runs in the PostgreSQL pass of .ci/run");
        return;
    }
    let env = [("DATABASE_URL", fresh_database_url().await)];
    assert_refused_as_behind(&serve_refused(bare_coalition(&env)).await);
    let mut told = env.to_vec();
    told.push(("COALITION_MIGRATE_ON_START", "true".to_owned()));
    let server = start_serving(bare_coalition(&told)).await;
    spawn_client(&server.base).ready().await;
}

#[tokio::test]
async fn the_embedded_default_migrates_on_start_and_the_cli_in_its_directory_shares_it() {
    let dir = scratch_dir();
    let mut server = bare_coalition(&[]);
    server.current_dir(&dir);
    let server = start_serving(server).await;
    let created = create_programme_in(&dir, &[], "EUR");
    assert!(created.status.success(), "{}", stderr(&created));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    // The server knows the credentials the CLI wrote: one database file.
    let client = spawn_client(&server.base);
    let token = client
        .token(
            created["client_id"].as_str().unwrap(),
            created["client_secret"].as_str().unwrap(),
        )
        .await;
    assert!(!token.is_empty());
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_cli_says_which_database_it_used_and_when_it_is_a_new_file() {
    let dir = scratch_dir();
    let file = dir.join("coalition.db");
    let first = create_programme_in(&dir, &[], "EUR");
    assert!(first.status.success(), "{}", stderr(&first));
    let said = stderr(&first);
    assert!(
        said.contains(&format!("database SQLite file {}", file.display())),
        "{said}"
    );
    assert!(said.contains("a new file"), "{said}");
    let again = create_programme_in(&dir, &[], "EUR");
    let said = stderr(&again);
    assert!(
        said.contains(&format!("database SQLite file {}", file.display())),
        "{said}"
    );
    assert!(!said.contains("a new file"), "{said}");
    let migrated = bare_coalition(&[])
        .current_dir(&dir)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(stderr(&migrated).contains(&file.display().to_string()));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_cli_names_a_postgres_database_without_its_password() {
    if backend_name() != "postgres" {
        eprintln!("needs PostgreSQL: runs in the PostgreSQL pass of .ci/run");
        return;
    }
    let url = fresh_database_url().await;
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, location) = rest
        .split_once('@')
        .expect("TEST_DATABASE_URL names a user");
    let user = user.split(':').next().unwrap();
    // The machine's PostgreSQL trusts local connections, so any password connects.
    let with_password = format!("{scheme}://{user}:pw-hunter2@{location}");
    let env = [
        ("DATABASE_URL", with_password),
        ("COALITION_MIGRATE_ON_START", "true".to_owned()),
    ];
    let out = bare_coalition(&env).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!("database PostgreSQL {user}@{location}")),
        "{said}"
    );
    assert!(!said.contains("hunter2"), "{said}");
}

#[tokio::test]
async fn programme_create_takes_active_iso_4217_currencies_only() {
    let dir = scratch_dir();
    let env = [("DATABASE_URL", "sqlite://coalition.db?mode=rwc".to_owned())];
    for currency in ["ABC", "XXX", "XAU", "eur", "EURO", ""] {
        let out = create_programme_in(&dir, &env, currency);
        assert_eq!(out.status.code(), Some(2), "{currency}: {out:?}");
        assert!(stderr(&out).contains("ISO 4217"), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    // Refused before anything was opened: no database file appeared.
    assert!(!dir.join("coalition.db").exists());
    // The currency's minor unit governs amounts: no decimals for JPY, three for KWD.
    for (currency, exact, too_fine) in [("JPY", "1200", "1200.5"), ("KWD", "1.250", "1.2505")] {
        let out = create_programme_in(&dir, &env, currency);
        assert!(out.status.success(), "{currency}: {}", stderr(&out));
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut serve = bare_coalition(&env);
        serve.current_dir(&dir);
        let server = start_serving(serve).await;
        let client = spawn_client(&server.base);
        let admin = client
            .token(
                created["client_id"].as_str().unwrap(),
                created["client_secret"].as_str().unwrap(),
            )
            .await;
        let programme = Programme {
            id: created["programme_id"].as_str().unwrap().parse().unwrap(),
            admin,
            client_id: String::new(),
            client_secret: String::new(),
        };
        let shop = client.partner(&programme, "Shop", "1").await;
        let (_, card) = client.member_with_card(&shop, "m@example.com").await;
        for (amount, status) in [(too_fine, 422), (exact, 201)] {
            let body = serde_json::json!({"card_number": card, "amount": {"amount": amount, "currency": currency}, "external_ref": Uuid::new_v4().to_string(), "redeem_points": 0});
            let answer = client.post_moving("/v1/purchases", &shop.token, body).await;
            assert_eq!(
                answer.status.as_u16(),
                status,
                "{currency} {amount}: {}",
                answer.body
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_app_serves_purchases_and_jobs_with_a_role_that_cannot_change_the_schema() {
    if backend_name() != "postgres" {
        eprintln!("needs PostgreSQL: runs in the PostgreSQL pass of .ci/run");
        return;
    }
    let owner_url = fresh_database_url().await;
    let migrated = bare_coalition(&[("DATABASE_URL", owner_url.clone())])
        .arg("migrate")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{}", stderr(&migrated));

    let role = format!("coalition_test_dml_{}", Uuid::new_v4().simple());
    let database = owner_url.rsplit('/').next().unwrap().to_owned();
    let owner = Database::connect(&owner_url).await.unwrap();
    owner
        .execute_unprepared(&format!(
            "CREATE ROLE {role} LOGIN;
             REVOKE CREATE ON SCHEMA public FROM PUBLIC;
             GRANT CONNECT ON DATABASE {database} TO {role};
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};"
        ))
        .await
        .unwrap();
    let (scheme, rest) = owner_url.split_once("://").unwrap();
    let location = rest.rsplit_once('@').map_or(rest, |(_, location)| location);
    let app_url = format!("{scheme}://{role}@{location}");

    // The role really is DML-only.
    let app_db = Database::connect(&app_url).await.unwrap();
    let ddl = app_db
        .execute_unprepared("CREATE TABLE ddl_probe (id integer)")
        .await;
    assert!(ddl.is_err(), "the role could create a table");
    app_db.close().await.ok();

    let mut env = vec![("DATABASE_URL", app_url)];
    if let Some(redis) = test_redis_url() {
        env.push(("REDIS_URL", redis));
        let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
        env.push(("COALITION_REDIS_PREFIX", prefix));
    }
    let server = start_serving(bare_coalition(&env)).await;
    let client = spawn_client(&server.base);
    let mut cli_env = env.clone();
    cli_env.push(("COALITION_MIGRATE_ON_START", "false".to_owned()));
    let programme = create_programme(&cli_env, &client).await;
    let shop = client.partner(&programme, "Shop", "1").await;
    let (member, card) = client.member_with_card(&shop, "dml@example.com").await;
    client.purchase(&shop, &card, "20.00", 0).await;
    assert_eq!(client.points(&shop.token, &member).await, 20);
    let paid_with_points = client.purchase(&shop, &card, "5.00", 10).await;
    assert_eq!(paid_with_points["points_redeemed"], 10);
    let earned = paid_with_points["points_earned"].as_i64().unwrap();
    assert_eq!(client.points(&shop.token, &member).await, 20 - 10 + earned);
    for job in coalition_app::jobs::JOBS {
        let ran = bare_coalition(&env)
            .args(["jobs", job.name])
            .output()
            .unwrap();
        assert!(ran.status.success(), "{}: {}", job.name, stderr(&ran));
    }
    drop(server);

    owner
        .execute_unprepared(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .unwrap();
    owner.close().await.ok();
}
