use super::{fetch_page, found};
use crate::store::entity::api_key::{self, Column, Entity, Model};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(api_key::ActiveModel::from(model).insert(db).await?)
}

/// A key of `organization_id`.
pub async fn get(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).filter(Column::OrganizationId.eq(organization_id)).one(db).await?)
}

/// The keys of one user, newest first.
pub async fn list_for_user(
    db: &impl ConnectionTrait,
    organization_id: &str,
    user_id: &str,
    request: &PageRequest,
) -> StoreResult<Page<Model>> {
    let select = Entity::find().filter(Column::OrganizationId.eq(organization_id)).filter(Column::UserId.eq(user_id));
    fetch_page(db, select, Column::Id, request, true, |m| &m.id).await
}

pub async fn find_by_prefix(db: &impl ConnectionTrait, prefix: &str) -> StoreResult<Model> {
    found(Entity::find().filter(Column::Prefix.eq(prefix)).one(db).await?)
}

/// Records a use of the key, at most once per `granularity` so busy keys do not write on every call.
pub async fn touch(
    db: &impl ConnectionTrait,
    id: &str,
    now: DateTime<Utc>,
    granularity: chrono::TimeDelta,
) -> StoreResult<()> {
    let stale_before = now - granularity;
    Entity::update_many()
        .col_expr(Column::LastUsedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::LastUsedAt.is_null().or(Column::LastUsedAt.lt(stale_before)))
        .exec(db)
        .await?;
    Ok(())
}

/// Marks the key revoked now (it stays listed, so its history is visible).
/// Revokes the key and every key created with it, and with those, and so on; answers how many
/// keys were revoked besides it.
pub async fn revoke(db: &impl ConnectionTrait, id: &str, now: DateTime<Utc>) -> StoreResult<usize> {
    let mut generation = vec![id.to_owned()];
    let mut descendants = 0;
    while !generation.is_empty() {
        Entity::update_many()
            .col_expr(Column::RevokedAt, Expr::value(now))
            .filter(Column::Id.is_in(generation.clone()))
            .filter(Column::RevokedAt.is_null())
            .exec(db)
            .await?;
        generation = Entity::find()
            .filter(Column::ParentId.is_in(generation))
            .all(db)
            .await?
            .into_iter()
            .map(|child| child.id)
            .collect();
        descendants += generation.len();
    }
    Ok(descendants)
}

/// How many keys `user_id` holds that still work at `at`: neither revoked nor expired.
pub async fn count_live(db: &impl ConnectionTrait, user_id: &str, at: DateTime<Utc>) -> StoreResult<u64> {
    Ok(Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::RevokedAt.is_null())
        .filter(Column::ExpiresAt.is_null().or(Column::ExpiresAt.gt(at)))
        .count(db)
        .await?)
}
