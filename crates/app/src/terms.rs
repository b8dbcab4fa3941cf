//! The terms every purchase reads — partner rates and prices (earning rules, the tier
//! ladder, campaigns and who listens to webhooks join them) — kept in memory per programme, because reading them from the
//! database on every purchase would cost a round trip each.
//!
//! They change (`PATCH /v1/partners/{id}`, rules, tiers), and every server process
//! sharing the database must see a change within a second. A change bumps
//! `programmes.terms_version` in its own transaction ([`bump`]); every process polls
//! the versions of the programmes it holds every [`POLL_EVERY`] and drops a snapshot
//! whose version moved ([`spawn_watcher`]). One mechanism for both backends: with
//! SQLite there is one process, with PostgreSQL any number. The process that made the
//! change does not wait for the poll: it records the new version at once
//! ([`TermsCache::changed`]), and from then on refuses to keep an older snapshot that a
//! purchase running alongside the change may still have been loading.

use crate::error::{AppError, AppResult};
use crate::partners::Partner;
use crate::App;
use coalition_domain::campaigns::CampaignTerms;
use coalition_domain::rules::Rule;
use coalition_domain::tiers::Ladder;
use coalition_store::entities::{partner, programme};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;
use uuid::Uuid;

/// How often each process asks whether the terms it holds changed: well inside the
/// one second a change may take to reach every process.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

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
    /// Who has an enabled webhook endpoint for which events: purchases and refunds
    /// write their outbox event only when someone may hear it.
    pub webhooks: crate::webhooks::Listeners,
}

impl ProgrammeTerms {
    pub fn partner(&self, id: Uuid) -> Option<&Partner> {
        self.partners.get(&id)
    }
}

#[derive(Default)]
struct Held {
    snapshots: HashMap<Uuid, Arc<ProgrammeTerms>>,
    /// The newest version this process knows of, per programme: older snapshots are
    /// not kept.
    known: HashMap<Uuid, i64>,
}

/// The snapshots this process holds.
#[derive(Default)]
pub struct TermsCache(RwLock<Held>);

impl TermsCache {
    fn cached(&self, programme_id: Uuid) -> Option<Arc<ProgrammeTerms>> {
        let held = self.0.read().unwrap_or_else(|e| e.into_inner());
        held.snapshots.get(&programme_id).cloned()
    }

    fn keep(&self, programme_id: Uuid, terms: Arc<ProgrammeTerms>) {
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        let newest = held.known.get(&programme_id).copied().unwrap_or(i64::MIN);
        if terms.version >= newest {
            held.known.insert(programme_id, terms.version);
            held.snapshots.insert(programme_id, terms);
        }
    }

    /// A change to the programme's terms committed as `version`: forget the snapshot.
    pub fn changed(&self, programme_id: Uuid, version: i64) {
        let mut held = self.0.write().unwrap_or_else(|e| e.into_inner());
        let newest = held.known.entry(programme_id).or_insert(version);
        *newest = (*newest).max(version);
        let newest = *newest;
        if held
            .snapshots
            .get(&programme_id)
            .is_some_and(|t| t.version < newest)
        {
            held.snapshots.remove(&programme_id);
        }
    }

    fn held_programmes(&self) -> Vec<Uuid> {
        let held = self.0.read().unwrap_or_else(|e| e.into_inner());
        held.snapshots.keys().copied().collect()
    }
}

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
    let version: i64 = programme::Entity::find_by_id(programme_id)
        .select_only()
        .column(programme::Column::TermsVersion)
        .into_tuple()
        .one(db)
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
    let webhooks = crate::webhooks::listeners(db, programme_id).await?;
    Ok(ProgrammeTerms {
        version,
        partners,
        rules,
        ladder,
        campaigns,
        webhooks,
    })
}

/// Records a change to the programme's terms; call it in the change's transaction, and
/// after the commit hand the returned version to [`TermsCache::changed`].
pub async fn bump(db: &impl ConnectionTrait, programme_id: Uuid) -> AppResult<i64> {
    let rows = programme::Entity::update_many()
        .col_expr(
            programme::Column::TermsVersion,
            Expr::col(programme::Column::TermsVersion).add(1),
        )
        .filter(programme::Column::Id.eq(programme_id))
        .exec_with_returning(db)
        .await?;
    rows.into_iter()
        .next()
        .map(|row| row.terms_version)
        .ok_or(AppError::NotFound("programme"))
}

/// Polls the versions of the programmes this process holds and drops moved ones, every
/// [`POLL_EVERY`], for as long as the cache lives.
pub fn spawn_watcher(db: DatabaseConnection, cache: &Arc<TermsCache>) {
    let cache: Weak<TermsCache> = Arc::downgrade(cache);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(cache) = cache.upgrade() else { return };
            if let Err(e) = poll(&db, &cache).await {
                tracing::warn!(error = %e, "checking terms versions failed; retrying");
            }
        }
    });
}

async fn poll(db: &DatabaseConnection, cache: &TermsCache) -> AppResult<()> {
    let held = cache.held_programmes();
    if held.is_empty() {
        return Ok(());
    }
    let versions: Vec<(Uuid, i64)> = programme::Entity::find()
        .select_only()
        .column(programme::Column::Id)
        .column(programme::Column::TermsVersion)
        .filter(programme::Column::Id.is_in(held))
        .into_tuple()
        .all(db)
        .await?;
    for (programme_id, version) in versions {
        cache.changed(programme_id, version);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(version: i64) -> Arc<ProgrammeTerms> {
        Arc::new(ProgrammeTerms {
            version,
            partners: HashMap::new(),
            rules: vec![],
            ladder: Ladder::default(),
            campaigns: vec![],
            webhooks: Default::default(),
        })
    }

    #[test]
    fn a_change_drops_the_snapshot_and_refuses_older_ones() {
        let cache = TermsCache::default();
        let programme = Uuid::new_v4();
        cache.keep(programme, terms(3));
        assert_eq!(cache.cached(programme).unwrap().version, 3);
        cache.changed(programme, 3);
        assert!(
            cache.cached(programme).is_some(),
            "same version: still good"
        );
        cache.changed(programme, 4);
        assert!(cache.cached(programme).is_none());
        // A purchase that began loading before the change must not put version 3 back.
        cache.keep(programme, terms(3));
        assert!(cache.cached(programme).is_none());
        cache.keep(programme, terms(4));
        assert_eq!(cache.cached(programme).unwrap().version, 4);
    }
}
