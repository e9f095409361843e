//! Queries, grouped by table. Each function translates database errors into [`StoreError`].

pub mod agents;
pub mod api_keys;
pub mod audit_events;
pub mod hosts;
pub mod identity_providers;
pub mod login_sessions;
pub mod operator_keys;
pub mod organizations;
pub mod rate_limits;
pub mod resource_leases;
pub mod resources;
pub mod sessions;
pub mod signing_keys;
pub mod sso_logins;
pub mod users;
pub mod webhooks;

use super::{Page, PageRequest, StoreError, StoreResult};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, Select};

/// Runs `select` as one keyset page over the `id` column.
async fn fetch_page<E: EntityTrait>(
    db: &impl ConnectionTrait,
    select: Select<E>,
    id: E::Column,
    request: &PageRequest,
    newest_first: bool,
    id_of: impl Fn(&E::Model) -> &str,
) -> StoreResult<Page<E::Model>> {
    let select = match &request.after {
        Some(after) if newest_first => select.filter(id.lt(after.as_str())),
        Some(after) => select.filter(id.gt(after.as_str())),
        None => select,
    };
    let order = if newest_first { Order::Desc } else { Order::Asc };
    let rows = select.order_by(id, order).limit(request.size + 1).all(db).await?;
    Ok(Page::from_rows(rows, request, id_of))
}

/// Turns "no row" into [`StoreError::NotFound`].
fn found<T>(row: Option<T>) -> StoreResult<T> {
    row.ok_or(StoreError::NotFound)
}
