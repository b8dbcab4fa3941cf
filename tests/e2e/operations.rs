//! Running the binary: migrating (any number of processes at once), its version.

use crate::support::*;

#[tokio::test]
async fn three_migrate_commands_started_at_once_all_succeed() {
    if backend_name() != "postgres" {
        eprintln!("needs PostgreSQL: runs in the PostgreSQL pass of .ci/run");
        return;
    }
    for round in 0..3 {
        let database_url = fresh_database_url().await;
        let env = [("DATABASE_URL", database_url.clone())];
        let runs: Vec<_> = (0..3)
            .map(|_| {
                coalition(&env)
                    .arg("migrate")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("start coalition migrate")
            })
            .collect();
        for run in runs {
            let out = run.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The schema is whole: a server starts on it and serves.
        let server = start_server(&env).await;
        spawn_client(&server.base).ready().await;
    }
}

#[test]
fn the_binary_says_its_version() {
    let out = coalition(&[]).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim(), format!("coalition {}", env!("CARGO_PKG_VERSION")));
}
