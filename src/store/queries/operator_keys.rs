use super::found;
use crate::store::StoreResult;
use crate::store::entity::operator_key::{self, Column, Entity, Model};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(operator_key::ActiveModel::from(model).insert(db).await?)
}

pub async fn find_by_prefix(db: &impl ConnectionTrait, prefix: &str) -> StoreResult<Model> {
    found(Entity::find().filter(Column::Prefix.eq(prefix)).one(db).await?)
}

/// Revokes a key not yet revoked; false when there is no such key.
pub async fn revoke(db: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
    let result = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .filter(Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
