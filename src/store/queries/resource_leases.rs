use crate::store::StoreResult;
use crate::store::entity::resource_lease::{ActiveModel, Column, Entity};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

/// Takes the lease on `resource_id` for `holder` until `until`, if it is free, expired or
/// already `holder`'s. Answers whether `holder` now holds it.
pub async fn acquire(
    db: &impl ConnectionTrait,
    resource_id: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<bool> {
    let lease = ActiveModel {
        resource_id: Set(resource_id.to_owned()),
        holder: Set(holder.to_owned()),
        expires_at: Set(until),
    };
    let takeover = OnConflict::column(Column::ResourceId)
        .update_columns([Column::Holder, Column::ExpiresAt])
        .action_and_where(
            Expr::col((Entity, Column::ExpiresAt)).lt(now).or(Expr::col((Entity, Column::Holder)).eq(holder)),
        )
        .to_owned();
    let written = Entity::insert(lease).on_conflict(takeover).exec_without_returning(db).await?;
    Ok(written == 1)
}

/// Gives the lease back, if `holder` still holds it.
pub async fn release(db: &impl ConnectionTrait, resource_id: &str, holder: &str) -> StoreResult<()> {
    Entity::delete_many().filter(Column::ResourceId.eq(resource_id)).filter(Column::Holder.eq(holder)).exec(db).await?;
    Ok(())
}

/// Extends `holder`'s lease to `until`, if it still holds it and it has not run out. Answers
/// false when the lease is lost: another worker may be writing to the firewall by now.
pub async fn renew(
    db: &impl ConnectionTrait,
    resource_id: &str,
    holder: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<bool> {
    let renewed = Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(until))
        .filter(Column::ResourceId.eq(resource_id))
        .filter(Column::Holder.eq(holder))
        .filter(Column::ExpiresAt.gte(now))
        .exec(db)
        .await?;
    Ok(renewed.rows_affected == 1)
}
