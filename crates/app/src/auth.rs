//! OAuth2 client credentials: clients with argon2-hashed secrets, and short-lived JWT
//! access tokens (RFC 9068 profile) signed with a key from configuration or, on the
//! embedded default, one generated on first start and kept in the database. Failed
//! client authentications are limited and verified secrets remembered (`guard`).

mod guard;
pub mod member_tokens;

pub use guard::{FailureLimits, TokenGuard, FAILURE_WINDOW};

use crate::{AppError, AppResult, Caller, Scope};
use argon2::password_hash::{
    rand_core::OsRng, Output, ParamsString, PasswordHash, Salt, SaltString,
};
use argon2::{Argon2, Block, Params, Version};
use coalition_store::entities::api_client;
use coalition_store::failures::Counted;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sea_orm::{ConnectionTrait, EntityTrait};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

const ISSUER: &str = "coalition";
const AUDIENCE: &str = "coalition-api";
const SIGNING_KEY_SETTING: &str = "jwt_hs256_signing_key";

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub ttl_seconds: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    sub: String,
    client_id: String,
    scope: String,
    programme_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    partner_id: Option<Uuid>,
    iat: i64,
    exp: i64,
    jti: String,
    /// The client's generation at issue (`credentials`); tokens from before this claim
    /// existed count as generation 0.
    #[serde(default)]
    gen: i64,
}

/// What a token says about when and under which client generation it was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedUnder {
    pub generation: i64,
    /// Unix seconds.
    pub issued_at: i64,
}

pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8], ttl_seconds: i64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_seconds,
        }
    }

    /// Uses the configured secret, or the one kept with the data, generating it on first
    /// start. Insert-then-read means concurrent first starts agree on one key.
    pub async fn load_or_generate(
        db: &impl ConnectionTrait,
        configured: Option<&str>,
        ttl_seconds: i64,
    ) -> AppResult<Self> {
        if let Some(secret) = configured {
            return Ok(Self::from_secret(secret.as_bytes(), ttl_seconds));
        }
        let stored =
            crate::settings::kept_or_stored(db, SIGNING_KEY_SETTING, random_hex(32)).await?;
        let secret = hex::decode(&stored)
            .map_err(|e| AppError::Internal(format!("stored signing key: {e}")))?;
        Ok(Self::from_secret(&secret, ttl_seconds))
    }

    pub fn issue(&self, client: &api_client::Model, scope: &str) -> AppResult<IssuedToken> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: client.client_id.clone(),
            client_id: client.client_id.clone(),
            scope: scope.to_owned(),
            programme_id: client.programme_id,
            partner_id: client.partner_id,
            iat: now,
            exp: now + self.ttl_seconds,
            jti: Uuid::new_v4().to_string(),
            gen: client.generation,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        let access_token = jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("signing token: {e}")))?;
        Ok(IssuedToken {
            access_token,
            expires_in: self.ttl_seconds,
            scope: scope.to_owned(),
        })
    }

    /// Accepts only what `issue` makes: HS256 (the only algorithm), `typ: at+jwt` (RFC
    /// 9068 §4: an ID token or another JWT signed with the same key is not an access
    /// token), our issuer and audience, and a lifetime that has begun (`nbf`) and not
    /// ended (`exp`), with a few seconds of leeway for clocks.
    pub fn verify(&self, token: &str) -> AppResult<Caller> {
        self.verify_issued(token).map(|(caller, _)| caller)
    }

    /// [`Self::verify`], with the generation and time of issue that `credentials`
    /// checks against the client's current state.
    pub fn verify_issued(&self, token: &str) -> AppResult<(Caller, IssuedUnder)> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AppError::Unauthorized(token_refusal(e.kind()).into()))?;
        if !data.header.typ.as_deref().is_some_and(is_access_token_type) {
            return Err(AppError::Unauthorized(
                "invalid access token: its typ is not at+jwt".into(),
            ));
        }
        let claims = data.claims;
        let scope = Scope::parse(&claims.scope)
            .ok_or_else(|| AppError::Unauthorized("token has an unknown scope".into()))?;
        let issued = IssuedUnder {
            generation: claims.gen,
            issued_at: claims.iat,
        };
        let caller = Caller {
            programme_id: claims.programme_id,
            client_id: claims.client_id,
            scope,
            partner_id: claims.partner_id,
        };
        Ok((caller, issued))
    }
}

/// Why a token was refused, in words: the library's own error names (`InvalidToken`,
/// `ExpiredSignature`) are internal and must not reach a caller.
fn token_refusal(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "the access token expired",
        ErrorKind::ImmatureSignature => "the access token is not valid yet",
        ErrorKind::InvalidSignature => "the access token's signature does not verify",
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
            "the access token was not issued for this API"
        }
        ErrorKind::InvalidAlgorithm => "the access token is not signed with HS256",
        _ => "the access token is malformed",
    }
}

/// `at+jwt`, or the full media type `application/at+jwt` (RFC 9068 §2.1, RFC 7515 §4.1.9:
/// compared case-insensitively).
fn is_access_token_type(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    typ == "at+jwt" || typ == "application/at+jwt"
}

/// Argon2's working memory (19 MiB with the default parameters), allocated once and
/// reused under a lock. Allocating it per call left a copy in the malloc arena of every
/// blocking thread that ever hashed: resident memory grew by ~19 MB per thread, past
/// 130 MB after a handful of token requests. The lock also runs one hash at a time.
static ARGON2_MEMORY: Mutex<Vec<Block>> = Mutex::new(Vec::new());

fn argon2_output(
    argon: &Argon2,
    params: &Params,
    secret: &[u8],
    salt: Salt,
) -> argon2::password_hash::Result<Output> {
    let mut salt_buffer = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buffer)?;
    let mut memory = ARGON2_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let length = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    Output::init_with(length, |out| {
        Ok(argon.hash_password_into_with_memory(secret, salt_bytes, out, &mut memory[..blocks])?)
    })
}

/// An argon2id PHC string (the format `PasswordHash` parses) for a client secret.
pub fn hash_secret(secret: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::default();
    let argon = Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, params.clone());
    let hashed =
        argon2_output(&argon, &params, secret.as_bytes(), salt.as_salt()).and_then(|output| {
            Ok(PasswordHash {
                algorithm: argon2::Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(&params)?,
                salt: Some(salt.as_salt()),
                hash: Some(output),
            }
            .to_string())
        });
    hashed.map_err(|e| AppError::Internal(format!("hashing secret: {e}")))
}

fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    let Ok(stored) = PasswordHash::new(stored_hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        argon2::Algorithm::try_from(stored.algorithm),
        Params::try_from(&stored),
        stored.salt,
        stored.hash,
    ) else {
        return false;
    };
    let version = stored
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .unwrap_or(Version::V0x13);
    let argon = Argon2::new(algorithm, version, params.clone());
    // Output compares in constant time.
    argon2_output(&argon, &params, secret.as_bytes(), salt).is_ok_and(|out| out == expected)
}

/// A new client id and secret. Neither ever holds a PAN-like run of digits (which the
/// API refuses wherever it appears, hex words included): such a draw is drawn again.
pub fn new_credentials() -> (String, String) {
    let clean = |prefix: &str, bytes: usize| loop {
        let value = format!("{prefix}{}", random_hex(bytes));
        if !coalition_domain::bank::contains_pan(&value) {
            break value;
        }
    };
    (clean("cl_", 12), clean("cs_", 32))
}

/// The client-credentials grant: authenticate the client, then sign a token for the
/// requested scope (the client's own scope when none is asked). A secret verified in the
/// last hour is recognised without a hash and passes even while its client id or source
/// address is over its limit: otherwise anyone who knows a client id, or shares a proxy's
/// address with a till, could lock the till out. Any other attempt by a limited client id
/// or address is refused before anything is hashed.
pub async fn client_credentials_grant(
    app: &crate::App,
    client_id: &str,
    client_secret: &str,
    requested_scope: Option<&str>,
    source: Option<IpAddr>,
) -> AppResult<IssuedToken> {
    let client = authenticate_client(app, client_id, client_secret, source).await?;
    let scope = match requested_scope.map(str::trim).filter(|s| !s.is_empty()) {
        None => client.scope.clone(),
        Some(s) if s == client.scope => client.scope.clone(),
        Some(_) => return Err(AppError::InvalidScope),
    };
    app.tokens.issue(&client, &scope)
}

/// Client authentication at the token endpoint, for every grant: the active client whose
/// secret this is, with the limits and the memory of verified secrets described at
/// [`client_credentials_grant`]; `InvalidClient` otherwise.
pub async fn authenticate_client(
    app: &crate::App,
    client_id: &str,
    client_secret: &str,
    source: Option<IpAddr>,
) -> AppResult<api_client::Model> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let guard = &app.token_guard;
    let counted = guard.counted(client_id, source);
    // No client id holds a NUL, and PostgreSQL would refuse one in the query.
    let client = if client_id.contains('\0') {
        None
    } else {
        api_client::Entity::find()
            .filter(api_client::Column::ClientId.eq(client_id))
            .one(&app.db)
            .await?
    };
    // A disabled client is refused like an unknown one (its secret is still hashed
    // against the dummy, so timing tells nothing).
    let client = client.filter(|c| c.status == crate::credentials::ACTIVE);
    let accepted = client
        .as_ref()
        .map(|c| accepted_hashes(c, chrono::Utc::now()))
        .unwrap_or_default();
    let remembered = accepted
        .iter()
        .any(|hash| guard.remembers(client_id, hash, client_secret));
    if !remembered {
        guard.refuse_if_limited(&counted).await?;
    }
    let verified =
        remembered || verify_secret(guard, &counted, &accepted, client_id, client_secret).await?;
    client.filter(|_| verified).ok_or(AppError::InvalidClient)
}

/// The stored hashes whose secret gets a token now: the current one, and the one a
/// rotation replaced while its overlap lasts. The remembered digests are keyed by the
/// hash, so a secret past its overlap is not remembered either.
fn accepted_hashes(client: &api_client::Model, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let previous = client.previous_secret_hash.clone().filter(|_| {
        client
            .previous_secret_expires_at
            .is_some_and(|until| until > now)
    });
    std::iter::once(client.secret_hash.clone())
        .chain(previous)
        .collect()
}

/// Whether `secret` is the client's, checked by argon2 — for unknown ids too, against a dummy hash, so timing does not
/// reveal which ids exist. A failure is counted against `counted`.
async fn verify_secret(
    guard: &Arc<TokenGuard>,
    counted: &[Counted],
    accepted: &[String],
    client_id: &str,
    secret: &str,
) -> AppResult<bool> {
    let known = !accepted.is_empty();
    let stored = if known {
        accepted.to_vec()
    } else {
        vec![dummy_hash()]
    };
    // A task of its own, which runs to the end even when the request is dropped: hyper
    // drops a handler whose client hangs up, and a failure must be counted all the same
    // (else hanging up mid-hash would be an attack that is never limited).
    let attempt = Attempt {
        guard: guard.clone(),
        counted: counted.to_vec(),
        client_id: client_id.to_owned(),
        stored,
        secret: secret.to_owned(),
        known,
    };
    tokio::spawn(attempt.hash())
        .await
        .map_err(|_| AppError::Internal("verifying a secret: the task failed".into()))?
}

/// One argon2 verification with everything it needs, owned.
struct Attempt {
    guard: Arc<TokenGuard>,
    counted: Vec<Counted>,
    client_id: String,
    /// Tried in order; the first that matches is remembered.
    stored: Vec<String>,
    secret: String,
    known: bool,
}

impl Attempt {
    async fn hash(self) -> AppResult<bool> {
        let guard = &self.guard;
        // Verifications take turns (argon2 has one buffer). An attempt that waited in
        // line is asked again at its turn: the failures ahead of it may have reached the
        // limit, so however many attempts are in flight, a window costs `limit` hashes.
        let _turn = guard.hashing_turn().await;
        guard.refuse_if_limited(&self.counted).await?;
        let mut matched = None;
        for stored in &self.stored {
            guard.hashing();
            let (presented, against) = (self.secret.clone(), stored.clone());
            // The join error is not shown: a panic's text could quote the secret.
            let matches = tokio::task::spawn_blocking(move || secret_matches(&presented, &against))
                .await
                .map_err(|_| {
                    AppError::Internal("verifying a secret: the hashing task failed".into())
                })?;
            if matches {
                matched = Some(stored);
                break;
            }
        }
        match matched.filter(|_| self.known) {
            Some(stored) => {
                guard.remember(&self.client_id, stored, &self.secret);
                Ok(true)
            }
            None => {
                // Counted before the turn passes on, so the next in line sees it.
                guard.failed(&self.counted).await;
                Ok(false)
            }
        }
    }
}

fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_secret("not-a-client-secret").unwrap_or_default())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(partner: Option<Uuid>) -> api_client::Model {
        api_client::Model {
            id: Uuid::new_v4(),
            programme_id: Uuid::new_v4(),
            client_id: "cl_x".into(),
            secret_hash: String::new(),
            name: "pos".into(),
            partner_id: partner,
            scope: "partner".into(),
            created_at: chrono::Utc::now(),
            status: "active".into(),
            generation: 3,
            previous_secret_hash: None,
            previous_secret_expires_at: None,
        }
    }

    #[test]
    fn a_token_verifies_only_with_its_key_and_carries_the_tenant() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef", 60);
        let c = client(Some(Uuid::new_v4()));
        let token = keys.issue(&c, "partner").unwrap();
        let caller = keys.verify(&token.access_token).unwrap();
        assert_eq!(
            (caller.programme_id, caller.partner_id, caller.scope),
            (c.programme_id, c.partner_id, Scope::Partner)
        );
        let other = TokenKeys::from_secret(b"another-key-another-key-another!!", 60);
        assert!(other.verify(&token.access_token).is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef", -120);
        let token = keys.issue(&client(None), "admin").unwrap();
        assert!(matches!(
            keys.verify(&token.access_token),
            Err(AppError::Unauthorized(_))
        ));
    }

    #[test]
    fn secrets_are_stored_hashed_and_verified() {
        let hash = hash_secret("cs_secret").unwrap();
        assert!(!hash.contains("cs_secret"));
        assert!(secret_matches("cs_secret", &hash));
        assert!(!secret_matches("cs_other", &hash));
        // Hashes written by the argon2 crate's own hasher (earlier versions) still verify.
        use argon2::password_hash::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let crate_hash = Argon2::default()
            .hash_password(b"cs_secret", &salt)
            .unwrap()
            .to_string();
        assert!(secret_matches("cs_secret", &crate_hash));
        assert!(!secret_matches("cs_other", &crate_hash));
    }
}
