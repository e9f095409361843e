use super::auth::caller;
use super::convert::{enum_filter, page_request, require_id, session_status_from_pb, session_to_pb};
use crate::domain::{SessionStatus, client_address};
use crate::pb::v1::session_service_server::SessionService;
use crate::pb::v1::*;
use crate::service::{SessionManager, StartRequest};
use crate::store::queries::sessions::SessionFilter;
use ipnet::IpNet;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct SessionApi {
    pub sessions: SessionManager,
    pub trusted_proxies: Vec<IpNet>,
    /// Turns true when the server shuts down: open watch streams end so connections can drain.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchSessionResponse, Status>> + Send>>;

impl SessionApi {
    /// The caller's address: the peer, or what a trusted proxy says in forwarding headers.
    fn detected_address<T>(&self, request: &Request<T>) -> Option<std::net::IpAddr> {
        let peer = request.remote_addr()?.ip();
        let header = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok());
        Some(client_address(peer, header("x-forwarded-for"), header("x-real-ip"), &self.trusted_proxies))
    }
}

fn is_terminal(session: &Session) -> bool {
    session_status_from_pb(session.status).is_some_and(SessionStatus::is_terminal)
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    type WatchSessionStream = WatchStream;

    async fn start_session(
        &self,
        request: Request<StartSessionRequest>,
    ) -> Result<Response<StartSessionResponse>, Status> {
        let detected_address = self.detected_address(&request);
        let message = request.get_ref();
        let start = StartRequest {
            duration_hours: message.duration_hours,
            ipv4_address: message.ipv4_address.clone(),
            ipv6_address: message.ipv6_address.clone(),
            detected_address,
        };
        let record = self.sessions.start(caller(&request)?, start).await?;
        Ok(Response::new(StartSessionResponse { session: Some(session_to_pb(&record)) }))
    }

    async fn get_session(&self, request: Request<GetSessionRequest>) -> Result<Response<GetSessionResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let record = self.sessions.get(caller(&request)?, id).await?;
        Ok(Response::new(GetSessionResponse { session: Some(session_to_pb(&record)) }))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let message = request.get_ref();
        let page = page_request(message.page_size, &message.page_token)?;
        let statuses = enum_filter("statuses", &message.statuses, session_status_from_pb)?;
        let user_id =
            if message.user_id.is_empty() { None } else { Some(require_id("user_id", &message.user_id)?.to_owned()) };
        let filter = SessionFilter { user_id, statuses };
        let sessions = self.sessions.list(caller(&request)?, filter, &page).await?;
        Ok(Response::new(ListSessionsResponse {
            sessions: sessions.items.iter().map(session_to_pb).collect(),
            next_page_token: sessions.next_page_token,
        }))
    }

    async fn stop_session(
        &self,
        request: Request<StopSessionRequest>,
    ) -> Result<Response<StopSessionResponse>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let record = self.sessions.stop(caller(&request)?, id).await?;
        Ok(Response::new(StopSessionResponse { session: Some(session_to_pb(&record)) }))
    }

    async fn extend_session(
        &self,
        request: Request<ExtendSessionRequest>,
    ) -> Result<Response<ExtendSessionResponse>, Status> {
        let message = request.get_ref();
        let id = require_id("id", &message.id)?;
        let record = self.sessions.extend(caller(&request)?, id, message.additional_hours).await?;
        Ok(Response::new(ExtendSessionResponse { session: Some(session_to_pb(&record)) }))
    }

    async fn watch_session(
        &self,
        request: Request<WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let (current, mut subscription) = self.sessions.watch(caller(&request)?, id).await?;
        let mut shutdown = self.shutdown.clone();
        let stream = async_stream_of(move |sender| async move {
            let first = session_to_pb(&current);
            let mut last_revision = first.revision;
            let done = is_terminal(&first);
            if sender.send(Ok(WatchSessionResponse { session: Some(first) })).await.is_err() || done {
                return;
            }
            loop {
                let record = tokio::select! {
                    record = subscription.next() => match record {
                        Some(record) => record,
                        None => return,
                    },
                    _ = crate::engine::stopping(&mut shutdown) => {
                        let _ = sender.send(Err(Status::unavailable("the server is shutting down; watch again"))).await;
                        return;
                    }
                };
                let session = session_to_pb(&record);
                if session.revision <= last_revision {
                    continue;
                }
                last_revision = session.revision;
                let done = is_terminal(&session);
                if sender.send(Ok(WatchSessionResponse { session: Some(session) })).await.is_err() || done {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// Runs `produce` as a task feeding a bounded channel, as a response stream. The task ends
/// when the client goes away (the send fails).
fn async_stream_of<F, Fut>(produce: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<WatchSessionResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
