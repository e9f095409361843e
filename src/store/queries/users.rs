use super::{fetch_page, found};
use crate::store::entity::user::{self, ActiveModel, Column, Entity, Model};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};

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

/// The users with this (normalized) email address: one per organization at most.
pub async fn find_by_email(db: &impl ConnectionTrait, email: &str) -> StoreResult<Vec<Model>> {
    Ok(Entity::find().filter(Column::Email.eq(email)).order_by_asc(Column::OrganizationId).all(db).await?)
}

/// Who an address names, as a login or the command line asks.
pub enum ByEmail {
    One(Model),
    /// The address belongs to users of several organizations and none was named.
    Several(Vec<Model>),
    Nobody,
}

/// The user with this address in `organization_id`; without one, the only user with it.
pub async fn find_member(
    db: &impl ConnectionTrait,
    email: &str,
    organization_id: Option<&str>,
) -> StoreResult<ByEmail> {
    let mut users = find_by_email(db, email).await?;
    if let Some(organization_id) = organization_id {
        users.retain(|user| user.organization_id == organization_id);
    }
    Ok(match users.len() {
        0 => ByEmail::Nobody,
        1 => ByEmail::One(users.remove(0)),
        _ => ByEmail::Several(users),
    })
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

/// Locks a user not locked at `at` until `until`, counting the lockout and starting the count of
/// failures over; false when it already was locked, so only one caller reports it.
pub async fn lock(db: &impl ConnectionTrait, id: &str, at: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<bool> {
    let result = Entity::update_many()
        .col_expr(Column::LockedUntil, Expr::value(until))
        .col_expr(Column::Lockouts, Expr::col(Column::Lockouts).add(1))
        .col_expr(Column::FailedLoginCount, Expr::value(0))
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .filter(Column::Id.eq(id))
        .filter(Column::LockedUntil.is_null().or(Column::LockedUntil.lte(at)))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The enabled admins of `organization_id`.
pub async fn enabled_admins(db: &impl ConnectionTrait, organization_id: &str) -> StoreResult<Vec<String>> {
    Ok(Entity::find()
        .filter(Column::OrganizationId.eq(organization_id))
        .filter(Column::Role.eq(crate::domain::Role::Admin))
        .filter(Column::Disabled.eq(false))
        .all(db)
        .await?
        .into_iter()
        .map(|user| user.id)
        .collect())
}

/// Which of `ids` are enabled users of `organization_id`.
pub async fn enabled_among(
    db: &impl ConnectionTrait,
    organization_id: &str,
    ids: &[String],
) -> StoreResult<Vec<String>> {
    Ok(Entity::find()
        .filter(Column::OrganizationId.eq(organization_id))
        .filter(Column::Id.is_in(ids.iter().map(String::as_str)))
        .filter(Column::Disabled.eq(false))
        .all(db)
        .await?
        .into_iter()
        .map(|user| user.id)
        .collect())
}

/// The enabled users of `organization_id`.
pub async fn enabled_of_organization(db: &impl ConnectionTrait, organization_id: &str) -> StoreResult<Vec<Model>> {
    Ok(Entity::find()
        .filter(Column::OrganizationId.eq(organization_id))
        .filter(Column::Disabled.eq(false))
        .order_by_asc(Column::Id)
        .all(db)
        .await?)
}
