//! Redis goes away and comes back: balances and purchases keep working from the
//! database, readiness says `degraded`, and no value cached before the outage survives it.
//! Redis is reached through a proxy the test can cut, which is what a network partition
//! or a stopped Redis looks like to the server — while the data in Redis stays put, the
//! harder case for staleness.

use crate::support::*;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn a_redis_outage_degrades_to_the_database_and_leaves_nothing_stale() {
    let Some((redis_url, proxy)) = proxied_redis().await else {
        return;
    };
    let t = spawn_app_with_redis(Some(format!("redis://{}", proxy.addr))).await;
    let prefix = t.redis_prefix.clone().unwrap();
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    t.purchase(&gym, &card, "100.00", 0).await;

    // Warm: the second read is a cache hit.
    assert_eq!(t.points(&gym.token, &member).await, 100);
    let hits = metric(&t, "coalition_balance_cache_hits_total").await;
    assert_eq!(t.points(&gym.token, &member).await, 100);
    assert_eq!(
        metric(&t, "coalition_balance_cache_hits_total").await,
        hits + 1
    );
    let before = stored_account(&t.app.db, &member).await;
    assert_eq!(
        redis_entry(&redis_url, &prefix, before.id).await,
        Some((before.version, Some(100)))
    );

    proxy.cut();
    let during = t.ready().await;
    assert_eq!(during["status"], "degraded", "{during}");
    assert_eq!(during["cache"], "degraded", "{during}");
    assert_eq!(during["database"], "ok", "{during}");
    // Purchases and reads go on from the database.
    let earned = t.purchase(&gym, &card, "50.00", 0).await;
    assert_eq!(earned["balance"], 150);
    let spent = t.purchase(&gym, &card, "20.00", 100).await;
    assert_eq!(spent["points_redeemed"], 100);
    let during_balance = spent["balance"].as_i64().unwrap();
    assert_eq!(
        during_balance,
        stored_account(&t.app.db, &member).await.balance
    );
    assert_eq!(t.points(&gym.token, &member).await, during_balance);
    assert_eq!(metric(&t, "coalition_balance_cache_up").await, 0);
    assert!(metric(&t, "coalition_balance_cache_errors_total").await > 0);
    // Redis itself still holds the view from before the outage: the hazard is real.
    assert_eq!(
        redis_entry(&redis_url, &prefix, before.id).await,
        Some((before.version, Some(100)))
    );

    proxy.restore();
    let back = cache_comes_back(&t).await;
    assert!(back, "the cache never came back: {}", t.ready().await);
    assert_eq!(
        redis_entry(&redis_url, &prefix, before.id).await,
        None,
        "the view cached before the outage is gone"
    );
    assert!(metric(&t, "coalition_balance_cache_flushes_total").await >= 1);
    let after = stored_account(&t.app.db, &member).await;
    let hits = metric(&t, "coalition_balance_cache_hits_total").await;
    assert_eq!(t.points(&gym.token, &member).await, after.balance);
    assert_eq!(t.points(&gym.token, &member).await, after.balance);
    assert_eq!(
        metric(&t, "coalition_balance_cache_hits_total").await,
        hits + 1,
        "the cache is used again"
    );
    assert_eq!(
        redis_entry(&redis_url, &prefix, before.id).await,
        Some((after.version, Some(after.balance)))
    );
}

#[tokio::test]
async fn a_server_started_during_a_redis_outage_serves_and_takes_redis_up_when_it_answers() {
    let Some((_, proxy)) = proxied_redis().await else {
        return;
    };
    proxy.cut();
    let t = spawn_app_with_redis(Some(format!("redis://{}", proxy.addr))).await;
    assert_eq!(t.ready().await["cache"], "degraded");
    let prog = t.programme("Coalition").await;
    let gym = t.partner(&prog, "Gym", "1").await;
    let (member, card) = t.member_with_card(&gym, "ann@example.org").await;
    assert_eq!(t.purchase(&gym, &card, "30.00", 0).await["balance"], 30);
    assert_eq!(t.points(&gym.token, &member).await, 30);
    assert_eq!(metric(&t, "coalition_balance_cache_up").await, 0);

    proxy.restore();
    let back = cache_comes_back(&t).await;
    assert!(back, "the cache never came up: {}", t.ready().await);
    assert_eq!(t.points(&gym.token, &member).await, 30);
    let hits = metric(&t, "coalition_balance_cache_hits_total").await;
    assert_eq!(t.points(&gym.token, &member).await, 30);
    assert_eq!(
        metric(&t, "coalition_balance_cache_hits_total").await,
        hits + 1
    );
}

/// A Redis user that may do everything but SCAN: a cache connected as it reaches Redis,
/// but its flush — and with it its recovery after an outage — fails until `allow_scan`.
/// Deleted on drop.
struct UserWithoutScan {
    redis_url: String,
    name: String,
    password: String,
}

impl UserWithoutScan {
    async fn create(redis_url: &str) -> Self {
        let user = Self {
            redis_url: redis_url.to_owned(),
            name: format!("coalition-test-{}", Uuid::new_v4().simple()),
            password: Uuid::new_v4().simple().to_string(),
        };
        let password = format!(">{}", user.password);
        user.acl(&[
            "SETUSER", &user.name, "on", &password, "~*", "+@all", "-scan",
        ])
        .await;
        user
    }

    /// A Redis URL that connects as this user through `addr`.
    fn url(&self, addr: &str) -> String {
        format!("redis://{}:{}@{addr}", self.name, self.password)
    }

    async fn allow_scan(&self) {
        self.acl(&["SETUSER", &self.name, "+scan"]).await;
    }

    async fn acl(&self, args: &[&str]) {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("ACL")
            .arg(args)
            .query_async(&mut con)
            .await
            .unwrap();
    }

    /// Waits up to 5 s for Redis to refuse this user a SCAN: a cache connected as it has
    /// had Redis answer its probe's PING, and its flush failed.
    async fn refused_a_scan(&self) -> bool {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        for _ in 0..50 {
            let log: Vec<HashMap<String, redis::Value>> = redis::cmd("ACL")
                .arg("LOG")
                .query_async(&mut con)
                .await
                .unwrap();
            let mine = |entry: &HashMap<String, redis::Value>| {
                let field = |name| {
                    entry
                        .get(name)
                        .and_then(|v| redis::from_redis_value::<String>(v).ok())
                };
                field("username").as_deref() == Some(self.name.as_str())
                    && field("object").as_deref() == Some("scan")
            };
            if log.iter().any(mine) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

impl Drop for UserWithoutScan {
    fn drop(&mut self) {
        let deleted = redis::Client::open(self.redis_url.as_str())
            .and_then(|client| client.get_connection())
            .and_then(|mut con| {
                redis::cmd("ACL")
                    .arg("DELUSER")
                    .arg(&self.name)
                    .query::<()>(&mut con)
            });
        if let Err(e) = deleted {
            eprintln!("could not delete test Redis user {}: {e}", self.name);
        }
    }
}

/// After an outage the processes' probes do not get through at the same moment: one may
/// already trust Redis again (it flushed) while another one's flush is still under way —
/// a flush over many keys takes a while — or fails. A write committed by the second must
/// not leave the first serving the balance from before it. Process A is held in that
/// state by connecting as a Redis user that may not SCAN: its probe's PING is answered,
/// its flush fails, and everything else it sends reaches Redis.
#[tokio::test]
async fn a_process_still_waiting_for_its_flush_marks_its_writes_for_the_others() {
    if backend_name() != "postgres" {
        eprintln!("needs PostgreSQL and Redis: runs in the PostgreSQL + Redis pass of .ci/run");
        return;
    }
    let Some((redis_url, proxy)) = proxied_redis().await else {
        return;
    };
    let user = UserWithoutScan::create(&redis_url).await;
    let database_url = fresh_database_url().await;
    let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
    let env_a = server_env(&database_url, &user.url(&proxy.addr), &prefix);
    let env_b = server_env(&database_url, &format!("redis://{}", proxy.addr), &prefix);
    let a = start_server(&env_a).await;
    let b = start_server(&env_b).await;
    let (ta, tb) = (spawn_client(&a.base), spawn_client(&b.base));
    let prog = create_programme(&env_b, &tb).await;
    let gym = tb.partner(&prog, "Gym", "1").await;
    let (member, card) = tb.member_with_card(&gym, "ann@example.org").await;
    tb.purchase(&gym, &card, "100.00", 0).await;

    // The outage, seen by both; then B flushes and uses Redis again, while Redis answers
    // A but A cannot flush.
    proxy.cut();
    assert_eq!(ta.ready().await["cache"], "degraded");
    assert_eq!(tb.ready().await["cache"], "degraded");
    proxy.restore();
    let back = cache_comes_back(&tb).await;
    assert!(back, "B's cache never came back: {}", tb.ready().await);
    let answered = user.refused_a_scan().await;
    assert!(answered, "A's probe never reached Redis again");
    assert_eq!(ta.ready().await["cache"], "degraded", "A flushed");

    // B caches the balance...
    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    let account = stored_account(&db, &member).await;
    assert_eq!(tb.points(&gym.token, &member).await, 100);
    assert_eq!(
        redis_entry(&redis_url, &prefix, account.id).await,
        Some((account.version, Some(100)))
    );
    // ...A commits a purchase...
    assert_eq!(ta.purchase(&gym, &card, "50.00", 0).await["balance"], 150);
    assert_eq!(ta.ready().await["cache"], "degraded", "A flushed");
    // ...and B answers it.
    assert_eq!(
        tb.points(&gym.token, &member).await,
        150,
        "B served the balance from before A's purchase"
    );

    // Once A's flush gets through, A uses Redis again.
    user.allow_scan().await;
    let back = cache_comes_back(&ta).await;
    assert!(back, "A's cache never came back: {}", ta.ready().await);
    assert!(metric(&ta, "coalition_balance_cache_flushes_total").await >= 1);
    assert_eq!(ta.points(&gym.token, &member).await, 150);
    assert_eq!(tb.points(&gym.token, &member).await, 150);
    db.close().await.ok();
}
