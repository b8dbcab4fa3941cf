//! Members: enrolment, profile, erasure, and who may see whom. A partner sees the
//! members it enrolled, issued a card to, or sold to; anyone else is "not found".

use crate::error::{text_field, AppError, AppResult, Validator};
use crate::pagination::{Page, PageRequest};
use crate::{App, Caller, Scope};
use coalition_domain::ledger::erasure_entry;
use coalition_store::entities::{
    bank_card, bank_transaction, card, member, member_partner, point_account, point_lot,
};
use coalition_store::is_unique_violation;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};
use uuid::Uuid;

pub struct NewMember {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub consent_marketing: bool,
    pub consent_data_sharing: bool,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub row: member::Model,
    pub points: i64,
    /// Effective tier and progress towards the next (`tiers`).
    pub tier: crate::tiers::Standing,
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(|c: char| c.is_whitespace() || c.is_control())
}

/// What a phone number may take, spacing and punctuation included.
pub const MAX_PHONE_CHARS: usize = 32;

fn valid_phone(phone: &str) -> bool {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    (6..=15).contains(&digits)
        && phone
            .chars()
            .all(|c| c.is_ascii_digit() || " +-()".contains(c))
}

/// An email as kept: trimmed, lower case, checked.
fn email_field(v: &mut Validator, sent: &str) -> String {
    let email = sent.trim().to_lowercase();
    v.require(
        "email",
        valid_email(&email) && sent.chars().count() <= 254,
        "must be an email address of at most 254 characters",
    );
    email
}

/// A phone as kept: trimmed, checked; empty is none.
fn phone_field(v: &mut Validator, sent: Option<String>) -> Option<String> {
    let short = sent
        .as_deref()
        .is_none_or(|p| p.chars().count() <= MAX_PHONE_CHARS);
    let phone = sent.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
    v.require(
        "phone",
        short && phone.as_deref().is_none_or(valid_phone),
        "must be a phone number of 6 to 15 digits, at most 32 characters",
    );
    phone
}

pub async fn enrol(app: &App, caller: &Caller, input: NewMember) -> AppResult<Member> {
    // A co-brand bank enrols its card holders too (then issues their bank cards).
    caller.require(&[Scope::Admin, Scope::Partner, Scope::Bank])?;
    let mut v = Validator::default();
    let name = text_field(&mut v, "name", &input.name, 200);
    let email = email_field(&mut v, &input.email);
    let phone = phone_field(&mut v, input.phone);
    v.finish()?;

    let now = chrono::Utc::now();
    let (member_id, account_id) = (Uuid::now_v7(), Uuid::now_v7());
    let txn = app.db.begin().await?;
    point_account::Entity::insert(crate::ledger::new_account(
        account_id,
        caller.programme_id,
        Some(member_id),
        now,
    ))
    .exec_without_returning(&txn)
    .await?;
    let row = member::ActiveModel {
        id: Set(member_id),
        programme_id: Set(caller.programme_id),
        account_id: Set(account_id),
        name: Set(Some(name)),
        email: Set(Some(email)),
        phone: Set(phone),
        consent_marketing: Set(input.consent_marketing),
        consent_data_sharing: Set(input.consent_data_sharing),
        enrolled_by_partner_id: Set(caller.partner_id),
        erased_at: Set(None),
        created_at: Set(now),
        tier_id: Set(None),
        floor_tier_id: Set(None),
        floor_reason: Set(None),
        floor_ends_at: Set(None),
        external_ref: Set(None),
    };
    match member::Entity::insert(row)
        .exec_without_returning(&txn)
        .await
    {
        Err(e) if is_unique_violation(&e) => {
            txn.rollback().await?;
            return Err(AppError::EmailTaken);
        }
        other => other?,
    };
    if let Some(partner_id) = caller.partner_id {
        link_partner(&txn, caller.programme_id, member_id, partner_id).await?;
    }
    txn.commit().await?;
    get(app, caller, member_id).await
}

/// Records that a partner may see a member from now on.
pub async fn link_partner(
    db: &impl ConnectionTrait,
    programme_id: Uuid,
    member_id: Uuid,
    partner_id: Uuid,
) -> AppResult<()> {
    member_partner::Entity::insert(member_partner::ActiveModel {
        member_id: Set(member_id),
        partner_id: Set(partner_id),
        programme_id: Set(programme_id),
        created_at: Set(chrono::Utc::now()),
    })
    .on_conflict(
        OnConflict::columns([
            member_partner::Column::MemberId,
            member_partner::Column::PartnerId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .do_nothing()
    .exec(db)
    .await?;
    Ok(())
}

/// The partner whose links limit what this caller sees; `None` sees the whole programme.
pub(crate) fn seeing_partner(caller: &Caller) -> Option<Uuid> {
    match caller.scope {
        Scope::Partner | Scope::Bank => caller.partner_id,
        _ => None,
    }
}

/// The member, if it belongs to the caller's programme.
async fn in_programme(
    db: &impl ConnectionTrait,
    caller: &Caller,
    member_id: Uuid,
) -> AppResult<member::Model> {
    member::Entity::find_by_id(member_id)
        .filter(member::Column::ProgrammeId.eq(caller.programme_id))
        .one(db)
        .await?
        .ok_or(AppError::NotFound("member"))
}

/// Whether the partner may see the member (it enrolled, carded, registered or sold to it).
pub(crate) async fn linked(
    db: &impl ConnectionTrait,
    member_id: Uuid,
    partner_id: Uuid,
) -> AppResult<bool> {
    Ok(member_partner::Entity::find_by_id((member_id, partner_id))
        .one(db)
        .await?
        .is_some())
}

/// Whether the partner enrolled the member (which lets it manage the member's cards).
pub(crate) async fn enrolled_by(
    db: &impl ConnectionTrait,
    member_id: Uuid,
    partner_id: Uuid,
) -> AppResult<bool> {
    let member = member::Entity::find_by_id(member_id).one(db).await?;
    Ok(member.is_some_and(|m| m.enrolled_by_partner_id == Some(partner_id)))
}

/// The member if this caller may see it; otherwise "not found", never "forbidden".
pub async fn visible(
    db: &impl ConnectionTrait,
    caller: &Caller,
    member_id: Uuid,
) -> AppResult<member::Model> {
    caller.require(&[Scope::Admin, Scope::Partner, Scope::Bank])?;
    let row = in_programme(db, caller, member_id).await?;
    if let Some(partner_id) = seeing_partner(caller) {
        if !linked(db, member_id, partner_id).await? {
            return Err(AppError::NotFound("member"));
        }
    }
    Ok(row)
}

/// The points account of a member this caller may see, from memory when the facts are
/// known (see `directory`), else from the database — learning all the member's partner
/// links at once, so the next partner to ask is answered from memory too.
pub async fn visible_account(app: &App, caller: &Caller, member_id: Uuid) -> AppResult<Uuid> {
    caller.require(&[Scope::Admin, Scope::Partner, Scope::Bank])?;
    let partner = seeing_partner(caller);
    if let Some(account) = app
        .directory
        .account(member_id, caller.programme_id, partner)
    {
        return Ok(account);
    }
    let row = in_programme(&app.db, caller, member_id).await?;
    let links = member_partner::Entity::find()
        .filter(member_partner::Column::MemberId.eq(member_id))
        .all(&app.db)
        .await?;
    let partners: Vec<Uuid> = links.iter().map(|l| l.partner_id).collect();
    app.directory
        .remember_all(member_id, row.programme_id, row.account_id, &partners);
    app.directory
        .account(member_id, caller.programme_id, partner)
        .ok_or(AppError::NotFound("member"))
}

pub async fn get(app: &App, caller: &Caller, member_id: Uuid) -> AppResult<Member> {
    let row = visible(&app.db, caller, member_id).await?;
    let account = point_account::Entity::find_by_id(row.account_id)
        .one(&app.db)
        .await?
        .ok_or(AppError::NotFound("points account"))?;
    let programme = crate::programmes::load(app, caller.programme_id).await?;
    let terms = crate::terms::of_programme(app, &app.db, caller.programme_id).await?;
    let now = chrono::Utc::now();
    let tier = crate::tiers::standing(&app.db, &terms.ladder, &programme, &row, now).await?;
    Ok(Member {
        row: as_seen_by(caller, row),
        points: account.balance,
        tier,
    })
}

/// The member as this caller may see her: a partner other than the one that enrolled
/// her sees no contact data unless she agreed to share it.
fn as_seen_by(caller: &Caller, mut row: member::Model) -> member::Model {
    let partner = seeing_partner(caller);
    if partner.is_some() && partner != row.enrolled_by_partner_id && !row.consent_data_sharing {
        row.name = None;
        row.email = None;
        row.phone = None;
    }
    row
}

/// A change to a member's profile and consents; absent fields stay as they are.
#[derive(Debug, Default)]
pub struct MemberChange {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub consent_marketing: Option<bool>,
    pub consent_data_sharing: Option<bool>,
}

/// Changes a member's profile and consents: the operator, or the partner that enrolled
/// her (a partner that only sold to her is told "not found"). An erased member has no
/// profile left to change (`member_erased`); an email another member has is
/// `email_taken`, as at enrolment.
pub async fn update(
    app: &App,
    caller: &Caller,
    member_id: Uuid,
    change: MemberChange,
) -> AppResult<Member> {
    let mut v = Validator::default();
    let name = change
        .name
        .as_deref()
        .map(|n| text_field(&mut v, "name", n, 200));
    let email = change.email.as_deref().map(|e| email_field(&mut v, e));
    let phone = change
        .phone
        .map(|p| phone_field(&mut v, Some(p)).unwrap_or_default());
    v.finish()?;
    let row = visible(&app.db, caller, member_id).await?;
    if seeing_partner(caller).is_some_and(|p| row.enrolled_by_partner_id != Some(p)) {
        return Err(AppError::NotFound("member"));
    }
    if row.erased_at.is_some() {
        return Err(AppError::MemberErased);
    }
    let nothing = name.is_none()
        && email.is_none()
        && phone.is_none()
        && change.consent_marketing.is_none()
        && change.consent_data_sharing.is_none();
    if nothing {
        return get(app, caller, member_id).await;
    }
    let mut edited: member::ActiveModel = row.into();
    if let Some(name) = name {
        edited.name = Set(Some(name));
    }
    if let Some(email) = email {
        edited.email = Set(Some(email));
    }
    if let Some(phone) = phone {
        // An empty phone removes it.
        edited.phone = Set(Some(phone).filter(|p| !p.is_empty()));
    }
    if let Some(consent) = change.consent_marketing {
        edited.consent_marketing = Set(consent);
    }
    if let Some(consent) = change.consent_data_sharing {
        edited.consent_data_sharing = Set(consent);
    }
    // Guarded by "not erased", so an erasure committed meanwhile is not undone.
    let updated = member::Entity::update_many()
        .set(edited)
        .filter(member::Column::Id.eq(member_id))
        .filter(member::Column::ErasedAt.is_null())
        .exec(&app.db)
        .await;
    match updated {
        Err(e) if is_unique_violation(&e) => return Err(AppError::EmailTaken),
        Err(e) => return Err(e.into()),
        Ok(done) if done.rows_affected == 0 => return Err(AppError::MemberErased),
        Ok(_) => {}
    }
    get(app, caller, member_id).await
}

/// One card of a member as this caller may see it: a partner that neither issued the
/// card nor enrolled the member sees only its last four digits (a card number is a
/// credential at every till).
#[derive(Debug, Clone)]
pub struct MemberCard {
    pub row: card::Model,
    pub masked: bool,
}

/// A member's cards, oldest first (admin; a partner that may see the member).
pub async fn cards(
    app: &App,
    caller: &Caller,
    member_id: Uuid,
    page: PageRequest,
) -> AppResult<Page<MemberCard>> {
    let member = visible(&app.db, caller, member_id).await?;
    let after = page.decode_cursor(|c| Uuid::parse_str(c).ok())?;
    let mut query = card::Entity::find()
        .filter(card::Column::ProgrammeId.eq(caller.programme_id))
        .filter(card::Column::MemberId.eq(member_id));
    if let Some(after) = after {
        query = query.filter(card::Column::Id.gt(after));
    }
    let rows = query
        .order_by_asc(card::Column::Id)
        .limit(page.limit + 1)
        .all(&app.db)
        .await?;
    let partner = seeing_partner(caller);
    let manages = |c: &card::Model| {
        partner.is_none()
            || c.issued_by_partner_id == partner
            || member.enrolled_by_partner_id == partner
    };
    Ok(page.page(
        rows,
        |c| c.id.to_string(),
        |mut row| {
            let masked = !manages(&row);
            if masked {
                row.number = crate::cards::mask(&row.number);
            }
            MemberCard { row, masked }
        },
    ))
}

/// GDPR erasure, in one transaction: personal data goes; every card of hers is retired
/// (it can do nothing any more); holds still reserving her points are voided; and what
/// is left of her points is forfeited to the operator's breakage in one journal entry
/// (`erasure`), so no one can spend points that belong to no one and the ledger still
/// sums. Erasing an erased member changes nothing.
pub async fn erase(app: &App, caller: &Caller, member_id: Uuid) -> AppResult<()> {
    caller.require(&[Scope::Admin])?;
    let txn = app.db.begin().await?;
    let row = visible(&txn, caller, member_id).await?;
    if row.erased_at.is_some() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    let account_id = row.account_id;
    // The account's lock first: a purchase or capture on her card waits, then finds the
    // card retired (or finished first, and its points are forfeited here).
    let account = crate::ledger::lock_account(&txn, account_id).await?;
    // Closed first: from here on no statement can credit the account (`ledger`).
    point_account::Entity::update_many()
        .col_expr(point_account::Column::ClosedAt, Expr::value(Some(now)))
        .filter(point_account::Column::Id.eq(account_id))
        .exec(&txn)
        .await?;
    // Twice: the first pass waits for a replacement that holds one of her cards' locks;
    // the card it made committed before that wait ended, and only a new statement (a
    // new snapshot on PostgreSQL) sees it. Replacements lock the old card, so none can
    // start on her cards after the first pass.
    // Her co-branded bank cards too, replaced ones included: every event of their
    // tokens is `card_retired` from now on (the bank's replacements lock the old card as
    // well).
    for _ in 0..2 {
        card::Entity::update_many()
            .col_expr(card::Column::Status, Expr::value(crate::cards::RETIRED))
            .filter(card::Column::MemberId.eq(member_id))
            .filter(card::Column::Status.is_not_in([crate::cards::REPLACED, crate::cards::RETIRED]))
            .exec(&txn)
            .await?;
        bank_card::Entity::update_many()
            .col_expr(bank_card::Column::Status, Expr::value(crate::bank::RETIRED))
            .filter(bank_card::Column::MemberId.eq(member_id))
            .filter(bank_card::Column::Status.ne(crate::bank::RETIRED))
            .exec(&txn)
            .await?;
    }
    let mut state = crate::holds::void_all_in(&txn, account_id, now).await?;
    let points = state.as_ref().map_or(account.balance, |s| s.balance);
    if points > 0 {
        point_lot::Entity::update_many()
            .col_expr(point_lot::Column::PointsRemaining, Expr::value(0i64))
            .filter(point_lot::Column::AccountId.eq(account_id))
            .filter(Expr::col(point_lot::Column::PointsRemaining).gt(Expr::cust("0")))
            .exec(&txn)
            .await?;
        state = Some(crate::ledger::spend_and_earn(&txn, account_id, points, 0).await?);
        let entry = erasure_entry(caller.programme_id, account_id, points)?;
        let ctx = crate::ledger::EntryContext {
            programme_id: caller.programme_id,
            reason: format!("{points} points forfeited: the member's data was erased"),
            partner_id: None,
            purchase_id: None,
            refund_id: None,
            breakdown: vec![],
        };
        crate::ledger::write_entry(&txn, uuid::Uuid::now_v7(), &entry, &ctx, now).await?;
    }
    // The pending points of her card authorizations go with her points (nothing can
    // clear them now); the version moves, so cached pending points are dropped.
    let cleared = bank_transaction::Entity::update_many()
        .col_expr(bank_transaction::Column::PendingPoints, Expr::value(0i64))
        .col_expr(
            bank_transaction::Column::LapsesAt,
            Expr::value(Option::<chrono::DateTime<chrono::Utc>>::None),
        )
        .filter(bank_transaction::Column::AccountId.eq(account_id))
        .filter(bank_transaction::Column::PendingPoints.gt(0))
        .exec(&txn)
        .await?;
    if cleared.rows_affected > 0 {
        state = Some(crate::ledger::change_balance(&txn, account_id, 0).await?);
    }
    let mut erased: member::ActiveModel = row.into();
    erased.name = Set(None);
    erased.email = Set(None);
    erased.phone = Set(None);
    erased.external_ref = Set(None);
    erased.consent_marketing = Set(false);
    erased.consent_data_sharing = Set(false);
    erased.erased_at = Set(Some(now));
    member::Entity::update(erased).exec(&txn).await?;
    txn.commit().await?;
    if let Some(state) = state {
        app.cache.changed(state.account_id, state.version).await;
    }
    // Her portal sessions end now. Should the store fail, the erasure still stands, and
    // each session of hers is refused and deleted when it is next used.
    if let Err(e) = crate::member_sessions::end_all(app, caller.programme_id, member_id).await {
        tracing::warn!(error = %e, "ending the portal sessions of an erased member");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_phones_are_checked() {
        assert!(valid_email("ann@example.org"));
        assert!(!valid_email("ann@example"));
        assert!(!valid_email("@example.org"));
        assert!(!valid_email("ann @example.org"));
        assert!(
            !valid_email("a\u{0}nn@example.org"),
            "NUL: PostgreSQL cannot store it"
        );
        assert!(!valid_email("ann@exa\u{7f}mple.org"));
        assert!(valid_phone("+49 30 1234567"));
        assert!(!valid_phone("12"));
        assert!(!valid_phone("call me"));
    }
}
