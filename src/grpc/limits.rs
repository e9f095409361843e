//! What one caller may hold and how large a request may be: open WatchSession streams per
//! caller, and request messages up to `limits.max_request_bytes`. Either limit answers
//! RESOURCE_EXHAUSTED.

use crate::error::Error;
use crate::service::Caller;
use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tonic::Status;
use tower::{Layer, Service};

/// Open WatchSession streams per caller (credential) and per user on this server.
#[derive(Clone)]
pub struct WatchSlots {
    per_caller: u32,
    per_user: u32,
    open: Arc<Mutex<HashMap<String, u32>>>,
}

/// One open stream's places (its credential's and its user's, once when they are the same);
/// given back when the stream ends, however it ends.
pub struct WatchSlot {
    holders: Vec<String>,
    open: Arc<Mutex<HashMap<String, u32>>>,
}

impl WatchSlots {
    pub fn new(per_caller: u32, per_user: u32) -> WatchSlots {
        WatchSlots { per_caller, per_user, open: Arc::default() }
    }

    /// A place for one more stream of `caller`'s credential and user, or RESOURCE_EXHAUSTED.
    pub fn take(&self, caller: &Caller) -> Result<WatchSlot, Error> {
        // One API key or one login session is one caller; a user minting keys is still one user.
        let credential = caller
            .api_key_id
            .as_ref()
            .or(caller.login_session_id.as_ref())
            .map_or_else(|| format!("user:{}", caller.user_id), |id| format!("credential:{id}"));
        let user = format!("user:{}", caller.user_id);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = |holder: &str| open.get(holder).copied().unwrap_or_default();
        if held(&credential) >= self.per_caller {
            return Err(Error::limit_reached(
                "limits.max_watch_streams_per_caller",
                self.per_caller,
                "open WatchSession streams of this credential",
            ));
        }
        if credential != user && held(&user) >= self.per_user {
            return Err(Error::limit_reached(
                "limits.max_watch_streams_per_user",
                self.per_user,
                "open WatchSession streams of this user",
            ));
        }
        // A caller without a credential of its own is its user: counted once.
        let holders = if credential == user { vec![user] } else { vec![credential, user] };
        for holder in &holders {
            *open.entry(holder.clone()).or_default() += 1;
        }
        crate::monitoring::watch_stream_opened();
        Ok(WatchSlot { holders, open: self.open.clone() })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        crate::monitoring::watch_stream_closed();
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for holder in &self.holders {
            if let Some(count) = open.get_mut(holder) {
                *count -= 1;
                if *count == 0 {
                    open.remove(holder);
                }
            }
        }
    }
}

/// Refuses request messages above a size, by their length prefix: before they are buffered.
#[derive(Clone, Copy)]
pub struct RequestSizeLayer {
    pub max_bytes: usize,
}

impl<S> Layer<S> for RequestSizeLayer {
    type Service = RequestSize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestSize { inner, max_bytes: self.max_bytes }
    }
}

#[derive(Clone)]
pub struct RequestSize<S> {
    inner: S,
    max_bytes: usize,
}

impl<S, ReqBody> Service<Request<ReqBody>> for RequestSize<S>
where
    S: Service<Request<tonic::body::Body>>,
    ReqBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ReqBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let max_bytes = self.max_bytes;
        self.inner.call(request.map(|body| {
            tonic::body::Body::new(Limited { inner: body, max_bytes, prefix: Vec::new(), payload_left: 0 })
        }))
    }
}

/// A request body read through gRPC's framing: each message's 5-byte prefix (flag, length) is
/// checked as it passes.
struct Limited<B> {
    inner: B,
    max_bytes: usize,
    /// Prefix bytes of the next message seen so far.
    prefix: Vec<u8>,
    /// Payload bytes of the current message still to come.
    payload_left: usize,
}

const PREFIX_LEN: usize = 5;

impl<B> Limited<B> {
    /// Follows the framing through `data`; an error once a message is announced too large.
    fn inspect(&mut self, data: &Bytes) -> Result<(), Status> {
        let mut rest = data.clone();
        while rest.has_remaining() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(rest.remaining());
                rest.advance(skipped);
                self.payload_left -= skipped;
                continue;
            }
            let wanted = (PREFIX_LEN - self.prefix.len()).min(rest.remaining());
            self.prefix.extend_from_slice(&rest.split_to(wanted));
            if self.prefix.len() == PREFIX_LEN {
                let length = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                self.prefix.clear();
                if length > self.max_bytes {
                    return Err(Status::resource_exhausted(format!(
                        "the request message has {length} bytes; at most {} are accepted (limits.max_request_bytes)",
                        self.max_bytes
                    )));
                }
                self.payload_left = length;
            }
        }
        Ok(())
    }
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = self.inspect(data)
                {
                    // tonic answers a body error that is a Status with that status.
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
