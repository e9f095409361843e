use super::{fetch_page, found};
use crate::store::entity::login_session::{self, Entity, Model};
use crate::store::entity::verification_code;
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(login_session::ActiveModel::from(model).insert(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).one(db).await?)
}

pub async fn update(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(model.into_active_model().reset_all().update(db).await?)
}

/// Moves an open, unexpired login session's end to `expires_at`, in one conditional write (a
/// close that commits first wins). Answers whether it was still open.
pub async fn extend_open(
    db: &impl ConnectionTrait,
    id: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    use login_session::Column;
    let extended = Entity::update_many()
        .col_expr(Column::ExpiresAt, Expr::value(expires_at))
        .col_expr(Column::ActiveAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::ClosedAt.is_null())
        .filter(Column::ExpiresAt.gt(now))
        .exec(db)
        .await?;
    Ok(extended.rows_affected == 1)
}

/// The open, unexpired login sessions of a user, newest first (idleness is judged by the caller).
pub async fn list_open(
    db: &impl ConnectionTrait,
    user_id: &str,
    now: DateTime<Utc>,
    request: &PageRequest,
) -> StoreResult<Page<Model>> {
    use login_session::Column;
    let select = Entity::find()
        .filter(Column::UserId.eq(user_id))
        .filter(Column::ClosedAt.is_null())
        .filter(Column::ExpiresAt.gt(now));
    fetch_page(db, select, Column::Id, request, true, |m| &m.id).await
}

/// Closes every open login session of `user_id`; answers how many.
pub async fn close_all_of_user(db: &impl ConnectionTrait, user_id: &str, at: DateTime<Utc>) -> StoreResult<u64> {
    use login_session::Column;
    let closed = Entity::update_many()
        .col_expr(Column::ClosedAt, Expr::value(at))
        .filter(Column::UserId.eq(user_id))
        .filter(Column::ClosedAt.is_null())
        .exec(db)
        .await?;
    Ok(closed.rows_affected)
}

/// Records use of a login session, at most once per `granularity`.
pub async fn touch(
    db: &impl ConnectionTrait,
    id: &str,
    now: DateTime<Utc>,
    granularity: chrono::TimeDelta,
) -> StoreResult<()> {
    use login_session::Column;
    Entity::update_many()
        .col_expr(Column::ActiveAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::ActiveAt.lt(now - granularity))
        .exec(db)
        .await?;
    Ok(())
}

/// Forgets the verification codes that ended (expired) before `cutoff`: once over, a code's
/// hash and the address it was mailed to serve nobody.
pub async fn purge_codes(db: &impl ConnectionTrait, cutoff: DateTime<Utc>) -> StoreResult<u64> {
    Ok(verification_code::Entity::delete_many()
        .filter(verification_code::Column::ExpiresAt.lt(cutoff))
        .exec(db)
        .await?
        .rows_affected)
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
