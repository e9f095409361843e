//! Webhooks, the outbox (undispatched audit events) and deliveries.

use super::{fetch_page, found};
use crate::domain::DeliveryStatus;
use crate::store::entity::{audit_event, webhook, webhook_delivery};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query, WindowStatement};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::HashMap;

pub async fn insert(db: &impl ConnectionTrait, model: webhook::Model) -> StoreResult<webhook::Model> {
    Ok(webhook::ActiveModel::from(model).insert(db).await?)
}

/// How many webhooks `organization_id` has.
pub async fn count(db: &impl ConnectionTrait, organization_id: &str) -> StoreResult<u64> {
    Ok(webhook::Entity::find().filter(webhook::Column::OrganizationId.eq(organization_id)).count(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<webhook::Model> {
    found(webhook::Entity::find_by_id(id).filter(webhook::Column::OrganizationId.eq(organization_id)).one(db).await?)
}

/// The webhooks of `organization_id`, oldest first.
pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: &str,
    request: &PageRequest,
) -> StoreResult<Page<webhook::Model>> {
    let select = webhook::Entity::find().filter(webhook::Column::OrganizationId.eq(organization_id));
    fetch_page(db, select, webhook::Column::Id, request, false, |m| &m.id).await
}

pub async fn update(db: &impl ConnectionTrait, active: webhook::ActiveModel) -> StoreResult<webhook::Model> {
    Ok(active.update(db).await?)
}

/// Deletes a webhook with its deliveries; answers whether it existed.
pub async fn delete(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<bool> {
    let deleted = webhook::Entity::delete_many()
        .filter(webhook::Column::Id.eq(id))
        .filter(webhook::Column::OrganizationId.eq(organization_id))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected == 1)
}

/// The enabled webhooks of these organizations.
pub async fn enabled_of(db: &impl ConnectionTrait, organization_ids: &[&str]) -> StoreResult<Vec<webhook::Model>> {
    Ok(webhook::Entity::find()
        .filter(webhook::Column::OrganizationId.is_in(organization_ids.iter().copied()))
        .filter(webhook::Column::DisabledAt.is_null())
        .all(db)
        .await?)
}

/// Webhooks by id, whatever their organization (the delivery worker's lookup).
pub async fn by_ids(db: &impl ConnectionTrait, ids: &[&str]) -> StoreResult<Vec<webhook::Model>> {
    Ok(webhook::Entity::find().filter(webhook::Column::Id.is_in(ids.iter().copied())).all(db).await?)
}

/// The oldest audit events not dispatched yet, locked until the transaction ends (on
/// PostgreSQL a second dispatcher waits, then finds them dispatched and skips them).
pub async fn undispatched_events(db: &impl ConnectionTrait, limit: u64) -> StoreResult<Vec<audit_event::Model>> {
    Ok(audit_event::Entity::find()
        .filter(audit_event::Column::DispatchedAt.is_null())
        .order_by_asc(audit_event::Column::Time)
        .limit(limit)
        .lock_exclusive()
        .all(db)
        .await?)
}

/// Marks events dispatched.
pub async fn mark_dispatched(db: &impl ConnectionTrait, ids: &[&str], at: DateTime<Utc>) -> StoreResult<()> {
    for chunk in ids.chunks(1000) {
        audit_event::Entity::update_many()
            .col_expr(audit_event::Column::DispatchedAt, Expr::value(at))
            .filter(audit_event::Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Enqueues deliveries; one that exists already (same webhook and event) is left as it is.
pub async fn insert_deliveries(db: &impl ConnectionTrait, deliveries: Vec<webhook_delivery::Model>) -> StoreResult<()> {
    // Sixteen columns a row: stays within every database's limit on bound values.
    for chunk in deliveries.chunks(500) {
        let once = OnConflict::columns([webhook_delivery::Column::WebhookId, webhook_delivery::Column::EventId])
            .do_nothing()
            .to_owned();
        webhook_delivery::Entity::insert_many(chunk.iter().cloned().map(webhook_delivery::ActiveModel::from))
            .on_conflict(once)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

fn delivery_lease_free(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(webhook_delivery::Column::LeaseExpiresAt.is_null())
        .add(webhook_delivery::Column::LeaseExpiresAt.lt(now))
}

/// Claims up to `limit` due pending deliveries for `token` until `lease_until`, fairly between
/// organizations: none holds more than `per_organization` claims at once (across replicas), so
/// one organization's slow receivers cannot take every slot. Within that, the longest due first.
pub async fn claim_due(
    db: &impl ConnectionTrait,
    token: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
    per_organization: u64,
) -> StoreResult<Vec<webhook_delivery::Model>> {
    use webhook_delivery::Column;
    let held: HashMap<String, u64> = webhook_delivery::Entity::find()
        .select_only()
        .column(Column::OrganizationId)
        .column_as(Column::Id.count(), "held")
        .filter(Column::Status.eq(DeliveryStatus::Pending))
        .filter(Column::LeaseExpiresAt.gte(now))
        .group_by(Column::OrganizationId)
        .into_tuple::<(String, i64)>()
        .all(db)
        .await?
        .into_iter()
        .map(|(organization, held)| (organization, u64::try_from(held).unwrap_or_default()))
        .collect();
    // Each organization's longest-due deliveries, ranked within it, so a backlog of one cannot
    // push the others out of the candidates.
    let place = "place";
    let ranked = Query::select()
        .columns([Column::Id, Column::OrganizationId, Column::NextAttemptAt])
        .expr_window_as(
            Expr::cust("ROW_NUMBER()"),
            WindowStatement::partition_by(Column::OrganizationId)
                .order_by(Column::NextAttemptAt, sea_orm::Order::Asc)
                .to_owned(),
            place,
        )
        .from(webhook_delivery::Entity)
        .and_where(Column::Status.eq(DeliveryStatus::Pending))
        .and_where(Column::NextAttemptAt.lte(now))
        .cond_where(delivery_lease_free(now))
        .to_owned();
    let candidates = Query::select()
        .columns([Column::Id, Column::OrganizationId])
        .from_subquery(ranked, "ranked")
        .and_where(Expr::col(place).lte(per_organization))
        .order_by(Column::NextAttemptAt, sea_orm::Order::Asc)
        .to_owned();
    let mut taken: HashMap<String, u64> = HashMap::new();
    let mut chosen = Vec::new();
    for row in db.query_all(&candidates).await? {
        let (id, organization): (String, String) = (row.try_get("", "id")?, row.try_get("", "organization_id")?);
        let holds = held.get(&organization).copied().unwrap_or_default()
            + taken.get(&organization).copied().unwrap_or_default();
        if holds < per_organization {
            *taken.entry(organization).or_default() += 1;
            chosen.push(id);
            if chosen.len() as u64 >= limit {
                break;
            }
        }
    }
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    webhook_delivery::Entity::update_many()
        .col_expr(Column::LeaseOwner, Expr::value(token))
        .col_expr(Column::LeaseExpiresAt, Expr::value(lease_until))
        .filter(Column::Id.is_in(chosen))
        .filter(delivery_lease_free(now))
        .exec(db)
        .await?;
    Ok(webhook_delivery::Entity::find()
        .filter(Column::LeaseOwner.eq(token))
        .filter(Column::Status.eq(DeliveryStatus::Pending))
        .order_by_asc(Column::Id)
        .all(db)
        .await?)
}

/// Saves an attempt's outcome, if `token` still holds the delivery's claim; the claim ends.
pub async fn save_attempt(
    db: &impl ConnectionTrait,
    token: &str,
    mut delivery: webhook_delivery::Model,
) -> StoreResult<bool> {
    delivery.lease_owner = None;
    delivery.lease_expires_at = None;
    let saved = webhook_delivery::Entity::update_many()
        .set(webhook_delivery::ActiveModel::from(delivery.clone()).reset_all())
        .filter(webhook_delivery::Column::Id.eq(delivery.id.as_str()))
        .filter(webhook_delivery::Column::LeaseOwner.eq(token))
        .exec(db)
        .await?;
    Ok(saved.rows_affected == 1)
}

/// When the next pending delivery falls due.
pub async fn next_due(db: &impl ConnectionTrait) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
        .order_by_asc(webhook_delivery::Column::NextAttemptAt)
        .one(db)
        .await?
        .map(|delivery| delivery.next_attempt_at))
}

/// Deliveries of one webhook, newest first.
pub async fn list_deliveries(
    db: &impl ConnectionTrait,
    organization_id: &str,
    webhook_id: &str,
    request: &PageRequest,
) -> StoreResult<Page<webhook_delivery::Model>> {
    let select = webhook_delivery::Entity::find()
        .filter(webhook_delivery::Column::OrganizationId.eq(organization_id))
        .filter(webhook_delivery::Column::WebhookId.eq(webhook_id));
    fetch_page(db, select, webhook_delivery::Column::Id, request, true, |m| &m.id).await
}

pub async fn get_delivery(
    db: &impl ConnectionTrait,
    organization_id: &str,
    id: &str,
) -> StoreResult<webhook_delivery::Model> {
    found(
        webhook_delivery::Entity::find_by_id(id)
            .filter(webhook_delivery::Column::OrganizationId.eq(organization_id))
            .one(db)
            .await?,
    )
}

pub async fn update_delivery(
    db: &impl ConnectionTrait,
    active: webhook_delivery::ActiveModel,
) -> StoreResult<webhook_delivery::Model> {
    Ok(active.update(db).await?)
}

/// Records that a webhook's delivery failed (the failing streak starts now unless it runs).
pub async fn mark_failing(db: &impl ConnectionTrait, webhook_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
    webhook::Entity::update_many()
        .col_expr(webhook::Column::FailingSince, Expr::value(at))
        .filter(webhook::Column::Id.eq(webhook_id))
        .filter(webhook::Column::FailingSince.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Records that a webhook's delivery succeeded: any failing streak ends.
pub async fn mark_succeeding(db: &impl ConnectionTrait, webhook_id: &str) -> StoreResult<()> {
    webhook::Entity::update_many()
        .col_expr(webhook::Column::FailingSince, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(webhook::Column::Id.eq(webhook_id))
        .filter(webhook::Column::FailingSince.is_not_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Enabled webhooks failing since before `cutoff`, locked for disabling.
pub async fn failing_since_before(
    db: &impl ConnectionTrait,
    cutoff: DateTime<Utc>,
) -> StoreResult<Vec<webhook::Model>> {
    Ok(webhook::Entity::find()
        .filter(webhook::Column::DisabledAt.is_null())
        .filter(webhook::Column::FailingSince.lt(cutoff))
        .lock_exclusive()
        .all(db)
        .await?)
}

/// Ends the pending deliveries of a disabled webhook as FAILED.
pub async fn fail_pending_of(
    db: &impl ConnectionTrait,
    webhook_id: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::Status, Expr::value(DeliveryStatus::Failed))
        .col_expr(webhook_delivery::Column::LastError, Expr::value(reason))
        .col_expr(webhook_delivery::Column::UpdatedAt, Expr::value(at))
        .filter(webhook_delivery::Column::WebhookId.eq(webhook_id))
        .filter(webhook_delivery::Column::Status.eq(DeliveryStatus::Pending))
        .exec(db)
        .await?;
    Ok(())
}
