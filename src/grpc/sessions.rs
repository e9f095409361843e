use super::auth::{Recheck, caller};
use super::convert::{
    caller_address, enum_filter, page_request, require_id, revision_to_pb, session_status_from_pb, session_to_pb,
};
use crate::domain::SessionStatus;
use crate::engine::Subscription;
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
    /// How often an open watch checks its credential again.
    pub recheck_every: std::time::Duration,
    /// Open watches per caller.
    pub watch_slots: super::limits::WatchSlots,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchSessionResponse, Status>> + Send>>;

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
        let detected_address = caller_address(&request, &self.trusted_proxies)?;
        let message = request.get_ref();
        let start = StartRequest {
            duration_hours: message.duration_hours,
            duration_minutes: message.duration_minutes,
            ipv4_address: message.ipv4_address.clone(),
            ipv6_address: message.ipv6_address.clone(),
            detected_address,
            heartbeat_seconds: message.heartbeat_seconds,
            resource_ids: message
                .resource_ids
                .iter()
                .map(|id| require_id("resource_ids", id).map(str::to_owned))
                .collect::<Result<_, _>>()?,
            justification: message.justification.clone(),
            ticket: message.ticket.clone(),
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
        let record =
            self.sessions.extend(caller(&request)?, id, message.additional_hours, message.additional_minutes).await?;
        Ok(Response::new(ExtendSessionResponse { session: Some(session_to_pb(&record)) }))
    }

    async fn change_session_address(
        &self,
        request: Request<ChangeSessionAddressRequest>,
    ) -> Result<Response<ChangeSessionAddressResponse>, Status> {
        let message = request.get_ref();
        let id = require_id("id", &message.id)?;
        let (ipv4, ipv6) = (message.ipv4_address.as_deref(), message.ipv6_address.as_deref());
        let record = self.sessions.change_address(caller(&request)?, id, ipv4, ipv6).await?;
        Ok(Response::new(ChangeSessionAddressResponse { session: Some(session_to_pb(&record)) }))
    }

    async fn get_client_address(
        &self,
        request: Request<GetClientAddressRequest>,
    ) -> Result<Response<GetClientAddressResponse>, Status> {
        let address = caller_address(&request, &self.trusted_proxies)?
            .map(crate::domain::normalize)
            .ok_or_else(|| Status::unavailable("the connection does not tell the caller's address"))?;
        let ip_version = u32::from(crate::domain::IpVersion::of(address).number());
        Ok(Response::new(GetClientAddressResponse { ip_address: address.to_string(), ip_version }))
    }

    async fn watch_session(
        &self,
        request: Request<WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let id = require_id("id", &request.get_ref().id)?;
        let slot = self.watch_slots.take(caller(&request)?)?;
        let (current, subscription, beat) = self.sessions.watch(caller(&request)?, id).await?;
        let heartbeat = beat.map(|every| Heartbeat {
            ticks: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            every,
            sessions: self.sessions.clone(),
            session_id: id.to_owned(),
        });
        let every = self.recheck_every;
        let mut rechecks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        rechecks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = WatchState {
            first: Some(session_to_pb(&current)),
            subscription,
            shutdown: self.shutdown.clone(),
            recheck: request.extensions().get::<Recheck>().cloned(),
            rechecks,
            owner: current.session.user_id.clone(),
            last_revision: 0,
            finished: false,
            heartbeat,
            _slot: slot,
        };
        // A stream polled by the connection itself: no task or channel per watcher, and the
        // subscription goes away the moment the client does.
        let stream: WatchStream = Box::pin(futures::stream::unfold(state, next_message));
        Ok(Response::new(stream))
    }
}

/// What one WatchSession stream has sent so far.
struct WatchState {
    first: Option<Session>,
    subscription: Subscription,
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Checks the credential again on every tick of `rechecks`, and that it still reaches the
    /// session's owner.
    recheck: Option<Recheck>,
    owner: String,
    rechecks: tokio::time::Interval,
    last_revision: u64,
    finished: bool,
    /// The owner's watch of a session with a heartbeat beats for it.
    heartbeat: Option<Heartbeat>,
    /// Held while the stream lives.
    _slot: super::limits::WatchSlot,
}

struct Heartbeat {
    ticks: tokio::time::Interval,
    every: std::time::Duration,
    sessions: SessionManager,
    session_id: String,
}

impl Heartbeat {
    /// Tells the store the owner is still watching. Awaited outside the `select!` of the stream,
    /// so another branch firing never cancels the write halfway.
    async fn beat(&self) {
        if let Err(err) = self.sessions.heartbeat(&self.session_id, self.every).await {
            // The next beat tries again; two may be lost before the session ends.
            tracing::warn!(session_id = %self.session_id, error = %err, "session heartbeat failed");
        }
    }
}

/// When the next beat is due; never, without a heartbeat.
async fn next_beat(heartbeat: &mut Option<Heartbeat>) {
    match heartbeat {
        Some(heartbeat) => {
            heartbeat.ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The next message of a watch stream: the current state first, then every newer revision,
/// ending after a terminal state (or with UNAVAILABLE when the server shuts down, and
/// UNAUTHENTICATED or PERMISSION_DENIED once the credential no longer holds). A published state
/// is encoded by the first of its watchers to send it; the others send the same bytes.
async fn next_message(mut state: WatchState) -> Option<(Result<WatchSessionResponse, Status>, WatchState)> {
    if state.finished {
        return None;
    }
    if let Some(first) = state.first.take() {
        state.last_revision = first.revision;
        state.finished = is_terminal(&first);
        return Some((Ok(WatchSessionResponse::new(first)), state));
    }
    let published = loop {
        let published = tokio::select! {
            published = state.subscription.next() => published?,
            _ = crate::shutdown::stopping(&mut state.shutdown) => {
                state.finished = true;
                return Some((Err(Status::unavailable("the server is shutting down; watch again")), state));
            }
            () = next_beat(&mut state.heartbeat) => {
                if let Some(heartbeat) = &state.heartbeat {
                    heartbeat.beat().await;
                }
                continue;
            }
            _ = state.rechecks.tick() => {
                if let Some(recheck) = &state.recheck
                    && let Err(status) = recheck.check(&state.owner).await
                {
                    state.finished = true;
                    return Some((Err(status), state));
                }
                continue;
            }
        };
        if revision_to_pb(published.record.session.revision) > state.last_revision {
            break published;
        }
    };
    state.last_revision = revision_to_pb(published.record.session.revision);
    state.finished = published.record.session.status.is_terminal();
    let encoded = published.encoded.get_or_init(|| WatchSessionResponse::encode(&session_to_pb(&published.record)));
    Some((Ok(WatchSessionResponse::pre_encoded(encoded.clone())), state))
}
