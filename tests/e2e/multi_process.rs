//! Two server processes share one PostgreSQL and one Redis. Concurrent earns,
//! redemptions and balance reads go through both; afterwards every balance cached in
//! Redis equals the database's, and both processes answer the database's numbers.

use crate::support::*;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn two_server_processes_keep_every_cached_balance_equal_to_the_database() {
    let (Some(redis_url), "postgres") = (test_redis_url(), backend_name()) else {
        eprintln!("needs PostgreSQL and Redis: runs in the PostgreSQL + Redis pass of .ci/run");
        return;
    };
    let database_url = fresh_database_url().await;
    let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
    let env = server_env(&database_url, &redis_url, &prefix);
    // The first process migrates and keeps the signing key in the database; the second
    // finds both, so a token from one is good at the other.
    let a = start_server(&env).await;
    let b = start_server(&env).await;
    let ta = spawn_client(&a.base);
    let tb = spawn_client(&b.base);
    let prog = create_programme(&env, &ta).await;
    let gym = ta.partner(&prog, "Gym", "1").await;
    let shop = tb.partner(&prog, "Sports shop", "2").await;
    let mut members = Vec::new();
    for i in 0..8 {
        let (member, card) = ta
            .member_with_card(&gym, &format!("m{i}@example.org"))
            .await;
        ta.purchase(&gym, &card, "30.00", 0).await;
        tb.purchase(&shop, &card, "10.00", 0).await; // the shop may now see the member
        members.push((member, card));
    }

    // 16 workers, half on each process, each doing a random mix against few members,
    // so earns, redemptions and reads of one account race across the two processes.
    let workers = (0..16).map(|w| {
        let server = if w % 2 == 0 { &ta } else { &tb };
        let partner = if w % 4 < 2 { &gym } else { &shop };
        let members = &members;
        async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut moved = 0;
            for _ in 0..25 {
                let (member, card) = &members[rng.gen_range(0..members.len())];
                match rng.gen_range(0..10) {
                    0..=3 => {
                        let _ = server.points(&partner.token, member).await;
                    }
                    4..=6 => {
                        server.purchase(partner, card, "12.00", 0).await;
                        moved += 1;
                    }
                    _ => {
                        let body = json!({"card_number": card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": Uuid::new_v4().to_string(), "redeem_points": 300});
                        let r = server.post_moving("/v1/purchases", &partner.token, body).await;
                        match r.status.as_u16() {
                            201 => moved += 1,
                            _ => assert_eq!(r.code(), "insufficient_points", "{}", r.body),
                        }
                    }
                }
            }
            moved
        }
    });
    let moved: usize = futures::future::join_all(workers).await.into_iter().sum();
    assert!(moved > 100, "only {moved} point movements happened");

    let db = sea_orm::Database::connect(&database_url).await.unwrap();
    // Whatever Redis holds now is the database's number, at the database's version.
    let mut cached = 0;
    for (member, _) in &members {
        let account = stored_account(&db, member).await;
        if let Some((version, points)) = redis_entry(&redis_url, &prefix, account.id).await {
            assert!(version <= account.version, "cache ahead of the database");
            if let Some(points) = points {
                assert_eq!(
                    (version, points),
                    (account.version, account.balance),
                    "a stale balance is cached for member {member}"
                );
                cached += 1;
            }
        }
    }
    // And both processes answer it, filling the cache with it.
    for (member, _) in &members {
        let account = stored_account(&db, member).await;
        assert_eq!(ta.points(&gym.token, member).await, account.balance);
        assert_eq!(tb.points(&shop.token, member).await, account.balance);
        assert_eq!(
            redis_entry(&redis_url, &prefix, account.id).await,
            Some((account.version, Some(account.balance)))
        );
    }
    eprintln!("{moved} point movements; {cached} of 8 balances were cached at the end");
    db.close().await.ok();
}

#[tokio::test]
async fn two_server_processes_share_the_limit_of_failed_token_requests() {
    let Some(redis_url) = test_redis_url() else {
        eprintln!("needs Redis: runs in the PostgreSQL + Redis pass of .ci/run");
        return;
    };
    let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
    let mut servers = Vec::new();
    for _ in 0..2 {
        // Each its own database: only Redis is shared, and only Redis can carry the count.
        let env = vec![
            ("DATABASE_URL", fresh_database_url().await),
            ("REDIS_URL", redis_url.clone()),
            ("COALITION_REDIS_PREFIX", prefix.clone()),
            ("COALITION_TOKEN_FAILURES_PER_MINUTE", "3".to_owned()),
            (
                "COALITION_TOKEN_ADDRESS_FAILURES_PER_MINUTE",
                "0".to_owned(),
            ),
        ];
        servers.push(start_server(&env).await);
    }
    let http = reqwest::Client::new();
    let attempt = |server: &ServerProcess| {
        http.post(format!("{}/oauth/token", server.base))
            .basic_auth("cl_guessed", Some("cs_guess"))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    // Three failures between the two: two at the first, one at the second.
    for server in [&servers[0], &servers[1], &servers[0]] {
        assert_eq!(attempt(server).await.unwrap().status(), 401);
    }
    // The second saw one failure itself, yet it refuses too.
    for server in &servers {
        let res = attempt(server).await.unwrap();
        assert_eq!(res.status(), 429);
        assert!(res.headers().contains_key("retry-after"));
    }
}
