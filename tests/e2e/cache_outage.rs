//! Redis goes away and comes back: balances and purchases keep working from the
//! database, readiness says `degraded`, and no value cached before the outage survives it.
//! Redis is reached through a proxy the test can cut, which is what a network partition
//! or a stopped Redis looks like to the server — while the data in Redis stays put, the
//! harder case for staleness.

use crate::support::*;

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
