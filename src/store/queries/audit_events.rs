use super::fetch_page;
use crate::store::entity::audit_event::{self, Column, Entity, Model};
use crate::store::{Page, PageRequest, StoreResult};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};

pub async fn insert(db: &impl ConnectionTrait, model: Model) -> StoreResult<Model> {
    Ok(audit_event::ActiveModel::from(model).insert(db).await?)
}

/// Several events, in one statement per thousand (within every database's limit on bound values).
pub async fn insert_all(db: &impl ConnectionTrait, models: Vec<Model>) -> StoreResult<()> {
    for chunk in models.chunks(1000) {
        Entity::insert_many(chunk.iter().cloned().map(audit_event::ActiveModel::from)).exec(db).await?;
    }
    Ok(())
}

/// Which events of an organization to list.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub types: Vec<String>,
    pub actor_id: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

/// Events of `organization_id`, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
    organization_id: &str,
    filter: &AuditFilter,
    request: &PageRequest,
) -> StoreResult<Page<Model>> {
    let mut select = Entity::find().filter(Column::OrganizationId.eq(organization_id));
    if !filter.types.is_empty() {
        select = select.filter(Column::EventType.is_in(filter.types.iter().map(String::as_str)));
    }
    if let Some(actor_id) = &filter.actor_id {
        select = select.filter(Column::ActorId.eq(actor_id.as_str()));
    }
    if let Some(start) = filter.start_time {
        select = select.filter(Column::Time.gte(start));
    }
    if let Some(end) = filter.end_time {
        select = select.filter(Column::Time.lt(end));
    }
    fetch_page(db, select, Column::Id, request, true, |m| &m.id).await
}
