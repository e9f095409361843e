use super::found;
use crate::store::StoreResult;
use crate::store::entity::login_session::{self, Entity, Model};
use crate::store::entity::verification_code;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(login_session::ActiveModel::from(model).insert(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).one(db).await?)
}

pub async fn insert_code(
    db: &impl ConnectionTrait,
    model: verification_code::Model,
) -> StoreResult<verification_code::Model> {
    Ok(verification_code::ActiveModel::from(model).insert(db).await?)
}

/// A verification code, locked for the rest of the transaction (its attempts are counted).
pub async fn get_code_for_update(db: &impl ConnectionTrait, id: &str) -> StoreResult<verification_code::Model> {
    use sea_orm::QuerySelect;
    found(verification_code::Entity::find_by_id(id).lock_exclusive().one(db).await?)
}

/// Saves every field of a verification code.
pub async fn save_code(db: &impl ConnectionTrait, model: verification_code::Model) -> StoreResult<()> {
    model.into_active_model().reset_all().update(db).await?;
    Ok(())
}
