//! Member tokens: access tokens and OpenID Connect ID tokens for one member, signed
//! ES256 (P-256) so that partners' apps can verify ID tokens with the public half we
//! publish (JWKS). The key comes from `COALITION_MEMBER_SIGNING_KEY` (PKCS#8 PEM) or is
//! generated on first start and kept in the settings table, like the HS256 secret of
//! partner and operator tokens (`auth::TokenKeys`). Partner/admin tokens stay HS256: the
//! two kinds can never be mistaken for each other, because each verifier accepts exactly
//! one algorithm.

use crate::me::MemberPrincipal;
use crate::{AppError, AppResult};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The audience of member access tokens: this API (RFC 9068 `aud`).
pub const AUDIENCE: &str = "coalition-api";
/// The scope a member token needs to open `/v1/me`.
pub const MEMBER_SCOPE: &str = "member";
/// Access tokens are short: a refresh token gets the next one, and a revoked grant or an
/// erased member is refused on every request anyway.
pub const ACCESS_TTL_SECONDS: i64 = 15 * 60;
/// ID tokens only prove a sign-in to the client that asked; a few minutes is plenty.
pub const ID_TOKEN_TTL_SECONDS: i64 = 10 * 60;
const SIGNING_KEY_SETTING: &str = "member_es256_pkcs8";

pub struct MemberTokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    /// The public point, base64url (JWK `x` and `y`).
    x: String,
    y: String,
    issuer: String,
}

/// What a member access token says (RFC 9068 claims plus ours).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The member's id.
    pub sub: String,
    pub client_id: String,
    pub scope: String,
    pub programme_id: Uuid,
    /// The grant (one sign-in of one member at one client) the token belongs to; a
    /// revoked grant's tokens are refused.
    pub grant_id: Uuid,
    /// The client's generation at issue (`credentials`), as in partner tokens.
    pub gen: i64,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: String,
    azp: String,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
}

/// What an access token is issued for.
pub struct AccessGrant<'a> {
    pub programme_id: Uuid,
    pub member_id: Uuid,
    pub client_id: &'a str,
    pub client_generation: i64,
    pub grant_id: Uuid,
    pub scope: &'a str,
}

impl MemberTokenKeys {
    /// The key from PKCS#8 DER. `issuer` is the public base URL (`COALITION_PUBLIC_URL`).
    pub fn from_pkcs8(der: &[u8], issuer: &str) -> AppResult<Self> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .map_err(|_| {
                AppError::Internal("the member signing key is not a PKCS#8 P-256 key".into())
            })?;
        // An uncompressed point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(AppError::Internal(
                "unexpected P-256 public key form".into(),
            ));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| AppError::Internal(format!("member verifying key: {e}")))?;
        Ok(Self {
            encoding: EncodingKey::from_ec_der(der),
            decoding,
            kid: thumbprint(&x, &y),
            x,
            y,
            issuer: issuer.trim_end_matches('/').to_owned(),
        })
    }

    /// A fresh key (tests, and the first start of the embedded default).
    pub fn generate(issuer: &str) -> AppResult<Self> {
        Self::from_pkcs8(&generate_pkcs8()?, issuer)
    }

    /// Uses the configured key (PKCS#8 PEM), or the one kept with the data, generating
    /// it on first start. Insert-then-read: concurrent first starts agree on one key.
    pub async fn load_or_generate(
        db: &impl ConnectionTrait,
        configured_pem: Option<&str>,
        issuer: &str,
    ) -> AppResult<Self> {
        if let Some(pem) = configured_pem {
            let der = pkcs8_pem_to_der(pem)
                .map_err(|e| AppError::Internal(format!("COALITION_MEMBER_SIGNING_KEY: {e}")))?;
            return Self::from_pkcs8(&der, issuer).map_err(|_| {
                AppError::Internal(
                    "COALITION_MEMBER_SIGNING_KEY: not a PKCS#8 P-256 private key \
                     (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)"
                        .into(),
                )
            });
        }
        let candidate = STANDARD.encode(generate_pkcs8()?);
        let stored = crate::settings::kept_or_stored(db, SIGNING_KEY_SETTING, candidate).await?;
        let der = STANDARD
            .decode(stored.trim())
            .map_err(|e| AppError::Internal(format!("stored member signing key: {e}")))?;
        Self::from_pkcs8(&der, issuer)
    }

    /// The issuer (`iss`), which is also the public base URL of this deployment.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK Set (RFC 7517).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "x": self.x,
                "y": self.y,
                "kid": self.kid,
                "use": "sig",
                "alg": "ES256",
            }]
        })
    }

    fn header(&self, typ: &str) -> Header {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.into());
        header.kid = Some(self.kid.clone());
        header
    }

    /// A member access token (RFC 9068: `typ: at+jwt`).
    pub fn issue_access(&self, grant: &AccessGrant<'_>) -> AppResult<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sub: grant.member_id.to_string(),
            client_id: grant.client_id.to_owned(),
            scope: grant.scope.to_owned(),
            programme_id: grant.programme_id,
            grant_id: grant.grant_id,
            gen: grant.client_generation,
            iat: now,
            exp: now + ACCESS_TTL_SECONDS,
            jti: Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&self.header("at+jwt"), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("signing a member token: {e}")))
    }

    /// An OpenID Connect ID token for `client_id` (its `aud`).
    pub fn issue_id_token(
        &self,
        member_id: Uuid,
        client_id: &str,
        auth_time: i64,
        nonce: Option<&str>,
    ) -> AppResult<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = IdClaims {
            iss: self.issuer.clone(),
            sub: member_id.to_string(),
            aud: client_id.to_owned(),
            azp: client_id.to_owned(),
            exp: now + ID_TOKEN_TTL_SECONDS,
            iat: now,
            auth_time,
            nonce: nonce.map(str::to_owned),
        };
        jsonwebtoken::encode(&self.header("JWT"), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("signing an ID token: {e}")))
    }

    /// The claims of a member access token: ES256 only, `typ: at+jwt` (an ID token signed
    /// with the same key is not an access token), our issuer and audience, in its
    /// lifetime, with scope `member`. Whether the member and the client still may act is
    /// the caller's check (`oidc::authenticate_member`).
    pub fn verify_access_claims(&self, token: &str) -> AppResult<AccessClaims> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)
            .map_err(|e| AppError::Unauthorized(refusal(e.kind()).into()))?;
        let typ = data
            .header
            .typ
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err(AppError::Unauthorized(
                "invalid access token: its typ is not at+jwt".into(),
            ));
        }
        if !data.claims.scope.split(' ').any(|s| s == MEMBER_SCOPE) {
            return Err(AppError::Unauthorized(
                "the access token was not granted scope member".into(),
            ));
        }
        Ok(data.claims)
    }

    /// The member a token speaks for (signature, lifetime, audience and scope checked).
    pub fn verify_access(&self, token: &str) -> AppResult<MemberPrincipal> {
        let claims = self.verify_access_claims(token)?;
        let member_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| AppError::Unauthorized("the access token is malformed".into()))?;
        Ok(MemberPrincipal {
            programme_id: claims.programme_id,
            member_id,
        })
    }
}

fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "the access token expired",
        ErrorKind::ImmatureSignature => "the access token is not valid yet",
        ErrorKind::InvalidSignature => "the access token's signature does not verify",
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
            "the access token was not issued for this API"
        }
        ErrorKind::InvalidAlgorithm => "a member access token is signed with ES256",
        _ => "the access token is malformed",
    }
}

fn generate_pkcs8() -> AppResult<Vec<u8>> {
    EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map(|doc| doc.as_ref().to_vec())
        .map_err(|_| AppError::Internal("generating the member signing key failed".into()))
}

/// RFC 7638: SHA-256 over the required members of the JWK in lexicographic order.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM. An environment variable often
/// cannot hold line breaks, so `\n` written out is taken as one, and so is no break at
/// all (the base64 on one line).
pub fn pkcs8_pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let text = pem.replace("\\n", "\n");
    if text.contains("BEGIN EC PRIVATE KEY") {
        return Err("a SEC1 'EC PRIVATE KEY'; convert it to PKCS#8 \
             (openssl pkcs8 -topk8 -nocrypt)"
            .into());
    }
    let body: String = text
        .replace("-----BEGIN PRIVATE KEY-----", "")
        .replace("-----END PRIVATE KEY-----", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if body.contains('-') {
        return Err("not a 'PRIVATE KEY' (PKCS#8) PEM".into());
    }
    STANDARD
        .decode(body)
        .map_err(|_| "the PEM's body is not base64".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(scope: &str) -> (Uuid, Uuid, AccessGrant<'_>) {
        let (programme_id, member_id) = (Uuid::new_v4(), Uuid::new_v4());
        (
            programme_id,
            member_id,
            AccessGrant {
                programme_id,
                member_id,
                client_id: "cl_app",
                client_generation: 0,
                grant_id: Uuid::new_v4(),
                scope,
            },
        )
    }

    #[test]
    fn an_access_token_verifies_with_its_key_only_and_names_the_member() {
        let keys = MemberTokenKeys::generate("http://localhost:8080/").unwrap();
        assert_eq!(keys.issuer(), "http://localhost:8080");
        let (programme_id, member_id, g) = grant("openid member");
        let token = keys.issue_access(&g).unwrap();
        let principal = keys.verify_access(&token).unwrap();
        assert_eq!(
            (principal.programme_id, principal.member_id),
            (programme_id, member_id)
        );
        let other = MemberTokenKeys::generate("http://localhost:8080").unwrap();
        assert!(other.verify_access(&token).is_err());
        let elsewhere =
            MemberTokenKeys::from_pkcs8(&generate_pkcs8().unwrap(), "https://x").unwrap();
        assert!(elsewhere.verify_access(&token).is_err());
    }

    #[test]
    fn an_id_token_or_a_token_without_member_scope_is_no_access_token() {
        let keys = MemberTokenKeys::generate("http://localhost:8080").unwrap();
        let id = keys
            .issue_id_token(Uuid::new_v4(), "cl_app", 0, Some("n"))
            .unwrap();
        assert!(keys.verify_access(&id).is_err());
        let (_, _, g) = grant("openid");
        let token = keys.issue_access(&g).unwrap();
        assert!(keys.verify_access(&token).is_err());
    }

    #[test]
    fn a_partner_token_is_not_a_member_token_and_the_other_way_round() {
        let keys = MemberTokenKeys::generate("http://localhost:8080").unwrap();
        let (_, _, g) = grant("member");
        let member = keys.issue_access(&g).unwrap();
        let partner_keys =
            crate::auth::TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef", 60);
        assert!(partner_keys.verify(&member).is_err());
        let header = jsonwebtoken::decode_header(&member).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(keys.kid()));
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint() {
        // The EC key of RFC 7517 A.1; the expected value computed independently
        // (SHA-256 of the canonical JSON with Python's hashlib).
        let x = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
        let y = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";
        assert_eq!(
            thumbprint(x, y),
            "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s"
        );
    }

    #[test]
    fn a_pem_key_is_read_with_or_without_line_breaks() {
        let der = generate_pkcs8().unwrap();
        let b64 = STANDARD.encode(&der);
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        assert_eq!(pkcs8_pem_to_der(&pem).unwrap(), der);
        let escaped = pem.replace('\n', "\\n");
        assert_eq!(pkcs8_pem_to_der(&escaped).unwrap(), der);
        assert!(pkcs8_pem_to_der("-----BEGIN EC PRIVATE KEY-----\nAA\n").is_err());
        assert!(MemberTokenKeys::from_pkcs8(b"junk", "http://x").is_err());
    }
}
