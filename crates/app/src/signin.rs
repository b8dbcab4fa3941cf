//! Members sign in to the portal with a one-time code sent to the e-mail on their
//! profile:
//!
//! - 6 random digits, stored as HMAC-SHA-256 under a per-code random salt, valid 10
//!   minutes, single use (deleted by the sign-in that uses it, in the same transaction
//!   that starts the session), dead after 5 tries; a new request replaces the old code.
//! - Requests are counted per address and per source address in fixed 15-minute windows
//!   in the database (`signin_request_counters`), so the limits hold across every server
//!   process on one database, with or without Redis.
//! - Whether an address is enrolled never shows: the request is answered before the
//!   member is even looked up (the lookup, the code and the mail happen in a task off the
//!   request path), and every refused code gets the same answer.

use crate::mailer::Mail;
use crate::member_sessions::{self, MemberSession};
use crate::{App, AppResult};
use chrono::{Duration, Utc};
use coalition_store::entities::{member, partner, programme};
use coalition_store::portal::member_login_code;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, Statement, TransactionTrait,
};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use uuid::Uuid;

/// How long a code can be used.
pub const CODE_TTL: Duration = Duration::minutes(10);
/// Tries per code, right or wrong; then a new code is needed.
pub const MAX_ATTEMPTS: i32 = 5;
/// The window code requests are counted in.
pub const REQUEST_WINDOW: Duration = Duration::minutes(15);

/// Code requests allowed per window (`COALITION_SIGNIN_CODES_PER_ADDRESS`,
/// `COALITION_SIGNIN_CODES_PER_SOURCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Per e-mail address (enrolled or not) in 15 minutes.
    pub per_address: u32,
    /// Per source IP address in 15 minutes.
    pub per_source: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            per_address: 5,
            per_source: 30,
        }
    }
}

/// The languages the portal and its mails speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    En,
    Ro,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ro => "ro",
        }
    }

    pub fn parse(text: &str) -> Option<Lang> {
        match text {
            "en" => Some(Lang::En),
            "ro" => Some(Lang::Ro),
            _ => None,
        }
    }
}

/// Which programme a sign-in is for, and the partner whose link brought the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub programme_id: Uuid,
    pub programme_name: String,
    pub partner: Option<EntryPartner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPartner {
    pub id: Uuid,
    pub name: String,
}

/// The programme of a sign-in: the partner's (from the partner's link), else the one
/// named, else the only programme on this server. `None` when that decides nothing (an
/// unknown partner or programme, a partner of another programme than the one named,
/// several programmes and neither named): the page then asks the member to come through
/// their partner's link.
pub async fn entry(
    app: &App,
    partner_id: Option<Uuid>,
    programme_id: Option<Uuid>,
) -> AppResult<Option<Entry>> {
    let (programme_id, partner) = match (partner_id, programme_id) {
        (Some(partner_id), named) => {
            let Some(found) = partner::Entity::find_by_id(partner_id).one(&app.db).await? else {
                return Ok(None);
            };
            if named.is_some_and(|p| p != found.programme_id) {
                return Ok(None);
            }
            let partner = EntryPartner {
                id: found.id,
                name: found.name,
            };
            (found.programme_id, Some(partner))
        }
        (None, Some(programme_id)) => (programme_id, None),
        (None, None) => {
            let only: Vec<Uuid> = programme::Entity::find()
                .select_only()
                .column(programme::Column::Id)
                .limit(2)
                .into_tuple()
                .all(&app.db)
                .await?;
            match only.as_slice() {
                [one] => (*one, None),
                _ => return Ok(None),
            }
        }
    };
    let Some(programme) = programme::Entity::find_by_id(programme_id)
        .one(&app.db)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(Entry {
        programme_id,
        programme_name: programme.name,
        partner,
    }))
}

/// An address as members are enrolled with it (`members::email_field`): trimmed, lower
/// case. `None` for what cannot be an address at all.
pub fn normalise_email(sent: &str) -> Option<String> {
    let email = sent.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let plausible = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.chars().count() <= 254
        && !email.contains(|c: char| c.is_whitespace() || c.is_control());
    plausible.then_some(email)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The same answer whether or not the address is enrolled: a code is on its way if
    /// it is.
    Accepted,
    /// Too many requests for this address or from this source; try again later.
    Limited { retry_after_seconds: u64 },
}

/// "Send me a code": counts the request against the address and the source, then (off
/// the request path) looks the member up and, when enrolled and not erased, replaces
/// her code and mails the new one. `email` must be normalised (`normalise_email`).
pub async fn request_code(
    app: &App,
    entry: &Entry,
    email: &str,
    source: Option<IpAddr>,
    lang: Lang,
) -> AppResult<Requested> {
    let window = REQUEST_WINDOW;
    let mut keys = vec![(format!("signin address {email}"), app.signin.per_address)];
    if let Some(source) = source {
        keys.push((format!("signin source {source}"), app.signin.per_source));
    }
    let mut retry_after = None;
    for (key, limit) in keys {
        let (count, started) = count_request(&app.db, &key, window).await?;
        if count > i64::from(limit) {
            let ends = started + window;
            let wait = (ends - Utc::now()).num_seconds().max(1) as u64;
            retry_after = Some(retry_after.map_or(wait, |w: u64| w.max(wait)));
        }
    }
    if let Some(retry_after_seconds) = retry_after {
        return Ok(Requested::Limited {
            retry_after_seconds,
        });
    }
    let (app, entry, email) = (app.clone(), entry.clone(), email.to_owned());
    tokio::spawn(async move {
        if let Err(e) = send_code(&app, &entry, &email, lang).await {
            // Never the address (personal data) nor the code.
            tracing::warn!(programme_id = %entry.programme_id, error = %e, "a sign-in code could not be sent");
        }
    });
    Ok(Requested::Accepted)
}

/// One more request under `key` (stored as its SHA-256): the count in the current
/// window and when that window started. One statement, so racing requests in several
/// processes all count.
async fn count_request<C: ConnectionTrait>(
    db: &C,
    key: &str,
    window: Duration,
) -> AppResult<(i64, chrono::DateTime<Utc>)> {
    let backend = db.get_database_backend();
    let key_hash = hex::encode(Sha256::digest(key.as_bytes()));
    let now = Utc::now();
    let cutoff = now - window;
    let sql = "INSERT INTO signin_request_counters (key_hash, window_started_at, requests) \
         VALUES (P1, P2, 1) \
         ON CONFLICT (key_hash) DO UPDATE SET \
           requests = CASE WHEN signin_request_counters.window_started_at <= P3 THEN 1 \
                      ELSE signin_request_counters.requests + 1 END, \
           window_started_at = CASE WHEN signin_request_counters.window_started_at <= P4 \
                      THEN P5 ELSE signin_request_counters.window_started_at END \
         RETURNING requests, window_started_at";
    let sql = (1..=5).fold(sql.to_owned(), |sql, n| {
        let placeholder = match backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".to_owned(),
        };
        sql.replace(&format!("P{n}"), &placeholder)
    });
    let statement = Statement::from_sql_and_values(
        backend,
        sql,
        [
            key_hash.into(),
            now.into(),
            cutoff.into(),
            cutoff.into(),
            now.into(),
        ],
    );
    let row = db
        .query_one(statement)
        .await?
        .ok_or_else(|| crate::AppError::Internal("the request counter returned no row".into()))?;
    let count: i32 = row.try_get("", "requests")?;
    let started: chrono::DateTime<Utc> = row.try_get("", "window_started_at")?;
    Ok((i64::from(count), started))
}

fn code_hash(salt: &str, code: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt.as_bytes()).expect("HMAC takes any key");
    mac.update(code.as_bytes());
    mac
}

/// Looks the member up and, when she is enrolled and not erased, replaces her code with
/// a new one and mails it. Quietly does nothing for an unknown address.
async fn send_code(app: &App, entry: &Entry, email: &str, lang: Lang) -> AppResult<()> {
    let Some(found) = enrolled(&app.db, entry.programme_id, email).await? else {
        return Ok(());
    };
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = hex::encode(salt);
    let now = Utc::now();
    let row = member_login_code::ActiveModel {
        id: Set(Uuid::now_v7()),
        programme_id: Set(entry.programme_id),
        member_id: Set(found.id),
        code_hash: Set(hex::encode(code_hash(&salt, &code).finalize().into_bytes())),
        salt: Set(salt),
        attempts: Set(0),
        created_at: Set(now),
        expires_at: Set(now + CODE_TTL),
        used_at: Set(None),
    };
    // The old code goes and the new one comes in one transaction; a racing request's
    // insert then fails on the unique (programme, member) and that request mails nothing
    // (its code never existed), so the code in the last mail sent always works.
    let txn = app.db.begin().await?;
    member_login_code::Entity::delete_many()
        .filter(member_login_code::Column::ProgrammeId.eq(entry.programme_id))
        .filter(member_login_code::Column::MemberId.eq(found.id))
        .exec(&txn)
        .await?;
    member_login_code::Entity::insert(row)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    let mail = code_mail(entry, email, &code, lang);
    app.mailer
        .send(&mail)
        .await
        .map_err(crate::AppError::Internal)
}

async fn enrolled<C: ConnectionTrait>(
    db: &C,
    programme_id: Uuid,
    email: &str,
) -> AppResult<Option<member::Model>> {
    Ok(member::Entity::find()
        .filter(member::Column::ProgrammeId.eq(programme_id))
        .filter(member::Column::Email.eq(email))
        .filter(member::Column::ErasedAt.is_null())
        .one(db)
        .await?)
}

/// The mail with the code, in the member's language. The code stands alone on its own
/// line, so a mail client (and the test's SMTP sink) finds it easily.
fn code_mail(entry: &Entry, email: &str, code: &str, lang: Lang) -> Mail {
    let via = entry
        .partner
        .as_ref()
        .map_or_else(|| entry.programme_name.clone(), |p| p.name.clone());
    let (subject, text) = match lang {
        Lang::En => (
            format!("Your sign-in code for {}", entry.programme_name),
            format!(
                "Hello,\n\nyour code to sign in to your rewards at {via}:\n\n{code}\n\n\
                 It works once, for 10 minutes. If you did not ask for it, ignore this \
                 message: nobody can sign in without the code.\n"
            ),
        ),
        Lang::Ro => (
            format!("Codul tău de autentificare pentru {}", entry.programme_name),
            format!(
                "Bună ziua,\n\ncodul tău pentru a intra în contul de recompense la {via}:\n\n\
                 {code}\n\nFuncționează o singură dată, timp de 10 minute. Dacă nu l-ai \
                 cerut, ignoră acest mesaj: nimeni nu poate intra fără cod.\n"
            ),
        ),
    };
    Mail {
        to: email.to_owned(),
        subject,
        text,
    }
}

#[derive(Debug)]
pub enum Verified {
    /// The code was right: a session started. The cookie value is shown once.
    SignedIn {
        cookie: String,
        session: MemberSession,
    },
    /// Wrong, expired, used, dead after too many tries, or an address with no code:
    /// one answer for all, so that nothing tells an enrolled address from another.
    Refused,
}

/// Checks a code for an address and, when right, uses it up and starts a session (one
/// transaction: the code is gone exactly when the session exists).
pub async fn verify_code(app: &App, entry: &Entry, email: &str, code: &str) -> AppResult<Verified> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Verified::Refused);
    }
    // Every refused try does the same work — look the member up, look her code up,
    // count a try, compare — whether or not the address is enrolled or has a code, so
    // that the time of the answer does not tell either (a missing member or code stands
    // in as the nil id, which matches no row).
    let found = enrolled(&app.db, entry.programme_id, email).await?;
    let member_id = found.as_ref().map_or(Uuid::nil(), |m| m.id);
    let stored = member_login_code::Entity::find()
        .filter(member_login_code::Column::ProgrammeId.eq(entry.programme_id))
        .filter(member_login_code::Column::MemberId.eq(member_id))
        .one(&app.db)
        .await?;
    let now = Utc::now();
    // The try is counted before the code is compared, in one conditional statement, so
    // that racing guesses (in any number of processes) get 5 tries in all.
    let counted = member_login_code::Entity::update_many()
        .col_expr(
            member_login_code::Column::Attempts,
            sea_orm::sea_query::Expr::col(member_login_code::Column::Attempts).add(1),
        )
        .filter(member_login_code::Column::Id.eq(stored.as_ref().map_or(Uuid::nil(), |s| s.id)))
        .filter(member_login_code::Column::Attempts.lt(MAX_ATTEMPTS))
        .filter(member_login_code::Column::ExpiresAt.gt(now))
        .filter(member_login_code::Column::UsedAt.is_null())
        .exec(&app.db)
        .await?;
    let (Some(found), Some(stored)) = (found, stored) else {
        let _ = code_hash("0000000000000000", code).finalize();
        return Ok(Verified::Refused);
    };
    if counted.rows_affected != 1 {
        return Ok(Verified::Refused);
    }
    let right = code_hash(&stored.salt, code)
        .verify_slice(&hex::decode(&stored.code_hash).unwrap_or_default())
        .is_ok();
    if !right {
        return Ok(Verified::Refused);
    }
    let txn = app.db.begin().await?;
    let used = member_login_code::Entity::delete_many()
        .filter(member_login_code::Column::Id.eq(stored.id))
        .exec(&txn)
        .await?;
    if used.rows_affected != 1 {
        // A racing sign-in with the same code used it first.
        txn.rollback().await?;
        return Ok(Verified::Refused);
    }
    let partner_id = entry.partner.as_ref().map(|p| p.id);
    let (cookie, session) =
        member_sessions::start(app, txn, entry.programme_id, found.id, partner_id).await?;
    Ok(Verified::SignedIn { cookie, session })
}

/// Deletes codes that ended (used ones are deleted by their sign-in; a replaced one by
/// its replacement) and request counters whose window ended: the `forget-sign-ins`
/// job. Returns how many of each went.
pub async fn forget_ended<C: ConnectionTrait>(
    db: &C,
    now: chrono::DateTime<Utc>,
) -> AppResult<(u64, u64)> {
    use coalition_store::portal::signin_request_counter as counter;
    let codes = member_login_code::Entity::delete_many()
        .filter(member_login_code::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?;
    let counters = counter::Entity::delete_many()
        .filter(counter::Column::WindowStartedAt.lte(now - REQUEST_WINDOW))
        .exec(db)
        .await?;
    Ok((codes.rows_affected, counters.rows_affected))
}

/// How many live codes a member has (0 or 1); for tests and diagnostics.
pub async fn live_codes(app: &App, programme_id: Uuid, member_id: Uuid) -> AppResult<u64> {
    Ok(member_login_code::Entity::find()
        .filter(member_login_code::Column::ProgrammeId.eq(programme_id))
        .filter(member_login_code::Column::MemberId.eq(member_id))
        .filter(member_login_code::Column::ExpiresAt.gt(Utc::now()))
        .count(&app.db)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalised_like_enrolment() {
        assert_eq!(
            normalise_email("  Ann@Example.ORG ").as_deref(),
            Some("ann@example.org")
        );
        assert_eq!(normalise_email("ann@example"), None);
        assert_eq!(normalise_email("@example.org"), None);
        assert_eq!(normalise_email("a nn@example.org"), None);
        assert_eq!(normalise_email(""), None);
    }

    #[test]
    fn a_code_hash_depends_on_salt_and_code() {
        let a = code_hash("s1", "123456").finalize().into_bytes();
        let b = code_hash("s2", "123456").finalize().into_bytes();
        let c = code_hash("s1", "123457").finalize().into_bytes();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_code_stands_on_its_own_line_in_both_languages() {
        let entry = Entry {
            programme_id: Uuid::nil(),
            programme_name: "Coalition".into(),
            partner: Some(EntryPartner {
                id: Uuid::nil(),
                name: "Iron Gym".into(),
            }),
        };
        for lang in [Lang::En, Lang::Ro] {
            let mail = code_mail(&entry, "ann@example.org", "042917", lang);
            assert!(mail.text.lines().any(|l| l == "042917"), "{}", mail.text);
            assert!(mail.text.contains("Iron Gym"));
        }
    }
}
