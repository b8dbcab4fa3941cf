//! PLACEHOLDER until helper PORTAL's `member_sessions` is merged (branch `portal`): the
//! interface agreed in the brief, finding no session at all. Replaced wholesale by the
//! portal's file on merge.

use crate::{App, AppResult};
use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct MemberSession {
    pub id: Uuid,
    pub member_id: Uuid,
    pub programme_id: Uuid,
    pub partner_id: Option<Uuid>,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn find(_app: &App, _cookie_value: &str) -> AppResult<Option<MemberSession>> {
    Ok(None)
}
