use crate::store::StoreResult;
use crate::store::entity::rate_limit::{ActiveModel, Column, Entity, Model};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

/// Counts a hit on `key` in one statement, starting a new window at `now` when the current one
/// began at or before `window_cutoff`; returns the key's window and hits so far.
pub async fn hit(
    db: &impl ConnectionTrait,
    key: &str,
    now: DateTime<Utc>,
    window_cutoff: DateTime<Utc>,
) -> StoreResult<Model> {
    let first = ActiveModel { key: Set(key.to_owned()), window_start: Set(now), hits: Set(1) };
    let expired = || Expr::col((Entity, Column::WindowStart)).lte(window_cutoff);
    let count = OnConflict::column(Column::Key)
        .values([
            (Column::Hits, Expr::case(expired(), 1).finally(Expr::col((Entity, Column::Hits)).add(1)).into()),
            (Column::WindowStart, Expr::case(expired(), now).finally(Expr::col((Entity, Column::WindowStart))).into()),
        ])
        .to_owned();
    Ok(Entity::insert(first).on_conflict(count).exec_with_returning(db).await?)
}

/// Forgets keys whose window ended, so the table holds only recent callers.
pub async fn purge(db: &impl ConnectionTrait, window_cutoff: DateTime<Utc>) -> StoreResult<u64> {
    Ok(Entity::delete_many().filter(Column::WindowStart.lte(window_cutoff)).exec(db).await?.rows_affected)
}
