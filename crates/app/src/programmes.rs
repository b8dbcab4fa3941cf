//! Programmes (tenants). The first operator client of a programme is made here, for the
//! CLI: the API itself never creates a programme and never ships a default secret.

use crate::clients::{self, CreatedClient, NewClient};
use crate::error::{text_field, AppError, AppResult, Validator};
use crate::{App, Scope};
use coalition_domain::limits::MAX_POINT_EXPIRY_DAYS;
use coalition_domain::money::{parse_rate, Currency};
use coalition_store::entities::programme;
use rust_decimal::Decimal;
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DatabaseConnection, EntityTrait, TransactionTrait,
};
use uuid::Uuid;

pub const DEFAULT_POINT_EXPIRY_DAYS: i32 = 730;

pub struct NewProgramme {
    pub name: String,
    pub currency: String,
    pub point_value: String,
    pub point_expiry_days: i32,
}

pub struct CreatedProgramme {
    pub programme_id: Uuid,
    pub operator: CreatedClient,
}

/// The programme's settings as the use cases need them, parsed.
#[derive(Debug, Clone)]
pub struct Programme {
    pub id: Uuid,
    pub currency: Currency,
    pub point_value: Decimal,
    pub point_expiry_days: i32,
}

impl Programme {
    /// Money must be in the programme's currency: there is no conversion.
    pub fn ensure_currency(&self, money: &coalition_domain::Money) -> AppResult<()> {
        if money.currency == self.currency {
            Ok(())
        } else {
            Err(AppError::CurrencyMismatch {
                expected: self.currency.to_string(),
                got: money.currency.to_string(),
            })
        }
    }

    /// When points earned (or given back) now expire. Creation bounds the days; a date
    /// past what the calendar can hold would mean "never".
    pub fn lot_expiry(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        chrono::Duration::try_days(i64::from(self.point_expiry_days))
            .and_then(|life| now.checked_add_signed(life))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }
}

pub async fn create(db: &DatabaseConnection, input: NewProgramme) -> AppResult<CreatedProgramme> {
    let mut v = Validator::default();
    let name = text_field(&mut v, "name", &input.name, 200);
    let currency = v.check("currency", Currency::parse_iso_4217(&input.currency));
    let point_value = v.check("point_value", parse_rate(&input.point_value));
    v.require(
        "point_value",
        point_value.is_some_and(|p| p > Decimal::ZERO),
        "must be greater than zero",
    );
    v.require(
        "point_expiry_days",
        (1..=MAX_POINT_EXPIRY_DAYS).contains(&input.point_expiry_days),
        &format!("must be between 1 and {MAX_POINT_EXPIRY_DAYS} days"),
    );
    v.finish()?;
    let (currency, point_value) = (
        currency.expect("validated"),
        point_value.expect("validated"),
    );
    let txn = db.begin().await?;
    let id = Uuid::now_v7();
    programme::Entity::insert(programme::ActiveModel {
        id: Set(id),
        name: Set(name.clone()),
        currency: Set(currency.code().to_owned()),
        point_value: Set(point_value.to_string()),
        point_expiry_days: Set(input.point_expiry_days),
        created_at: Set(chrono::Utc::now()),
        terms_version: Set(0),
        credentials_version: Set(0),
    })
    .exec_without_returning(&txn)
    .await?;
    let operator = clients::insert(
        &txn,
        id,
        NewClient {
            name: format!("{name} operator"),
            partner_id: None,
            redirect_uris: vec![],
        },
        Scope::Admin,
    )
    .await?;
    txn.commit().await?;
    Ok(CreatedProgramme {
        programme_id: id,
        operator,
    })
}

/// The programme's terms, from memory after the first read (nothing updates them).
pub async fn load(app: &App, id: Uuid) -> AppResult<Programme> {
    app.programmes.get_or_load(id, load_from(&app.db, id)).await
}

async fn load_from(db: &impl ConnectionTrait, id: Uuid) -> AppResult<Programme> {
    let row = programme::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(AppError::NotFound("programme"))?;
    let bad = |what: &str| AppError::Internal(format!("stored programme {what} is corrupt"));
    Ok(Programme {
        id: row.id,
        currency: Currency::parse(&row.currency).map_err(|_| bad("currency"))?,
        point_value: row.point_value.parse().map_err(|_| bad("point value"))?,
        point_expiry_days: row.point_expiry_days,
    })
}
