//! Hostile review of the portal's sessions in Redis (ce9d97a): what a Redis failure
//! does to a sign-in, and the guarantees that held.

use crate::support::portal::{Browser, Via};
use crate::support::smtp::SmtpSink;
use crate::support::*;

fn email(tag: &str) -> String {
    format!("{tag}-{}@example.org", random_letters())
}

/// Waits (up to 5 s) until `browser`'s session opens the portal again.
async fn portal_opens(browser: &mut Browser) -> bool {
    for _ in 0..50 {
        if browser.get("/portal").await.status == 200 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// A right code sent while Redis fails gets the error page ("try again in a moment"):
/// trying again with the same code once Redis is back signs her in. The code is used
/// up only with a session that exists, never by a sign-in that failed.
#[tokio::test]
async fn a_right_code_refused_for_a_redis_failure_still_works_afterwards() {
    let Some((_, proxy)) = proxied_redis().await else {
        return;
    };
    let sink = SmtpSink::start().await;
    let (smtp, redis) = (sink.url(), format!("redis://{}", proxy.addr));
    let t = spawn_app_with_settings(&[
        ("COALITION_SMTP_URL", smtp.as_str()),
        ("REDIS_URL", redis.as_str()),
    ])
    .await;
    let programme = t.programme("Coalition").await;
    let gym = t.partner(&programme, "Iron Gym", "1").await;
    let via = Via::Partner(gym.id);
    let (ann, bob) = (email("ann"), email("bob"));
    t.member_with_card(&gym, &ann).await;
    t.member_with_card(&gym, &bob).await;
    // Bob's session tells when the session store answers again.
    let mut bobs = Browser::new(&t);
    bobs.sign_in(&sink, via, &bob).await;

    let mut anns = Browser::new(&t);
    let seen = sink.messages_to(&ann).len();
    assert_eq!(anns.request_code(via, &ann).await.status, 200);
    let code = sink.next_code_for(&ann, seen).await;

    proxy.cut();
    let during = anns.submit_code(via, &ann, &code).await;
    assert_eq!(during.status, 500, "{}", during.body);
    assert!(anns.session().is_none(), "no session while Redis fails");

    proxy.restore();
    assert!(portal_opens(&mut bobs).await, "Redis is back");
    let again = anns.submit_code(via, &ann, &code).await;
    assert_eq!(
        again.status, 303,
        "the same code, tried again as the error page says: {}",
        again.body
    );
    assert!(anns.session().is_some());
    assert_eq!(anns.get("/portal").await.status, 200);
}
