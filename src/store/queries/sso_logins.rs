//! SSO logins in flight, from StartSsoLogin to the delivery of their outcome.

use super::found;
use crate::store::StoreResult;
use crate::store::entity::sso_login;
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

pub async fn insert(db: &impl ConnectionTrait, model: sso_login::Model) -> StoreResult<sso_login::Model> {
    Ok(sso_login::ActiveModel::from(model).insert(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<sso_login::Model> {
    found(sso_login::Entity::find_by_id(id).one(db).await?)
}

/// The login a callback's state belongs to, locked until the transaction ends (so a replayed
/// callback racing the first waits, then finds it used).
pub async fn by_state_for_update(db: &impl ConnectionTrait, state_hash: &str) -> StoreResult<sso_login::Model> {
    found(sso_login::Entity::find().filter(sso_login::Column::StateHash.eq(state_hash)).lock_exclusive().one(db).await?)
}

pub async fn update(db: &impl ConnectionTrait, active: sso_login::ActiveModel) -> StoreResult<sso_login::Model> {
    Ok(active.update(db).await?)
}

/// Marks the outcome of login `id` delivered; answers false when it already was (a second
/// waiter gets nothing).
pub async fn mark_delivered(db: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> StoreResult<bool> {
    let marked = sso_login::Entity::update_many()
        .col_expr(sso_login::Column::DeliveredAt, sea_orm::sea_query::Expr::value(at))
        .filter(sso_login::Column::Id.eq(id))
        .filter(sso_login::Column::DeliveredAt.is_null())
        .exec(db)
        .await?;
    Ok(marked.rows_affected == 1)
}

/// Forgets logins that ended before `cutoff`.
pub async fn purge(db: &impl ConnectionTrait, cutoff: DateTime<Utc>) -> StoreResult<u64> {
    let purged = sso_login::Entity::delete_many().filter(sso_login::Column::ExpiresAt.lt(cutoff)).exec(db).await?;
    Ok(purged.rows_affected)
}
