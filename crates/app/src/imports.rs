//! Historical purchases in: a partner's years of history, loaded as dated purchases of
//! members found or created by `external_ref`.
//!
//! - The whole input is parsed and checked first (and, for an `earn` import, priced): a
//!   bad row is refused with its line number and nothing is written.
//! - Rows are then written in batches of [`BATCH_ROWS`], each batch in one transaction
//!   with multi-row statements, so a failure leaves whole batches or nothing of a batch.
//! - Resumable: each row's purchase gets an `external_ref` derived from its content,
//!   `import:<128 bits of HMAC-SHA256>:<n>` (n counting identical rows of the file), keyed
//!   by a secret the server generated and keeps in `settings` (`import_ref_hmac_key`) and
//!   by the programme ([`coalition_domain::imports`]): a partner who knows an erased
//!   customer's number cannot find her purchases by hashing candidate rows. Purchases are
//!   unique per (partner, external_ref): importing the same file again, or a file that
//!   repeats some rows (overlapping exports), skips what is there, an erased customer's
//!   rows included.
//! - Purchases are inserted first (`ON CONFLICT DO NOTHING RETURNING`, both backends);
//!   the journal entries, postings, balances, lots and partner links are written for the
//!   rows that statement really inserted. Two imports racing on the same rows write each
//!   row once; an import writes no entry for rows the other won and no entry without
//!   purchases; members are created with `ON CONFLICT DO NOTHING` and then read, so the
//!   loser uses the winner's.
//! - Erased members are never found: the members of a batch are read with their accounts
//!   locked (`FOR UPDATE`, the lock an erasure takes first) and not closed, so an erasure
//!   in flight either finishes first (its customer's rows make a new member) or waits for
//!   the batch (and erases its purchases with the rest).
//! - By default imported purchases earn no points: they write no postings and no lots,
//!   so balances, settlement and expiry do not see them. Each batch writes one journal
//!   entry per partner without postings (kind `purchase`, like a live purchase that moved
//!   no points), which the purchases name as their entry.
//! - `earn`: each purchase is priced by the live pricing (`earning::price_purchase`) as
//!   a purchase at midnight UTC of its day: the partner's base rate and the standing
//!   earning rules whose validity window holds that day (their current version). No
//!   campaigns, no bank-funded rules, no tier (the tier of a historical day is not
//!   known), and no rule with a first-purchase condition or a per-member cap (they need a
//!   member history the import does not have). The points are posted now, one balanced
//!   entry per partner and batch (funders' issued or funding accounts debited, members
//!   credited; partner accounts are postings only, never a balance row), the members'
//!   balances and lots change in the same transaction, and the lots expire counting from
//!   the import, so a 1997 purchase is not born expired. No rule awards are written
//!   (history does not use up a member's caps of today). A re-run earns nothing twice.
//! - `occurred_at` holds the historical day (midnight UTC); `created_at` the moment of
//!   the import. Imported purchases do not count toward tiers, and they cannot be
//!   refunded (`imported_purchase_not_refundable`: no card).

use crate::error::{AppError, AppResult};
use crate::ledger::EntryContext;
use crate::programmes::{self, Programme};
use crate::{App, Caller, Scope};
use chrono::{DateTime, NaiveDate, Utc};
use coalition_domain::earning::{price_purchase, MemberFacts, PurchaseTerms, Seller};
use coalition_domain::imports::purchase_ref;
use coalition_domain::limits::{self, MAX_BALANCE};
use coalition_domain::rules::{Funder, Rule};
use coalition_domain::{AccountRef, EntryKind, JournalEntry, Points, Posting};
use coalition_store::entities::{
    member, member_partner, partner, point_account, point_lot, purchase,
};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement, TransactionTrait,
};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Rows per batch: one transaction, one multi-row INSERT per table.
pub const BATCH_ROWS: usize = 1000;

/// The most bytes `POST /v1/imports/purchases` takes (the CLI has no limit).
pub const MAX_HTTP_IMPORT_BYTES: usize = 16 * 1024 * 1024;

/// Longest customer reference, store or staff reference.
const MAX_REF_CHARS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `customer_id date(YYYYMMDD) cds dollars`, whitespace-separated (the CDNOW sample).
    Cdnow,
    /// A header `customer_ref,date,amount` (+ optional `partner_id`, `store_ref`,
    /// `staff_ref`, in any order), then one purchase a line.
    Csv,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cdnow" => Some(Format::Cdnow),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// One checked row.
#[derive(Debug, Clone)]
struct Row {
    line: usize,
    customer_ref: String,
    day: NaiveDate,
    amount: Decimal,
    partner_id: Option<Uuid>,
    store_ref: Option<String>,
    staff_ref: Option<String>,
    /// The row's fields as one text, and which of the file's identical rows it is (1 for
    /// the first): what its purchase's `external_ref` is derived from.
    key: String,
    n: u32,
    /// Set once the programme's import key is read ([`purchase_ref`]).
    external_ref: String,
    /// Points the purchase earns (an `earn` import only) and who funds them.
    earned: Points,
    funded: Vec<(AccountRef, Points)>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Purchase rows read (header and blank lines not counted).
    pub rows: u64,
    /// Purchases written now.
    pub imported: u64,
    /// Rows already imported before (same partner, same row): skipped.
    pub skipped: u64,
    /// Members created for customer references not seen before.
    pub members_created: u64,
    /// Points the imported purchases earned (0 unless the import earns).
    pub points_earned: i64,
}

fn bad(line: usize, message: impl Into<String>) -> AppError {
    AppError::ImportRow {
        line: line as u64,
        message: message.into(),
    }
}

/// Each batch writes one journal entry per partner: its points must stay within the
/// limit of one entry (which keeps every sum of points inside 64-bit integers). The
/// first row that takes a batch's entry over it is refused, before anything is written.
fn within_entry_limit(rows: &[Row], default_partner: Uuid) -> AppResult<()> {
    for batch in rows.chunks(BATCH_ROWS) {
        let mut totals: HashMap<Uuid, i64> = HashMap::new();
        for row in batch {
            let total = totals
                .entry(row.partner_id.unwrap_or(default_partner))
                .or_insert(0);
            *total = total.saturating_add(row.earned);
            if *total > coalition_domain::limits::MAX_POINTS_PER_ENTRY {
                return Err(bad(
                    row.line,
                    format!(
                        "with this row, the points its batch of up to {BATCH_ROWS} rows earns at its partner exceed {}, the most one journal entry holds; import these amounts without earning",
                        coalition_domain::limits::MAX_POINTS_PER_ENTRY
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A field of a row's key with `\\` and `|` escaped, so that a bar inside a reference
/// cannot move between fields and make two different rows one key (store "s", staff
/// "t|u" against store "s|t", staff "u"). Fields without either are kept as they are.
fn key_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\\', '|']) {
        text.replace('\\', "\\\\").replace('|', "\\|").into()
    } else {
        text.into()
    }
}

fn check_ref(line: usize, what: &str, text: &str) -> AppResult<String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad(line, format!("{what} is empty")));
    }
    if text.chars().count() > MAX_REF_CHARS {
        return Err(bad(
            line,
            format!("{what} is longer than {MAX_REF_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(bad(line, format!("{what} contains a control character")));
    }
    // A CSV body is not JSON, so the API's PAN check does not read it: refs are kept.
    if coalition_domain::bank::contains_pan(text) {
        return Err(bad(
            line,
            format!(
                "{what} holds what looks like a payment card number (PAN), which is never accepted"
            ),
        ));
    }
    Ok(text.to_owned())
}

fn check_amount(line: usize, text: &str, minor_units: u32) -> AppResult<Decimal> {
    let text = text.trim();
    // Digits and at most one point only: the decimal parser would also read `1_000`,
    // `1e3` and the like, which a garbled export should not pass as an amount.
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
        && text.matches('.').count() <= 1;
    let amount: Decimal = text
        .parse()
        .ok()
        .filter(|_| text.len() <= 28 && plain)
        .ok_or_else(|| bad(line, format!("amount '{text}' is not a decimal number")))?;
    if amount.is_sign_negative() && !amount.is_zero() {
        return Err(bad(line, format!("amount {text} is negative")));
    }
    if amount > limits::max_purchase_amount() {
        return Err(bad(
            line,
            format!("amount {text} is over {}", limits::MAX_PURCHASE_UNITS),
        ));
    }
    if amount.normalize().scale() > minor_units {
        return Err(bad(
            line,
            format!("amount {text} has more than {minor_units} decimals"),
        ));
    }
    Ok(amount.normalize())
}

fn check_day(line: usize, text: &str) -> AppResult<NaiveDate> {
    let text = text.trim();
    let day = NaiveDate::parse_from_str(text, "%Y%m%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%Y-%m-%d"))
        .map_err(|_| {
            bad(
                line,
                format!("date '{text}' is not a day (YYYY-MM-DD or YYYYMMDD)"),
            )
        })?;
    if day > Utc::now().date_naive() {
        return Err(bad(line, format!("date {text} is in the future")));
    }
    if day < NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default() {
        return Err(bad(line, format!("date {text} is before 1900")));
    }
    Ok(day)
}

/// Parses and checks the whole input; the first bad row stops it, with its line number.
fn parse(text: &str, format: Format, minor_units: u32) -> AppResult<Vec<Row>> {
    // A byte-order mark, as spreadsheets write, is not part of the first field.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut counted = |key: &str| {
        let n = seen.entry(key.to_owned()).or_insert(0);
        *n += 1;
        *n
    };
    match format {
        Format::Cdnow => {
            for (i, raw) in text.lines().enumerate() {
                let line = i + 1;
                let fields: Vec<&str> = raw.split_whitespace().collect();
                if fields.is_empty() || (line == 1 && fields[0] == "customer_id") {
                    continue;
                }
                if fields.len() != 4 {
                    return Err(bad(
                        line,
                        format!(
                            "expected 4 fields (customer id, date YYYYMMDD, CDs, dollars), found {}",
                            fields.len()
                        ),
                    ));
                }
                let customer_ref = check_ref(line, "customer id", fields[0])?;
                let day = check_day(line, fields[1])?;
                let cds: u32 = fields[2]
                    .parse()
                    .map_err(|_| bad(line, format!("CDs '{}' is not a whole number", fields[2])))?;
                let amount = check_amount(line, fields[3], minor_units)?;
                let key = format!("cdnow|{}|{day}|{cds}|{amount}", key_field(&customer_ref));
                rows.push(Row {
                    line,
                    customer_ref,
                    day,
                    amount,
                    partner_id: None,
                    store_ref: None,
                    staff_ref: None,
                    n: counted(&key),
                    key,
                    external_ref: String::new(),
                    earned: 0,
                    funded: vec![],
                });
            }
        }
        Format::Csv => {
            let mut lines = text.lines().enumerate();
            let header = loop {
                match lines.next() {
                    Some((_, l)) if l.trim().is_empty() => continue,
                    Some((i, l)) => break (i + 1, l),
                    None => return Ok(rows),
                }
            };
            let columns: Vec<String> = header
                .1
                .split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            let at = |name: &str| columns.iter().position(|c| c == name);
            for (i, c) in columns.iter().enumerate() {
                if columns[..i].contains(c) {
                    return Err(bad(header.0, format!("column '{c}' is named twice")));
                }
                if ![
                    "customer_ref",
                    "date",
                    "amount",
                    "partner_id",
                    "store_ref",
                    "staff_ref",
                ]
                .contains(&c.as_str())
                {
                    return Err(bad(header.0, format!("unknown column '{c}' (expected customer_ref, date, amount and optionally partner_id, store_ref, staff_ref)")));
                }
            }
            let (Some(c_ref), Some(c_date), Some(c_amount)) =
                (at("customer_ref"), at("date"), at("amount"))
            else {
                return Err(bad(
                    header.0,
                    "the header must name customer_ref, date and amount",
                ));
            };
            let (c_partner, c_store, c_staff) =
                (at("partner_id"), at("store_ref"), at("staff_ref"));
            for (i, raw) in lines {
                let line = i + 1;
                if raw.trim().is_empty() {
                    continue;
                }
                if raw.contains('"') {
                    return Err(bad(line, "quoted fields are not supported"));
                }
                let fields: Vec<&str> = raw.split(',').collect();
                if fields.len() != columns.len() {
                    return Err(bad(
                        line,
                        format!(
                            "expected {} fields as the header says, found {}",
                            columns.len(),
                            fields.len()
                        ),
                    ));
                }
                let customer_ref = check_ref(line, "customer_ref", fields[c_ref])?;
                let day = check_day(line, fields[c_date])?;
                let amount = check_amount(line, fields[c_amount], minor_units)?;
                let optional = |c: Option<usize>, what: &str| -> AppResult<Option<String>> {
                    match c.map(|c| fields[c].trim()) {
                        None | Some("") => Ok(None),
                        Some(text) => check_ref(line, what, text).map(Some),
                    }
                };
                let partner_id = match optional(c_partner, "partner_id")? {
                    None => None,
                    Some(text) => Some(
                        Uuid::parse_str(&text)
                            .map_err(|_| bad(line, format!("partner_id '{text}' is not a UUID")))?,
                    ),
                };
                let store_ref = optional(c_store, "store_ref")?;
                let staff_ref = optional(c_staff, "staff_ref")?;
                let key = format!(
                    "csv|{}|{day}|{amount}|{}|{}|{}",
                    key_field(&customer_ref),
                    partner_id.map(|p| p.to_string()).unwrap_or_default(),
                    key_field(store_ref.as_deref().unwrap_or("")),
                    key_field(staff_ref.as_deref().unwrap_or(""))
                );
                rows.push(Row {
                    line,
                    customer_ref,
                    day,
                    amount,
                    partner_id,
                    store_ref,
                    staff_ref,
                    n: counted(&key),
                    key,
                    external_ref: String::new(),
                    earned: 0,
                    funded: vec![],
                });
            }
        }
    }
    Ok(rows)
}

/// What an import needs besides its input.
pub struct ImportRequest<'a> {
    pub programme_id: Uuid,
    /// The partner of rows that name none.
    pub partner_id: Uuid,
    pub format: Format,
    pub text: &'a str,
    /// Whether the purchases earn points at the rules of their day (`--earn`,
    /// `?earn=true`); otherwise they earn none.
    pub earn: bool,
}

/// `POST /v1/imports/purchases`: the operator only.
pub async fn import_as(
    app: &App,
    caller: &Caller,
    partner_id: Uuid,
    format: Format,
    text: &str,
    earn: bool,
) -> AppResult<ImportReport> {
    caller.require(&[Scope::Admin])?;
    let request = ImportRequest {
        programme_id: caller.programme_id,
        partner_id,
        format,
        text,
        earn,
    };
    import(app, request, |_, _| {}).await
}

/// The setting holding the server's import key (hex), generated on first use.
const IMPORT_KEY_SETTING: &str = "import_ref_hmac_key";

/// The key imported purchases' references are hashed under: generated once per database
/// and kept in `settings` (insert-then-read, so concurrent first imports agree on one),
/// never shown. It must never change: a changed key would import a file again.
async fn import_key(db: &impl ConnectionTrait) -> AppResult<Vec<u8>> {
    use rand::RngCore;
    let mut candidate = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut candidate);
    let stored =
        crate::settings::kept_or_stored(db, IMPORT_KEY_SETTING, hex::encode(candidate)).await?;
    hex::decode(&stored).map_err(|e| AppError::Internal(format!("stored import key: {e}")))
}

/// What an `earn` import prices with: the programme's standing earning rules (no
/// campaigns, no bank-funded rules, no rule that needs the member's history) and each
/// partner's base rate, as they are now, applied at the purchase's day.
struct Earning {
    programme: Programme,
    rules: Vec<Rule>,
    sellers: HashMap<Uuid, Seller>,
}

impl Earning {
    async fn load(app: &App, programme: &Programme, partners: &HashSet<Uuid>) -> AppResult<Self> {
        let mut sellers = HashMap::new();
        let mut rules = vec![];
        for partner_id in partners {
            let (terms, partner) =
                crate::terms::with_partner(app, &app.db, programme.id, *partner_id).await?;
            rules = terms
                .rules
                .iter()
                .filter(|r| {
                    !r.campaign && !r.needs_history() && !matches!(r.funder, Funder::Bank(_))
                })
                .cloned()
                .collect();
            sellers.insert(
                partner.id,
                Seller {
                    id: partner.id,
                    name: partner.name.clone(),
                    category: partner.category.clone(),
                    earn_points_per_unit: partner.earn_points_per_unit,
                },
            );
        }
        Ok(Self {
            programme: programme.clone(),
            rules,
            sellers,
        })
    }

    /// Prices one row as a purchase at midnight UTC of its day, with no tier, no
    /// redemption and no categories; (points, who funds them).
    fn price(&self, row: &Row, partner_id: Uuid) -> AppResult<(Points, Vec<(AccountRef, Points)>)> {
        let seller = self
            .sellers
            .get(&partner_id)
            .ok_or(AppError::NotFound("partner"))?;
        let terms = PurchaseTerms {
            amount: row.amount,
            currency: self.programme.currency.clone(),
            point_value: self.programme.point_value,
            seller: seller.clone(),
            categories: vec![],
            at: midnight(row.day),
            redeem_points: 0,
        };
        let outcome = price_purchase(&terms, &MemberFacts::default(), &self.rules)
            .map_err(|e| bad(row.line, e.to_string()))?;
        let funded = outcome
            .breakdown
            .iter()
            .map(|l| {
                let funder = l.funder.unwrap_or(Funder::SellingPartner);
                (
                    AccountRef::funding(funder, self.programme.id, partner_id),
                    l.points,
                )
            })
            .collect();
        Ok((outcome.points_earned, funded))
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// What every batch of one import shares.
struct Batches {
    programme: Programme,
    currency: String,
    partners: HashMap<Uuid, String>,
    default_partner: Uuid,
    earn: bool,
}

/// Imports the rows; `progress(rows done, rows)` after each batch.
pub async fn import(
    app: &App,
    request: ImportRequest<'_>,
    progress: impl Fn(u64, u64),
) -> AppResult<ImportReport> {
    let programme = programmes::load(app, request.programme_id).await?;
    let currency = programme.currency.code().to_owned();
    let mut rows = parse(
        request.text,
        request.format,
        programme.currency.minor_units(),
    )?;
    // Every partner named must be the programme's.
    let partners: HashMap<Uuid, String> = partner::Entity::find()
        .filter(partner::Column::ProgrammeId.eq(request.programme_id))
        .all(&app.db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    if !partners.contains_key(&request.partner_id) {
        return Err(AppError::NotFound("partner"));
    }
    for row in &rows {
        if let Some(p) = row.partner_id.filter(|p| !partners.contains_key(p)) {
            return Err(bad(
                row.line,
                format!("partner_id {p} is not a partner of this programme"),
            ));
        }
    }
    let key = import_key(&app.db).await?;
    for row in &mut rows {
        row.external_ref = purchase_ref(&key, request.programme_id, &row.key, row.n);
    }
    // Points are priced before anything is written: a row that cannot be priced is
    // refused with its line like any other bad row.
    if request.earn {
        let named: HashSet<Uuid> = rows
            .iter()
            .map(|r| r.partner_id.unwrap_or(request.partner_id))
            .collect();
        let earning = Earning::load(app, &programme, &named).await?;
        for row in &mut rows {
            let (earned, funded) =
                earning.price(row, row.partner_id.unwrap_or(request.partner_id))?;
            row.earned = earned;
            row.funded = funded;
        }
        within_entry_limit(&rows, request.partner_id)?;
    }
    let shared = Batches {
        programme,
        currency,
        partners,
        default_partner: request.partner_id,
        earn: request.earn,
    };
    let mut report = ImportReport {
        rows: rows.len() as u64,
        ..Default::default()
    };
    let total = report.rows;
    let mut done = 0u64;
    for batch in rows.chunks(BATCH_ROWS) {
        let written = write_batch(app, &shared, batch).await?;
        report.imported += written.imported;
        report.members_created += written.members_created;
        report.points_earned += written.points_earned;
        for (account_id, version) in written.changed {
            app.cache.changed(account_id, version).await;
        }
        done += batch.len() as u64;
        progress(done, total);
    }
    report.skipped = report.rows - report.imported;
    Ok(report)
}

/// What one batch wrote.
#[derive(Default)]
struct Written {
    imported: u64,
    members_created: u64,
    points_earned: i64,
    /// Accounts whose balance moved, with their new version (for the balance cache).
    changed: Vec<(Uuid, i64)>,
}

/// `head (VALUES (…), …) AS v on_tail`: the batch's keys as a table joined to the rows
/// looked up. An `IN` list of a thousand parameters made PostgreSQL read every purchase
/// of the partner and compare it with each parameter (its statistics lag a table that an
/// import fills, so it did not plan an index lookup per value): quadratic in the
/// history, about a second a batch halfway through CDNOW. A join is linear whatever the
/// plan. `$` in `on_tail` stands for the next of `tail_values`.
fn joined_values(
    backend: DbBackend,
    head: &str,
    columns: usize,
    values: Vec<sea_orm::Value>,
    on_tail: &str,
    tail_values: Vec<sea_orm::Value>,
) -> (String, Vec<sea_orm::Value>) {
    let mut n = 0usize;
    let mut next = |cast: &str| {
        n += 1;
        match backend {
            DbBackend::Postgres => format!("${n}{cast}"),
            _ => "?".to_owned(),
        }
    };
    let mut sql = format!("{head} (VALUES ");
    for (i, value) in values.iter().enumerate() {
        let cast = match (backend, value) {
            (DbBackend::Postgres, sea_orm::Value::Uuid(_)) => "::uuid",
            (DbBackend::Postgres, _) => "::text",
            _ => "",
        };
        if i % columns == 0 {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
        } else {
            sql.push_str(", ");
        }
        sql.push_str(&next(cast));
        if i % columns == columns - 1 {
            sql.push(')');
        }
    }
    sql.push_str(") AS v ");
    let mut parts = on_tail.split('$');
    sql.push_str(parts.next().unwrap_or(""));
    for part in parts {
        sql.push_str(&next(""));
        sql.push_str(part);
    }
    let mut all = values;
    all.extend(tail_values);
    (sql, all)
}

/// A found member: (member id, account id, balance now).
type Found = HashMap<String, (Uuid, Uuid, Points)>;

/// The live members of these customer references, their accounts locked until the
/// batch commits (`FOR UPDATE` on PostgreSQL; SQLite has one writer). The account lock
/// is the one an erasure takes first: an erasure that holds it makes this wait, and its
/// member then comes back without an account (closed) and is left out, so the batch
/// creates a new member instead of adding purchases to an erased one; an erasure that
/// comes after waits for the batch and erases the new purchases with the rest.
async fn live_members(
    txn: &DatabaseTransaction,
    programme_id: Uuid,
    customers: &[&str],
) -> AppResult<Found> {
    if customers.is_empty() {
        return Ok(HashMap::new());
    }
    let backend = txn.get_database_backend();
    let (sql, values) = joined_values(
        backend,
        "SELECT m.external_ref, m.id, m.account_id FROM members m JOIN",
        1,
        customers.iter().map(|c| (*c).to_owned().into()).collect(),
        "ON m.external_ref = v.column1 WHERE m.programme_id = $ AND m.erased_at IS NULL",
        vec![programme_id.into()],
    );
    let rows: Vec<(String, Uuid, Uuid)> = txn
        .query_all(Statement::from_sql_and_values(backend, sql, values))
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get_by_index(0)?,
                row.try_get_by_index(1)?,
                row.try_get_by_index(2)?,
            ))
        })
        .collect::<Result<_, DbErr>>()?;
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    // In id order, so two imports of overlapping customers lock alike and never deadlock.
    let accounts: HashMap<Uuid, Points> = point_account::Entity::find()
        .select_only()
        .column(point_account::Column::Id)
        .column(point_account::Column::Balance)
        .filter(point_account::Column::Id.is_in(rows.iter().map(|(_, _, a)| *a)))
        .filter(point_account::Column::ClosedAt.is_null())
        .order_by_asc(point_account::Column::Id)
        .lock_exclusive()
        .into_tuple::<(Uuid, Points)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    Ok(rows
        .into_iter()
        .filter_map(|(r, m, a)| accounts.get(&a).map(|balance| (r, (m, a, *balance))))
        .collect())
}

/// Creates members for these references, skipping any that another import created
/// meanwhile (the unique index on (programme, external_ref) decides); the ones created.
async fn create_members(
    txn: &DatabaseTransaction,
    programme_id: Uuid,
    customers: &[&str],
    now: DateTime<Utc>,
) -> AppResult<Found> {
    if customers.is_empty() {
        return Ok(HashMap::new());
    }
    let mut insert =
        member::Entity::insert_many(customers.iter().map(|customer| member::ActiveModel {
            id: Set(Uuid::now_v7()),
            programme_id: Set(programme_id),
            account_id: Set(Uuid::now_v7()),
            name: Set(None),
            email: Set(None),
            phone: Set(None),
            consent_marketing: Set(false),
            consent_data_sharing: Set(false),
            enrolled_by_partner_id: Set(None),
            erased_at: Set(None),
            created_at: Set(now),
            tier_id: Set(None),
            floor_tier_id: Set(None),
            floor_reason: Set(None),
            floor_ends_at: Set(None),
            external_ref: Set(Some((*customer).to_owned())),
        }))
        .on_conflict(
            OnConflict::columns([member::Column::ProgrammeId, member::Column::ExternalRef])
                .do_nothing()
                .to_owned(),
        )
        .into_query();
    insert.returning(Query::returning().columns([
        member::Column::ExternalRef,
        member::Column::Id,
        member::Column::AccountId,
    ]));
    let created: Vec<(String, Uuid, Uuid)> = txn
        .query_all(txn.get_database_backend().build(&insert))
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get_by_index(0)?,
                row.try_get_by_index(1)?,
                row.try_get_by_index(2)?,
            ))
        })
        .collect::<Result<_, DbErr>>()?;
    if !created.is_empty() {
        point_account::Entity::insert_many(created.iter().map(|(_, member_id, account_id)| {
            crate::ledger::new_account(*account_id, programme_id, Some(*member_id), now)
        }))
        .exec_without_returning(txn)
        .await?;
    }
    Ok(created
        .into_iter()
        .map(|(r, m, a)| (r, (m, a, 0)))
        .collect())
}

/// One batch in one transaction.
///
/// Purchases are inserted first (`ON CONFLICT DO NOTHING RETURNING`), and the journal
/// entries, postings, balances, lots and partner links are written for what that
/// statement really inserted: an import racing another import of the same rows writes
/// no entry for the rows the other one won, and no entry without purchases.
async fn write_batch(app: &App, shared: &Batches, batch: &[Row]) -> AppResult<Written> {
    let programme_id = shared.programme.id;
    let partner_of = |row: &Row| row.partner_id.unwrap_or(shared.default_partner);
    let txn = app.db.begin().await?;
    // What is there already, by (partner_id, external_ref): the unique index's order.
    let pairs: Vec<sea_orm::Value> = batch
        .iter()
        .flat_map(|r| [partner_of(r).into(), r.external_ref.clone().into()])
        .collect();
    let (sql, values) = joined_values(
        txn.get_database_backend(),
        "SELECT p.partner_id, p.external_ref FROM purchases p JOIN",
        2,
        pairs,
        "ON p.partner_id = v.column1 AND p.external_ref = v.column2",
        vec![],
    );
    let existing: HashSet<(Uuid, String)> = txn
        .query_all(Statement::from_sql_and_values(
            txn.get_database_backend(),
            sql,
            values,
        ))
        .await?
        .iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect::<Result<_, DbErr>>()?;
    let mut new: Vec<&Row> = batch
        .iter()
        .filter(|r| !existing.contains(&(partner_of(r), r.external_ref.clone())))
        .collect();
    if new.is_empty() {
        txn.commit().await?;
        return Ok(Written::default());
    }
    // Inserted in one order by every import, so two racing imports queue on the same
    // first row instead of each holding a row the other waits for.
    new.sort_by(|a, b| (partner_of(a), &a.external_ref).cmp(&(partner_of(b), &b.external_ref)));
    // Members by customer reference, created when unknown (or erased).
    let customers: Vec<&str> = {
        let set: std::collections::BTreeSet<&str> =
            new.iter().map(|r| r.customer_ref.as_str()).collect();
        set.into_iter().collect()
    };
    let now = Utc::now();
    let mut members = live_members(&txn, programme_id, &customers).await?;
    let mut created = 0u64;
    for _ in 0..2 {
        let missing: Vec<&str> = customers
            .iter()
            .copied()
            .filter(|c| !members.contains_key(*c))
            .collect();
        if missing.is_empty() {
            break;
        }
        let made = create_members(&txn, programme_id, &missing, now).await?;
        created += made.len() as u64;
        members.extend(made);
        // Those another import created meanwhile: found (and locked) now.
        let taken: Vec<&str> = missing
            .into_iter()
            .filter(|c| !members.contains_key(*c))
            .collect();
        members.extend(live_members(&txn, programme_id, &taken).await?);
    }
    if customers.iter().any(|c| !members.contains_key(*c)) {
        return Err(AppError::ConcurrentImport);
    }
    // One journal entry per partner of the batch, named by its purchases.
    let mut entries: HashMap<Uuid, Uuid> = HashMap::new();
    for row in &new {
        entries.entry(partner_of(row)).or_insert_with(Uuid::now_v7);
    }
    let rows = new.iter().map(|row| {
        let partner_id = partner_of(row);
        let (_, account_id, _) = members[&row.customer_ref];
        purchase::ActiveModel::from(purchase::Model {
            id: Uuid::now_v7(),
            programme_id,
            partner_id,
            account_id,
            card_number: String::new(),
            external_ref: row.external_ref.clone(),
            store_ref: row.store_ref.clone(),
            staff_ref: row.staff_ref.clone(),
            amount: row.amount.to_string(),
            currency: shared.currency.clone(),
            discount: "0".to_owned(),
            points_earned: row.earned,
            points_redeemed: 0,
            refunded_amount: "0".to_owned(),
            points_clawed_back: 0,
            points_returned: 0,
            entry_id: entries[&partner_id],
            created_at: now,
            occurred_at: Some(midnight(row.day)),
        })
    });
    let mut insert = purchase::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([purchase::Column::PartnerId, purchase::Column::ExternalRef])
                .do_nothing()
                .to_owned(),
        )
        .into_query();
    insert.returning(
        Query::returning().columns([purchase::Column::PartnerId, purchase::Column::ExternalRef]),
    );
    let inserted: HashSet<(Uuid, String)> = txn
        .query_all(txn.get_database_backend().build(&insert))
        .await?
        .iter()
        .map(|row| Ok((row.try_get_by_index(0)?, row.try_get_by_index(1)?)))
        .collect::<Result<_, DbErr>>()?;
    let written: Vec<&Row> = new
        .into_iter()
        .filter(|r| inserted.contains(&(partner_of(r), r.external_ref.clone())))
        .collect();
    let mut out = Written {
        imported: written.len() as u64,
        members_created: created,
        ..Default::default()
    };
    if written.is_empty() {
        // Another import wrote them all meanwhile; the members this batch created (none
        // then: it found theirs) and nothing else.
        txn.commit().await?;
        return Ok(out);
    }
    // The entries, with their true counts, and (`earn`) their postings.
    let mut by_partner: std::collections::BTreeMap<Uuid, Vec<&Row>> = Default::default();
    for row in &written {
        by_partner.entry(partner_of(row)).or_default().push(row);
    }
    let mut credits: HashMap<Uuid, Points> = HashMap::new();
    let mut lots: Vec<point_lot::ActiveModel> = vec![];
    let expires_at = shared.programme.lot_expiry(now);
    for (partner_id, rows) in &by_partner {
        let entry_id = entries[partner_id];
        let name = shared.partners.get(partner_id).map_or("", String::as_str);
        let count = rows.len();
        let mut entry = JournalEntry::new(EntryKind::Purchase);
        let reason = if shared.earn {
            let mut funders: std::collections::BTreeMap<AccountRef, Points> = Default::default();
            let mut members_credit: std::collections::BTreeMap<Uuid, Points> = Default::default();
            for row in rows {
                let (_, account_id, _) = members[&row.customer_ref];
                for (funder, points) in &row.funded {
                    *funders.entry(*funder).or_insert(0) += points;
                }
                *members_credit.entry(account_id).or_insert(0) += row.earned;
            }
            for (account, points) in funders.into_iter().filter(|(_, p)| *p != 0) {
                entry.postings.push(Posting {
                    account,
                    amount: -points,
                });
            }
            let mut points_total = 0;
            for (account_id, points) in members_credit.into_iter().filter(|(_, p)| *p != 0) {
                entry.postings.push(Posting {
                    account: AccountRef::member(account_id),
                    amount: points,
                });
                *credits.entry(account_id).or_insert(0) += points;
                points_total += points;
                lots.push(crate::ledger::new_lot(
                    programme_id,
                    account_id,
                    entry_id,
                    points,
                    expires_at,
                    now,
                ));
            }
            out.points_earned += points_total;
            format!(
                "Import of {count} historical purchases at {name}: {points_total} points at the rules of their days"
            )
        } else {
            format!("Import of {count} historical purchases at {name} (no points)")
        };
        let entry = entry.balanced()?;
        let ctx = EntryContext {
            programme_id,
            reason,
            partner_id: Some(*partner_id),
            purchase_id: None,
            refund_id: None,
            breakdown: vec![],
        };
        crate::ledger::write_entry(&txn, entry_id, &entry, &ctx, now).await?;
    }
    if !credits.is_empty() {
        out.changed = credit_accounts(&txn, &members, &credits).await?;
        point_lot::Entity::insert_many(lots)
            .exec_without_returning(&txn)
            .await?;
    }
    // The partners may see the members they sold to.
    let links: HashSet<(Uuid, Uuid)> = written
        .iter()
        .map(|r| (members[&r.customer_ref].0, partner_of(r)))
        .collect();
    member_partner::Entity::insert_many(links.into_iter().map(|(member_id, partner_id)| {
        member_partner::ActiveModel {
            member_id: Set(member_id),
            partner_id: Set(partner_id),
            programme_id: Set(programme_id),
            created_at: Set(now),
        }
    }))
    .on_conflict(
        OnConflict::columns([
            member_partner::Column::MemberId,
            member_partner::Column::PartnerId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .do_nothing()
    .exec_without_returning(&txn)
    .await?;
    txn.commit().await?;
    Ok(out)
}

/// Adds each account's points in one UPDATE (the accounts are locked or new), refusing
/// a balance over [`MAX_BALANCE`]; (account, new version) of each.
async fn credit_accounts(
    txn: &DatabaseTransaction,
    members: &Found,
    credits: &HashMap<Uuid, Points>,
) -> AppResult<Vec<(Uuid, i64)>> {
    let balances: HashMap<Uuid, Points> = members.values().map(|(_, a, b)| (*a, *b)).collect();
    for (account_id, points) in credits {
        if balances.get(account_id).copied().unwrap_or(0) + points > MAX_BALANCE {
            return Err(AppError::BalanceLimit { max: MAX_BALANCE });
        }
    }
    let mut changed = vec![];
    let ids: Vec<Uuid> = credits.keys().copied().collect();
    // A few hundred accounts a statement keeps the CASE small.
    for chunk in ids.chunks(500) {
        let mut case = sea_orm::sea_query::CaseStatement::new();
        for id in chunk {
            case = case.case(
                Expr::col(point_account::Column::Id).eq(*id),
                Expr::col(point_account::Column::Balance).add(credits[id]),
            );
        }
        let case = case.finally(Expr::col(point_account::Column::Balance));
        let updated = point_account::Entity::update_many()
            .col_expr(point_account::Column::Balance, case.into())
            .col_expr(
                point_account::Column::Version,
                Expr::col(point_account::Column::Version).add(1),
            )
            .filter(point_account::Column::Id.is_in(chunk.iter().copied()))
            .filter(point_account::Column::ClosedAt.is_null())
            .exec_with_returning(txn)
            .await?;
        if updated.len() != chunk.len() {
            return Err(AppError::ConcurrentImport);
        }
        changed.extend(updated.into_iter().map(|a| (a.id, a.version)));
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdnow_rows_parse_and_identical_rows_get_distinct_refs() {
        let text = " customer_id  date number_of_cds  dollar_value\n 00001 19970101  1   11.77\n\n 00001 19970101  1   11.77\n 00002 19970112  2   0.00\n";
        let rows = parse(text, Format::Cdnow, 2).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].customer_ref, "00001");
        assert_eq!(rows[0].amount.to_string(), "11.77");
        assert_eq!(rows[0].key, rows[1].key);
        assert_eq!((rows[0].n, rows[1].n, rows[2].n), (1, 2, 1));
        assert_eq!(rows[2].amount, Decimal::ZERO);
        // The same text gives the same references: a re-import skips them.
        let again = parse(text, Format::Cdnow, 2).unwrap();
        assert_eq!((&rows[1].key, rows[1].n), (&again[1].key, again[1].n));
    }

    #[test]
    fn a_bad_row_names_its_line() {
        let text = "customer_ref,date,amount\nc1,2024-01-02,10.00\nc2,2024-13-01,5\n";
        match parse(text, Format::Csv, 2) {
            Err(AppError::ImportRow { line, message }) => {
                assert_eq!(line, 3);
                assert!(message.contains("2024-13-01"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let text = "customer_ref,date,amount\nc1,2024-01-02,10.001\n";
        assert!(matches!(
            parse(text, Format::Csv, 2),
            Err(AppError::ImportRow { line: 2, .. })
        ));
        assert!(matches!(
            parse("ref,date\n", Format::Csv, 2),
            Err(AppError::ImportRow { line: 1, .. })
        ));
    }
}
