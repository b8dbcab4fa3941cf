//! Members through partners' apps: OAuth 2.0 authorization code with PKCE (RFC 6749,
//! RFC 7636 S256 only), refresh tokens rotated on every use, and OpenID Connect ID
//! tokens. A partner's client registers exact redirect URIs; the member signs in on the
//! portal (its session, `member_sessions`), and the client gets a code for that member
//! only, which it exchanges (authenticated, with the PKCE verifier) for a member access
//! token, a refresh token and, with scope `openid`, an ID token.
//!
//! Everything issued for one sign-in at one client belongs to one grant: replaying a
//! used code or a rotated refresh token revokes the grant, and with it every token that
//! came of it (OAuth 2.0 Security BCP §4.5, §4.14). Codes and refresh tokens are stored
//! as SHA-256 hashes only: they are 256 random bits, so a fast hash is enough.

use crate::auth::member_tokens::{AccessGrant, MEMBER_SCOPE};
use crate::auth::IssuedUnder;
use crate::me::MemberPrincipal;
use crate::{App, AppError, AppResult};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use coalition_store::entities::{
    api_client, member, oauth_code, oauth_grant, oauth_redirect_uri, oauth_refresh_token,
};
use rand::RngCore;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionTrait,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

/// How long a code may wait for its exchange (RFC 6749 §4.1.2: 10 minutes at most).
pub const CODE_TTL_SECONDS: i64 = 5 * 60;
/// How long a refresh token lives unused; each use gives a new one for as long again,
/// up to the grant's end.
pub const REFRESH_TTL_DAYS: i64 = 30;
/// How long after the member signed in a grant can be refreshed, however often it is:
/// then the app sends her through the sign-in again (a stolen refresh token, rotated
/// by the thief, does not last for ever).
pub const GRANT_LIFETIME_DAYS: i64 = 90;
pub const MAX_REDIRECT_URIS: usize = 10;
const MAX_REDIRECT_URI_LENGTH: usize = 2000;
/// The scopes a member grant may carry.
pub const SUPPORTED_SCOPES: [&str; 2] = ["openid", MEMBER_SCOPE];
const MAX_STATE_LENGTH: usize = 1024;

// ---------------------------------------------------------------------------------
// Redirect URIs

/// A redirect URI a client may register: absolute, https (or http on a loopback host,
/// for apps in development and native apps, RFC 8252 §7.3), with a host, no user info
/// and no fragment (RFC 6749 §3.1.2), visible ASCII only (it is compared byte for byte,
/// so there must be one way to write it).
pub fn check_redirect_uri(raw: &str) -> Result<(), String> {
    if raw.len() > MAX_REDIRECT_URI_LENGTH {
        return Err(format!(
            "must be at most {MAX_REDIRECT_URI_LENGTH} characters"
        ));
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters only (percent-encode the rest)".into());
    }
    if raw.contains('#') {
        return Err("must not have a fragment".into());
    }
    let url = url::Url::parse(raw).map_err(|_| "must be an absolute URL".to_owned())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user information".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err("must name a host".into()),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("must be https (plain http only on localhost or a loopback address)".into()),
        _ => Err("must be an https URL".into()),
    }
}

/// Checks a whole list; `field` names the list in the errors (`redirect_uris[2]`).
pub fn check_redirect_uris(v: &mut crate::error::Validator, field: &str, uris: &[String]) {
    v.require(
        field,
        uris.len() <= MAX_REDIRECT_URIS,
        &format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
    );
    for (i, uri) in uris.iter().enumerate() {
        v.check(&format!("{field}[{i}]"), check_redirect_uri(uri));
        if uris[..i].contains(uri) {
            v.require(&format!("{field}[{i}]"), false, "is listed twice");
        }
    }
}

/// Replaces the client's redirect URIs (in the caller's transaction).
pub async fn replace_redirect_uris(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    api_client_id: Uuid,
    uris: &[String],
) -> AppResult<()> {
    oauth_redirect_uri::Entity::delete_many()
        .filter(oauth_redirect_uri::Column::ApiClientId.eq(api_client_id))
        .exec(db)
        .await?;
    if uris.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let rows = uris.iter().map(|uri| oauth_redirect_uri::ActiveModel {
        id: Set(Uuid::now_v7()),
        programme_id: Set(programme_id),
        api_client_id: Set(api_client_id),
        uri: Set(uri.clone()),
        created_at: Set(now),
    });
    oauth_redirect_uri::Entity::insert_many(rows)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The redirect URIs of these clients, in the order registered.
pub async fn redirect_uris(
    db: &impl ConnectionTrait,
    api_client_ids: &[Uuid],
) -> AppResult<HashMap<Uuid, Vec<String>>> {
    use sea_orm::QueryOrder;
    if api_client_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = oauth_redirect_uri::Entity::find()
        .filter(oauth_redirect_uri::Column::ApiClientId.is_in(api_client_ids.iter().copied()))
        .order_by_asc(oauth_redirect_uri::Column::Id)
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, Vec<String>> = HashMap::new();
    for row in rows {
        out.entry(row.api_client_id).or_default().push(row.uri);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The authorization endpoint

/// What `/oauth/authorize` answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Authorize {
    /// The client or the redirect URI cannot be trusted: shown to the member, never
    /// redirected (RFC 6749 §4.1.2.1), so the endpoint is no open redirector.
    Refused {
        error: &'static str,
        description: String,
    },
    /// Back to the client's redirect URI with `error` (and `state`).
    Redirect { location: String },
    /// No session for the client's programme: sign in first, on the portal, branded for
    /// the client's partner; the portal comes back to the same request.
    SignIn { partner_id: Uuid },
}

/// One request's parameters, each name at most once (RFC 6749 §3.1).
pub struct AuthorizeRequest {
    params: Vec<(String, String)>,
}

impl AuthorizeRequest {
    pub fn new(params: Vec<(String, String)>) -> Self {
        Self { params }
    }

    /// `Ok(None)`: absent; `Err`: sent more than once.
    fn get(&self, name: &str) -> Result<Option<&str>, String> {
        let mut found = self.params.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(format!("{name} is given more than once"));
        }
        Ok(first)
    }
}

/// A redirect to `redirect_uri` with these parameters added to its query, and `iss`
/// (RFC 9207: the client can tell which server answered).
fn redirect_with(app: &App, redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(url) => url,
        // Registered URIs were checked to parse; keep the string as is otherwise.
        Err(_) => return redirect_uri.to_owned(),
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        query.append_pair("iss", app.member_tokens.issuer());
    }
    url.into()
}

fn redirect_error(
    app: &App,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Authorize {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    Authorize::Redirect {
        location: redirect_with(app, redirect_uri, &params),
    }
}

fn refused(error: &'static str, description: impl Into<String>) -> Authorize {
    Authorize::Refused {
        error,
        description: description.into(),
    }
}

/// Looks the request over in the order RFC 6749 §4.1.2.1 asks: first the client and the
/// redirect URI (errors shown, not redirected), then everything else (errors sent back
/// to the client). With a portal session of the client's programme, issues a code.
pub async fn authorize(
    app: &App,
    request: &AuthorizeRequest,
    session_cookie: Option<&str>,
) -> AppResult<Authorize> {
    let client_id = match request.get("client_id") {
        Ok(Some(id)) => id,
        Ok(None) => return Ok(refused("invalid_request", "client_id is missing")),
        Err(e) => return Ok(refused("invalid_request", e)),
    };
    let client = if client_id.contains('\0') {
        None
    } else {
        api_client::Entity::find()
            .filter(api_client::Column::ClientId.eq(client_id))
            .one(&app.db)
            .await?
    };
    // Only an active partner's client may sign members in; an operator client has no
    // partner to brand the sign-in and no business holding members' tokens.
    let Some((client, partner_id)) = client
        .filter(|c| c.status == crate::credentials::ACTIVE)
        .and_then(|c| c.partner_id.map(|p| (c, p)))
    else {
        return Ok(refused(
            "invalid_client",
            "unknown client_id, or a client that may not sign members in",
        ));
    };
    let redirect_uri = match request.get("redirect_uri") {
        Ok(Some(uri)) => uri,
        Ok(None) => return Ok(refused("invalid_request", "redirect_uri is missing")),
        Err(e) => return Ok(refused("invalid_request", e)),
    };
    let registered = redirect_uris(&app.db, &[client.id]).await?;
    let registered = registered.get(&client.id).map(Vec::as_slice).unwrap_or(&[]);
    // Exactly as registered: no prefix, no added path, query or trailing slash.
    if !registered.iter().any(|uri| uri == redirect_uri) {
        return Ok(refused(
            "invalid_request",
            "redirect_uri is not one the client registered (compared exactly)",
        ));
    }
    // From here on the redirect URI is trusted: errors go back to the client.
    let state = match request.get("state") {
        Ok(state) => state.filter(|s| !s.is_empty()),
        Err(e) => {
            return Ok(redirect_error(
                app,
                redirect_uri,
                None,
                "invalid_request",
                &e,
            ))
        }
    };
    let fail = |error: &str, description: &str| {
        Ok(redirect_error(app, redirect_uri, state, error, description))
    };
    let one = |name: &str| request.get(name);
    let (response_type, scope, challenge, method, nonce, prompt) = match (
        one("response_type"),
        one("scope"),
        one("code_challenge"),
        one("code_challenge_method"),
        one("nonce"),
        one("prompt"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e), Ok(f)) => (a, b, c, d, e, f),
        (a, b, c, d, e, f) => {
            let message = [a.err(), b.err(), c.err(), d.err(), e.err(), f.err()]
                .into_iter()
                .flatten()
                .next()
                .unwrap_or_default();
            return fail("invalid_request", &message);
        }
    };
    let Some(state) = state else {
        return fail("invalid_request", "state is required");
    };
    if state.len() > MAX_STATE_LENGTH || state.chars().any(char::is_control) {
        return fail(
            "invalid_request",
            "state must be at most 1024 characters, without control characters",
        );
    }
    match response_type {
        Some("code") => {}
        None => return fail("invalid_request", "response_type is missing"),
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
    }
    let scopes: Vec<&str> = scope
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if scopes.is_empty() {
        return fail("invalid_scope", "scope must name openid and/or member");
    }
    if let Some(unknown) = scopes.iter().find(|s| !SUPPORTED_SCOPES.contains(*s)) {
        return fail(
            "invalid_scope",
            &format!("scope {unknown} is not supported (openid, member)"),
        );
    }
    let scope = SUPPORTED_SCOPES
        .iter()
        .filter(|s| scopes.contains(*s))
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    match method {
        Some("S256") => {}
        None => {
            return fail(
                "invalid_request",
                "code_challenge_method=S256 is required (PKCE)",
            )
        }
        Some(_) => {
            return fail(
                "invalid_request",
                "only code_challenge_method=S256 is supported; plain is refused",
            )
        }
    }
    let Some(challenge) = challenge.filter(|c| is_s256_challenge(c)) else {
        return fail(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        );
    };
    if nonce.is_some_and(|n| n.is_empty() || n.len() > 255 || n.chars().any(char::is_control)) {
        return fail(
            "invalid_request",
            "nonce must be 1 to 255 characters, without control characters",
        );
    }
    // OIDC Core §3.1.2.1: how long ago, at most, the member may have signed in.
    let max_age = match one("max_age") {
        // RFC 6749 §3.1: a parameter without a value is as if omitted.
        Ok(None | Some("")) => None,
        Ok(Some(text)) => match text.parse::<u32>() {
            Ok(seconds) => Some(Duration::seconds(seconds.into())),
            Err(_) => {
                return fail(
                    "invalid_request",
                    "max_age must be a whole number of seconds (0 to 4294967295)",
                )
            }
        },
        Err(e) => return fail("invalid_request", &e),
    };
    // Only `none` is honoured. A fresh sign-in (`login`), a consent screen (`consent`)
    // or an account choice cannot be forced here — the portal's sign-in comes back to
    // this very request, so `login` would loop — and OIDC Core §3.1.2.1 asks for an
    // error rather than silently ignoring them.
    let mut prompt_none = false;
    for value in prompt.unwrap_or("").split(' ').filter(|p| !p.is_empty()) {
        match value {
            "none" => prompt_none = true,
            "login" => {
                return fail(
                    "login_required",
                    "a new sign-in cannot be forced here; sign out on the portal first",
                )
            }
            "consent" => return fail("consent_required", "there is no consent screen"),
            "select_account" => {
                return fail("account_selection_required", "there is no account choice")
            }
            _ => return fail("invalid_request", "prompt may only be none"),
        }
    }

    // A session of another programme is no session here: it must not open this one.
    let session = match session_cookie {
        Some(cookie) => crate::member_sessions::find(app, cookie)
            .await?
            .filter(|s| s.programme_id == client.programme_id),
        None => None,
    };
    let Some(session) = session else {
        if prompt_none {
            return fail("login_required", "the member is not signed in");
        }
        return Ok(Authorize::SignIn { partner_id });
    };
    // A sign-in older than `max_age` cannot be renewed here either (see `prompt`): the
    // client hears so rather than getting an ID token whose `auth_time` it would refuse.
    // A sign-in of the last few seconds is the one this very request sent her through
    // (the portal comes back here): it meets any `max_age`, 0 included.
    if max_age.is_some_and(|max| Utc::now() - session.signed_in_at > max.max(FRESH_SIGN_IN)) {
        return fail(
            "login_required",
            "the member signed in longer ago than max_age; she signs out on the portal and in again",
        );
    }
    let code = issue_code(
        app,
        &client,
        &session,
        &scope,
        redirect_uri,
        challenge,
        nonce,
    )
    .await?;
    Ok(Authorize::Redirect {
        location: redirect_with(app, redirect_uri, &[("code", &code), ("state", state)]),
    })
}

/// A sign-in this recent meets any `max_age`: the member just entered her code for the
/// request (it takes her a redirect to come back).
const FRESH_SIGN_IN: Duration = Duration::seconds(5);

/// RFC 7636 §4.2: S256 gives 32 bytes, 43 base64url characters without padding.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn is_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// 256 random bits, base64url. Never a PAN-like run of digits (the API refuses those
/// wherever they appear): such a draw is drawn again.
fn random_secret() -> String {
    loop {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let value = URL_SAFE_NO_PAD.encode(bytes);
        if !coalition_domain::bank::contains_pan(&value) {
            return value;
        }
    }
}

async fn issue_code(
    app: &App,
    client: &api_client::Model,
    session: &crate::member_sessions::MemberSession,
    scope: &str,
    redirect_uri: &str,
    challenge: &str,
    nonce: Option<&str>,
) -> AppResult<String> {
    let now = Utc::now();
    let code = random_secret();
    let grant_id = Uuid::now_v7();
    let txn = app.db.begin().await?;
    oauth_grant::Entity::insert(oauth_grant::ActiveModel {
        id: Set(grant_id),
        programme_id: Set(client.programme_id),
        api_client_id: Set(client.id),
        member_id: Set(session.member_id),
        scope: Set(scope.to_owned()),
        nonce: Set(nonce.map(str::to_owned)),
        // When she entered her code: a client checking `max_age` compares with this.
        auth_time: Set(session.signed_in_at),
        created_at: Set(now),
        revoked_at: Set(None),
    })
    .exec_without_returning(&txn)
    .await?;
    oauth_code::Entity::insert(oauth_code::ActiveModel {
        id: Set(Uuid::now_v7()),
        grant_id: Set(grant_id),
        code_hash: Set(hash(&code)),
        redirect_uri: Set(redirect_uri.to_owned()),
        code_challenge: Set(challenge.to_owned()),
        expires_at: Set(now + Duration::seconds(CODE_TTL_SECONDS)),
        used_at: Set(None),
    })
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(code)
}

// ---------------------------------------------------------------------------------
// The token endpoint

/// What the token endpoint answers for a member grant.
#[derive(Debug)]
pub struct TokenSet {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub scope: String,
    pub id_token: Option<String>,
}

fn invalid_grant(message: &str) -> AppError {
    AppError::InvalidGrant(message.to_owned())
}

/// Marks the grant revoked: its refresh tokens and access tokens stop working.
async fn revoke_grant(db: &impl ConnectionTrait, grant_id: Uuid) -> AppResult<()> {
    oauth_grant::Entity::update_many()
        .col_expr(oauth_grant::Column::RevokedAt, Expr::value(Utc::now()))
        .filter(oauth_grant::Column::Id.eq(grant_id))
        .filter(oauth_grant::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// The grant, if it belongs to this client and is not revoked; the member must still be
/// there (not erased) in the client's programme.
async fn live_grant(
    db: &impl ConnectionTrait,
    client: &api_client::Model,
    grant_id: Uuid,
) -> AppResult<oauth_grant::Model> {
    let grant = oauth_grant::Entity::find_by_id(grant_id)
        .one(db)
        .await?
        .ok_or_else(|| invalid_grant("the grant is unknown"))?;
    if grant.api_client_id != client.id || grant.programme_id != client.programme_id {
        return Err(invalid_grant("the grant was issued to another client"));
    }
    if grant.revoked_at.is_some() {
        return Err(invalid_grant("the grant was revoked"));
    }
    member_alive(db, grant.programme_id, grant.member_id)
        .await?
        .then_some(grant)
        .ok_or_else(|| invalid_grant("the member's data was erased"))
}

async fn member_alive(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    member_id: Uuid,
) -> AppResult<bool> {
    let row = member::Entity::find_by_id(member_id).one(db).await?;
    Ok(row.is_some_and(|m| m.programme_id == programme_id && m.erased_at.is_none()))
}

/// `grant_type=authorization_code` for an authenticated client.
pub async fn exchange_code(
    app: &App,
    client: &api_client::Model,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> AppResult<TokenSet> {
    let now = Utc::now();
    let row = oauth_code::Entity::find()
        .filter(oauth_code::Column::CodeHash.eq(hash(code)))
        .one(&app.db)
        .await?
        .ok_or_else(|| invalid_grant("the authorization code is unknown"))?;
    let grant = oauth_grant::Entity::find_by_id(row.grant_id)
        .one(&app.db)
        .await?
        .ok_or_else(|| invalid_grant("the authorization code is unknown"))?;
    // Another client holding the code learns nothing and spoils nothing.
    if grant.api_client_id != client.id {
        return Err(invalid_grant(
            "the authorization code was issued to another client",
        ));
    }
    if row.used_at.is_some() {
        // A replay: the first exchange may have been an attacker's, or this one is.
        revoke_grant(&app.db, grant.id).await?;
        return Err(invalid_grant(
            "the authorization code was used already; the tokens issued with it are revoked",
        ));
    }
    if row.expires_at <= now {
        return Err(invalid_grant("the authorization code expired"));
    }
    if row.redirect_uri != redirect_uri {
        return Err(invalid_grant(
            "redirect_uri is not the one the authorization request named",
        ));
    }
    if !is_verifier(verifier) || s256(verifier) != row.code_challenge {
        return Err(invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    let grant = live_grant(&app.db, client, grant.id).await?;
    let txn = app.db.begin().await?;
    // Used once, whatever else exchanges it at the same moment on any process.
    let won = oauth_code::Entity::update_many()
        .col_expr(oauth_code::Column::UsedAt, Expr::value(now))
        .filter(oauth_code::Column::Id.eq(row.id))
        .filter(oauth_code::Column::UsedAt.is_null())
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !won {
        txn.rollback().await?;
        revoke_grant(&app.db, grant.id).await?;
        return Err(invalid_grant(
            "the authorization code was used already; the tokens issued with it are revoked",
        ));
    }
    let refresh_token = insert_refresh_token(&txn, &grant, now).await?;
    txn.commit().await?;
    let id_token = if grant.scope.split(' ').any(|s| s == "openid") {
        Some(app.member_tokens.issue_id_token(
            grant.member_id,
            &client.client_id,
            grant.auth_time.timestamp(),
            grant.nonce.as_deref(),
        )?)
    } else {
        None
    };
    let access_token = access_token(app, client, &grant, &grant.scope)?;
    Ok(TokenSet {
        access_token,
        expires_in: crate::auth::member_tokens::ACCESS_TTL_SECONDS,
        refresh_token,
        scope: grant.scope,
        id_token,
    })
}

fn access_token(
    app: &App,
    client: &api_client::Model,
    grant: &oauth_grant::Model,
    scope: &str,
) -> AppResult<String> {
    app.member_tokens.issue_access(&AccessGrant {
        programme_id: grant.programme_id,
        member_id: grant.member_id,
        client_id: &client.client_id,
        client_generation: client.generation,
        grant_id: grant.id,
        scope,
    })
}

/// When a grant can no longer be refreshed.
fn grant_ends(grant: &oauth_grant::Model) -> DateTime<Utc> {
    grant.auth_time + Duration::days(GRANT_LIFETIME_DAYS)
}

async fn insert_refresh_token(
    db: &impl ConnectionTrait,
    grant: &oauth_grant::Model,
    now: DateTime<Utc>,
) -> AppResult<String> {
    let token = random_secret();
    oauth_refresh_token::Entity::insert(oauth_refresh_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        grant_id: Set(grant.id),
        token_hash: Set(hash(&token)),
        created_at: Set(now),
        expires_at: Set((now + Duration::days(REFRESH_TTL_DAYS)).min(grant_ends(grant))),
        used_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(token)
}

/// `grant_type=refresh_token` for an authenticated client: the token is rotated (the
/// answer carries the next one); a rotated token presented again revokes the grant.
/// `scope` may narrow the access token's scope, never widen it.
pub async fn refresh(
    app: &App,
    client: &api_client::Model,
    token: &str,
    scope: Option<&str>,
) -> AppResult<TokenSet> {
    let now = Utc::now();
    let row = oauth_refresh_token::Entity::find()
        .filter(oauth_refresh_token::Column::TokenHash.eq(hash(token)))
        .one(&app.db)
        .await?
        .ok_or_else(|| invalid_grant("the refresh token is unknown"))?;
    let grant = oauth_grant::Entity::find_by_id(row.grant_id)
        .one(&app.db)
        .await?
        .ok_or_else(|| invalid_grant("the refresh token is unknown"))?;
    if grant.api_client_id != client.id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if row.used_at.is_some() {
        revoke_grant(&app.db, grant.id).await?;
        return Err(invalid_grant(
            "the refresh token was used already; the grant is revoked, sign the member in again",
        ));
    }
    if row.expires_at <= now {
        return Err(invalid_grant("the refresh token expired"));
    }
    let grant = live_grant(&app.db, client, grant.id).await?;
    if grant_ends(&grant) <= now {
        return Err(invalid_grant(&format!(
            "the member signed in more than {GRANT_LIFETIME_DAYS} days ago; sign her in again"
        )));
    }
    let granted: Vec<&str> = grant.scope.split(' ').collect();
    let scope = match scope.map(str::trim).filter(|s| !s.is_empty()) {
        None => grant.scope.clone(),
        Some(asked) => {
            let asked: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
            if asked.iter().any(|s| !granted.contains(s)) {
                return Err(AppError::InvalidScope);
            }
            SUPPORTED_SCOPES
                .iter()
                .filter(|s| asked.contains(*s))
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let txn = app.db.begin().await?;
    let won = oauth_refresh_token::Entity::update_many()
        .col_expr(oauth_refresh_token::Column::UsedAt, Expr::value(now))
        .filter(oauth_refresh_token::Column::Id.eq(row.id))
        .filter(oauth_refresh_token::Column::UsedAt.is_null())
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !won {
        txn.rollback().await?;
        revoke_grant(&app.db, grant.id).await?;
        return Err(invalid_grant(
            "the refresh token was used already; the grant is revoked, sign the member in again",
        ));
    }
    let next = insert_refresh_token(&txn, &grant, now).await?;
    txn.commit().await?;
    Ok(TokenSet {
        access_token: access_token(app, client, &grant, &scope)?,
        expires_in: crate::auth::member_tokens::ACCESS_TTL_SECONDS,
        refresh_token: next,
        scope,
        // OIDC Core §12.2: a refresh answer may leave the ID token out; the client has
        // the one from the sign-in.
        id_token: None,
    })
}

// ---------------------------------------------------------------------------------
// Member tokens on requests

/// The member of a bearer token on a `/v1/me` request: a valid member access token
/// whose client may still act (active, same generation), whose grant is not revoked,
/// and whose member still exists, unerased, in the token's programme. A partner's or
/// the operator's valid token is `MemberTokenRequired` (403); anything else 401.
pub async fn authenticate_member(app: &App, token: &str) -> AppResult<MemberPrincipal> {
    let claims = match app.member_tokens.verify_access_claims(token) {
        Ok(claims) => claims,
        Err(refusal) => {
            return Err(if app.tokens.verify(token).is_ok() {
                AppError::MemberTokenRequired
            } else {
                refusal
            })
        }
    };
    let member_id = Uuid::parse_str(&claims.sub)
        .map_err(|_| AppError::Unauthorized("the access token is malformed".into()))?;
    let issued = IssuedUnder {
        generation: claims.gen,
        issued_at: claims.iat,
    };
    crate::credentials::admit(app, claims.programme_id, &claims.client_id, &issued).await?;
    let grant = oauth_grant::Entity::find_by_id(claims.grant_id)
        .one(&app.db)
        .await?;
    let grant_live = grant.is_some_and(|g| {
        g.revoked_at.is_none() && g.member_id == member_id && g.programme_id == claims.programme_id
    });
    if !grant_live {
        return Err(AppError::TokenRevoked);
    }
    if !member_alive(&app.db, claims.programme_id, member_id).await? {
        return Err(AppError::Unauthorized(
            "the access token's member no longer exists".into(),
        ));
    }
    Ok(MemberPrincipal {
        programme_id: claims.programme_id,
        member_id,
    })
}

/// What `forget_ended` deleted.
#[derive(Debug, Default, serde::Serialize)]
pub struct ForgottenGrants {
    pub oauth_codes: u64,
    pub refresh_tokens: u64,
    pub grants: u64,
}

/// Deletes authorization codes past their end and refresh tokens an access token's life
/// past theirs, then grants that have neither left: the `forget-sign-ins` job. A used
/// code or rotated refresh token is kept until its own end, so that its replay still
/// revokes the grant until then. A grant with no refresh token left issued its last
/// access token (which names the grant) when its last refresh token was made, before
/// that token's end, so that access token has ended too; one whose code was never
/// exchanged issued none. Grants younger than a code's life are left alone.
pub async fn forget_ended<C: ConnectionTrait>(
    db: &C,
    now: DateTime<Utc>,
) -> AppResult<ForgottenGrants> {
    use sea_orm::sea_query::Query;
    let oauth_codes = oauth_code::Entity::delete_many()
        .filter(oauth_code::Column::ExpiresAt.lte(now))
        .exec(db)
        .await?
        .rows_affected;
    // An access token issued with a refresh token can outlive it (one ending with the
    // 90 days of its grant may have minutes left): the row, and so the grant, stays
    // until that access token has ended too.
    let access_life = Duration::seconds(crate::auth::member_tokens::ACCESS_TTL_SECONDS);
    let refresh_tokens = oauth_refresh_token::Entity::delete_many()
        .filter(oauth_refresh_token::Column::ExpiresAt.lte(now - access_life))
        .exec(db)
        .await?
        .rows_affected;
    let codes_of_grant = Query::select()
        .expr(Expr::val(1))
        .from(oauth_code::Entity)
        .and_where(
            Expr::col((oauth_code::Entity, oauth_code::Column::GrantId))
                .equals((oauth_grant::Entity, oauth_grant::Column::Id)),
        )
        .to_owned();
    let tokens_of_grant = Query::select()
        .expr(Expr::val(1))
        .from(oauth_refresh_token::Entity)
        .and_where(
            Expr::col((
                oauth_refresh_token::Entity,
                oauth_refresh_token::Column::GrantId,
            ))
            .equals((oauth_grant::Entity, oauth_grant::Column::Id)),
        )
        .to_owned();
    let grants = oauth_grant::Entity::delete_many()
        .filter(oauth_grant::Column::CreatedAt.lte(now - Duration::seconds(CODE_TTL_SECONDS)))
        .filter(Expr::exists(codes_of_grant).not())
        .filter(Expr::exists(tokens_of_grant).not())
        .exec(db)
        .await?
        .rows_affected;
    Ok(ForgottenGrants {
        oauth_codes,
        refresh_tokens,
        grants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback_http_without_fragments() {
        for ok in [
            "https://app.example/callback",
            "https://app.example/cb?x=1",
            "http://localhost:8000/cb",
            "http://127.0.0.1:9/cb",
            "http://[::1]/cb",
        ] {
            assert_eq!(check_redirect_uri(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://app.example/cb",
            "https://app.example/cb#frag",
            "https://app.example/cb#",
            "/relative",
            "javascript:alert(1)",
            "https://user:pw@app.example/cb",
            "https://app.example/a b",
            "ftp://app.example/",
            "",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
        assert!(check_redirect_uri(&format!("https://a.example/{}", "x".repeat(2000))).is_err());
    }

    #[test]
    fn pkce_s256_is_the_rfc7636_example() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(is_verifier(verifier));
        assert_eq!(
            s256(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!is_s256_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c"
        ));
        assert!(!is_verifier("short"));
        assert!(!is_verifier(&"a".repeat(129)));
        assert!(!is_verifier(&format!("{}!", "a".repeat(50))));
    }

    #[test]
    fn secrets_are_long_random_and_hashed() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), a);
    }
}
