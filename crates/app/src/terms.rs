//! The terms every purchase reads — partner rates and prices (earning rules and the tier
//! ladder join them) — kept in memory per programme, because reading them from the
//! database on every purchase would cost a round trip each.
//!
//! They change (`PATCH /v1/partners/{id}`, rules, tiers, campaigns), and every server
//! process sharing the database must see a change within a second: a change bumps
//! `programmes.terms_version` ([`bump`]) and the `snapshots` mechanism drops the old
//! terms everywhere. One mechanism for both backends: with SQLite there is one
//! process, with PostgreSQL any number.

use crate::error::{AppError, AppResult};
use crate::partners::Partner;
use crate::snapshots::{self, Snapshots, Versioned};
use crate::App;
use coalition_domain::campaigns::CampaignTerms;
use coalition_domain::rules::Rule;
use coalition_domain::tiers::Ladder;
use coalition_store::entities::{partner, programme};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

pub use crate::snapshots::POLL_EVERY;

/// One programme's terms, as of `version`.
#[derive(Debug, Clone)]
pub struct ProgrammeTerms {
    pub version: i64,
    pub partners: HashMap<Uuid, Partner>,
    /// The programme's active earning rules (the domain checks windows and conditions).
    pub rules: Vec<Rule>,
    /// The tier ladder (`tiers`).
    pub ladder: Ladder,
    /// Campaigns that have not ended (the domain checks their windows); who is treated
    /// and what budget is left are read per purchase (`campaigns::for_purchase`).
    pub campaigns: Vec<CampaignTerms>,
}

impl ProgrammeTerms {
    pub fn partner(&self, id: Uuid) -> Option<&Partner> {
        self.partners.get(&id)
    }
}

impl Versioned for ProgrammeTerms {
    fn version(&self) -> i64 {
        self.version
    }
}

/// The snapshots this process holds.
pub type TermsCache = Snapshots<ProgrammeTerms>;

/// The programme's terms, from memory when held.
pub async fn of_programme(
    app: &App,
    db: &impl ConnectionTrait,
    programme_id: Uuid,
) -> AppResult<Arc<ProgrammeTerms>> {
    match app.terms.cached(programme_id) {
        Some(terms) => Ok(terms),
        None => reload(app, db, programme_id).await,
    }
}

/// A partner's terms. A partner missing from the snapshot may have been added since
/// it was read (through another process, less than a poll ago), so a miss reads again
/// once before answering "not found". `db` must be the transaction when called inside
/// one (SQLite has one connection).
pub async fn partner(
    app: &App,
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    partner_id: Uuid,
) -> AppResult<Partner> {
    Ok(with_partner(app, db, programme_id, partner_id).await?.1)
}

/// The programme's terms together with one partner's, from the same snapshot.
pub async fn with_partner(
    app: &App,
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    partner_id: Uuid,
) -> AppResult<(Arc<ProgrammeTerms>, Partner)> {
    let terms = of_programme(app, db, programme_id).await?;
    if let Some(found) = terms.partner(partner_id).cloned() {
        return Ok((terms, found));
    }
    let terms = reload(app, db, programme_id).await?;
    let found = terms
        .partner(partner_id)
        .cloned()
        .ok_or(AppError::NotFound("partner"))?;
    Ok((terms, found))
}

async fn reload(
    app: &App,
    db: &impl ConnectionTrait,
    programme_id: Uuid,
) -> AppResult<Arc<ProgrammeTerms>> {
    let terms = Arc::new(load(db, programme_id).await?);
    app.terms.keep(programme_id, terms.clone());
    Ok(terms)
}

/// Reads the version before the terms: a change committed in between leaves newer
/// terms under an older version, which the next poll drops — never older terms under
/// a newer version.
async fn load(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<ProgrammeTerms> {
    let version = snapshots::version(db, programme_id, programme::Column::TermsVersion)
        .await?
        .ok_or(AppError::NotFound("programme"))?;
    let partners = partner::Entity::find()
        .filter(partner::Column::ProgrammeId.eq(programme_id))
        .all(db)
        .await?
        .into_iter()
        .map(|row| Partner::try_from(row).map(|p| (p.id, p)))
        .collect::<AppResult<HashMap<_, _>>>()?;
    let rules = crate::rules::active(db, programme_id).await?;
    let ladder = crate::tiers::ladder(db, programme_id).await?;
    let campaigns = crate::campaigns::live(db, programme_id).await?;
    Ok(ProgrammeTerms {
        version,
        partners,
        rules,
        ladder,
        campaigns,
    })
}

/// Records a change to the programme's terms; call it in the change's transaction, and
/// after the commit hand the returned version to [`TermsCache::changed`].
pub async fn bump(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<i64> {
    snapshots::bump(db, programme_id, programme::Column::TermsVersion).await
}

/// Drops the snapshots whose programme's terms moved, within [`POLL_EVERY`].
pub fn spawn_watcher(db: DatabaseConnection, cache: &Arc<TermsCache>) {
    snapshots::spawn_watcher(db, cache, programme::Column::TermsVersion);
}
