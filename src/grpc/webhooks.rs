use super::auth::caller;
use super::convert::{
    UpdateMask, audit_event_to_pb, page_request, require_id, session_to_pb, webhook_delivery_to_pb, webhook_to_pb,
};
use crate::error::Error;
use crate::pb::v1::webhook_service_server::WebhookService;
use crate::pb::v1::*;
use crate::service::{NewWebhook, WebhookChanges, WebhookManager};
use crate::store::entity::audit_event;
use crate::store::queries::sessions::SessionRecord;
use prost_reflect::{DescriptorPool, DynamicMessage};
use std::sync::OnceLock;
use tonic::{Request, Response, Status};

pub struct WebhookApi(pub WebhookManager);

const UPDATABLE: &[&str] = &["url", "event_types", "description", "disabled"];
/// An empty mask changes these (turning a webhook on or off is asked for by name).
const UPDATED_BY_DEFAULT: &[&str] = &["url", "event_types", "description"];

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_webhook(
        &self,
        request: Request<CreateWebhookRequest>,
    ) -> Result<Response<CreateWebhookResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref().clone();
        let new = NewWebhook { url: message.url, event_types: message.event_types, description: message.description };
        let (created, secret) = self.0.create(caller, new).await?;
        Ok(Response::new(CreateWebhookResponse { webhook: Some(webhook_to_pb(created)), secret }))
    }

    async fn get_webhook(&self, request: Request<GetWebhookRequest>) -> Result<Response<GetWebhookResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let webhook = self.0.get(caller(&request)?, id).await?;
        Ok(Response::new(GetWebhookResponse { webhook: Some(webhook_to_pb(webhook)) }))
    }

    async fn list_webhooks(
        &self,
        request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let webhooks = self.0.list(caller(&request)?, &page).await?;
        Ok(Response::new(ListWebhooksResponse {
            webhooks: webhooks.items.into_iter().map(webhook_to_pb).collect(),
            next_page_token: webhooks.next_page_token,
        }))
    }

    async fn update_webhook(
        &self,
        request: Request<UpdateWebhookRequest>,
    ) -> Result<Response<UpdateWebhookResponse>, Status> {
        let caller = caller(&request)?;
        let message = request.get_ref();
        let webhook = message.webhook.clone().ok_or_else(|| Error::invalid("webhook", "is required"))?;
        let id = require_id("webhook.id", &webhook.id)?.to_owned();
        let named = message.update_mask.as_ref().is_some_and(|mask| !mask.paths.is_empty());
        let mask = UpdateMask::parse(message.update_mask.as_ref(), if named { UPDATABLE } else { UPDATED_BY_DEFAULT })?;
        let changes = WebhookChanges {
            url: mask.contains("url").then_some(webhook.url),
            event_types: mask.contains("event_types").then_some(webhook.event_types),
            description: mask.contains("description").then_some(webhook.description),
            disabled: mask.contains("disabled").then_some(webhook.disabled),
        };
        let updated = self.0.update(caller, &id, changes).await?;
        Ok(Response::new(UpdateWebhookResponse { webhook: Some(webhook_to_pb(updated)) }))
    }

    async fn delete_webhook(
        &self,
        request: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        self.0.delete(caller(&request)?, id).await?;
        Ok(Response::new(DeleteWebhookResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let (webhook, secret) = self.0.rotate_secret(caller(&request)?, id).await?;
        Ok(Response::new(RotateWebhookSecretResponse { webhook: Some(webhook_to_pb(webhook)), secret }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        let message = request.get_ref();
        let webhook_id = require_id("webhook_id", &message.webhook_id)?;
        let page = page_request(message.page_size, &message.page_token)?;
        let deliveries = self.0.list_deliveries(caller(&request)?, webhook_id, &page).await?;
        Ok(Response::new(ListWebhookDeliveriesResponse {
            deliveries: deliveries.items.into_iter().map(webhook_delivery_to_pb).collect(),
            next_page_token: deliveries.next_page_token,
        }))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<RedeliverWebhookRequest>,
    ) -> Result<Response<RedeliverWebhookResponse>, Status> {
        let id = require_id("delivery_id", &request.get_ref().delivery_id)?;
        let delivery = self.0.redeliver(caller(&request)?, id).await?;
        Ok(Response::new(RedeliverWebhookResponse { delivery: Some(webhook_delivery_to_pb(delivery)) }))
    }
}

/// Payload data in the API's proto3 JSON (as grpcurl prints it): `{"auditEvent": …,
/// "session": …}`, the session only for session and rule events.
pub struct ProtoJson;

impl crate::webhook::Render for ProtoJson {
    fn data(&self, event: &audit_event::Model, session: Option<&SessionRecord>) -> serde_json::Value {
        let mut data = serde_json::Map::new();
        data.insert("auditEvent".into(), to_json(&audit_event_to_pb(event.clone()), "portcullis.v1.AuditEvent"));
        if let Some(record) = session {
            data.insert("session".into(), to_json(&session_to_pb(record), "portcullis.v1.Session"));
        }
        serde_json::Value::Object(data)
    }
}

fn to_json<M: prost::Message>(message: &M, full_name: &str) -> serde_json::Value {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    // Built into the binary by build.rs: decoding it cannot fail unless the build is broken.
    let pool = POOL.get_or_init(|| DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap_or_default());
    let Some(descriptor) = pool.get_message_by_name(full_name) else { return serde_json::Value::Null };
    DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .ok()
        .and_then(|dynamic| serde_json::to_value(&dynamic).ok())
        .unwrap_or(serde_json::Value::Null)
}
