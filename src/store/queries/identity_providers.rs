//! Identity providers and the users they know (their subject, groups and refresh token).

use super::{fetch_page, found};
use crate::store::entity::{identity_provider, user_identity};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

pub async fn insert(
    db: &impl ConnectionTrait,
    model: identity_provider::Model,
) -> StoreResult<identity_provider::Model> {
    Ok(identity_provider::ActiveModel::from(model).insert(db).await?)
}

/// How many providers `organization_id` has.
pub async fn count(db: &impl ConnectionTrait, organization_id: &str) -> StoreResult<u64> {
    Ok(identity_provider::Entity::find()
        .filter(identity_provider::Column::OrganizationId.eq(organization_id))
        .count(db)
        .await?)
}

pub async fn get(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<identity_provider::Model> {
    found(
        identity_provider::Entity::find_by_id(id)
            .filter(identity_provider::Column::OrganizationId.eq(organization_id))
            .one(db)
            .await?,
    )
}

/// A provider by id, whatever its organization (the callback's and the refresh check's lookup).
pub async fn get_any(db: &impl ConnectionTrait, id: &str) -> StoreResult<identity_provider::Model> {
    found(identity_provider::Entity::find_by_id(id).one(db).await?)
}

/// The providers of `organization_id`, oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: &str,
    request: &PageRequest,
) -> StoreResult<Page<identity_provider::Model>> {
    let select =
        identity_provider::Entity::find().filter(identity_provider::Column::OrganizationId.eq(organization_id));
    fetch_page(db, select, identity_provider::Column::Id, request, false, |m| &m.id).await
}

/// Every provider of these organizations, oldest first.
pub async fn of_organizations(
    db: &impl ConnectionTrait,
    organization_ids: &[&str],
) -> StoreResult<Vec<identity_provider::Model>> {
    Ok(identity_provider::Entity::find()
        .filter(identity_provider::Column::OrganizationId.is_in(organization_ids.iter().copied()))
        .order_by_asc(identity_provider::Column::Id)
        .all(db)
        .await?)
}

/// Providers whose allowed email domains may list `domain` (the caller checks each: this
/// matches the stored JSON text).
pub async fn claiming_domain(db: &impl ConnectionTrait, domain: &str) -> StoreResult<Vec<identity_provider::Model>> {
    let quoted = serde_json::to_string(domain).unwrap_or_default();
    Ok(identity_provider::Entity::find()
        .filter(identity_provider::Column::AllowedEmailDomains.contains(&quoted))
        .order_by_asc(identity_provider::Column::Id)
        .all(db)
        .await?)
}

pub async fn update(
    db: &impl ConnectionTrait,
    active: identity_provider::ActiveModel,
) -> StoreResult<identity_provider::Model> {
    Ok(active.update(db).await?)
}

/// Deletes a provider with its identities and logins in flight; answers whether it existed.
pub async fn delete(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<bool> {
    let deleted = identity_provider::Entity::delete_many()
        .filter(identity_provider::Column::Id.eq(id))
        .filter(identity_provider::Column::OrganizationId.eq(organization_id))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected == 1)
}

/// The user `subject` is at provider `provider_id`, if linked.
pub async fn identity_by_subject(
    db: &impl ConnectionTrait,
    provider_id: &str,
    subject: &str,
) -> StoreResult<Option<user_identity::Model>> {
    Ok(user_identity::Entity::find()
        .filter(user_identity::Column::IdentityProviderId.eq(provider_id))
        .filter(user_identity::Column::Subject.eq(subject))
        .one(db)
        .await?)
}

/// The identity of `user_id` at provider `provider_id`, if linked.
pub async fn identity_of_user(
    db: &impl ConnectionTrait,
    provider_id: &str,
    user_id: &str,
) -> StoreResult<Option<user_identity::Model>> {
    Ok(user_identity::Entity::find()
        .filter(user_identity::Column::IdentityProviderId.eq(provider_id))
        .filter(user_identity::Column::UserId.eq(user_id))
        .one(db)
        .await?)
}

/// The groups `user_id`'s providers last reported, each once.
pub async fn groups_of_user(db: &impl ConnectionTrait, user_id: &str) -> StoreResult<Vec<String>> {
    let identities = user_identity::Entity::find().filter(user_identity::Column::UserId.eq(user_id)).all(db).await?;
    let mut groups: Vec<String> = identities.iter().flat_map(user_identity::Model::groups).collect();
    groups.sort_unstable();
    groups.dedup();
    Ok(groups)
}

pub async fn insert_identity(
    db: &impl ConnectionTrait,
    model: user_identity::Model,
) -> StoreResult<user_identity::Model> {
    Ok(user_identity::ActiveModel::from(model).insert(db).await?)
}

pub async fn update_identity(
    db: &impl ConnectionTrait,
    active: user_identity::ActiveModel,
) -> StoreResult<user_identity::Model> {
    Ok(active.update(db).await?)
}

/// Identities with a refresh token that were last checked before `before`, the longest
/// unchecked first.
pub async fn due_for_check(
    db: &impl ConnectionTrait,
    before: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<user_identity::Model>> {
    Ok(user_identity::Entity::find()
        .filter(user_identity::Column::RefreshTokenSealed.is_not_null())
        .filter(user_identity::Column::CheckedAt.lt(before))
        .order_by_asc(user_identity::Column::CheckedAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// Takes the check of identity `id` for this replica: moves its `checked_at` from `seen` to
/// `at`, which only one of several replicas looking at the same row manages.
pub async fn claim_check(
    db: &impl ConnectionTrait,
    id: &str,
    seen: DateTime<Utc>,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let claimed = user_identity::Entity::update_many()
        .col_expr(user_identity::Column::CheckedAt, sea_orm::sea_query::Expr::value(at))
        .filter(user_identity::Column::Id.eq(id))
        .filter(user_identity::Column::CheckedAt.eq(seen))
        .exec(db)
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// The users of `organization_id` whose providers last reported one of `groups`.
pub async fn users_in_groups(
    db: &impl ConnectionTrait,
    organization_id: &str,
    groups: &[String],
) -> StoreResult<Vec<String>> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let identities =
        user_identity::Entity::find().filter(user_identity::Column::OrganizationId.eq(organization_id)).all(db).await?;
    let mut users: Vec<String> = identities
        .into_iter()
        .filter(|identity| identity.groups().iter().any(|group| groups.contains(group)))
        .map(|identity| identity.user_id)
        .collect();
    users.sort_unstable();
    users.dedup();
    Ok(users)
}
