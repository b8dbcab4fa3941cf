//! The member portal in a real browser (headless chromium through WebDriver, see
//! `browser.rs`): a member signs in with the code from the mail the server sent to a
//! loopback SMTP sink, and uses the pages as a person would — on a phone-sized screen and
//! a desktop one, by mouse and by keyboard. Every page visited is saved as a screenshot
//! under `target/screenshots/<test>/`.
//!
//! Points and cards are made through the partner API (as a till would), and what the
//! browser shows is checked against the API.

use crate::browser::{browser_slot, Browser, BrowserSlot, Screen};
use crate::support::smtp::SmtpSink;
use crate::support::*;
use fantoccini::key::Key;
use reqwest::redirect::Policy;
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

/// A server whose mail goes to a loopback SMTP sink, a programme whose points expire in
/// 20 days (so every lot is "expiring in the next 30 days" on home), and a partner.
struct Portal {
    t: TestApp,
    sink: SmtpSink,
    /// The operator's token.
    admin: String,
    gym: Partner,
}

async fn portal() -> Portal {
    let sink = SmtpSink::start().await;
    let t = spawn_app_with_settings(&[("COALITION_SMTP_URL", &sink.url())]).await;
    let programme = t.programme_with_expiry(20).await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    Portal {
        t,
        sink,
        admin: programme.admin,
        gym,
    }
}

impl Portal {
    /// A member enrolled at the gym with a registered card and `purchases` purchases on
    /// it (10.00 EUR, 20.00 EUR, … cycling): (member id, card number).
    async fn member(&self, email: &str, purchases: usize) -> (String, String) {
        let (id, card) = self.t.member_with_card(&self.gym, email).await;
        for i in 0..purchases {
            let amount = format!("{}.00", 10 * (i % 3 + 1));
            self.t.purchase(&self.gym, &card, &amount, 0).await;
        }
        (id, card)
    }

    /// The member's points as the partner API says.
    async fn points(&self, member_id: &str) -> i64 {
        self.t.points(&self.gym.token, member_id).await
    }

    /// The sign-in page as the partner links it.
    fn link(&self) -> String {
        format!("/portal/sign-in?partner={}", self.gym.id)
    }
}

/// Only the digits of a shown number ("1,234" / "1.234" / "1 234" → 1234).
fn number(text: &str) -> i64 {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number in {text:?}"))
}

/// Signs `email` in through the partner's link, the e-mail form and the code from the
/// mail, by mouse; ends on home with the session cookie set.
async fn sign_in(b: &Browser, p: &Portal, email: &str) {
    b.goto(&p.link()).await;
    b.shot("sign-in").await;
    let seen = p.sink.messages_to(email).len();
    b.fill("#email", email).await;
    b.click("#send-code").await;
    b.find("#code").await;
    b.shot("code").await;
    let code = p.sink.next_code_for(email, seen).await;
    b.fill("#code", &code).await;
    b.click("#submit-code").await;
    b.wait_for_path("/portal").await;
    b.find("#points").await;
    assert!(
        b.cookie("coalition_session").await.is_some(),
        "signed in without a session cookie"
    );
}

/// An HTTP client that sends one cookie and follows no redirect: what a stolen or kept
/// cookie would get.
async fn with_cookie(base: &str, path: &str, cookie: &str) -> (u16, String, String) {
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let res = http
        .get(format!("{base}{path}"))
        .header("Cookie", format!("coalition_session={cookie}"))
        .send()
        .await
        .expect("portal request");
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, location, res.text().await.unwrap_or_default())
}

/// The browser slot of `test`, and when the test got it (its time excludes the wait
/// for another browser test to finish).
async fn slot(test: &str) -> Option<(BrowserSlot, Instant)> {
    let slot = browser_slot(test).await?;
    Some((slot, Instant::now()))
}

fn took(test: &str, started: Instant) {
    eprintln!(
        "browser test {test} on {}: {:.1} s",
        backend_name(),
        started.elapsed().as_secs_f64()
    );
}

/// The whole visit on a phone: sign in with the mailed code, the balance a purchase made
/// through the API earned, the points expiring within 30 days, every history page, a
/// lost card blocked (and then refused at the till), the language switched to Romanian,
/// sign out — after which neither the browser nor the old cookie gets in.
#[tokio::test]
async fn a_member_signs_in_with_the_mailed_code_and_uses_the_portal_on_a_phone() {
    let test = "portal_phone_journey";
    let Some((slot, started)) = slot(test).await else {
        return;
    };
    let p = portal().await;
    // A ladder, so home has a tier and the spend still missing for the next one; no
    // discount and no multiplier, so the points are the plain 1 per EUR.
    for (name, rank, spend) in [("Basic", 1, "0"), ("Gold", 2, "1000.00")] {
        let body = json!({"name": name, "rank": rank,
                          "qualifying_spend": {"amount": spend, "currency": "EUR"},
                          "discount_percent": "0", "earn_multiplier": "1"});
        p.t.post("/v1/tiers", &p.admin, body).await.expect(201);
    }
    // More movements than one history page holds (the portal pages by at most 20).
    let purchases = 23;
    let (member, card) = p.member("ana@example.org", purchases).await;
    let b = slot.open(&p.t.base, Screen::Phone, "phone").await;

    // Not signed in: home sends the member to the sign-in, which comes back to home.
    b.goto("/portal").await;
    b.wait_for_path("/portal/sign-in").await;
    sign_in(&b, &p, "ana@example.org").await;
    assert!(
        !b.overflows_horizontally().await,
        "home scrolls sideways on a phone"
    );
    b.shot("home").await;

    // The balance is the API's, after one more purchase made at the till now.
    let before = number(&b.text("#points").await);
    assert_eq!(before, p.points(&member).await);
    p.t.purchase(&p.gym, &card, "35.00", 0).await;
    let after_purchase = p.points(&member).await;
    assert!(after_purchase > before, "the purchase earned points");
    b.goto("/portal").await;
    assert_eq!(number(&b.text("#points").await), after_purchase);
    assert_eq!(
        b.text("#brand-name").await,
        "Iron Gym",
        "the partner's branding"
    );
    // 8 × 10 + 8 × 20 + 7 × 30 + 35 = 485.00 EUR spent: Basic, 515.00 short of Gold.
    assert_eq!(b.text("#tier").await, "Basic");
    assert!(b.text("#spend-12m").await.contains("485.00"));
    assert!(b.text("#next-tier").await.contains("Gold"));
    assert!(b.text("#missing").await.contains("515.00"));

    // Every lot expires within 20 days: home lists them, adding up to the balance.
    let mut expiring = 0;
    for lot in
        b.wd.find_all(fantoccini::Locator::Css("#expiring .expiring-points"))
            .await
            .unwrap()
    {
        expiring += number(&lot.text().await.unwrap());
    }
    assert_eq!(
        expiring, after_purchase,
        "points expiring in the next 30 days"
    );
    b.shot("home-after-purchase").await;

    // History: newest first, paged; following "older" reaches every movement once.
    b.click("#nav-history").await;
    b.wait_for_path("/portal/history").await;
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        b.find("#history").await;
        b.shot(&format!("history-{pages}")).await;
        for row in
            b.wd.find_all(fantoccini::Locator::Css("#history .history-points"))
                .await
                .unwrap()
        {
            rows.push(row.text().await.unwrap());
        }
        if !b.has("a[rel=next]").await {
            break;
        }
        b.click("a[rel=next]").await;
        assert!(pages < 10, "history pages never end");
    }
    assert!(pages >= 2, "{} movements fit one page", rows.len());
    assert_eq!(rows.len(), purchases + 1, "every movement once: {rows:?}");
    // Newest first: the 35.00 EUR purchase just made tops the first page.
    assert_eq!(number(&rows[0]), after_purchase - before);

    // Partners and offers pages render for the member.
    b.click("#nav-partners").await;
    b.wait_for_path("/portal/partners").await;
    b.wait_for_text("Iron Gym").await;
    b.shot("partners").await;
    b.click("#nav-offers").await;
    b.wait_for_path("/portal/offers").await;
    b.shot("offers").await;

    // A lost card: blocked from the cards page, after a confirmation step.
    b.click("#nav-cards").await;
    b.wait_for_path("/portal/cards").await;
    b.shot("cards").await;
    let last4 = &card[card.len() - 4..];
    assert!(
        b.text("#cards").await.contains(last4),
        "the card by its last 4 digits"
    );
    assert!(
        !b.body_text().await.contains(&card),
        "the full card number is never shown"
    );
    b.click(".block-card").await;
    b.find("#confirm-block").await;
    b.shot("block-confirm").await;
    b.click("#confirm-block").await;
    b.find("#card-blocked").await;
    assert_eq!(
        b.find(".card-row")
            .await
            .attr("data-status")
            .await
            .unwrap()
            .as_deref(),
        Some("blocked")
    );
    assert!(
        !b.has(".block-card").await,
        "a blocked card offers no block"
    );
    b.shot("card-blocked").await;
    // The till now refuses the card.
    let body = json!({"card_number": card, "amount": {"amount": "10.00", "currency": "EUR"},
                      "external_ref": Uuid::new_v4().to_string(), "redeem_points": 0});
    p.t.post_moving("/v1/purchases", &p.gym.token, body)
        .await
        .expect_problem(409, "card_blocked");

    // The language switch: English, then Romanian texts on the same page.
    b.click("#nav-home").await;
    b.wait_for_path("/portal").await;
    b.wait_for_text("Your rewards").await;
    b.click("#lang-switch").await;
    b.wait_for_text("Recompensele tale").await;
    assert_eq!(
        b.find("html").await.attr("lang").await.unwrap().as_deref(),
        Some("ro")
    );
    assert!(!b.body_text().await.contains("Your rewards"));
    b.shot("home-ro").await;
    b.click("#lang-switch").await;
    b.wait_for_text("Your rewards").await;

    // Sign out: back at the sign-in; neither the browser nor the old cookie gets in.
    let old_cookie = b.cookie("coalition_session").await.expect("session cookie");
    b.click("#sign-out").await;
    b.wait_for_path("/portal/sign-in").await;
    b.find("#email").await;
    b.shot("signed-out").await;
    assert_eq!(b.cookie("coalition_session").await, None);
    b.goto("/portal/history").await;
    b.wait_for_path("/portal/sign-in").await;
    let (status, location, _) = with_cookie(&p.t.base, "/portal", &old_cookie).await;
    assert_eq!(status, 303, "the old cookie after sign-out");
    assert!(location.starts_with("/portal/sign-in"), "{location}");
    b.close().await;
    took(test, started);
}

/// The sign-in by keyboard alone on a desktop: Tab reaches the e-mail field, Enter sends
/// it, the code field has the focus, Enter signs in.
#[tokio::test]
async fn the_sign_in_can_be_completed_with_the_keyboard_alone() {
    let test = "portal_keyboard";
    let Some((slot, started)) = slot(test).await else {
        return;
    };
    let p = portal().await;
    let (member, _) = p.member("kim@example.org", 2).await;
    let b = slot.open(&p.t.base, Screen::Desktop, "desktop").await;
    b.goto(&p.link()).await;
    b.find("#email").await;
    // Tab from the top of the page until the e-mail field has the focus (skip link,
    // language switch, … come first), as a keyboard user would.
    let mut tabs = 0;
    while b.focused_attr("id").await.as_deref() != Some("email") {
        b.keys(&Key::Tab.to_string()).await;
        tabs += 1;
        assert!(tabs <= 15, "Tab never reached the e-mail field");
    }
    let seen = p.sink.messages_to("kim@example.org").len();
    b.keys("kim@example.org").await;
    b.shot("email-typed").await;
    b.mark_document().await;
    b.keys(&Key::Enter.to_string()).await;
    b.wait_for_new_document("the code page after Enter").await;
    b.find("#code").await;
    // The code field has the focus on arrival (autofocus): type and press Enter.
    let code = p.sink.next_code_for("kim@example.org", seen).await;
    b.wait_until("the code field to have the focus", || async {
        b.focused_attr("id").await.as_deref() == Some("code")
    })
    .await;
    b.keys(&code).await;
    b.shot("code-typed").await;
    b.keys(&Key::Enter.to_string()).await;
    b.wait_for_path("/portal").await;
    assert_eq!(number(&b.text("#points").await), p.points(&member).await);
    b.shot("home").await;
    b.close().await;
    took(test, started);
}

/// Two members side by side in two browsers: each sees only her own points, e-mail and
/// cards; member A's session cookie opens nothing of member B's (B's card block page is
/// a 404 for it), and blocking through it leaves B's card alone.
#[tokio::test]
async fn a_session_cookie_of_one_member_never_shows_another_members_data() {
    let test = "portal_two_members";
    let Some((slot, started)) = slot(test).await else {
        return;
    };
    let p = portal().await;
    let (ana, _) = p.member("ana@example.org", 1).await;
    let (bob, bob_card) = p.member("bob@example.org", 3).await;
    assert_ne!(p.points(&ana).await, p.points(&bob).await);
    let a = slot.open(&p.t.base, Screen::Phone, "ana").await;
    let b = slot.open(&p.t.base, Screen::Desktop, "bob").await;
    sign_in(&a, &p, "ana@example.org").await;
    sign_in(&b, &p, "bob@example.org").await;
    assert_eq!(number(&a.text("#points").await), p.points(&ana).await);
    assert_eq!(number(&b.text("#points").await), p.points(&bob).await);
    a.shot("home").await;
    b.shot("home").await;
    a.goto("/portal/profile").await;
    assert_eq!(a.text("#profile-email").await, "ana@example.org");
    a.shot("profile").await;
    b.goto("/portal/cards").await;
    let bob_card_row = b.find(".card-row").await.attr("id").await.unwrap().unwrap();
    let bob_card_id = bob_card_row.trim_start_matches("card-").to_owned();
    b.shot("cards").await;

    // Ana's cookie, wherever it is sent, shows Ana's data only.
    let ana_cookie = a.cookie("coalition_session").await.unwrap();
    for path in [
        "/portal",
        "/portal/history",
        "/portal/cards",
        "/portal/profile",
    ] {
        let (status, _, page) = with_cookie(&p.t.base, path, &ana_cookie).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !page.contains("bob@example.org"),
            "{path} shows Bob's e-mail"
        );
        assert!(!page.contains(&bob_card_id), "{path} shows Bob's card");
    }
    // Bob's card through Ana's session: not found, in her browser too.
    let (status, _, _) = with_cookie(
        &p.t.base,
        &format!("/portal/cards/{bob_card_id}/block"),
        &ana_cookie,
    )
    .await;
    assert_eq!(status, 404, "another member's card is not found");
    a.goto(&format!("/portal/cards/{bob_card_id}/block")).await;
    assert!(
        !a.has("#confirm-block").await,
        "a block form for Bob's card"
    );
    a.shot("bobs-card-as-ana").await;
    // A block posted with Ana's session and her own CSRF token, naming Bob's card.
    a.goto("/portal/cards").await;
    let ana_csrf: String =
        a.wd.execute(
            "return document.querySelector('input[name=csrf]').value",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let res = http
        .post(format!("{}/portal/cards/{bob_card_id}/block", p.t.base))
        .header("Cookie", format!("coalition_session={ana_cookie}"))
        .form(&[("csrf", ana_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "blocking another member's card");
    p.t.purchase(&p.gym, &bob_card, "10.00", 0).await;
    b.goto("/portal/cards").await;
    assert_eq!(
        b.find(".card-row")
            .await
            .attr("data-status")
            .await
            .unwrap()
            .as_deref(),
        Some("active")
    );
    a.close().await;
    b.close().await;
    took(test, started);
}

/// Five wrong codes and the code is dead: the right one no longer signs in, and a new
/// code has to be asked for (which then works).
#[tokio::test]
async fn five_wrong_codes_lock_the_code_in_the_browser() {
    let test = "portal_wrong_codes";
    let Some((slot, started)) = slot(test).await else {
        return;
    };
    let p = portal().await;
    let (member, _) = p.member("eve@example.org", 1).await;
    let b = slot.open(&p.t.base, Screen::Phone, "phone").await;
    b.goto(&p.link()).await;
    let seen = p.sink.messages_to("eve@example.org").len();
    b.fill("#email", "eve@example.org").await;
    b.click("#send-code").await;
    let code = p.sink.next_code_for("eve@example.org", seen).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for attempt in 1..=5 {
        b.fill("#code", wrong).await;
        b.click("#submit-code").await;
        b.find("#code-error").await;
        if attempt == 1 {
            b.shot("wrong-code").await;
        }
    }
    // The right code, sixth: refused all the same.
    b.fill("#code", &code).await;
    b.click("#submit-code").await;
    b.find("#code-error").await;
    b.shot("locked").await;
    assert_eq!(b.cookie("coalition_session").await, None);
    b.goto("/portal").await;
    b.wait_for_path("/portal/sign-in").await;
    // A new code (through the form again) signs in.
    b.goto(&p.link()).await;
    let seen = p.sink.messages_to("eve@example.org").len();
    b.fill("#email", "eve@example.org").await;
    b.click("#send-code").await;
    let fresh = p.sink.next_code_for("eve@example.org", seen).await;
    b.fill("#code", &fresh).await;
    b.click("#submit-code").await;
    b.wait_for_path("/portal").await;
    assert_eq!(number(&b.text("#points").await), p.points(&member).await);
    b.shot("home").await;
    b.close().await;
    took(test, started);
}

/// A form posted without its CSRF field is refused (403) and does nothing: the e-mail
/// form sends no code, and sign-out and a card block leave the session and the card.
#[tokio::test]
async fn forms_posted_without_their_csrf_token_are_refused() {
    let test = "portal_csrf";
    let Some((slot, started)) = slot(test).await else {
        return;
    };
    let p = portal().await;
    let (member, card) = p.member("joe@example.org", 1).await;
    let b = slot.open(&p.t.base, Screen::Desktop, "desktop").await;

    // The e-mail form without its token: refused, and no mail goes out.
    b.goto(&p.link()).await;
    strip_csrf(&b, "#sign-in-form").await;
    b.fill("#email", "joe@example.org").await;
    b.click("#send-code").await;
    b.find("#message-title").await;
    b.shot("sign-in-without-csrf").await;
    assert!(!b.has("#code").await, "a code form after a CSRF-less post");
    assert_eq!(status_of_current_page(&b).await, 403);
    assert!(
        p.sink.messages_to("joe@example.org").is_empty(),
        "a code was mailed for a CSRF-less post"
    );

    sign_in(&b, &p, "joe@example.org").await;
    // Block without the token: refused, the card stays active.
    b.goto("/portal/cards").await;
    b.click(".block-card").await;
    strip_csrf(&b, "form[action$='/block']").await;
    b.click("#confirm-block").await;
    b.find("#message-title").await;
    assert_eq!(status_of_current_page(&b).await, 403);
    b.shot("block-without-csrf").await;
    p.t.purchase(&p.gym, &card, "10.00", 0).await;

    // Sign-out without the token: refused, still signed in.
    b.goto("/portal").await;
    strip_csrf(&b, "form[action='/portal/sign-out']").await;
    b.click("#sign-out").await;
    b.find("#message-title").await;
    assert_eq!(status_of_current_page(&b).await, 403);
    b.shot("sign-out-without-csrf").await;
    b.goto("/portal").await;
    assert_eq!(number(&b.text("#points").await), p.points(&member).await);
    b.close().await;
    took(test, started);
}

/// Removes the hidden `csrf` field from the form `form_css`, as a forged cross-site form
/// would lack it.
async fn strip_csrf(b: &Browser, form_css: &str) {
    b.find(form_css).await;
    let removed =
        b.wd.execute(
            "const f = document.querySelector(arguments[0]); \
             const i = f.querySelector('input[name=csrf]'); if (!i) return false; \
             i.remove(); return true;",
            vec![json!(form_css)],
        )
        .await
        .expect("strip csrf");
    assert_eq!(removed, json!(true), "{form_css} had a csrf field");
}

/// The HTTP status of the page the browser shows (Navigation Timing).
async fn status_of_current_page(b: &Browser) -> u64 {
    b.wd.execute(
        "const n = performance.getEntriesByType('navigation')[0]; \
         return n && n.responseStatus !== undefined ? n.responseStatus : 0;",
        vec![],
    )
    .await
    .expect("navigation status")
    .as_u64()
    .unwrap_or(0)
}
