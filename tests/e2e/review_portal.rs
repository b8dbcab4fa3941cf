//! Hostile review of the member portal and the member OAuth flow (issue 12): races on
//! the 5-try limit of a sign-in code, on the single use of an authorization code and on
//! the rotation of a refresh token.

use crate::support::oidc::{
    code_for, exchange, partner_app, pkce, sign_in, spawn_app_with_mail, token_request,
};
use crate::support::*;
use coalition_store::portal::member_login_code;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

fn email(tag: &str) -> String {
    format!("{tag}-{}@example.org", random_letters())
}

/// 30 wrong guesses at once, on every connection of the pool: the code counts 5 tries
/// in all, and the right code afterwards is refused.
#[tokio::test]
async fn racing_wrong_codes_get_five_tries_in_all() {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Race Coalition").await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    let ann = email("ann");
    let (ann_id, _) = t.member_with_card(&gym, &ann).await;
    let member_id: Uuid = ann_id.parse().unwrap();
    let entry = coalition_app::signin::entry(&t.app, Some(gym.id), None)
        .await
        .unwrap()
        .unwrap();
    let seen = sink.messages_to(&ann).len();
    coalition_app::signin::request_code(
        &t.app,
        &entry,
        &ann,
        None,
        coalition_app::signin::Lang::En,
    )
    .await
    .unwrap();
    let code = sink.next_code_for(&ann, seen).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let tries = (0..30).map(|_| {
        let (app, entry, ann) = (t.app.clone(), entry.clone(), ann.clone());
        tokio::spawn(
            async move { coalition_app::signin::verify_code(&app, &entry, &ann, wrong).await },
        )
    });
    for outcome in futures::future::join_all(tries).await {
        let outcome = outcome.unwrap().unwrap();
        assert!(matches!(outcome, coalition_app::signin::Verified::Refused));
    }
    let row = member_login_code::Entity::find()
        .filter(member_login_code::Column::MemberId.eq(member_id))
        .one(&t.app.db)
        .await
        .unwrap()
        .expect("the dead code is still there");
    assert_eq!(row.attempts, 5, "racing guesses counted beyond 5");
    let late = coalition_app::signin::verify_code(&t.app, &entry, &ann, &code)
        .await
        .unwrap();
    assert!(
        matches!(late, coalition_app::signin::Verified::Refused),
        "the right code after 30 racing wrong ones is refused"
    );
}

/// The same code exchanged 8 times at once: at most one exchange gets tokens.
#[tokio::test]
async fn racing_exchanges_of_one_code_give_tokens_once() {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Race Coalition").await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    let app = partner_app(&t, &programme, &gym).await;
    let ann = email("ann");
    t.member_with_card(&gym, &ann).await;
    let cookie = sign_in(&t, &sink, gym.id, &ann).await;
    let pkce = pkce();
    let code = code_for(&t, &app, &cookie, &pkce).await;
    let races = (0..8).map(|_| exchange(&t, &app, &code, &pkce.verifier));
    let answers = futures::future::join_all(races).await;
    let won: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert!(
        won.len() <= 1,
        "one code gave tokens {} times: {answers:?}",
        won.len()
    );
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 400, "{status} {body}");
    }
}

/// One refresh token presented 8 times at once: at most one new pair.
#[tokio::test]
async fn racing_refreshes_of_one_token_rotate_once() {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Race Coalition").await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    let app = partner_app(&t, &programme, &gym).await;
    let ann = email("ann");
    t.member_with_card(&gym, &ann).await;
    let cookie = sign_in(&t, &sink, gym.id, &ann).await;
    let pkce = pkce();
    let code = code_for(&t, &app, &cookie, &pkce).await;
    let (status, tokens) = exchange(&t, &app, &code, &pkce.verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
    ];
    let races = (0..8).map(|_| token_request(&t, &app, &form));
    let answers = futures::future::join_all(races).await;
    let won = answers.iter().filter(|(s, _)| *s == 200).count();
    assert!(
        won <= 1,
        "one refresh token rotated {won} times: {answers:?}"
    );
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 400, "{status} {body}");
    }
}

/// Odd input on the sign-in and the pages: bytes that are not UTF-8, a huge `next`, a
/// giant `Accept-Language`, cookies that are not ours. Never a 5xx, never a redirect
/// off the site.
#[tokio::test]
async fn odd_input_on_the_portal_is_never_a_server_error_nor_an_open_redirect() {
    let (t, _sink) = spawn_app_with_mail().await;
    let programme = t.programme("Odd Coalition").await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    let client = crate::support::oidc::browser();
    let giant_lang = format!("{}ro;q=0.9", "xx-YY;q=0.1,".repeat(600));
    let huge_next = format!("/{}", "a%FF".repeat(8_000));
    let weird_cookies = "coalition_session=\"\"; coalition_csrf=%%%; lang=zz; coalition_session=ZZ";
    let paths = [
        format!("/portal/sign-in?partner={}&next={huge_next}", gym.id),
        format!("/portal/sign-in?partner={}&next=%FF%FE", gym.id),
        format!("/portal/sign-in?partner={}&next=/%09/evil.example", gym.id),
        "/portal/lang?set=ro&next=//evil.example".to_owned(),
        "/portal/lang?set=ro&next=/%5Cevil.example".to_owned(),
        "/portal/lang?set=%FF&next=%FF".to_owned(),
        "/portal/cards/%FF/block".to_owned(),
        "/portal/history?cursor=%FF%FF&limit=99999999999999999999".to_owned(),
    ];
    for path in &paths {
        let response = client
            .get(format!("{}{path}", t.base))
            .header("accept-language", giant_lang.as_str())
            .header("cookie", weird_cookies)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(status < 500, "{path}: {status}");
        if let Some(location) = response.headers().get("location") {
            let location = location.to_str().unwrap();
            assert!(
                location.starts_with('/')
                    && !location.starts_with("//")
                    && !location.starts_with("/\\"),
                "{path} redirects off the site: {location}"
            );
        }
    }
    let csrf = "ab".repeat(32);
    let bodies: Vec<Vec<u8>> = vec![
        b"email=%FF%FE&csrf="
            .iter()
            .copied()
            .chain(csrf.bytes())
            .collect(),
        [
            b"email=ann@example.org&code=%FF%FF%FF%FF%FF%FF&csrf=".as_slice(),
            csrf.as_bytes(),
        ]
        .concat(),
        [
            b"email=".as_slice(),
            "a".repeat(1_000_000).as_bytes(),
            b"@example.org&csrf=",
            csrf.as_bytes(),
        ]
        .concat(),
        [
            b"\xff\xfe=\xff&csrf=".as_slice(),
            csrf.as_bytes(),
            format!("&partner={}", gym.id).as_bytes(),
        ]
        .concat(),
        [
            b"code=12345\xd9&email=a@b.c&partner=".as_slice(),
            gym.id.to_string().as_bytes(),
            b"&csrf=",
            csrf.as_bytes(),
        ]
        .concat(),
    ];
    for path in [
        "/portal/sign-in",
        "/portal/sign-in/code",
        "/portal/sign-out",
        "/portal/profile/erase",
        "/portal/cards/x/block",
    ] {
        for body in &bodies {
            let response = client
                .post(format!("{}{path}", t.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept-language", giant_lang.as_str())
                .header(
                    "cookie",
                    format!("coalition_csrf={csrf}; coalition_session=%FF"),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(status < 500, "POST {path}: {status}");
        }
    }
}

/// The right code sent 8 times at once (a double-clicking member, or a thief racing
/// her): one session, the others refused, never an error.
#[tokio::test]
async fn racing_right_codes_start_one_session() {
    let (t, sink) = spawn_app_with_mail().await;
    let programme = t.programme("Race Coalition").await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    let ann = email("ann");
    t.member_with_card(&gym, &ann).await;
    let entry = coalition_app::signin::entry(&t.app, Some(gym.id), None)
        .await
        .unwrap()
        .unwrap();
    let seen = sink.messages_to(&ann).len();
    coalition_app::signin::request_code(
        &t.app,
        &entry,
        &ann,
        None,
        coalition_app::signin::Lang::En,
    )
    .await
    .unwrap();
    let code = sink.next_code_for(&ann, seen).await;
    let tries = (0..8).map(|_| {
        let (app, entry, ann, code) = (t.app.clone(), entry.clone(), ann.clone(), code.clone());
        tokio::spawn(
            async move { coalition_app::signin::verify_code(&app, &entry, &ann, &code).await },
        )
    });
    let mut signed_in = 0;
    for outcome in futures::future::join_all(tries).await {
        match outcome.unwrap() {
            Ok(coalition_app::signin::Verified::SignedIn { .. }) => signed_in += 1,
            Ok(coalition_app::signin::Verified::Refused) => {}
            Err(e) => panic!("a racing sign-in failed: {e}"),
        }
    }
    assert_eq!(signed_in, 1, "one code started {signed_in} sessions");
}
