//! Use cases of Coalition: one function per business operation, each owning its
//! transaction boundary and its authorization decision.

pub mod analytics;
pub mod auth;
pub mod balances;
pub mod bank;
pub mod campaign_results;
pub mod campaigns;
pub mod cards;
pub mod classics;
pub mod clients;
pub mod credentials;
pub mod directory;
mod earn_statement;
pub mod error;
pub mod holds;
pub mod idempotency;
pub mod immutable;
pub mod imports;
pub mod jobs;
pub mod ledger;
pub mod mailer;
pub mod me;
pub mod member_sessions;
pub mod members;
pub mod metrics;
pub mod oidc;
pub mod outbox;
pub mod pagination;
pub mod partners;
pub mod programmes;
pub mod purchases;
pub mod refunds;
pub mod rules;
pub mod sales;
pub mod settings;
pub mod settlements;
pub mod signin;
mod snapshots;
mod spans;
pub mod terms;
pub mod tiers;
pub mod webhooks;

pub use error::{AppError, AppResult, FieldError};

use coalition_store::cache::BalanceCache;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use uuid::Uuid;

/// Shared handles every use case needs.
#[derive(Clone)]
pub struct App {
    pub db: DatabaseConnection,
    pub cache: Arc<dyn BalanceCache>,
    pub tokens: Arc<auth::TokenKeys>,
    /// ES256 keys of member access tokens and ID tokens; its issuer is the public URL.
    pub member_tokens: Arc<auth::member_tokens::MemberTokenKeys>,
    /// Limits failed client authentications; remembers verified secrets.
    pub token_guard: Arc<auth::TokenGuard>,
    pub directory: Arc<directory::MemberDirectory>,
    pub programmes: Arc<immutable::Remembered<programmes::Programme>>,
    /// Partner terms (and, with them, what else every purchase reads), per programme.
    pub terms: Arc<terms::TermsCache>,
    /// Every client's status and generation, per programme, checked on each request.
    pub credentials: Arc<credentials::CredentialsCache>,
    /// How long a POS hold reserves its points unless captured or voided first.
    pub hold_ttl: std::time::Duration,
    /// Outbound webhooks: settings and the HTTP client deliveries use.
    pub webhooks: Arc<webhooks::Webhooks>,
    /// How long a bank authorization stays pending without a clearing before the
    /// `lapse-authorizations` job removes its points.
    pub bank_authorization_lapse: chrono::Duration,
    /// Where sign-in codes go: SMTP, or the log (development mailer).
    pub mailer: Arc<mailer::Mailer>,
    /// Limits on requests for sign-in codes.
    pub signin: signin::Settings,
    /// Where the portal's sessions live: the database, or Redis when configured.
    pub sessions: member_sessions::SessionStore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Partner,
    Bank,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Partner => "partner",
            Scope::Bank => "bank",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Scope::Admin, Scope::Partner, Scope::Bank]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Who is calling, taken from a verified access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub programme_id: Uuid,
    pub client_id: String,
    pub scope: Scope,
    /// Set for partner and bank clients.
    pub partner_id: Option<Uuid>,
}

impl Caller {
    /// Refuses callers whose scope is not among `allowed`.
    pub fn require(&self, allowed: &[Scope]) -> AppResult<()> {
        if allowed.contains(&self.scope) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            Err(AppError::Forbidden(format!(
                "this operation needs scope {}",
                names.join(" or ")
            )))
        }
    }

    /// The partner a partner-scoped caller acts for.
    pub fn acting_partner(&self) -> AppResult<Uuid> {
        self.require(&[Scope::Partner])?;
        self.partner_id
            .ok_or_else(|| AppError::Forbidden("this client is not bound to a partner".into()))
    }
}
