//! Historical purchases in: a partner's years of history, loaded as dated purchases of
//! members found or created by `external_ref`.
//!
//! - The whole input is parsed and checked first: a bad row is refused with its line
//!   number and nothing is written.
//! - Rows are then written in batches of [`BATCH_ROWS`], each batch in one transaction
//!   with multi-row INSERTs, so a failure leaves whole batches or nothing of a batch.
//! - Resumable: each row's purchase gets an `external_ref` derived from its content
//!   (`import:<hash of the row's fields>:<n>`, n counting identical rows of the file), and
//!   purchases are unique per (partner, external_ref): importing the same file again, or
//!   a file that repeats some rows (overlapping exports), skips what is there.
//! - Imported purchases earn no points: they write no postings and no lots, so balances,
//!   settlement and expiry do not see them. Each batch writes one journal entry per
//!   partner without postings (kind `purchase`, like a live purchase that moved no
//!   points), which the purchases name as their entry. `occurred_at` holds the
//!   historical day (midnight UTC); `created_at` the moment of the import. Imported
//!   purchases do not count toward tiers, and they cannot be refunded (no card).

use crate::error::{AppError, AppResult};
use crate::programmes;
use crate::{App, Caller, Scope};
use chrono::{DateTime, NaiveDate, Utc};
use coalition_domain::limits;
use coalition_store::entities::{
    journal_entry, member, member_partner, partner, point_account, purchase,
};
use rust_decimal::Decimal;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
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
    external_ref: String,
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
}

fn bad(line: usize, message: impl Into<String>) -> AppError {
    AppError::ImportRow {
        line: line as u64,
        message: message.into(),
    }
}

/// FNV-1a, 64 bits: a stable hash of a row's fields (the same on every build).
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
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
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut keyed = |key: String| {
        let hash = fnv1a(&key);
        let n = seen.entry(hash).or_insert(0);
        *n += 1;
        // ':' halves the hex: no run of 13 digits, which would read as a card number.
        format!("import:{:08x}:{:08x}:{n}", hash >> 32, hash & 0xffff_ffff)
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
                let key = format!("cdnow|{customer_ref}|{day}|{cds}|{amount}");
                rows.push(Row {
                    line,
                    customer_ref,
                    day,
                    amount,
                    partner_id: None,
                    store_ref: None,
                    staff_ref: None,
                    external_ref: keyed(key),
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
            for c in &columns {
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
                    "csv|{customer_ref}|{day}|{amount}|{}|{}|{}",
                    partner_id.map(|p| p.to_string()).unwrap_or_default(),
                    store_ref.as_deref().unwrap_or(""),
                    staff_ref.as_deref().unwrap_or("")
                );
                rows.push(Row {
                    line,
                    customer_ref,
                    day,
                    amount,
                    partner_id,
                    store_ref,
                    staff_ref,
                    external_ref: keyed(key),
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
}

/// `POST /v1/imports/purchases`: the operator only.
pub async fn import_as(
    app: &App,
    caller: &Caller,
    partner_id: Uuid,
    format: Format,
    text: &str,
) -> AppResult<ImportReport> {
    caller.require(&[Scope::Admin])?;
    let request = ImportRequest {
        programme_id: caller.programme_id,
        partner_id,
        format,
        text,
    };
    import(app, request, |_, _| {}).await
}

/// Imports the rows; `progress(rows done, rows)` after each batch.
pub async fn import(
    app: &App,
    request: ImportRequest<'_>,
    progress: impl Fn(u64, u64),
) -> AppResult<ImportReport> {
    let programme = programmes::load(app, request.programme_id).await?;
    let currency = programme.currency.code().to_owned();
    let rows = parse(
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
    let mut report = ImportReport {
        rows: rows.len() as u64,
        ..Default::default()
    };
    let total = report.rows;
    let mut done = 0u64;
    for batch in rows.chunks(BATCH_ROWS) {
        let (imported, created) = write_batch(app, &request, &currency, &partners, batch).await?;
        report.imported += imported;
        report.members_created += created;
        done += batch.len() as u64;
        progress(done, total);
    }
    report.skipped = report.rows - report.imported;
    Ok(report)
}

/// One batch in one transaction: (purchases written, members created).
async fn write_batch(
    app: &App,
    request: &ImportRequest<'_>,
    currency: &str,
    partners: &HashMap<Uuid, String>,
    batch: &[Row],
) -> AppResult<(u64, u64)> {
    let programme_id = request.programme_id;
    let partner_of = |row: &Row| row.partner_id.unwrap_or(request.partner_id);
    let txn = app.db.begin().await?;
    // What is there already.
    // By (partner_id, external_ref): the unique index's order.
    let refs: Vec<&str> = batch.iter().map(|r| r.external_ref.as_str()).collect();
    let batch_partners: HashSet<Uuid> = batch.iter().map(partner_of).collect();
    let existing: HashSet<(Uuid, String)> = purchase::Entity::find()
        .select_only()
        .column(purchase::Column::PartnerId)
        .column(purchase::Column::ExternalRef)
        .filter(purchase::Column::PartnerId.is_in(batch_partners))
        .filter(purchase::Column::ExternalRef.is_in(refs))
        .into_tuple::<(Uuid, String)>()
        .all(&txn)
        .await?
        .into_iter()
        .collect();
    let new: Vec<&Row> = batch
        .iter()
        .filter(|r| !existing.contains(&(partner_of(r), r.external_ref.clone())))
        .collect();
    if new.is_empty() {
        txn.commit().await?;
        return Ok((0, 0));
    }
    // Members by customer reference, created when unknown.
    let customers: Vec<&str> = {
        let mut seen = HashSet::new();
        new.iter()
            .map(|r| r.customer_ref.as_str())
            .filter(|c| seen.insert(*c))
            .collect()
    };
    let mut members: HashMap<String, (Uuid, Uuid)> = member::Entity::find()
        .select_only()
        .column(member::Column::ExternalRef)
        .column(member::Column::Id)
        .column(member::Column::AccountId)
        .filter(member::Column::ProgrammeId.eq(programme_id))
        .filter(member::Column::ExternalRef.is_in(customers.iter().copied()))
        .into_tuple::<(String, Uuid, Uuid)>()
        .all(&txn)
        .await?
        .into_iter()
        .map(|(r, m, a)| (r, (m, a)))
        .collect();
    let now = Utc::now();
    let missing: Vec<&str> = customers
        .iter()
        .copied()
        .filter(|c| !members.contains_key(*c))
        .collect();
    let created = missing.len() as u64;
    if !missing.is_empty() {
        let ids: Vec<(String, Uuid, Uuid)> = missing
            .iter()
            .map(|c| ((*c).to_owned(), Uuid::now_v7(), Uuid::now_v7()))
            .collect();
        point_account::Entity::insert_many(ids.iter().map(|(_, member_id, account_id)| {
            crate::ledger::new_account(*account_id, programme_id, Some(*member_id), now)
        }))
        .exec_without_returning(&txn)
        .await?;
        member::Entity::insert_many(ids.iter().map(|(customer, member_id, account_id)| {
            member::ActiveModel {
                id: Set(*member_id),
                programme_id: Set(programme_id),
                account_id: Set(*account_id),
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
                external_ref: Set(Some(customer.clone())),
            }
        }))
        .exec_without_returning(&txn)
        .await
        .map_err(|e| {
            if coalition_store::is_unique_violation(&e) {
                AppError::ConcurrentImport
            } else {
                e.into()
            }
        })?;
        for (customer, member_id, account_id) in ids {
            members.insert(customer, (member_id, account_id));
        }
    }
    // One journal entry per partner of the batch, without postings.
    let mut entries: HashMap<Uuid, Uuid> = HashMap::new();
    for row in &new {
        entries.entry(partner_of(row)).or_insert_with(Uuid::now_v7);
    }
    journal_entry::Entity::insert_many(entries.iter().map(|(partner_id, entry_id)| {
        let count = new.iter().filter(|r| partner_of(r) == *partner_id).count();
        journal_entry::ActiveModel {
            id: Set(*entry_id),
            programme_id: Set(programme_id),
            kind: Set("purchase".to_owned()),
            reason: Set(format!(
                "Import of {count} historical purchases at {} (no points)",
                partners.get(partner_id).map_or("", String::as_str)
            )),
            partner_id: Set(Some(*partner_id)),
            purchase_id: Set(None),
            refund_id: Set(None),
            breakdown: Set("[]".to_owned()),
            created_at: Set(now),
        }
    }))
    .exec_without_returning(&txn)
    .await?;
    let rows = new.iter().map(|row| {
        let partner_id = partner_of(row);
        let (_, account_id) = members[&row.customer_ref];
        let at: DateTime<Utc> = row.day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
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
            currency: currency.to_owned(),
            discount: "0".to_owned(),
            points_earned: 0,
            points_redeemed: 0,
            refunded_amount: "0".to_owned(),
            points_clawed_back: 0,
            points_returned: 0,
            entry_id: entries[&partner_id],
            created_at: now,
            occurred_at: Some(at),
        })
    });
    let inserted = purchase::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([purchase::Column::PartnerId, purchase::Column::ExternalRef])
                .do_nothing()
                .to_owned(),
        )
        .do_nothing()
        .exec_without_returning(&txn)
        .await?;
    let imported = match inserted {
        sea_orm::TryInsertResult::Inserted(n) => n,
        _ => 0,
    };
    // The partners may see the members they sold to.
    let links: HashSet<(Uuid, Uuid)> = new
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
    Ok((imported, created))
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
        assert_ne!(rows[0].external_ref, rows[1].external_ref);
        assert_eq!(rows[2].amount, Decimal::ZERO);
        // The same text gives the same references: a re-import skips them.
        let again = parse(text, Format::Cdnow, 2).unwrap();
        assert_eq!(rows[1].external_ref, again[1].external_ref);
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
