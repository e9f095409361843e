use super::found;
use crate::store::StoreResult;
use crate::store::entity::login_session::{self, Entity, Model};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(login_session::ActiveModel::from(model).insert(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).one(db).await?)
}
