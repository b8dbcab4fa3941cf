//! Use cases of one member (the lead's `me` module; this is only the principal the
//! OIDC side needs until that lands).

use uuid::Uuid;

/// The member a member token or a portal session speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPrincipal {
    pub programme_id: Uuid,
    pub member_id: Uuid,
}
