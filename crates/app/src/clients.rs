//! API clients of a programme: operator clients (scope admin) and clients bound to one
//! partner (scope partner, or bank for a bank partner). The operator sees and manages
//! all of them; a partner's client sees its own partner's clients and may rotate their
//! secrets, nothing else. Every change that must cut tokens off moves the client's
//! generation and bumps the programme's credentials version (`credentials`).

use crate::auth::{hash_secret, new_credentials};
use crate::credentials::{self, ACTIVE, DISABLED};
use crate::error::{text_field, AppError, AppResult, Validator};
use crate::pagination::{Page, PageRequest};
use crate::partners::{self, PartnerKind};
use crate::{App, Caller, Scope};
use coalition_store::entities::api_client;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;

/// The longest a rotated-out secret may keep getting tokens.
pub const MAX_OVERLAP_SECONDS: i64 = 7 * 24 * 3600;
/// The overlap when none is asked: a till fleet has an hour to take the new secret.
pub const DEFAULT_OVERLAP_SECONDS: i64 = 3600;

pub struct NewClient {
    pub name: String,
    pub partner_id: Option<Uuid>,
    /// Where a partner's app may receive members' authorization codes (`oidc`).
    pub redirect_uris: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CreatedClient {
    pub id: Uuid,
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
    pub partner_id: Option<Uuid>,
    pub scope: Scope,
    pub redirect_uris: Vec<String>,
}

pub async fn create(app: &App, caller: &Caller, input: NewClient) -> AppResult<CreatedClient> {
    caller.require(&[Scope::Admin])?;
    let mut v = Validator::default();
    let name = text_field(&mut v, "name", &input.name, 200);
    crate::oidc::check_redirect_uris(&mut v, "redirect_uris", &input.redirect_uris);
    v.require(
        "redirect_uris",
        input.redirect_uris.is_empty() || input.partner_id.is_some(),
        "only a partner's client signs members in; an operator client has no redirect URIs",
    );
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
    // Hashed before the transaction opens: argon2 must not hold SQLite's one
    // connection. Then the client and its redirect URIs together or not at all.
    let credentials = new_hashed_credentials().await?;
    let txn = app.db.begin().await?;
    let input = NewClient { name, ..input };
    let created = insert_hashed(&txn, caller.programme_id, input, scope, credentials).await?;
    crate::oidc::replace_redirect_uris(
        &txn,
        caller.programme_id,
        created.id,
        &created.redirect_uris,
    )
    .await?;
    txn.commit().await?;
    Ok(created)
}

/// A client id, its secret and the secret's hash.
async fn new_hashed_credentials() -> AppResult<(String, String, String)> {
    let (client_id, client_secret) = new_credentials();
    let secret_hash = hash_off_thread(&client_secret).await?;
    Ok((client_id, client_secret, secret_hash))
}

pub(crate) async fn insert(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    input: NewClient,
    scope: Scope,
) -> AppResult<CreatedClient> {
    let credentials = new_hashed_credentials().await?;
    insert_hashed(db, programme_id, input, scope, credentials).await
}

async fn insert_hashed(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    input: NewClient,
    scope: Scope,
    (client_id, client_secret, secret_hash): (String, String, String),
) -> AppResult<CreatedClient> {
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
        status: Set(ACTIVE.to_owned()),
        generation: Set(0),
        previous_secret_hash: Set(None),
        previous_secret_expires_at: Set(None),
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
        redirect_uris: input.redirect_uris,
    })
}

async fn hash_off_thread(secret: &str) -> AppResult<String> {
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || hash_secret(&secret))
        .await
        .map_err(|_| AppError::Internal("hashing a secret: the task failed".into()))?
}

/// A client as it may be shown: never its secret or a hash of it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: Uuid,
    pub client_id: String,
    pub name: String,
    pub partner_id: Option<Uuid>,
    pub scope: String,
    pub status: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Until when the secret a rotation replaced still gets tokens, while it does.
    pub previous_secret_valid_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Filled by [`with_redirect_uris`]; empty from `From<api_client::Model>` alone.
    pub redirect_uris: Vec<String>,
}

impl From<api_client::Model> for ClientInfo {
    fn from(row: api_client::Model) -> Self {
        let now = chrono::Utc::now();
        Self {
            id: row.id,
            client_id: row.client_id,
            name: row.name,
            partner_id: row.partner_id,
            scope: row.scope,
            status: row.status,
            created_at: row.created_at,
            previous_secret_valid_until: row
                .previous_secret_expires_at
                .filter(|until| *until > now && row.previous_secret_hash.is_some()),
            redirect_uris: vec![],
        }
    }
}

/// The partner whose clients this caller is limited to; `None` for the operator.
fn seeing_partner(caller: &Caller) -> AppResult<Option<Uuid>> {
    caller.require(&[Scope::Admin, Scope::Partner, Scope::Bank])?;
    match caller.scope {
        Scope::Admin => Ok(None),
        _ => caller
            .partner_id
            .map(Some)
            .ok_or_else(|| AppError::Forbidden("this client is not bound to a partner".into())),
    }
}

/// The client if this caller may see it; another programme's or partner's is "not found".
async fn visible(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: Uuid,
) -> AppResult<api_client::Model> {
    let query = api_client::Entity::find_by_id(id);
    visible_in(db, caller, query).await
}

/// [`visible`], the row locked until the transaction ends: two rotations of one client
/// must not both replace the same secret (the first one's new secret would be lost).
async fn visible_locked(
    db: &impl ConnectionTrait,
    caller: &Caller,
    id: Uuid,
) -> AppResult<api_client::Model> {
    let query = api_client::Entity::find_by_id(id).lock_exclusive();
    visible_in(db, caller, query).await
}

async fn visible_in(
    db: &impl ConnectionTrait,
    caller: &Caller,
    query: sea_orm::Select<api_client::Entity>,
) -> AppResult<api_client::Model> {
    let partner = seeing_partner(caller)?;
    let row = query
        .filter(api_client::Column::ProgrammeId.eq(caller.programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("client"))?;
    if partner.is_some_and(|p| row.partner_id != Some(p)) {
        return Err(AppError::NotFound("client"));
    }
    Ok(row)
}

pub async fn list(app: &App, caller: &Caller, page: PageRequest) -> AppResult<Page<ClientInfo>> {
    let partner = seeing_partner(caller)?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query =
        api_client::Entity::find().filter(api_client::Column::ProgrammeId.eq(caller.programme_id));
    if let Some(partner) = partner {
        query = query.filter(api_client::Column::PartnerId.eq(partner));
    }
    if let Some(after) = after {
        query = query.filter(api_client::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(api_client::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let mut page = page.page(rows, |c| c.id.to_string(), ClientInfo::from);
    page.data = with_redirect_uris(&app.db, page.data).await?;
    Ok(page)
}

/// The clients with their registered redirect URIs.
pub async fn with_redirect_uris(
    db: &impl ConnectionTrait,
    mut clients: Vec<ClientInfo>,
) -> AppResult<Vec<ClientInfo>> {
    let ids: Vec<Uuid> = clients.iter().map(|c| c.id).collect();
    let mut uris = crate::oidc::redirect_uris(db, &ids).await?;
    for client in &mut clients {
        client.redirect_uris = uris.remove(&client.id).unwrap_or_default();
    }
    Ok(clients)
}

async fn one_with_redirect_uris(
    db: &impl ConnectionTrait,
    row: api_client::Model,
) -> AppResult<ClientInfo> {
    let mut one = with_redirect_uris(db, vec![row.into()]).await?;
    one.pop()
        .ok_or_else(|| AppError::Internal("a client vanished while read".into()))
}

pub async fn get(app: &App, caller: &Caller, id: Uuid) -> AppResult<ClientInfo> {
    let row = visible(&app.db, caller, id).await?;
    one_with_redirect_uris(&app.db, row).await
}

/// Replaces a partner client's redirect URIs (admin). Codes already issued keep the URI
/// they were issued for; the next authorization request is matched against the new list.
pub async fn set_redirect_uris(
    app: &App,
    caller: &Caller,
    id: Uuid,
    uris: Vec<String>,
) -> AppResult<ClientInfo> {
    caller.require(&[Scope::Admin])?;
    let mut v = Validator::default();
    crate::oidc::check_redirect_uris(&mut v, "redirect_uris", &uris);
    v.finish()?;
    let txn = app.db.begin().await?;
    let row = visible_locked(&txn, caller, id).await?;
    if row.partner_id.is_none() && !uris.is_empty() {
        return Err(AppError::Validation(vec![crate::error::FieldError::new(
            "redirect_uris",
            "only a partner's client signs members in; an operator client has no redirect URIs",
        )]));
    }
    crate::oidc::replace_redirect_uris(&txn, caller.programme_id, row.id, &uris).await?;
    let info = one_with_redirect_uris(&txn, row).await?;
    txn.commit().await?;
    Ok(info)
}

/// A new secret, shown once. The old one still gets tokens for `overlap_seconds`
/// (0: it stops at once, and so do the tokens already issued — the case of a leak).
pub async fn rotate_secret(
    app: &App,
    caller: &Caller,
    id: Uuid,
    overlap_seconds: Option<i64>,
) -> AppResult<(ClientInfo, String)> {
    let overlap = overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS);
    let mut v = Validator::default();
    v.require(
        "overlap_seconds",
        (0..=MAX_OVERLAP_SECONDS).contains(&overlap),
        "must be between 0 and 604800",
    );
    v.finish()?;
    visible(&app.db, caller, id).await?;
    let (_, secret) = new_credentials();
    let secret_hash = hash_off_thread(&secret).await?;
    let now = chrono::Utc::now();
    let row = change(app, caller, id, |row| {
        // One overlap at a time: a second rotation would silently cut the secret the
        // first promised to keep (tills still on it would be locked out). Cutting
        // everything at once (`overlap_seconds: 0`) is always allowed.
        if let Some(until) = row.previous_secret_expires_at.filter(|until| *until > now) {
            if overlap > 0 {
                return Err(Refused::By(AppError::RotationInProgress { until }));
            }
        }
        let mut active: api_client::ActiveModel = row.clone().into();
        active.secret_hash = Set(secret_hash.clone());
        if overlap == 0 {
            active.previous_secret_hash = Set(None);
            active.previous_secret_expires_at = Set(None);
            active.generation = Set(row.generation + 1);
        } else {
            active.previous_secret_hash = Set(Some(row.secret_hash.clone()));
            active.previous_secret_expires_at = Set(Some(now + chrono::Duration::seconds(overlap)));
        }
        Ok(active)
    })
    .await?;
    Ok((one_with_redirect_uris(&app.db, row).await?, secret))
}

/// Disables the client: no new tokens, and its existing tokens stop working.
pub async fn disable(app: &App, caller: &Caller, id: Uuid) -> AppResult<ClientInfo> {
    set_status(app, caller, id, DISABLED).await
}

/// Enables a disabled client. Tokens from before it was disabled stay dead: only new
/// ones work.
pub async fn enable(app: &App, caller: &Caller, id: Uuid) -> AppResult<ClientInfo> {
    set_status(app, caller, id, ACTIVE).await
}

async fn set_status(app: &App, caller: &Caller, id: Uuid, status: &str) -> AppResult<ClientInfo> {
    caller.require(&[Scope::Admin])?;
    let row = change(app, caller, id, |row| {
        if row.status == status {
            return Err(Refused::Unchanged);
        }
        let mut active: api_client::ActiveModel = row.clone().into();
        active.status = Set(status.to_owned());
        active.generation = Set(row.generation + 1);
        Ok(active)
    })
    .await?;
    one_with_redirect_uris(&app.db, row).await
}

/// Deletes the client; its tokens stop working and its secret gets none.
pub async fn delete(app: &App, caller: &Caller, id: Uuid) -> AppResult<()> {
    caller.require(&[Scope::Admin])?;
    let txn = app.db.begin().await?;
    let row = visible_locked(&txn, caller, id).await?;
    let version = credentials::bump(&txn, caller.programme_id).await?;
    refuse_removing_last_operator(&txn, &row).await?;
    crate::oidc::replace_redirect_uris(&txn, caller.programme_id, row.id, &[]).await?;
    api_client::Entity::delete_by_id(row.id).exec(&txn).await?;
    txn.commit().await?;
    app.credentials.changed(caller.programme_id, version);
    Ok(())
}

/// Why an edit changes nothing.
enum Refused {
    /// The client is as asked already (disabling a disabled client): answer it.
    Unchanged,
    By(AppError),
}

/// Applies `edit` to the client in one transaction with the credentials version bump,
/// and tells this process's cache at once (the others hear it by polling).
async fn change(
    app: &App,
    caller: &Caller,
    id: Uuid,
    edit: impl FnOnce(&api_client::Model) -> Result<api_client::ActiveModel, Refused>,
) -> AppResult<api_client::Model> {
    let txn = app.db.begin().await?;
    let row = visible_locked(&txn, caller, id).await?;
    let edited = match edit(&row) {
        Ok(edited) => edited,
        Err(refused) => {
            txn.rollback().await?;
            return match refused {
                Refused::Unchanged => Ok(row),
                Refused::By(e) => Err(e),
            };
        }
    };
    let version = credentials::bump(&txn, caller.programme_id).await?;
    if edited.status.as_ref() == DISABLED {
        refuse_removing_last_operator(&txn, &row).await?;
    }
    let row = api_client::Entity::update(edited).exec(&txn).await?;
    txn.commit().await?;
    app.credentials.changed(caller.programme_id, version);
    Ok(row)
}

/// The programme must keep an operator client that works: without one, only SQL could
/// manage it again. Call it after `credentials::bump`: the programme row's lock makes
/// two removals take turns, and the second counts what the first committed, so two
/// operators cutting each other off at once cannot both succeed.
async fn refuse_removing_last_operator(
    db: &impl ConnectionTrait,
    row: &api_client::Model,
) -> AppResult<()> {
    if row.scope != Scope::Admin.as_str() || row.status != ACTIVE {
        return Ok(());
    }
    let others: Vec<Uuid> = api_client::Entity::find()
        .select_only()
        .column(api_client::Column::Id)
        .filter(api_client::Column::ProgrammeId.eq(row.programme_id))
        .filter(api_client::Column::Scope.eq(Scope::Admin.as_str()))
        .filter(api_client::Column::Status.eq(ACTIVE))
        .filter(api_client::Column::Id.ne(row.id))
        .into_tuple()
        .all(db)
        .await?;
    if others.is_empty() {
        return Err(AppError::LastOperatorClient);
    }
    Ok(())
}
