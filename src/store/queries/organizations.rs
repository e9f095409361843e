use super::{fetch_page, found};
use crate::domain::CloudScopes;
use crate::store::entity::organization::{self, ActiveModel, Column, Entity, Model};
use crate::store::{Page, PageRequest, StoreError, StoreResult};
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

/// Every organization, oldest first.
pub async fn list(db: &impl ConnectionTrait, request: &PageRequest) -> StoreResult<Page<Model>> {
    fetch_page(db, Entity::find(), Column::Id, request, false, |m| &m.id).await
}

/// The organization's cloud scopes as stored.
pub fn cloud_scopes(organization: &Model) -> StoreResult<CloudScopes> {
    serde_json::from_str(&organization.cloud_scopes)
        .map_err(|err| StoreError::Corrupt(format!("organization {} cloud scopes: {err}", organization.id)))
}

/// Scopes in their stored form.
pub fn encode_cloud_scopes(scopes: &CloudScopes) -> String {
    serde_json::to_string(scopes).unwrap_or_else(|_| "{}".to_owned())
}
