//! Hostile review of the `forget-sign-ins` job (5077c52) and of the 90-day end of OAuth
//! grants (83172e2): what the job may delete while a token it issued still works.

use crate::support::oidc::{
    code_for, exchange, partner_app, pkce, sign_in, spawn_app_with_mail, token_request,
};
use crate::support::*;
use chrono::{Duration, Utc};
use coalition_store::entities::oauth_grant;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

/// Near the end of the 90 days an app refreshes as usual; the refresh token it gets
/// ends with the 90 days, a minute from now, but the access token issued with it lives
/// its 15 minutes. The job run a few minutes later (the code ended too) must not take
/// the grant that access token names: /v1/me would refuse it as revoked. Once that
/// access token has ended, the grant goes.
#[tokio::test]
async fn the_job_keeps_a_grant_whose_last_access_token_outlives_its_capped_refresh_token() {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Forget Coalition").await;
    let partner = t.partner(&programme, "Forget Gym", "1").await;
    let app = partner_app(&t, &programme, &partner).await;
    let email = format!("late-{}@example.org", random_letters());
    t.member_with_card(&partner, &email).await;
    let cookie = sign_in(&t, &sink, partner.id, &email).await;
    let pair = pkce();
    let code = code_for(&t, &app, &cookie, &pair).await;
    // The member signed in 90 days less a minute ago.
    let now = Utc::now();
    let ninety_days_end = now + Duration::minutes(1);
    oauth_grant::Entity::update_many()
        .col_expr(
            oauth_grant::Column::AuthTime,
            Expr::value(ninety_days_end - Duration::days(90)),
        )
        .filter(oauth_grant::Column::ApiClientId.eq(app.id))
        .exec(&t.app.db)
        .await
        .unwrap();
    let (status, first) = exchange(&t, &app, &code, &pair.verifier).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = token_request(
        &t,
        &app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(t.get("/v1/me", access).await.status, 200);

    // Six minutes on: the code and both refresh tokens have ended, the access token
    // has not (it lives until now + 15 minutes).
    let report = coalition_app::jobs::run(&t.app, "forget-sign-ins", now + Duration::minutes(6))
        .await
        .unwrap();
    assert_eq!(report["grants"], 0, "{report}");
    let me = t.get("/v1/me", access).await;
    assert_eq!(me.status, 200, "a live access token: {:?}", me.body);

    // Once the access token has ended too, nothing of the grant is kept.
    let report = coalition_app::jobs::run(&t.app, "forget-sign-ins", now + Duration::minutes(16))
        .await
        .unwrap();
    assert_eq!(
        (&report["refresh_tokens"], &report["grants"]),
        (&json!(2), &json!(1)),
        "{report}"
    );
}

/// Pins that the job leaves a request counter alone while its window runs (deleting it
/// would restart the count and lift the limit early), and that once the window ended
/// and the job took the counter, requests are counted afresh.
#[tokio::test]
async fn the_job_never_lifts_a_running_sign_in_limit() {
    use crate::support::portal::{Browser, Via};
    let t = spawn_app_with_settings(&[("COALITION_SIGNIN_CODES_PER_ADDRESS", "2")]).await;
    let programme = t.programme("Limit Coalition").await;
    let partner = t.partner(&programme, "Limit Gym", "1").await;
    let via = Via::Partner(partner.id);
    let ann = format!("limit-{}@example.org", random_letters());
    let mut browser = Browser::new(&t);
    let before = Utc::now();
    assert_eq!(browser.request_code(via, &ann).await.status, 200);
    assert_eq!(browser.request_code(via, &ann).await.status, 200);
    assert_eq!(browser.request_code(via, &ann).await.status, 429);
    let after = Utc::now();

    // A second before the window (opened at the first request) ends: nothing goes.
    let window = Duration::minutes(15);
    let report = coalition_app::jobs::run(
        &t.app,
        "forget-sign-ins",
        before + window - Duration::seconds(1),
    )
    .await
    .unwrap();
    assert_eq!(report["request_counters"], 0, "{report}");
    assert_eq!(browser.request_code(via, &ann).await.status, 429);

    // Once it ended, the counters (address and source) go, and counting starts over.
    let report = coalition_app::jobs::run(&t.app, "forget-sign-ins", after + window)
        .await
        .unwrap();
    assert_eq!(report["request_counters"], 2, "{report}");
    assert_eq!(browser.request_code(via, &ann).await.status, 200);
    assert_eq!(browser.request_code(via, &ann).await.status, 200);
    assert_eq!(browser.request_code(via, &ann).await.status, 429);
}
