use super::found;
use crate::store::StoreResult;
use crate::store::entity::api_key::{self, Column, Entity, Model};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(api_key::ActiveModel::from(model).insert(db).await?)
}

pub async fn find_by_prefix(db: &impl ConnectionTrait, prefix: &str) -> StoreResult<Model> {
    found(Entity::find().filter(Column::Prefix.eq(prefix)).one(db).await?)
}

/// Records a use of the key, at most once per `granularity` so busy keys do not write on every call.
pub async fn touch(
    db: &impl ConnectionTrait,
    id: &str,
    now: DateTime<Utc>,
    granularity: chrono::TimeDelta,
) -> StoreResult<()> {
    let stale_before = now - granularity;
    Entity::update_many()
        .col_expr(Column::LastUsedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::LastUsedAt.is_null().or(Column::LastUsedAt.lt(stale_before)))
        .exec(db)
        .await?;
    Ok(())
}

/// Marks the key revoked now (it stays listed, so its history is visible).
pub async fn revoke(db: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> StoreResult<()> {
    Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}
