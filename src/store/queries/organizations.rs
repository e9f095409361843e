use super::found;
use crate::store::StoreResult;
use crate::store::entity::organization::{self, ActiveModel, Entity, Model};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, PaginatorTrait};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(organization::ActiveModel::from(model).insert(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).one(db).await?)
}

pub async fn count(db: &impl ConnectionTrait) -> StoreResult<u64> {
    Ok(Entity::find().count(db).await?)
}

pub async fn update(db: &impl ConnectionTrait, changes: ActiveModel) -> StoreResult<Model> {
    Ok(changes.update(db).await?)
}
