use crate::store::StoreResult;
use crate::store::entity::signing_key::{self, Column, Entity, Model};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

/// Keys not yet retired, newest first: the first signs, all of them verify.
pub async fn active(db: &impl ConnectionTrait) -> StoreResult<Vec<Model>> {
    Ok(Entity::find().filter(Column::RetiredAt.is_null()).order_by_desc(Column::CreatedAt).all(db).await?)
}

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(signing_key::ActiveModel::from(model).insert(db).await?)
}

/// Inserts the key unless one with its id exists; answers whether it was inserted.
pub async fn insert_unless_present(db: &impl ConnectionTrait, model: Model) -> StoreResult<bool> {
    let inserted = Entity::insert(signing_key::ActiveModel::from(model))
        .on_conflict(OnConflict::column(Column::Id).do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    Ok(inserted == 1)
}

/// Marks a key retired: it no longer verifies tokens.
pub async fn retire(db: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
    Entity::update_many()
        .col_expr(Column::RetiredAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .filter(Column::RetiredAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Every key, retired ones too.
pub async fn all(db: &impl ConnectionTrait) -> StoreResult<Vec<Model>> {
    Ok(Entity::find().order_by_asc(Column::CreatedAt).all(db).await?)
}

/// Replaces a key's stored secret if it is still `current` (another replica may have done it);
/// answers whether it was replaced.
pub async fn replace_secret(db: &impl ConnectionTrait, id: &str, current: &str, new: &str) -> StoreResult<bool> {
    let replaced = Entity::update_many()
        .col_expr(Column::Secret, Expr::value(new))
        .filter(Column::Id.eq(id))
        .filter(Column::Secret.eq(current))
        .exec(db)
        .await?;
    Ok(replaced.rows_affected == 1)
}
