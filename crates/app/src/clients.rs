//! API clients of a programme: operator clients (scope admin) and clients bound to one
//! partner (scope partner, or bank for a bank partner).

use crate::auth::{hash_secret, new_credentials};
use crate::error::{text_field, AppResult, Validator};
use crate::partners::{self, PartnerKind};
use crate::{App, Caller, Scope};
use coalition_store::entities::api_client;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use uuid::Uuid;

pub struct NewClient {
    pub name: String,
    pub partner_id: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct CreatedClient {
    pub id: Uuid,
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
    pub partner_id: Option<Uuid>,
    pub scope: Scope,
}

pub async fn create(app: &App, caller: &Caller, input: NewClient) -> AppResult<CreatedClient> {
    caller.require(&[Scope::Admin])?;
    let mut v = Validator::default();
    let name = text_field(&mut v, "name", &input.name, 200);
    v.finish()?;
    let scope = match input.partner_id {
        None => Scope::Admin,
        Some(partner_id) => match partners::find(&app.db, caller.programme_id, partner_id)
            .await?
            .kind
        {
            PartnerKind::Merchant => Scope::Partner,
            PartnerKind::Bank => Scope::Bank,
        },
    };
    insert(
        &app.db,
        caller.programme_id,
        NewClient { name, ..input },
        scope,
    )
    .await
}

pub(crate) async fn insert(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    input: NewClient,
    scope: Scope,
) -> AppResult<CreatedClient> {
    let (client_id, client_secret) = new_credentials();
    let secret = client_secret.clone();
    let secret_hash = tokio::task::spawn_blocking(move || hash_secret(&secret))
        .await
        .map_err(|e| crate::AppError::Internal(format!("hashing secret: {e}")))??;
    let id = Uuid::now_v7();
    api_client::Entity::insert(api_client::ActiveModel {
        id: Set(id),
        programme_id: Set(programme_id),
        client_id: Set(client_id.clone()),
        secret_hash: Set(secret_hash),
        name: Set(input.name.clone()),
        partner_id: Set(input.partner_id),
        scope: Set(scope.as_str().to_owned()),
        created_at: Set(chrono::Utc::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(CreatedClient {
        id,
        client_id,
        client_secret,
        name: input.name,
        partner_id: input.partner_id,
        scope,
    })
}
