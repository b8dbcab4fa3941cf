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
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("invalid_request")
    );
}

/// Pins: with an https public URL and no `X-Forwarded-Proto`, the sign-out's clearing
/// cookie carries the same Path and Secure as the session cookie it clears (a browser
/// deletes only the cookie of that name and path, and a Secure cookie is overwritten
/// only by a Secure one).
#[tokio::test]
async fn behind_an_https_public_url_sign_out_clears_the_cookie_it_set() {
    use crate::support::portal::{Browser, Via};
    let sink = SmtpSink::start().await;
    let t = spawn_app_with_settings(&[
        ("COALITION_SMTP_URL", sink.url().as_str()),
        ("COALITION_PUBLIC_URL", "https://rewards.example.org"),
    ])
    .await;
    let programme = t.programme("Secure Coalition").await;
    let partner = t.partner(&programme, "Secure Gym", "1").await;
    enrol(&t, &partner, "sec@example.com").await;
    let mut browser = Browser::new(&t);
    let via = Via::Partner(partner.id);
    let seen = sink.messages_to("sec@example.com").len();
    browser.request_code(via, "sec@example.com").await;
    let code = sink.next_code_for("sec@example.com", seen).await;
    let done = browser.submit_code(via, "sec@example.com", &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let attributes = |set_cookie: &str| {
        let mut kept: Vec<String> = set_cookie
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.starts_with("Max-Age"))
            .collect();
        kept.sort();
        kept
    };
    let set = done.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("coalition_session="), "{set}");
    let home = browser.get("/portal").await;
    let csrf = home.csrf().expect("the sign-out form's token");
    let out = browser.post("/portal/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303, "{}", out.body);
    let cleared = out.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cleared.starts_with("coalition_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(attributes(&cleared), attributes(&set), "{set} / {cleared}");
    assert!(attributes(&set).contains(&"Secure".to_owned()), "{set}");
    assert!(attributes(&set).contains(&"Path=/".to_owned()), "{set}");
}
