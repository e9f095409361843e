use super::{fetch_page, found};
use crate::store::entity::agent::{self, Column, Entity, Model};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(agent::ActiveModel::from(model).insert(db).await?)
}

/// An agent of `organization_id`.
pub async fn get(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).filter(Column::OrganizationId.eq(organization_id)).one(db).await?)
}

/// The agent whose credential starts with `prefix`.
pub async fn find_by_prefix(db: &impl ConnectionTrait, prefix: &str) -> StoreResult<Model> {
    found(Entity::find().filter(Column::Prefix.eq(prefix)).one(db).await?)
}

/// The organization's agents, newest first.
pub async fn list(db: &impl ConnectionTrait, organization_id: &str, request: &PageRequest) -> StoreResult<Page<Model>> {
    let select = Entity::find().filter(Column::OrganizationId.eq(organization_id));
    fetch_page(db, select, Column::Id, request, true, |m| &m.id).await
}

/// Marks the agent revoked at `now` unless it already is; answers whether this call did.
pub async fn revoke(db: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> StoreResult<bool> {
    let result = Entity::update_many()
        .col_expr(Column::RevokedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
