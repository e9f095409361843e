//! Sessions and their rules (`resource_ips`), and the engine's work claims.

use super::{fetch_page, found};
use crate::domain::{ResourceIpStatus, SessionStatus};
use crate::store::changes::{SESSIONS_CHANNEL, announce, announce_all};
use crate::store::entity::{organization, resource, resource_assignment, resource_ip, resource_lease, session, user};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A session with what its API representation needs: its user and its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session: session::Model,
    pub user_name: String,
    pub user_email: String,
    pub rules: Vec<resource_ip::Model>,
}

#[cfg(test)]
impl SessionRecord {
    /// A PENDING session without rules, for tests of what carries sessions around.
    pub fn blank(id: &str, revision: i64) -> SessionRecord {
        let at = chrono::Utc::now();
        SessionRecord {
            session: session::Model {
                id: id.into(),
                organization_id: "o".into(),
                user_id: "u".into(),
                ipv4_address: None,
                ipv6_address: None,
                status: SessionStatus::Pending,
                started_at: at,
                expires_at: at,
                ended_at: None,
                ended_reason: None,
                revision,
                live_ipv4_key: None,
                live_ipv6_key: None,
                created_at: at,
                updated_at: at,
                heartbeat_seconds: None,
                heartbeat_due_at: None,
                expiry_warned_for: None,
                approval: None,
                justification: None,
                ticket: None,
            },
            user_name: String::new(),
            user_email: String::new(),
            rules: Vec::new(),
        }
    }
}

/// New sessions and their rules, in one statement per 500 rows (within every database's limit
/// on bound values).
pub async fn insert_all(
    db: &impl ConnectionTrait,
    sessions: Vec<session::Model>,
    rules: Vec<resource_ip::Model>,
) -> StoreResult<()> {
    for chunk in sessions.chunks(500) {
        session::Entity::insert_many(chunk.iter().cloned().map(session::ActiveModel::from)).exec(db).await?;
    }
    for chunk in rules.chunks(500) {
        resource_ip::Entity::insert_many(chunk.iter().cloned().map(resource_ip::ActiveModel::from)).exec(db).await?;
    }
    Ok(())
}

/// Which of `keys` live sessions hold (see `session.live_ipv4_key`).
pub async fn live_keys_taken(db: &impl ConnectionTrait, keys: &[&str]) -> StoreResult<HashSet<String>> {
    if keys.is_empty() {
        return Ok(HashSet::new());
    }
    let holding = session::Entity::find()
        .filter(
            Condition::any()
                .add(session::Column::LiveIpv4Key.is_in(keys.iter().copied()))
                .add(session::Column::LiveIpv6Key.is_in(keys.iter().copied())),
        )
        .all(db)
        .await?;
    let wanted: HashSet<&str> = keys.iter().copied().collect();
    Ok(holding
        .into_iter()
        .flat_map(|session| [session.live_ipv4_key, session.live_ipv6_key])
        .flatten()
        .filter(|key| wanted.contains(key.as_str()))
        .collect())
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> StoreResult<session::Model> {
    found(session::Entity::find_by_id(id).one(db).await?)
}

/// Locks sessions (PostgreSQL; in id order, so concurrent lockers never deadlock) before their
/// rules change in the same transaction.
pub async fn lock_all(db: &impl ConnectionTrait, ids: &[&str]) -> StoreResult<()> {
    get_all_for_update(db, ids).await?;
    Ok(())
}

/// Reads and locks sessions (as [`get_for_update`], in id order) that are about to change.
pub async fn get_all_for_update(db: &impl ConnectionTrait, ids: &[&str]) -> StoreResult<Vec<session::Model>> {
    locked_by_id::<session::Entity>(db, session::Column::Id, ids).await
}

/// Reads and locks rows of `E` by their id `column` (PostgreSQL), in id order and 500 at a time
/// (within every backend's bound on parameters): everyone who locks several rows of a table
/// locks them in the same order, so concurrent lockers never deadlock.
async fn locked_by_id<E: EntityTrait>(
    db: &impl ConnectionTrait,
    column: E::Column,
    ids: &[&str],
) -> StoreResult<Vec<E::Model>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let rows =
            E::find().filter(column.is_in(chunk.iter().copied())).order_by_asc(column).lock_exclusive().all(db).await?;
        found.extend(rows);
    }
    Ok(found)
}

/// Reads a session inside a transaction that is about to change it: on PostgreSQL the row stays
/// locked until the transaction ends, so concurrent changes (a stop and a roll-up) serialize.
/// SQLite serializes every write anyway.
pub async fn get_for_update(db: &impl ConnectionTrait, id: &str) -> StoreResult<session::Model> {
    found(session::Entity::find_by_id(id).lock_exclusive().one(db).await?)
}

/// Sessions by id, in one query per 500.
pub async fn by_ids(db: &impl ConnectionTrait, ids: &[&str]) -> StoreResult<HashMap<String, session::Model>> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let rows = session::Entity::find().filter(session::Column::Id.is_in(chunk.iter().copied())).all(db).await?;
        found.extend(rows.into_iter().map(|session| (session.id.clone(), session)));
    }
    Ok(found)
}

/// The rules on `resource_id` in one of `statuses`.
pub async fn rules_on(
    db: &impl ConnectionTrait,
    resource_id: &str,
    statuses: &[ResourceIpStatus],
) -> StoreResult<Vec<resource_ip::Model>> {
    Ok(resource_ip::Entity::find()
        .filter(resource_ip::Column::ResourceId.eq(resource_id))
        .filter(resource_ip::Column::Status.is_in(statuses.iter().copied()))
        .all(db)
        .await?)
}

/// A session with its user and rules.
pub async fn load(db: &impl ConnectionTrait, id: &str) -> StoreResult<SessionRecord> {
    let session = get(db, id).await?;
    let mut records = complete(db, vec![session]).await?;
    records.pop().ok_or(crate::store::StoreError::NotFound)
}

/// Sessions with their users and rules, in three queries whatever their number.
pub async fn load_many(db: &impl ConnectionTrait, ids: &[&str]) -> StoreResult<Vec<SessionRecord>> {
    let sessions = session::Entity::find().filter(session::Column::Id.is_in(ids.iter().copied())).all(db).await?;
    complete(db, sessions).await
}

/// The rules of sessions, by session, in one query.
pub async fn rules_of_all(
    db: &impl ConnectionTrait,
    ids: &[&str],
) -> StoreResult<HashMap<String, Vec<resource_ip::Model>>> {
    let mut rules: HashMap<String, Vec<resource_ip::Model>> = HashMap::new();
    for rule in resource_ip::Entity::find()
        .filter(resource_ip::Column::SessionId.is_in(ids.iter().copied()))
        .order_by_asc(resource_ip::Column::Id)
        .all(db)
        .await?
    {
        rules.entry(rule.session_id.clone()).or_default().push(rule);
    }
    Ok(rules)
}

/// Adds users and rules to sessions, in two queries whatever their number.
async fn complete(db: &impl ConnectionTrait, sessions: Vec<session::Model>) -> StoreResult<Vec<SessionRecord>> {
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    let mut rules = rules_of_all(db, &ids).await?;
    let user_ids: Vec<&str> = sessions.iter().map(|s| s.user_id.as_str()).collect();
    let users: HashMap<String, user::Model> = user::Entity::find()
        .filter(user::Column::Id.is_in(user_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|u| (u.id.clone(), u))
        .collect();
    Ok(sessions
        .into_iter()
        .map(|session| {
            let user = users.get(&session.user_id);
            SessionRecord {
                user_name: user.map(|u| u.full_name.clone()).unwrap_or_default(),
                user_email: user.map(|u| u.email.clone()).unwrap_or_default(),
                rules: rules.remove(&session.id).unwrap_or_default(),
                session,
            }
        })
        .collect())
}

/// Which sessions of an organization to list.
#[derive(Debug, Default, Clone)]
pub struct SessionFilter {
    pub user_id: Option<String>,
    pub statuses: Vec<SessionStatus>,
}

/// Sessions of `organization_id`, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: &str,
    filter: &SessionFilter,
    request: &PageRequest,
) -> StoreResult<Page<SessionRecord>> {
    let mut select = session::Entity::find().filter(session::Column::OrganizationId.eq(organization_id));
    if let Some(user_id) = &filter.user_id {
        select = select.filter(session::Column::UserId.eq(user_id.as_str()));
    }
    if !filter.statuses.is_empty() {
        select = select.filter(session::Column::Status.is_in(filter.statuses.iter().copied()));
    }
    let page = fetch_page(db, select, session::Column::Id, request, true, |m| &m.id).await?;
    let records = complete(db, page.items).await?;
    Ok(Page { items: records, next_page_token: page.next_page_token })
}

/// Saves a session change and announces it to the other replicas (delivered on commit).
pub async fn update(db: &impl ConnectionTrait, changes: session::ActiveModel) -> StoreResult<session::Model> {
    let updated = changes.update(db).await?;
    let announcement = format!("{} {}", updated.id, updated.revision);
    announce(db, SESSIONS_CHANNEL, &announcement).await?;
    Ok(updated)
}

/// Saves sessions a transition moved (rows read and locked in this transaction), in one
/// statement per 500 — an upsert that only updates what a transition changes — and announces
/// them together.
pub async fn save_transitions(db: &impl ConnectionTrait, moved: Vec<session::Model>) -> StoreResult<()> {
    use session::Column;
    for chunk in moved.chunks(500) {
        let rolled_up = OnConflict::column(Column::Id)
            .update_columns([
                Column::Status,
                Column::Revision,
                Column::UpdatedAt,
                Column::LiveIpv4Key,
                Column::LiveIpv6Key,
                Column::EndedAt,
                Column::EndedReason,
                Column::ExpiresAt,
                Column::HeartbeatDueAt,
                Column::Ipv4Address,
                Column::Ipv6Address,
            ])
            .to_owned();
        session::Entity::insert_many(chunk.iter().cloned().map(session::ActiveModel::from))
            .on_conflict(rolled_up)
            .exec_without_returning(db)
            .await?;
    }
    let announcements: Vec<String> = moved.iter().map(|s| format!("{} {}", s.id, s.revision)).collect();
    announce_all(db, SESSIONS_CHANNEL, &announcements).await
}

/// Records where session `id`'s approval stands (`approval`, JSON) as its next revision, and
/// announces the change to other replicas' watchers.
pub async fn save_approval(
    db: &impl ConnectionTrait,
    id: &str,
    approval: String,
    revision: i64,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    session::Entity::update_many()
        .col_expr(session::Column::Approval, Expr::value(approval))
        .col_expr(session::Column::Revision, Expr::value(revision))
        .col_expr(session::Column::UpdatedAt, Expr::value(at))
        .filter(session::Column::Id.eq(id))
        .exec(db)
        .await?;
    announce(db, SESSIONS_CHANNEL, &format!("{id} {revision}")).await
}

/// Sessions of `organization_id` waiting for approval, oldest first.
pub async fn awaiting_approval(db: &impl ConnectionTrait, organization_id: &str) -> StoreResult<Vec<session::Model>> {
    Ok(session::Entity::find()
        .filter(session::Column::OrganizationId.eq(organization_id))
        .filter(session::Column::Status.eq(SessionStatus::AwaitingApproval))
        .order_by_asc(session::Column::Id)
        .all(db)
        .await?)
}

/// Live sessions whose time is up.
pub async fn due_to_expire(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<session::Model>> {
    let due = Condition::any().add(session::Column::ExpiresAt.lte(now)).add(session::Column::HeartbeatDueAt.lte(now));
    Ok(session::Entity::find()
        .filter(session::Column::Status.is_in(SessionStatus::LIVE))
        .filter(due)
        .order_by_asc(session::Column::ExpiresAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// Live sessions ending after `now` and by `until` whose warning has not been sent for their
/// current end.
pub async fn due_for_warning(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<session::Model>> {
    let unwarned = Condition::any()
        .add(session::Column::ExpiryWarnedFor.is_null())
        .add(Expr::col(session::Column::ExpiryWarnedFor).ne(Expr::col(session::Column::ExpiresAt)));
    Ok(session::Entity::find()
        .filter(session::Column::Status.is_in(SessionStatus::LIVE))
        .filter(session::Column::ExpiresAt.gt(now))
        .filter(session::Column::ExpiresAt.lte(until))
        .filter(unwarned)
        .order_by_asc(session::Column::ExpiresAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// Records that the warning for the session's end `expires_at` is being sent, unless it was
/// already (by another replica) or the session has moved on. Answers whether this call took it.
pub async fn take_warning(db: &impl ConnectionTrait, id: &str, expires_at: DateTime<Utc>) -> StoreResult<bool> {
    let unwarned = Condition::any()
        .add(session::Column::ExpiryWarnedFor.is_null())
        .add(session::Column::ExpiryWarnedFor.ne(expires_at));
    let taken = session::Entity::update_many()
        .col_expr(session::Column::ExpiryWarnedFor, Expr::value(expires_at))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::ExpiresAt.eq(expires_at))
        .filter(session::Column::Status.is_in(SessionStatus::LIVE))
        .filter(unwarned)
        .exec(db)
        .await?;
    Ok(taken.rows_affected == 1)
}

/// When the next live session ends: it expires, or its heartbeat runs out. Looked up status by
/// status, each the first entry of an index: over all live statuses at once, SQLite and
/// PostgreSQL sort every live session to find the first (milliseconds at thousands of them, on
/// every wake of the expiry scheduler).
pub async fn next_expiry(db: &impl ConnectionTrait) -> StoreResult<Option<DateTime<Utc>>> {
    let mut next = None;
    for status in SessionStatus::LIVE {
        let live = || session::Entity::find().filter(session::Column::Status.eq(status));
        let expiry = live().order_by_asc(session::Column::ExpiresAt).one(db).await?.map(|s| s.expires_at);
        let heartbeat = live()
            .filter(session::Column::HeartbeatDueAt.is_not_null())
            .order_by_asc(session::Column::HeartbeatDueAt)
            .one(db)
            .await?
            .and_then(|s| s.heartbeat_due_at);
        next = next.into_iter().chain(expiry).chain(heartbeat).min();
    }
    Ok(next)
}

/// A watch of the owner is open: the live session's heartbeat is due `heartbeat_seconds` from
/// `at` (never earlier than it already was). Not a change watchers see.
pub async fn heartbeat(db: &impl ConnectionTrait, id: &str, at: DateTime<Utc>) -> StoreResult<()> {
    let Some(session) = session::Entity::find_by_id(id).one(db).await? else { return Ok(()) };
    let Some(seconds) = session.heartbeat_seconds else { return Ok(()) };
    let due = at + chrono::TimeDelta::seconds(i64::from(seconds));
    session::Entity::update_many()
        .col_expr(session::Column::HeartbeatDueAt, Expr::value(due))
        .filter(session::Column::Id.eq(id))
        .filter(session::Column::Status.is_in(SessionStatus::LIVE))
        .filter(session::Column::HeartbeatDueAt.lt(due))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn rules_of(db: &impl ConnectionTrait, session_id: &str) -> StoreResult<Vec<resource_ip::Model>> {
    Ok(resource_ip::Entity::find()
        .filter(resource_ip::Column::SessionId.eq(session_id))
        .order_by_asc(resource_ip::Column::Id)
        .all(db)
        .await?)
}

pub async fn get_rule(db: &impl ConnectionTrait, organization_id: &str, id: &str) -> StoreResult<resource_ip::Model> {
    found(
        resource_ip::Entity::find_by_id(id)
            .filter(resource_ip::Column::OrganizationId.eq(organization_id))
            .one(db)
            .await?,
    )
}

/// Which rules of an organization to list.
#[derive(Debug, Default, Clone)]
pub struct RuleFilter {
    pub session_id: Option<String>,
    pub resource_id: Option<String>,
    pub statuses: Vec<ResourceIpStatus>,
}

/// Rules of `organization_id`, newest first.
pub async fn list_rules(
    db: &impl ConnectionTrait,
    organization_id: &str,
    filter: &RuleFilter,
    request: &PageRequest,
) -> StoreResult<Page<resource_ip::Model>> {
    let mut select = resource_ip::Entity::find().filter(resource_ip::Column::OrganizationId.eq(organization_id));
    if let Some(session_id) = &filter.session_id {
        select = select.filter(resource_ip::Column::SessionId.eq(session_id.as_str()));
    }
    if let Some(resource_id) = &filter.resource_id {
        select = select.filter(resource_ip::Column::ResourceId.eq(resource_id.as_str()));
    }
    if !filter.statuses.is_empty() {
        select = select.filter(resource_ip::Column::Status.is_in(filter.statuses.iter().copied()));
    }
    fetch_page(db, select, resource_ip::Column::Id, request, true, |m| &m.id).await
}

/// The live sessions of a user, or of every user of an organization, in id order (the order
/// sessions are locked in).
pub async fn live_of(db: &impl ConnectionTrait, holder: &Holder<'_>) -> StoreResult<Vec<session::Model>> {
    let select = session::Entity::find().filter(session::Column::Status.is_in(SessionStatus::LIVE));
    let select = match holder {
        Holder::User(id) => select.filter(session::Column::UserId.eq(*id)),
        Holder::Organization(id) => select.filter(session::Column::OrganizationId.eq(*id)),
    };
    Ok(select.order_by_asc(session::Column::Id).all(db).await?)
}

/// Whose sessions a change of rights reaches.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    User(&'a str),
    Organization(&'a str),
}

/// Rules that wait for a provider call.
fn unsettled() -> [ResourceIpStatus; 2] {
    [ResourceIpStatus::Pending, ResourceIpStatus::Removing]
}

fn rule_lease_free(now: DateTime<Utc>) -> sea_orm::sea_query::SimpleExpr {
    resource_ip::Column::LeaseExpiresAt.is_null().or(resource_ip::Column::LeaseExpiresAt.lt(now))
}

/// A resource with due, unclaimed rules, and which kinds of work they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueResource {
    pub resource_id: String,
    /// Some are to be removed.
    pub removes: bool,
    /// Some are to be applied.
    pub applies: bool,
    /// When the latest of its due rules became due: how long its work has gone unchanged.
    pub newest_due_at: DateTime<Utc>,
}

/// Up to `limit` resources with due, unclaimed rules, longest waiting first, leaving out those
/// in `busy` (worked on by this process) and those whose lease another worker holds.
pub async fn due_resources(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
    busy: &[&str],
    limit: u64,
) -> StoreResult<Vec<DueResource>> {
    let leased = Query::select()
        .column(resource_lease::Column::ResourceId)
        .from(resource_lease::Entity)
        .and_where(resource_lease::Column::ExpiresAt.gte(now))
        .to_owned();
    let any_with = |status: ResourceIpStatus| {
        Expr::expr(Expr::case(resource_ip::Column::Status.eq(status), Expr::val(1)).finally(Expr::val(0))).max()
    };
    let rows = resource_ip::Entity::find()
        .select_only()
        .column(resource_ip::Column::ResourceId)
        .column_as(any_with(ResourceIpStatus::Removing), "removes")
        .column_as(any_with(ResourceIpStatus::Pending), "applies")
        .column_as(Expr::col(resource_ip::Column::NextAttemptAt).max(), "newest_due_at")
        .filter(resource_ip::Column::Status.is_in(unsettled()))
        .filter(resource_ip::Column::NextAttemptAt.lte(now))
        .filter(rule_lease_free(now))
        .filter(resource_ip::Column::ResourceId.is_not_in(busy.iter().copied()))
        .filter(resource_ip::Column::ResourceId.not_in_subquery(leased))
        .group_by(resource_ip::Column::ResourceId)
        .order_by_asc(Expr::col(resource_ip::Column::NextAttemptAt).min())
        .limit(limit)
        .into_tuple::<(String, i32, i32, DateTime<Utc>)>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(resource_id, removes, applies, newest_due_at)| DueResource {
            resource_id,
            removes: removes > 0,
            applies: applies > 0,
            newest_due_at,
        })
        .collect())
}

/// Claims up to `limit` due PENDING/REMOVING rules of one resource for `token` until
/// `lease_until`, and returns them. Safe with several claimers: the lease condition is
/// re-checked on update.
pub async fn claim_due_rules(
    db: &impl ConnectionTrait,
    resource_id: &str,
    token: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<resource_ip::Model>> {
    let due = Query::select()
        .column(resource_ip::Column::Id)
        .from(resource_ip::Entity)
        .and_where(resource_ip::Column::ResourceId.eq(resource_id))
        .and_where(resource_ip::Column::Status.is_in(unsettled()))
        .and_where(resource_ip::Column::NextAttemptAt.lte(now))
        .and_where(rule_lease_free(now))
        .order_by(resource_ip::Column::NextAttemptAt, sea_orm::Order::Asc)
        .limit(limit)
        .to_owned();
    resource_ip::Entity::update_many()
        .col_expr(resource_ip::Column::LeaseOwner, Expr::value(token))
        .col_expr(resource_ip::Column::LeaseExpiresAt, Expr::value(lease_until))
        .filter(resource_ip::Column::Id.in_subquery(due))
        .filter(rule_lease_free(now))
        .exec(db)
        .await?;
    Ok(resource_ip::Entity::find()
        .filter(resource_ip::Column::LeaseOwner.eq(token))
        .order_by_asc(resource_ip::Column::Id)
        .all(db)
        .await?)
}

/// Extends the claims `token` holds to `lease_until`.
pub async fn renew_claims(db: &impl ConnectionTrait, token: &str, lease_until: DateTime<Utc>) -> StoreResult<()> {
    resource_ip::Entity::update_many()
        .col_expr(resource_ip::Column::LeaseExpiresAt, Expr::value(lease_until))
        .filter(resource_ip::Column::LeaseOwner.eq(token))
        .exec(db)
        .await?;
    Ok(())
}

/// When the next PENDING/REMOVING rule that is not due yet becomes due (for the worker's sleep;
/// rules due already but held by someone are looked at again on the worker's next round).
pub async fn next_due(db: &impl ConnectionTrait, now: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(resource_ip::Entity::find()
        .filter(resource_ip::Column::Status.is_in(unsettled()))
        .filter(resource_ip::Column::NextAttemptAt.gt(now))
        .order_by_asc(resource_ip::Column::NextAttemptAt)
        .one(db)
        .await?
        .map(|r| r.next_attempt_at))
}

/// The rules on `resource_id` for any of `addresses` that still want the address open (PENDING
/// or APPLIED): a provider rule is shared between the rules holding the same address.
pub async fn holders(
    db: &impl ConnectionTrait,
    resource_id: &str,
    addresses: &[&str],
) -> StoreResult<Vec<resource_ip::Model>> {
    Ok(resource_ip::Entity::find()
        .filter(resource_ip::Column::ResourceId.eq(resource_id))
        .filter(resource_ip::Column::IpAddress.is_in(addresses.iter().copied()))
        .filter(resource_ip::Column::Status.is_in([ResourceIpStatus::Pending, ResourceIpStatus::Applied]))
        .all(db)
        .await?)
}

/// Saves the rules the engine worked on whose lease it still holds, in one statement per 500:
/// an upsert that updates only where the lease is still this claim's. The rows must have been
/// read in this transaction: an upsert would insert a missing row (rules go only with their
/// session, whose foreign key then fails the statement instead). Answers the ids saved.
pub async fn save_claimed_rules(
    db: &impl ConnectionTrait,
    token: &str,
    rules: Vec<resource_ip::Model>,
) -> StoreResult<HashSet<String>> {
    use resource_ip::Column;
    let mut saved = HashSet::new();
    for chunk in rules.chunks(500) {
        // What the worker changes; the rest (the session, the address, a replacement) is not its to write.
        let worked = OnConflict::column(Column::Id)
            .update_columns([
                Column::Status,
                Column::ProviderRuleId,
                Column::AppliedAt,
                Column::RemovedAt,
                Column::ErrorMessage,
                Column::Attempts,
                Column::LeaseOwner,
                Column::LeaseExpiresAt,
                Column::NextAttemptAt,
                Column::UpdatedAt,
            ])
            .action_and_where(Expr::col((resource_ip::Entity, Column::LeaseOwner)).eq(token))
            .to_owned();
        let keys = resource_ip::Entity::insert_many(chunk.iter().cloned().map(resource_ip::ActiveModel::from))
            .on_conflict(worked)
            .exec_with_returning_keys(db)
            .await;
        match keys {
            Ok(keys) => saved.extend(keys),
            // Every lease of the chunk was lost meanwhile.
            Err(sea_orm::DbErr::RecordNotInserted) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(saved)
}

/// Reads claimed rules to save their outcome, locked (PostgreSQL) so no claim changes hands
/// before the outcome is saved.
pub async fn claimed_rules_for_update(db: &impl ConnectionTrait, ids: &[&str]) -> StoreResult<Vec<resource_ip::Model>> {
    locked_by_id::<resource_ip::Entity>(db, resource_ip::Column::Id, ids).await
}

/// A change the state machine made to a rule that is not the worker's to save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleChange {
    /// The rule moves from status `from` to `to` (PENDING: to be applied; REMOVING: to be
    /// removed), due now.
    Status { id: String, from: ResourceIpStatus, to: ResourceIpStatus },
    /// The rule's next call is due now.
    DueNow { id: String },
    /// The session moved on from the rule's address: `successor` takes its place.
    ReplacedBy { id: String, successor: String },
}

/// Writes rule changes in one statement per kind of change (and per 500 rules). A status
/// change is made only where the rule still has its `from` status.
pub async fn change_rules(db: &impl ConnectionTrait, changes: &[RuleChange], now: DateTime<Utc>) -> StoreResult<()> {
    use resource_ip::Column;
    let mut moves: HashMap<(ResourceIpStatus, ResourceIpStatus), Vec<&str>> = HashMap::new();
    let (mut due, mut successors): (Vec<&str>, BTreeMap<&str, Vec<&str>>) = (Vec::new(), BTreeMap::new());
    for change in changes {
        match change {
            RuleChange::Status { id, from, to } => moves.entry((*from, *to)).or_default().push(id),
            RuleChange::DueNow { id } => due.push(id),
            RuleChange::ReplacedBy { id, successor } => successors.entry(successor).or_default().push(id),
        }
    }
    for ((from, to), ids) in moves {
        for chunk in ids.chunks(500) {
            let mut update = resource_ip::Entity::update_many()
                .col_expr(Column::Status, Expr::value(to))
                .col_expr(Column::NextAttemptAt, Expr::value(now))
                .col_expr(Column::Attempts, Expr::value(0))
                .col_expr(Column::UpdatedAt, Expr::value(now));
            if to == ResourceIpStatus::Pending {
                update = update.col_expr(Column::ErrorMessage, Expr::value(Option::<String>::None));
            }
            update.filter(Column::Id.is_in(chunk.iter().copied())).filter(Column::Status.eq(from)).exec(db).await?;
        }
    }
    for chunk in due.chunks(500) {
        resource_ip::Entity::update_many()
            .col_expr(Column::NextAttemptAt, Expr::value(now))
            .filter(Column::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?;
    }
    for (successor, ids) in successors {
        resource_ip::Entity::update_many()
            .col_expr(Column::ReplacedBy, Expr::value(successor))
            .filter(Column::Id.is_in(ids))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// What starts depend on, read in the transaction that records them.
#[derive(Debug, Default)]
pub struct StartRightsHeld {
    pub enabled_users: HashSet<String>,
    pub active_organizations: HashSet<String>,
    /// (resource id, user id)
    pub assigned: HashSet<(String, String)>,
}

/// Reads what the starts of `sessions` (each with its rules) depend on: their users (enabled),
/// organizations (not suspended), assignments and resources. On PostgreSQL each row read is
/// share-locked until commit, so a revocation (DisableUser, SuspendOrganization,
/// UnassignResource, UpdateResource lock the row they change) either commits first and is seen
/// here, or waits for these starts and then finds their sessions. Starts do not queue on each
/// other: share locks do not conflict. Rows are locked in id order, table by table.
pub async fn hold_start_rights<'a>(
    db: &impl ConnectionTrait,
    starts: impl Iterator<Item = (&'a session::Model, &'a [resource_ip::Model])>,
) -> StoreResult<StartRightsHeld> {
    let (mut users, mut organizations, mut resources) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for (session, rules) in starts {
        users.insert(session.user_id.as_str());
        organizations.insert(session.organization_id.as_str());
        resources.extend(rules.iter().map(|rule| rule.resource_id.as_str()));
    }
    let mut held = StartRightsHeld::default();
    if users.is_empty() {
        return Ok(held);
    }
    let users: Vec<&str> = users.into_iter().collect();
    for chunk in users.chunks(500) {
        let rows = user::Entity::find()
            .filter(user::Column::Id.is_in(chunk.iter().copied()))
            .order_by_asc(user::Column::Id)
            .lock_shared()
            .all(db)
            .await?;
        held.enabled_users.extend(rows.into_iter().filter(|user| !user.disabled).map(|user| user.id));
    }
    let organizations = organization::Entity::find()
        .filter(organization::Column::Id.is_in(organizations))
        .order_by_asc(organization::Column::Id)
        .lock_shared()
        .all(db)
        .await?;
    held.active_organizations.extend(organizations.into_iter().filter(|o| !o.suspended).map(|o| o.id));
    let resources: Vec<&str> = resources.into_iter().collect();
    for chunk in resources.chunks(500) {
        resource::Entity::find()
            .filter(resource::Column::Id.is_in(chunk.iter().copied()))
            .order_by_asc(resource::Column::Id)
            .lock_shared()
            .all(db)
            .await?;
        let assignments = resource_assignment::Entity::find()
            .filter(resource_assignment::Column::ResourceId.is_in(chunk.iter().copied()))
            .filter(resource_assignment::Column::UserId.is_in(users.iter().copied()))
            .order_by_asc(resource_assignment::Column::ResourceId)
            .order_by_asc(resource_assignment::Column::UserId)
            .lock_shared()
            .all(db)
            .await?;
        held.assigned.extend(assignments.into_iter().map(|a| (a.resource_id, a.user_id)));
    }
    Ok(held)
}

/// How many sessions (cluster-wide) have each status; absent statuses have none.
pub async fn count_by_status(db: &impl ConnectionTrait) -> StoreResult<Vec<(SessionStatus, i64)>> {
    Ok(session::Entity::find()
        .select_only()
        .column(session::Column::Status)
        .column_as(Expr::col(session::Column::Id).count(), "count")
        .group_by(session::Column::Status)
        .into_tuple::<(SessionStatus, i64)>()
        .all(db)
        .await?)
}

/// How many rules (cluster-wide) have each status; absent statuses have none.
pub async fn count_rules_by_status(db: &impl ConnectionTrait) -> StoreResult<Vec<(ResourceIpStatus, i64)>> {
    Ok(resource_ip::Entity::find()
        .select_only()
        .column(resource_ip::Column::Status)
        .column_as(Expr::col(resource_ip::Column::Id).count(), "count")
        .group_by(resource_ip::Column::Status)
        .into_tuple::<(ResourceIpStatus, i64)>()
        .all(db)
        .await?)
}

/// The engine's queue at `now`: how many unsettled rules are due for a provider call (claimed
/// or not), and since when the longest-waiting one has been.
pub async fn due_backlog(db: &impl ConnectionTrait, now: DateTime<Utc>) -> StoreResult<(i64, Option<DateTime<Utc>>)> {
    let due = || {
        resource_ip::Entity::find()
            .filter(resource_ip::Column::Status.is_in(unsettled()))
            .filter(resource_ip::Column::NextAttemptAt.lte(now))
    };
    let count = due().count(db).await?;
    let oldest = due().order_by_asc(resource_ip::Column::NextAttemptAt).one(db).await?.map(|rule| rule.next_attempt_at);
    Ok((i64::try_from(count).unwrap_or(i64::MAX), oldest))
}
