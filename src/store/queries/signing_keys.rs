use crate::store::StoreResult;
use crate::store::entity::signing_key::{self, Column, Entity, Model};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

/// Keys not yet retired, newest first: the first signs, all of them verify.
pub async fn active(db: &impl ConnectionTrait) -> StoreResult<Vec<Model>> {
    Ok(Entity::find().filter(Column::RetiredAt.is_null()).order_by_desc(Column::CreatedAt).all(db).await?)
}

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(signing_key::ActiveModel::from(model).insert(db).await?)
}
