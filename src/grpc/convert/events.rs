//! The audit trail and webhooks: AuditService and WebhookService.

use super::*;

pub fn audit_event_to_pb(model: audit_event::Model) -> pb::AuditEvent {
    pb::AuditEvent {
        details: details_of(&model).into_iter().collect(),
        id: model.id,
        time: Some(timestamp(model.time)),
        r#type: model.event_type,
        actor_id: model.actor_id.unwrap_or_default(),
        actor_api_key_id: model.actor_api_key_id.unwrap_or_default(),
        target_type: model.target_type,
        target_id: model.target_id,
        client_ip: model.client_ip.unwrap_or_default(),
    }
}

pub fn webhook_to_pb(model: webhook::Model) -> pb::Webhook {
    pb::Webhook {
        event_types: serde_json::from_str(&model.event_types).unwrap_or_default(),
        id: model.id,
        url: model.url,
        description: model.description,
        disabled: model.disabled_at.is_some(),
        disabled_reason: model.disabled_reason.unwrap_or_default(),
        failing_since: model.failing_since.map(timestamp),
        created_at: Some(timestamp(model.created_at)),
        updated_at: Some(timestamp(model.updated_at)),
        previous_secret_expires_at: model.previous_secret_expires_at.map(timestamp),
    }
}

pub fn webhook_delivery_to_pb(model: webhook_delivery::Model) -> pb::WebhookDelivery {
    let status = match model.status {
        domain::DeliveryStatus::Pending => pb::WebhookDeliveryStatus::Pending,
        domain::DeliveryStatus::Delivered => pb::WebhookDeliveryStatus::Delivered,
        domain::DeliveryStatus::Failed => pb::WebhookDeliveryStatus::Failed,
    };
    pb::WebhookDelivery {
        next_attempt_at: (status == pb::WebhookDeliveryStatus::Pending).then(|| timestamp(model.next_attempt_at)),
        status: status.into(),
        id: model.id,
        webhook_id: model.webhook_id,
        event_id: model.event_id,
        event_type: model.event_type,
        attempts: model.attempts,
        last_response_code: model.last_response_code.unwrap_or_default(),
        last_error: model.last_error.unwrap_or_default(),
        created_at: Some(timestamp(model.created_at)),
        delivered_at: model.delivered_at.map(timestamp),
        payload: model.payload,
    }
}
