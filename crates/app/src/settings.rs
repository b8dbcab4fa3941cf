//! Server-wide values kept with the data (`settings`): keys generated on first use.

use crate::{AppError, AppResult};
use coalition_store::entities::setting;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};

/// The value kept under `key`, storing `candidate` first if there is none. Insert-then-
/// read: concurrent first starts (several processes, one database) agree on one value.
pub async fn kept_or_stored(
    db: &impl ConnectionTrait,
    key: &str,
    candidate: String,
) -> AppResult<String> {
    setting::Entity::insert(setting::ActiveModel {
        key: Set(key.to_owned()),
        value: Set(candidate),
    })
    .on_conflict(
        OnConflict::column(setting::Column::Key)
            .do_nothing()
            .to_owned(),
    )
    .do_nothing()
    .exec(db)
    .await?;
    setting::Entity::find_by_id(key.to_owned())
        .one(db)
        .await?
        .map(|stored| stored.value)
        .ok_or_else(|| AppError::Internal(format!("setting {key} missing after insert")))
}
