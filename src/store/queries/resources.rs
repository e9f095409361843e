use super::{fetch_page, found};
use crate::domain::{ProviderConfig, ProviderKind};
use crate::store::StoreError;
use crate::store::entity::resource::{self, ActiveModel, Column, Entity, Model};
use crate::store::entity::{StoredProvider, resource_assignment};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, NullOrdering, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
};

/// The provider configuration of a stored resource (decoded as the row was read), its endpoint
/// normalized (rows stored before endpoints were may spell one origin several ways).
pub fn provider_config(resource: &Model) -> StoreResult<ProviderConfig> {
    resource
        .provider_config
        .config()
        .cloned()
        .map(ProviderConfig::with_plain_endpoint)
        .map_err(|err| StoreError::Corrupt(format!("provider_config of resource {}: {err}", resource.id)))
}

/// Every resource, of any organization, whose stored settings name an endpoint.
pub async fn with_endpoints(db: &impl ConnectionTrait) -> StoreResult<Vec<Model>> {
    Ok(Entity::find().filter(Column::ProviderConfig.like("%endpoint_url%")).order_by_asc(Column::Id).all(db).await?)
}

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(resource::ActiveModel::from(model).insert(db).await?)
}

/// A resource of `organization_id`; resources of other organizations are not found.
pub async fn get(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).filter(Column::OrganizationId.eq(organization_id)).one(db).await?)
}

/// A resource of `organization_id`, locked until the transaction ends (PostgreSQL): starts
/// share-lock the resources they open, so a change of firewall and a start never pass each other.
pub async fn get_for_update(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).filter(Column::OrganizationId.eq(organization_id)).lock_exclusive().one(db).await?)
}

/// Resources of `organization_id`, or only those assigned to `assigned_to`.
pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: &str,
    assigned_to: Option<&str>,
    request: &PageRequest,
) -> StoreResult<Page<Model>> {
    let mut select = Entity::find().filter(Column::OrganizationId.eq(organization_id));
    if let Some(user_id) = assigned_to {
        select = select.filter(Column::Id.in_subquery(assigned_ids(user_id)));
    }
    fetch_page(db, select, Column::Id, request, false, |m| &m.id).await
}

pub async fn update(db: &impl ConnectionTrait, changes: ActiveModel) -> StoreResult<Model> {
    Ok(changes.update(db).await?)
}

pub async fn delete(db: &impl ConnectionTrait, id: &str) -> StoreResult<()> {
    Entity::delete_by_id(id).exec(db).await?;
    Ok(())
}

/// Whether `user_id` is assigned `resource_id`.
pub async fn is_assigned(db: &impl ConnectionTrait, resource_id: &str, user_id: &str) -> StoreResult<bool> {
    Ok(resource_assignment::Entity::find_by_id((resource_id.to_owned(), user_id.to_owned())).one(db).await?.is_some())
}

/// The users `resource_id` is assigned to.
pub async fn assignees(db: &impl ConnectionTrait, resource_id: &str) -> StoreResult<Vec<String>> {
    Ok(resource_assignment::Entity::find()
        .select_only()
        .column(resource_assignment::Column::UserId)
        .filter(resource_assignment::Column::ResourceId.eq(resource_id))
        .into_tuple()
        .all(db)
        .await?)
}

/// Assigns the resource; returns whether the assignment is new.
pub async fn assign(db: &impl ConnectionTrait, assignment: resource_assignment::Model) -> StoreResult<bool> {
    let inserted = resource_assignment::Entity::insert(resource_assignment::ActiveModel::from(assignment))
        .on_conflict(
            OnConflict::columns([resource_assignment::Column::ResourceId, resource_assignment::Column::UserId])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(inserted > 0)
}

/// Makes an assignment a group mapping made an admin's own (which no mapping takes back);
/// answers whether it was a mapped one.
pub async fn adopt_assignment(db: &impl ConnectionTrait, resource_id: &str, user_id: &str) -> StoreResult<bool> {
    let adopted = resource_assignment::Entity::update_many()
        .col_expr(resource_assignment::Column::MappedBy, Expr::value(Option::<String>::None))
        .filter(resource_assignment::Column::ResourceId.eq(resource_id))
        .filter(resource_assignment::Column::UserId.eq(user_id))
        .filter(resource_assignment::Column::MappedBy.is_not_null())
        .exec(db)
        .await?;
    Ok(adopted.rows_affected > 0)
}

/// Every (resource, user) assignment provider `provider_id`'s mappings made.
pub async fn mapped_by(db: &impl ConnectionTrait, provider_id: &str) -> StoreResult<Vec<(String, String)>> {
    Ok(resource_assignment::Entity::find()
        .select_only()
        .column(resource_assignment::Column::ResourceId)
        .column(resource_assignment::Column::UserId)
        .filter(resource_assignment::Column::MappedBy.eq(provider_id))
        .into_tuple()
        .all(db)
        .await?)
}

/// The resources provider `provider_id`'s mappings assigned to `user_id`.
pub async fn mapped_to(db: &impl ConnectionTrait, user_id: &str, provider_id: &str) -> StoreResult<Vec<String>> {
    Ok(resource_assignment::Entity::find()
        .select_only()
        .column(resource_assignment::Column::ResourceId)
        .filter(resource_assignment::Column::UserId.eq(user_id))
        .filter(resource_assignment::Column::MappedBy.eq(provider_id))
        .into_tuple()
        .all(db)
        .await?)
}

/// Removes the assignment; returns whether there was one.
pub async fn unassign(db: &impl ConnectionTrait, resource_id: &str, user_id: &str) -> StoreResult<bool> {
    let result =
        resource_assignment::Entity::delete_by_id((resource_id.to_owned(), user_id.to_owned())).exec(db).await?;
    Ok(result.rows_affected > 0)
}

/// Whether any rule on the resource belongs to a session that has not finished removing it.
pub async fn has_live_rules(db: &impl ConnectionTrait, resource_id: &str) -> StoreResult<bool> {
    use crate::domain::ResourceIpStatus;
    use crate::store::entity::resource_ip;
    let live = resource_ip::Entity::find()
        .filter(resource_ip::Column::ResourceId.eq(resource_id))
        .filter(resource_ip::Column::Status.is_not_in([ResourceIpStatus::Removed, ResourceIpStatus::Failed]))
        .one(db)
        .await?;
    Ok(live.is_some())
}

/// A pass every resource gets about once an interval, from whichever replica comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// The reconciler's comparison of the firewall with the live rules.
    Reconcile,
    /// The periodic check that the firewall is there and readable.
    Check,
}

impl Round {
    fn column(self) -> Column {
        match self {
            Round::Reconcile => Column::ReconciledAt,
            Round::Check => Column::CheckedAt,
        }
    }

    /// When `resource` is next due: an interval after its last round, or at once if it never had one.
    pub fn due_at(self, resource: &Model, interval: TimeDelta) -> DateTime<Utc> {
        let last = match self {
            Round::Reconcile => resource.reconciled_at,
            Round::Check => resource.checked_at,
        };
        last.map_or(resource.created_at, |last| last.checked_add_signed(interval).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }
}

/// Up to `limit` resources of every organization on providers of `kinds`, those longest
/// without `round` first (never first): for the engine only.
pub async fn least_recently(
    db: &impl ConnectionTrait,
    round: Round,
    kinds: &[ProviderKind],
    limit: u64,
) -> StoreResult<Vec<Model>> {
    Ok(Entity::find()
        .filter(Column::ProviderKind.is_in(kinds.iter().copied()))
        .order_by_with_nulls(round.column(), Order::Asc, NullOrdering::First)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Records that `id` has its `round` `at`, unless it had one after `stale_before` (on another
/// replica meanwhile). Answers whether it was claimed.
pub async fn claim(
    db: &impl ConnectionTrait,
    round: Round,
    id: &str,
    at: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> StoreResult<bool> {
    let claimed = Entity::update_many()
        .col_expr(round.column(), Expr::value(at))
        .filter(Column::Id.eq(id))
        .filter(round.column().is_null().or(round.column().lte(stale_before)))
        .exec(db)
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// Saves what a check of `id` configured as `provider_config` found, unless it was reconfigured
/// since (the finding was about the old firewall) or deleted. Answers the status it replaced,
/// if it was saved; run it in a transaction.
pub async fn save_check(
    db: &impl ConnectionTrait,
    id: &str,
    provider_config: &StoredProvider,
    status: &str,
    message: &str,
) -> StoreResult<Option<Option<String>>> {
    let unchanged = || Column::Id.eq(id).and(Column::ProviderConfig.eq(provider_config.text()));
    let Some(current) = Entity::find().filter(unchanged()).one(db).await? else {
        return Ok(None);
    };
    Entity::update_many()
        .col_expr(Column::CheckStatus, Expr::value(status))
        .col_expr(Column::CheckMessage, Expr::value(message))
        .filter(unchanged())
        .exec(db)
        .await?;
    Ok(Some(current.check_status))
}

/// A resource by id, whatever its organization: for the engine only.
pub async fn get_by_id(db: &impl ConnectionTrait, id: &str) -> StoreResult<Model> {
    found(Entity::find_by_id(id).one(db).await?)
}

/// The resources of `ids` that exist, whatever their organization: for the engine only.
pub async fn by_ids(db: &impl ConnectionTrait, ids: &[&str]) -> StoreResult<Vec<Model>> {
    Ok(Entity::find().filter(Column::Id.is_in(ids.iter().copied())).all(db).await?)
}

/// Every resource assigned to `user_id`.
pub async fn assigned_to(db: &impl ConnectionTrait, user_id: &str) -> StoreResult<Vec<Model>> {
    Ok(Entity::find().filter(Column::Id.in_subquery(assigned_ids(user_id))).all(db).await?)
}

/// The ids of the resources assigned to `user_id`, as a subquery.
fn assigned_ids(user_id: &str) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(resource_assignment::Column::ResourceId)
        .from(resource_assignment::Entity)
        .and_where(resource_assignment::Column::UserId.eq(user_id))
        .to_owned()
}
