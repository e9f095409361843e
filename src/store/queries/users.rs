use super::{fetch_page, found};
use crate::store::entity::user::{self, ActiveModel, Column, Entity, Model};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(user::ActiveModel::from(model).insert(db).await?)
}

/// A user of `organization_id`; users of other organizations are not found.
pub async fn get(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).filter(Column::OrganizationId.eq(organization_id)).one(db).await?)
}

/// A user by id, whatever its organization: for authentication only.
pub async fn get_any(db: &impl ConnectionTrait, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).one(db).await?)
}

/// The user with this (normalized) email address, in any organization: emails are unique.
pub async fn find_by_email(db: &impl ConnectionTrait, email: &str) -> StoreResult<Model> {
    found(Entity::find().filter(Column::Email.eq(email)).one(db).await?)
}

pub async fn list(db: &impl ConnectionTrait, organization_id: &str, request: &PageRequest) -> StoreResult<Page<Model>> {
    let select = Entity::find().filter(Column::OrganizationId.eq(organization_id));
    fetch_page(db, select, Column::Id, request, false, |m| &m.id).await
}

pub async fn update(db: &impl ConnectionTrait, changes: ActiveModel) -> StoreResult<Model> {
    Ok(changes.update(db).await?)
}

/// Counts one more failed login in a single statement, so failures racing each other are all
/// counted; returns the user as updated.
pub async fn count_failed_login(db: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> StoreResult<Model> {
    let updated = Entity::update_many()
        .col_expr(Column::FailedLoginCount, Expr::col(Column::FailedLoginCount).add(1))
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .exec_with_returning(db)
        .await?;
    found(updated.into_iter().next())
}

/// Locks an unlocked user; false when it already was locked, so only one caller reports it.
pub async fn lock(db: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
    let result = Entity::update_many()
        .col_expr(Column::Locked, Expr::value(true))
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .filter(Column::Locked.eq(false))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}
