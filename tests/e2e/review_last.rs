//! Hostile review of the last changes: `auth_time` from the portal session, `max_age`
//! on /oauth/authorize, `Secure` portal cookies from an https public URL, and the
//! forget-sign-ins indexes.

use crate::support::oidc::{
    authorize, exchange, partner_app, pkce, request_params, see_other, sign_in_from,
    spawn_app_with_mail, PartnerApp,
};
use crate::support::smtp::SmtpSink;
use crate::support::*;

async fn setup() -> (TestApp, SmtpSink, Partner, PartnerApp) {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Last Coalition").await;
    let partner = t.partner(&programme, "Last Gym", "1").await;
    let app = partner_app(&t, &programme, &partner).await;
    (t, sink, partner, app)
}

/// `max_age=0` asks for a sign-in made for this very request. A member who is not
/// signed in is sent to the portal's sign-in, enters her code and comes straight back:
/// that sign-in is the one the app asked for, so the app gets a code — not
/// `login_required` after she did everything asked of her (and every retry after it).
#[tokio::test]
async fn max_age_zero_is_met_by_the_sign_in_it_sent_the_member_through() {
    let (t, sink, partner, app) = setup().await;
    enrol(&t, &partner, "zero@example.com").await;
    let pair = pkce();
    let mut params = request_params(&app, &pair);
    params.push(("max_age", "0"));
    let first = authorize(&t, None, &params).await;
    let (location, _) = see_other(&first);
    assert!(location.starts_with("/portal/sign-in"), "{location}");
    let (back_to, cookie) = sign_in_from(&t, &sink, &location, "zero@example.com").await;
    assert!(back_to.starts_with("/oauth/authorize?"), "{back_to}");
    let back = crate::support::oidc::browser()
        .get(format!("{}{back_to}", t.base))
        .header("cookie", format!("coalition_session={cookie}"))
        .send()
        .await
        .unwrap();
    let (location, query) = see_other(&back);
    assert!(location.starts_with(&app.redirect_uri), "{location}");
    let code = query
        .get("code")
        .unwrap_or_else(|| panic!("no code after a fresh sign-in: {location}"));
    let (status, tokens) = exchange(&t, &app, code, &pair.verifier).await;
    assert_eq!(status, 200, "{tokens}");
}

/// RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they were
/// omitted from the request." A client library that always writes `max_age=` gets a
/// code, not `invalid_request`.
#[tokio::test]
async fn an_empty_max_age_is_no_max_age() {
    let (t, sink, partner, app) = setup().await;
    enrol(&t, &partner, "empty@example.com").await;
    let cookie = crate::support::oidc::sign_in(&t, &sink, partner.id, "empty@example.com").await;
    let pair = pkce();
    let mut params = request_params(&app, &pair);
    params.push(("max_age", ""));
    let (location, query) = see_other(&authorize(&t, Some(&cookie), &params).await);
    assert!(location.starts_with(&app.redirect_uri), "{location}");
    assert!(query.contains_key("code"), "{location}");
    // Still a bad request: a value that is no number of seconds.
    let mut params = request_params(&app, &pair);
    params.push(("max_age", "-1"));
    let (_, query) = see_other(&authorize(&t, Some(&cookie), &params).await);
    assert_eq!(query.get("error").map(String::as_str), Some("invalid_request"));
}
