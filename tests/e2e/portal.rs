//! The member portal over HTTP: sign-in by a code read from a real SMTP delivery
//! (support::smtp), sessions, CSRF, languages, and the pages with each member's own
//! data only. Cookies are handled by hand (support::portal::Browser).

use crate::support::portal::{Browser, Via};
use crate::support::smtp::SmtpSink;
use crate::support::*;
use coalition_store::portal::member_login_code;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

struct World {
    app: TestApp,
    sink: SmtpSink,
    programme: Programme,
    gym: Partner,
}

async fn world_with(settings: &[(&str, &str)]) -> World {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let mut all = vec![("COALITION_SMTP_URL", url.as_str())];
    all.extend_from_slice(settings);
    let app = spawn_app_with_settings(&all).await;
    let programme = app.programme("Coalition").await;
    let gym = app.partner(&programme, "Iron Gym", "1").await;
    World {
        app,
        sink,
        programme,
        gym,
    }
}

async fn world() -> World {
    world_with(&[]).await
}

fn email(tag: &str) -> String {
    format!("{tag}-{}@example.org", random_letters())
}

#[tokio::test]
async fn a_member_signs_in_with_the_mailed_code_and_signs_out() {
    let w = world().await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let mut browser = Browser::new(&w.app);
    let via = Via::Partner(w.gym.id);

    // Not signed in: the portal sends her to the sign-in, coming back afterwards.
    let home = browser.get("/portal/history").await;
    assert_eq!(home.status, 303);
    assert_eq!(
        home.location(),
        Some("/portal/sign-in?next=%2Fportal%2Fhistory")
    );

    let form = browser
        .get(&format!("/portal/sign-in?partner={}", w.gym.id))
        .await;
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains("Iron Gym"),
        "the partner's link brands the page"
    );
    assert!(form.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));

    let seen = w.sink.messages_to(&ann).len();
    let page = browser.request_code(via, &ann.to_uppercase()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.element("code-sent").is_some());
    let code = w.sink.next_code_for(&ann, seen).await;
    let mail = w.sink.messages_to(&ann).pop().unwrap();
    assert!(mail.data.contains("Iron Gym"), "{}", mail.data);

    let done = browser.submit_code(via, &ann, &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), Some("/portal"));
    let set_cookie: Vec<&str> = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session_cookie = set_cookie
        .iter()
        .find(|c| c.starts_with("coalition_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }
    assert!(!session_cookie.contains("Secure"), "plain http here");
    let session = browser.session().unwrap().to_owned();
    assert_eq!(session.len(), 64);

    let home = browser.get("/portal").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.headers["cache-control"], "no-store");

    // The same code works once.
    let mut other = Browser::new(&w.app);
    other.request_code(via, &email("nobody")).await;
    let again = other.submit_code(via, &ann, &code).await;
    assert_eq!(again.status, 422);
    assert!(other.session().is_none());

    // Sign-out needs the form's token; then the old cookie opens nothing.
    let csrf = home.csrf().expect("the sign-out form's token");
    let refused = browser.post("/portal/sign-out", &[("csrf", "wrong")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(browser.get("/portal").await.status, 200, "still signed in");
    let out = browser.post("/portal/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(browser.session().is_none(), "the cookie is cleared");
    let mut replay = Browser::new(&w.app);
    replay.cookies.insert("coalition_session".into(), session);
    let after = replay.get("/portal").await;
    assert_eq!(after.status, 303);
    assert!(after
        .location()
        .unwrap()
        .starts_with("/portal/sign-in?next="));
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let w = world().await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let mut browser = Browser::new(&w.app);
    let via = Via::Partner(w.gym.id);
    let seen = w.sink.messages_to(&ann).len();
    browser.request_code(via, &ann).await;
    let code = w.sink.next_code_for(&ann, seen).await;
    let csrf = browser.cookies["coalition_csrf"].clone();
    let gym = w.gym.id.to_string();
    let done = browser
        .post_with(
            "/portal/sign-in/code",
            &[
                ("email", &ann),
                ("code", &code),
                ("csrf", &csrf),
                ("partner", &gym),
                ("next", "//evil.example/x"),
            ],
            &[("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(done.status, 303);
    assert_eq!(
        done.location(),
        Some("/portal"),
        "only local paths are followed"
    );
    let cookie = done.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // Plain http without the header: no Secure (the browser would drop the cookie).
    let mut plain = Browser::new(&w.app);
    plain.sign_in(&w.sink, via, &ann).await;
    let page = plain.get("/portal/lang?set=ro&next=/portal").await;
    let cookie = page.headers["set-cookie"].to_str().unwrap();
    assert!(!cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn behind_a_proxy_that_does_not_say_https_an_https_public_url_makes_cookies_secure() {
    let w = world_with(&[("COALITION_PUBLIC_URL", "https://rewards.example.org")]).await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let mut browser = Browser::new(&w.app);
    let via = Via::Partner(w.gym.id);
    let form = browser
        .get(&format!("/portal/sign-in?partner={}", w.gym.id))
        .await;
    let csrf_cookie = form.headers["set-cookie"].to_str().unwrap();
    assert!(csrf_cookie.contains("; Secure"), "{csrf_cookie}");
    let seen = w.sink.messages_to(&ann).len();
    browser.request_code(via, &ann).await;
    let code = w.sink.next_code_for(&ann, seen).await;
    let done = browser.submit_code(via, &ann, &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let session_cookie = done.headers["set-cookie"].to_str().unwrap();
    assert!(
        session_cookie.starts_with("coalition_session=") && session_cookie.contains("; Secure"),
        "{session_cookie}"
    );
    let lang = browser.get("/portal/lang?set=ro&next=/portal").await;
    assert!(lang.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

#[tokio::test]
async fn an_unknown_address_gets_the_same_answer_and_no_mail() {
    let w = world().await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let nobody = email("nobody");
    let via = Via::Partner(w.gym.id);
    let mut browser = Browser::new(&w.app);
    let known = browser.request_code(via, &ann).await;
    let unknown = browser.request_code(via, &nobody).await;
    assert_eq!((known.status, unknown.status), (200, 200));
    assert_eq!(
        known.body.replace(&ann, "ADDRESS"),
        unknown.body.replace(&nobody, "ADDRESS"),
        "the page does not tell an enrolled address from another"
    );
    w.sink.wait_for(&ann, 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(w.sink.messages_to(&nobody).is_empty());
    // A made-up code for the unknown address: the same refusal as a wrong one.
    let wrong_unknown = browser.submit_code(via, &nobody, "123456").await;
    assert_eq!(wrong_unknown.status, 422);
    assert!(wrong_unknown.element("code-error").is_some());
}

#[tokio::test]
async fn five_wrong_codes_kill_the_code_and_a_new_one_works() {
    let w = world().await;
    let ann = email("ann");
    let (ann_id, _) = w.app.member_with_card(&w.gym, &ann).await;
    let via = Via::Partner(w.gym.id);
    let mut browser = Browser::new(&w.app);
    let seen = w.sink.messages_to(&ann).len();
    browser.request_code(via, &ann).await;
    let code = w.sink.next_code_for(&ann, seen).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        let page = browser.submit_code(via, &ann, wrong).await;
        assert_eq!(page.status, 422);
        assert!(page.element("code-error").is_some());
    }
    let late = browser.submit_code(via, &ann, &code).await;
    assert_eq!(
        late.status, 422,
        "the right code after 5 wrong ones is refused"
    );
    assert!(browser.session().is_none());
    let programme_id = w.programme.id;
    let member_id: Uuid = ann_id.parse().unwrap();
    assert_eq!(
        coalition_app::signin::live_codes(&w.app.app, programme_id, member_id)
            .await
            .unwrap(),
        1,
        "the dead code is still there until replaced"
    );
    // A new code replaces it and works.
    let seen = w.sink.messages_to(&ann).len();
    browser.request_code(via, &ann).await;
    let fresh = w.sink.next_code_for(&ann, seen).await;
    let done = browser.submit_code(via, &ann, &fresh).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(browser.session().is_some());
}

#[tokio::test]
async fn a_new_code_replaces_the_old_and_an_expired_code_is_refused() {
    let w = world().await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let via = Via::Partner(w.gym.id);
    let mut browser = Browser::new(&w.app);
    let seen = w.sink.messages_to(&ann).len();
    browser.request_code(via, &ann).await;
    let first = w.sink.next_code_for(&ann, seen).await;
    browser.request_code(via, &ann).await;
    let second = w.sink.next_code_for(&ann, seen + 1).await;
    if first != second {
        let old = browser.submit_code(via, &ann, &first).await;
        assert_eq!(old.status, 422, "the replaced code is dead");
    }
    // Ten minutes later (the code's expiry moved back), the code is refused.
    member_login_code::Entity::update_many()
        .col_expr(
            member_login_code::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .filter(member_login_code::Column::ProgrammeId.eq(w.programme.id))
        .exec(&w.app.app.db)
        .await
        .unwrap();
    let expired = browser.submit_code(via, &ann, &second).await;
    assert_eq!(expired.status, 422);
    assert!(browser.session().is_none());
}

#[tokio::test]
async fn code_requests_are_limited_per_address_and_per_source() {
    let w = world_with(&[
        ("COALITION_SIGNIN_CODES_PER_ADDRESS", "2"),
        ("COALITION_SIGNIN_CODES_PER_SOURCE", "4"),
    ])
    .await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let via = Via::Partner(w.gym.id);
    let mut browser = Browser::new(&w.app);
    assert_eq!(browser.request_code(via, &ann).await.status, 200);
    assert_eq!(browser.request_code(via, &ann).await.status, 200);
    let limited = browser.request_code(via, &ann).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.headers.get("retry-after").is_some());
    assert!(limited.element("signin-error").is_some());
    // The same for an address that is not enrolled: the limit tells nothing either.
    let nobody = email("nobody");
    assert_eq!(browser.request_code(via, &nobody).await.status, 200);
    // 5 requests from this source now: over its limit of 4, whatever the address.
    let other = email("other");
    assert_eq!(browser.request_code(via, &other).await.status, 429);
    // Only 2 codes went out to ann: wait for both (delivery runs after the answer), then
    // give a third the time to arrive if one had been sent.
    w.sink.wait_for(&ann, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(w.sink.messages_to(&ann).len(), 2);
}

#[tokio::test]
async fn posts_without_the_form_token_or_from_another_site_are_refused() {
    let w = world().await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let gym = w.gym.id.to_string();
    let mut browser = Browser::new(&w.app);
    // No token at all (and no cookie yet).
    let bare = browser
        .post("/portal/sign-in", &[("email", &ann), ("partner", &gym)])
        .await;
    assert_eq!(bare.status, 403);
    assert!(bare.element("message-title").is_some());
    assert!(bare.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    // A cookie but a different field.
    browser.get(&format!("/portal/sign-in?partner={gym}")).await;
    let mismatch = browser
        .post(
            "/portal/sign-in",
            &[
                ("email", &ann),
                ("partner", &gym),
                ("csrf", "0".repeat(64).as_str()),
            ],
        )
        .await;
    assert_eq!(mismatch.status, 403);
    // The right token from another site's page.
    let token = browser.cookies["coalition_csrf"].clone();
    let foreign = browser
        .post_with(
            "/portal/sign-in",
            &[("email", &ann), ("partner", &gym), ("csrf", &token)],
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(foreign.status, 403);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        w.sink.messages_to(&ann).is_empty(),
        "no refused request sent a code"
    );
    // The signed-in forms need the session's token.
    let via = Via::Partner(w.gym.id);
    browser.sign_in(&w.sink, via, &ann).await;
    let login_token = browser.cookies["coalition_csrf"].clone();
    let out = browser
        .post("/portal/sign-out", &[("csrf", &login_token)])
        .await;
    assert_eq!(out.status, 403, "the sign-in's token is not the session's");
    let none = browser.post("/portal/sign-out", &[]).await;
    assert_eq!(none.status, 403);
    assert_eq!(browser.get("/portal").await.status, 200);
}

#[tokio::test]
async fn the_sign_in_speaks_english_and_romanian() {
    let w = world().await;
    let mut browser = Browser::new(&w.app);
    let en = browser
        .get(&format!("/portal/sign-in?partner={}", w.gym.id))
        .await;
    assert!(en.body.contains("<html lang=\"en\">") && en.body.contains("Send me a code"));
    browser.accept_language = Some("ro-RO,ro;q=0.9,en;q=0.5".into());
    let ro = browser
        .get(&format!("/portal/sign-in?partner={}", w.gym.id))
        .await;
    assert!(
        ro.body.contains("<html lang=\"ro\">") && ro.body.contains("Trimite-mi un cod"),
        "{}",
        ro.body
    );
    // The switch: a cookie that wins over Accept-Language.
    let switch = ro.element("lang-switch");
    assert_eq!(switch.as_deref(), Some("English"));
    let back = browser
        .get("/portal/lang?set=en&next=%2Fportal%2Fsign-in")
        .await;
    assert_eq!(back.status, 303);
    assert_eq!(back.location(), Some("/portal/sign-in"));
    assert_eq!(browser.cookies.get("lang").map(String::as_str), Some("en"));
    let en_again = browser
        .get(&format!("/portal/sign-in?partner={}", w.gym.id))
        .await;
    assert!(en_again.body.contains("Send me a code"));
    // Elsewhere than a local path, the switch goes home.
    let away = browser
        .get("/portal/lang?set=ro&next=https%3A%2F%2Fevil.example")
        .await;
    assert_eq!(away.location(), Some("/portal"));
    // A path with a space or UTF-8 in it is followed, encoded (never a 500).
    let odd = browser
        .get("/portal/lang?set=en&next=%2Fportal%2F%C3%A4%20x")
        .await;
    assert_eq!(odd.status, 303);
    assert_eq!(odd.location(), Some("/portal/%C3%A4%20x"));
    // The stylesheet is served by the binary.
    let css = browser.get("/portal/static/portal.css").await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test]
async fn the_programme_comes_from_the_partner_the_programme_or_the_only_one() {
    let w = world().await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    // One programme on the server: no partner or programme needed.
    let mut browser = Browser::new(&w.app);
    browser.sign_in(&w.sink, Via::Nothing, &ann).await;
    let mut named = Browser::new(&w.app);
    named
        .sign_in(&w.sink, Via::Programme(w.programme.id), &ann)
        .await;
    // With two programmes, the page asks for the partner's link.
    let other = w.app.programme("Other").await;
    let mut lost = Browser::new(&w.app);
    let page = lost.get("/portal/sign-in").await;
    assert_eq!(page.status, 404);
    assert!(page.body.contains("partner"), "{}", page.body);
    // A partner of one programme does not sign in to another.
    let mixed = lost
        .get(&format!(
            "/portal/sign-in?partner={}&programme={}",
            w.gym.id, other.id
        ))
        .await;
    assert_eq!(mixed.status, 404);
    let junk = lost.get("/portal/sign-in?partner=not-a-uuid").await;
    assert_eq!(junk.status, 404);
}

#[tokio::test]
async fn the_pages_show_her_points_tier_history_partners_and_cards_in_both_languages() {
    let w = world().await;
    let ann = email("ann");
    let (_, card) = w.app.member_with_card(&w.gym, &ann).await;
    let cafe = w.app.partner(&w.programme, "Corner Cafe", "2").await;
    w.app.purchase(&w.gym, &card, "40.00", 0).await;
    let refunded = w.app.purchase(&cafe, &card, "10.00", 0).await;
    let purchase_id = refunded["id"].as_str().unwrap().to_owned();
    w.app
        .post_moving(
            &format!("/v1/purchases/{purchase_id}/refunds"),
            &cafe.token,
            serde_json::json!({"amount": {"amount": "10.00", "currency": "EUR"}}),
        )
        .await
        .expect(201);
    let mut browser = Browser::new(&w.app);
    browser.sign_in(&w.sink, Via::Partner(w.gym.id), &ann).await;

    let home = browser.get("/portal").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.element("points").as_deref(), Some("40"));
    assert_eq!(home.element("points-value").as_deref(), Some("0.40 EUR"));
    assert!(home.element("tier").is_some());
    assert!(home.element("expiring").is_some());
    assert!(
        home.body.contains("Iron Gym"),
        "branded by the partner she came through"
    );
    for id in [
        "nav-home",
        "nav-history",
        "nav-partners",
        "nav-offers",
        "nav-cards",
        "nav-profile",
        "sign-out",
        "lang-switch",
    ] {
        assert!(home.body.contains(&format!("id=\"{id}\"")), "{id} missing");
    }

    let history = browser.get("/portal/history?limit=2").await;
    assert_eq!(history.status, 200, "{}", history.body);
    assert_eq!(history.body.matches("class=\"history-row\"").count(), 2);
    assert!(
        history
            .body
            .contains(&format!("href=\"#purchase-{purchase_id}\"")),
        "the refund links its purchase"
    );
    let next = history
        .body
        .split("rel=\"next\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .map(|href| href.split('"').next().unwrap().replace("&amp;", "&"))
        .expect("a next page");
    let older = browser.get(&next).await;
    assert_eq!(older.status, 200, "{next}: {}", older.body);
    assert!(older.body.contains("class=\"history-row\""));
    assert!(
        older.body.contains("Why these points"),
        "an award shows its breakdown"
    );
    let bad_cursor = browser.get("/portal/history?cursor=garbage").await;
    assert_eq!(bad_cursor.status, 400);

    let partners = browser.get("/portal/partners").await;
    assert_eq!(
        partners.body.matches("class=\"panel partner-row\"").count(),
        2
    );
    assert!(partners.body.contains("Corner Cafe"));

    let offers = browser.get("/portal/offers").await;
    assert_eq!(offers.status, 200);
    assert!(offers.element("offers-empty").is_some());

    let cards = browser.get("/portal/cards").await;
    assert_eq!(cards.body.matches("card-row").count(), 1);
    assert!(cards.body.contains(&card[card.len() - 4..]));
    assert!(!cards.body.contains(&card), "never the whole number");

    let profile = browser.get("/portal/profile").await;
    assert_eq!(
        profile.element("profile-email").as_deref(),
        Some(ann.as_str())
    );

    // The same pages in Romanian, by the switch.
    let switched = browser.get("/portal/lang?set=ro&next=%2Fportal").await;
    assert_eq!(switched.location(), Some("/portal"));
    let ro = browser.get("/portal").await;
    assert!(
        ro.body.contains("<html lang=\"ro\">") && ro.body.contains("Recompensele tale"),
        "{}",
        ro.body
    );
    for path in [
        "/portal/history",
        "/portal/partners",
        "/portal/offers",
        "/portal/cards",
        "/portal/profile",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.body.contains("<html lang=\"ro\">"), "{path}");
        assert!(page.body.contains("Ieșire"), "{path} in Romanian");
    }
    // Unknown portal paths are an HTML 404.
    let missing = browser.get("/portal/nothing-here").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_session_shows_only_its_own_members_data() {
    let w = world().await;
    let (ann, bob) = (email("ann"), email("bob"));
    let (_, ann_card) = w.app.member_with_card(&w.gym, &ann).await;
    let (_, bob_card) = w.app.member_with_card(&w.gym, &bob).await;
    w.app.purchase(&w.gym, &ann_card, "12.00", 0).await;
    w.app.purchase(&w.gym, &bob_card, "77.00", 0).await;
    let mut ann_browser = Browser::new(&w.app);
    ann_browser
        .sign_in(&w.sink, Via::Partner(w.gym.id), &ann)
        .await;
    let mut bob_browser = Browser::new(&w.app);
    bob_browser
        .sign_in(&w.sink, Via::Partner(w.gym.id), &bob)
        .await;

    let home = ann_browser.get("/portal").await;
    assert_eq!(home.element("points").as_deref(), Some("12"));
    let profile = ann_browser.get("/portal/profile").await;
    assert!(profile.body.contains(&ann) && !profile.body.contains(&bob));
    let cards = ann_browser.get("/portal/cards").await;
    assert!(
        !cards.body.contains(&bob_card[bob_card.len() - 4..])
            || ann_card.ends_with(&bob_card[bob_card.len() - 4..])
    );
    // Bob's card id in Ann's session: not found, and the card stays active.
    let bob_cards = bob_browser.get("/portal/cards").await;
    let bob_card_id = bob_cards
        .body
        .split("id=\"card-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let peek = ann_browser
        .get(&format!("/portal/cards/{bob_card_id}/block"))
        .await;
    assert_eq!(peek.status, 404);
    let csrf = home.csrf().unwrap();
    let attempt = ann_browser
        .post(
            &format!("/portal/cards/{bob_card_id}/block"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(attempt.status, 404);
    w.app.purchase(&w.gym, &bob_card, "1.00", 0).await;
    // Bob's form token does not work in Ann's session.
    let bob_csrf = bob_browser.get("/portal").await.csrf().unwrap();
    assert_ne!(bob_csrf, csrf);
    let crossed = ann_browser
        .post("/portal/sign-out", &[("csrf", &bob_csrf)])
        .await;
    assert_eq!(crossed.status, 403);
    // A made-up or malformed cookie is no session.
    let mut forger = Browser::new(&w.app);
    forger
        .cookies
        .insert("coalition_session".into(), "0".repeat(64));
    assert_eq!(forger.get("/portal").await.status, 303);
    forger
        .cookies
        .insert("coalition_session".into(), "%00'; DROP".into());
    assert_eq!(forger.get("/portal").await.status, 303);
}

#[tokio::test]
async fn a_blocked_card_is_refused_at_the_till() {
    let w = world().await;
    let ann = email("ann");
    let (_, card) = w.app.member_with_card(&w.gym, &ann).await;
    let mut browser = Browser::new(&w.app);
    browser.sign_in(&w.sink, Via::Partner(w.gym.id), &ann).await;
    let cards = browser.get("/portal/cards").await;
    let card_id = cards
        .body
        .split("id=\"card-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let confirm = browser.get(&format!("/portal/cards/{card_id}/block")).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.element("confirm-block").is_some());
    // Without the token: refused, and the card still works.
    let forged = browser
        .post(&format!("/portal/cards/{card_id}/block"), &[])
        .await;
    assert_eq!(forged.status, 403);
    w.app.purchase(&w.gym, &card, "5.00", 0).await;
    let csrf = confirm.csrf().unwrap();
    let done = browser
        .post(
            &format!("/portal/cards/{card_id}/block"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status, 303);
    let after = browser.get(done.location().unwrap()).await;
    assert!(after.element("card-blocked").is_some());
    assert!(after.body.contains("data-status=\"blocked\""));
    let body = serde_json::json!({"card_number": card, "amount": {"amount": "5.00", "currency": "EUR"}, "external_ref": Uuid::new_v4().to_string(), "redeem_points": 0});
    w.app
        .post_moving("/v1/purchases", &w.gym.token, body)
        .await
        .expect_problem(409, "card_blocked");
}

#[tokio::test]
async fn marketing_consent_and_erasure_from_the_profile() {
    let w = world().await;
    let ann = email("ann");
    let (ann_id, card) = w.app.member_with_card(&w.gym, &ann).await;
    w.app.purchase(&w.gym, &card, "25.00", 0).await;
    let mut browser = Browser::new(&w.app);
    let session = browser.sign_in(&w.sink, Via::Partner(w.gym.id), &ann).await;
    let mut second = Browser::new(&w.app);
    second.sign_in(&w.sink, Via::Partner(w.gym.id), &ann).await;

    let profile = browser.get("/portal/profile").await;
    let csrf = profile.csrf().unwrap();
    let on = browser
        .post(
            "/portal/profile/marketing",
            &[("csrf", &csrf), ("marketing", "on")],
        )
        .await;
    assert_eq!(on.status, 303);
    let member = w
        .app
        .get(&format!("/v1/members/{ann_id}"), &w.programme.admin)
        .await
        .expect(200);
    assert_eq!(member["consent_marketing"], true);
    let bad = browser
        .post(
            "/portal/profile/marketing",
            &[("csrf", &csrf), ("marketing", "maybe")],
        )
        .await;
    assert_eq!(bad.status, 400);

    // The confirmation step first; a POST without confirm=yes goes back to it.
    let step = browser.get("/portal/profile/erase").await;
    assert!(step.element("erase-confirm").is_some());
    let unconfirmed = browser
        .post("/portal/profile/erase", &[("csrf", &csrf)])
        .await;
    assert_eq!(unconfirmed.status, 303);
    assert_eq!(unconfirmed.location(), Some("/portal/profile/erase"));
    let no_token = browser
        .post("/portal/profile/erase", &[("confirm", "yes")])
        .await;
    assert_eq!(no_token.status, 403);
    let erased = browser
        .post(
            "/portal/profile/erase",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert!(erased.element("message-title").is_some());
    assert!(browser.session().is_none(), "the cookie is cleared");

    let member = w
        .app
        .get(&format!("/v1/members/{ann_id}"), &w.programme.admin)
        .await
        .expect(200);
    assert_eq!(
        (&member["erased"], &member["email"]),
        (&serde_json::json!(true), &serde_json::Value::Null)
    );
    assert_eq!(
        crate::expiry::breakage(&w.app.app.db, w.programme.id).await,
        25
    );
    assert_accounts_consistent(&w.app.app.db, w.programme.id).await;
    // Every session of hers is over, and her address gets no code any more.
    let mut replay = Browser::new(&w.app);
    replay.cookies.insert("coalition_session".into(), session);
    assert_eq!(replay.get("/portal").await.status, 303);
    assert_eq!(second.get("/portal").await.status, 303);
    let page = replay.request_code(Via::Partner(w.gym.id), &ann).await;
    assert_eq!(page.status, 200, "the same answer as for anyone");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        w.sink.messages_to(&ann).len(),
        2,
        "only the two sign-ins' codes"
    );
}

#[tokio::test]
async fn limits_codes_and_sessions_hold_across_two_servers_on_one_database() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let database = fresh_database_url().await;
    // With Redis, both on one Redis prefix too: sessions live there.
    let prefix = format!("coalition-test-{}:", Uuid::new_v4().simple());
    let settings = [
        ("COALITION_SMTP_URL", url.as_str()),
        ("DATABASE_URL", database.as_str()),
        ("COALITION_SIGNIN_CODES_PER_ADDRESS", "2"),
        ("COALITION_REDIS_PREFIX", prefix.as_str()),
    ];
    let one = spawn_app_with_settings(&settings).await;
    let two = spawn_app_with_settings(&settings).await;
    let programme = one.programme("Coalition").await;
    let gym = one.partner(&programme, "Iron Gym", "1").await;
    let ann = email("ann");
    one.member_with_card(&gym, &ann).await;
    let via = Via::Partner(gym.id);

    // A code asked for on one server signs in on the other; the session works on both.
    let mut on_one = Browser::new(&one);
    let seen = sink.messages_to(&ann).len();
    assert_eq!(on_one.request_code(via, &ann).await.status, 200);
    let code = sink.next_code_for(&ann, seen).await;
    let mut on_two = Browser::new(&two);
    on_two.request_code(via, &email("nobody")).await; // only for its csrf cookie
    let done = on_two.submit_code(via, &ann, &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let session = on_two.session().unwrap().to_owned();
    let mut back_on_one = Browser::new(&one);
    back_on_one
        .cookies
        .insert("coalition_session".into(), session);
    assert_eq!(back_on_one.get("/portal").await.status, 200);

    // The per-address limit (2) counts requests on both servers. (A signed-in browser
    // is sent on from the sign-in page: a fresh one asks.)
    let mut fresh_on_two = Browser::new(&two);
    assert_eq!(fresh_on_two.request_code(via, &ann).await.status, 200);
    assert_eq!(on_one.request_code(via, &ann).await.status, 429);
    assert_eq!(fresh_on_two.request_code(via, &ann).await.status, 429);

    // Signed out on one server, the session opens nothing on the other.
    let csrf = back_on_one.get("/portal").await.csrf().unwrap();
    let out = back_on_one
        .post("/portal/sign-out", &[("csrf", csrf.as_str())])
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(on_two.get("/portal").await.status, 303);
}

/// The log lines of a JSON log file, each as an object (its event's fields merged in).
fn log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|mut line| {
            if let Some(fields) = line.get("fields").cloned() {
                if let (Some(line), Some(fields)) = (line.as_object_mut(), fields.as_object()) {
                    line.extend(fields.clone());
                }
            }
            line
        })
        .collect()
}

#[tokio::test]
async fn without_smtp_the_development_mailer_writes_the_code_to_the_log() {
    let mut env = vec![
        ("DATABASE_URL", fresh_database_url().await),
        ("COALITION_DB_MAX_CONNECTIONS", "10".to_owned()),
        ("COALITION_JOBS_INTERVAL_SECONDS", "0".to_owned()),
        ("COALITION_LOG", "info".to_owned()),
        ("COALITION_LOG_FORMAT", "json".to_owned()),
    ];
    if let Some(redis_url) = test_redis_url() {
        env.push(("REDIS_URL", redis_url));
        env.push((
            "COALITION_REDIS_PREFIX",
            format!("coalition-test-{}:", Uuid::new_v4().simple()),
        ));
    }
    let path = std::env::temp_dir().join(format!("coalition-portal-log-{}.log", Uuid::new_v4()));
    let file = std::fs::File::create(&path).unwrap();
    let server = start_server_logging_to(&env, std::process::Stdio::from(file)).await;
    let t = spawn_client(&server.base);
    let programme = create_programme(&env, &t).await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    let ann = email("ann");
    t.member_with_card(&gym, &ann).await;

    let said = log_lines(&path);
    assert!(
        said.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("mail goes to the log"))),
        "serve says at start that mail goes to the log"
    );
    let mut browser = Browser::at(&server.base);
    let page = browser.request_code(Via::Nothing, &ann).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut code = None;
    for _ in 0..100 {
        code = log_lines(&path)
            .iter()
            .filter(|l| l["mailer"] == "development" && l["to"] == ann.as_str())
            .find_map(|l| crate::support::smtp::code_in(l["text"].as_str()?));
        if code.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let code = code.expect("the development mailer logged the code");
    let done = browser.submit_code(Via::Nothing, &ann, &code).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(browser.get("/portal").await.status, 200);
    // Nothing else secret reaches the log: not the session token, not the form token.
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(!log.contains(browser.session().unwrap()));
    assert!(!log.contains(browser.cookies["coalition_csrf"].as_str()));
    drop(server);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn home_shows_the_tier_the_spend_missing_for_the_next_and_expiring_points() {
    let sink = SmtpSink::start().await;
    let url = sink.url();
    let app = spawn_app_with_settings(&[("COALITION_SMTP_URL", url.as_str())]).await;
    let programme = app.programme_with_expiry(10).await;
    for (name, rank, spend) in [("Basic", 1, "0"), ("Gold", 2, "100.00")] {
        let body = serde_json::json!({
            "name": name, "rank": rank,
            "qualifying_spend": {"amount": spend, "currency": "EUR"},
            "discount_percent": "0", "earn_multiplier": "1",
        });
        app.post("/v1/tiers", &programme.admin, body)
            .await
            .expect(201);
    }
    let gym = app.partner(&programme, "Iron Gym", "1").await;
    let ann = email("ann");
    let (_, card) = app.member_with_card(&gym, &ann).await;
    app.purchase(&gym, &card, "40.00", 0).await;
    let mut browser = Browser::new(&app);
    browser.sign_in(&sink, Via::Partner(gym.id), &ann).await;
    let home = browser.get("/portal").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert_eq!(home.element("tier").as_deref(), Some("Basic"));
    assert_eq!(home.element("spend-12m").as_deref(), Some("40.00 EUR"));
    assert_eq!(home.element("missing").as_deref(), Some("60.00 EUR"));
    assert!(
        home.body
            .contains("id=\"tier-progress\" max=\"100.00\" value=\"40.00\""),
        "{}",
        home.body
    );
    assert_eq!(home.body.matches("class=\"expiring-row\"").count(), 1);
    assert!(home
        .body
        .contains("<strong class=\"expiring-points\">40</strong>"));
}

#[tokio::test]
async fn offers_show_the_treatment_groups_campaigns_and_never_a_control_group() {
    let w = world().await;
    let mut by_id = std::collections::HashMap::new();
    for i in 0..16 {
        let address = email(&format!("m{i}"));
        let (id, _) = w.app.member_with_card(&w.gym, &address).await;
        by_id.insert(id, address);
    }
    let ids: Vec<&str> = by_id.keys().map(String::as_str).collect();
    let ends = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let campaign = w
        .app
        .post(
            "/v1/campaigns",
            &w.programme.admin,
            serde_json::json!({
                "name": "Double points at the gym", "segment": {"kind": "members", "member_ids": ids},
                "reward": {"kind": "multiplier", "value": "2", "partner_ids": [w.gym.id]},
                "funder": {"kind": "operator"}, "budget_points": 100000, "ends_at": ends,
                "holdout_percent": 50,
            }),
        )
        .await
        .expect(201);
    let id = campaign["id"].as_str().unwrap();
    let first_of = |group: &'static str| {
        let app = &w.app;
        let admin = w.programme.admin.clone();
        async move {
            let page = app
                .get(
                    &format!("/v1/campaigns/{id}/members?group={group}&limit=100"),
                    &admin,
                )
                .await
                .expect(200);
            page["data"][0]["member_id"].as_str().map(str::to_owned)
        }
    };
    let treated = first_of("treatment").await.expect("someone is treated");
    let held_out = first_of("control").await.expect("someone is held out");

    let mut treated_browser = Browser::new(&w.app);
    treated_browser
        .sign_in(&w.sink, Via::Partner(w.gym.id), &by_id[&treated])
        .await;
    let offers = treated_browser.get("/portal/offers").await;
    assert_eq!(
        offers.body.matches("offer-row").count(),
        1,
        "{}",
        offers.body
    );
    assert!(offers.body.contains("Double points at the gym"));
    assert!(offers.body.contains("Iron Gym"), "where the offer applies");

    let mut control_browser = Browser::new(&w.app);
    control_browser
        .sign_in(&w.sink, Via::Partner(w.gym.id), &by_id[&held_out])
        .await;
    let none = control_browser.get("/portal/offers").await;
    assert!(none.element("offers-empty").is_some());
    assert!(
        !none.body.contains("Double points"),
        "a control group is never shown"
    );
    let home = control_browser.get("/portal").await;
    assert!(!home.body.contains("Double points") && !home.body.contains("control"));
}

#[tokio::test]
async fn sessions_end_when_idle_too_long_after_seven_days_and_when_the_operator_erases_her() {
    let w = world().await;
    let (ann, bob) = (email("ann"), email("bob"));
    w.app.member_with_card(&w.gym, &ann).await;
    let (bob_id, _) = w.app.member_with_card(&w.gym, &bob).await;
    let via = Via::Partner(w.gym.id);
    let mut idle = Browser::new(&w.app);
    idle.sign_in(&w.sink, via, &ann).await;
    let mut old = Browser::new(&w.app);
    old.sign_in(&w.sink, via, &ann).await;
    let mut erased = Browser::new(&w.app);
    erased.sign_in(&w.sink, via, &bob).await;
    let now = chrono::Utc::now();
    // 12 hours without a request.
    let idle_token = idle.session().unwrap().to_owned();
    age_session(&w, &idle_token, now - chrono::Duration::hours(12), None).await;
    // Used a minute ago, but signed in 7 days ago.
    let old_token = old.session().unwrap().to_owned();
    age_session(
        &w,
        &old_token,
        now - chrono::Duration::minutes(1),
        Some(now - chrono::Duration::seconds(1)),
    )
    .await;
    assert_eq!(idle.get("/portal").await.status, 303);
    assert_eq!(old.get("/portal").await.status, 303);
    // The operator erases Bob: his session opens nothing any more.
    assert_eq!(erased.get("/portal").await.status, 200);
    w.app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/members/{bob_id}"),
            Some(&w.programme.admin),
            None,
            None,
        )
        .await
        .expect(204);
    assert_eq!(erased.get("/portal").await.status, 303);
    let erased_token = erased.session().unwrap_or_default().to_owned();
    for token in [&idle_token, &old_token, &erased_token] {
        assert!(
            stored_session(&w, token).await.is_none(),
            "ended sessions are deleted when met"
        );
    }
}

fn session_hash(token: &str) -> String {
    use sha2::Digest;
    hex_of(&sha2::Sha256::digest(token.as_bytes()))
}

/// The Redis key of a session when the server keeps sessions in Redis.
fn session_key(w: &World, token: &str) -> Option<String> {
    w.app
        .redis_prefix
        .as_ref()
        .map(|prefix| format!("{prefix}session:{}", session_hash(token)))
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(test_redis_url().unwrap())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The stored row of a session, wherever the server keeps sessions.
async fn stored_session(w: &World, token: &str) -> Option<serde_json::Value> {
    use coalition_store::portal::member_session;
    if let Some(key) = session_key(w, token) {
        let json: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut redis_connection().await)
            .await
            .unwrap();
        return json.map(|j| serde_json::from_str(&j).unwrap());
    }
    member_session::Entity::find()
        .filter(member_session::Column::TokenHash.eq(session_hash(token)))
        .one(&w.app.app.db)
        .await
        .unwrap()
        .map(|row| serde_json::to_value(row).unwrap())
}

/// Moves a session's last use (and its absolute end) into the past.
async fn age_session(
    w: &World,
    token: &str,
    last_seen_at: chrono::DateTime<chrono::Utc>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) {
    use coalition_store::portal::member_session;
    if let Some(key) = session_key(w, token) {
        let mut row = stored_session(w, token).await.expect("a stored session");
        row["last_seen_at"] = serde_json::to_value(last_seen_at).unwrap();
        if let Some(end) = expires_at {
            row["expires_at"] = serde_json::to_value(end).unwrap();
        }
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(row.to_string())
            .arg("KEEPTTL")
            .query_async(&mut redis_connection().await)
            .await
            .unwrap();
        return;
    }
    let mut update = member_session::Entity::update_many()
        .col_expr(
            member_session::Column::LastSeenAt,
            Expr::value(last_seen_at),
        )
        .filter(member_session::Column::TokenHash.eq(session_hash(token)));
    if let Some(end) = expires_at {
        update = update.col_expr(member_session::Column::ExpiresAt, Expr::value(end));
    }
    update.exec(&w.app.app.db).await.unwrap();
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn while_redis_fails_a_session_is_an_error_page_not_a_sign_out() {
    let Some((_, proxy)) = proxied_redis().await else {
        return;
    };
    let through_proxy = format!("redis://{}", proxy.addr);
    let w = world_with(&[("REDIS_URL", through_proxy.as_str())]).await;
    let ann = email("ann");
    w.app.member_with_card(&w.gym, &ann).await;
    let mut browser = Browser::new(&w.app);
    browser.sign_in(&w.sink, Via::Partner(w.gym.id), &ann).await;
    assert_eq!(browser.get("/portal").await.status, 200);
    assert!(session_key(&w, browser.session().unwrap()).is_some());

    proxy.cut();
    let during = browser.get("/portal").await;
    assert_eq!(during.status, 500, "{}", during.body);
    assert!(during.element("message-title").is_some());
    assert!(browser.session().is_some(), "the cookie is kept");

    proxy.restore();
    let mut status = 0;
    for _ in 0..50 {
        status = browser.get("/portal").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the session is back with Redis");
}
