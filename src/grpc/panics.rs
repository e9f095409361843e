//! A panic anywhere in a call, in its handler or in its stream while the stream is polled,
//! becomes INTERNAL and an error log, never a reset stream or a lost connection task.

use bytes::Bytes;
use futures::FutureExt;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tower::{Layer, Service};

#[derive(Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic { inner }
    }
}

#[derive(Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// What a panic said, when it said something readable.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

fn internal() -> Status {
    Status::internal("internal error")
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CatchPanic<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)));
        Box::pin(async move {
            let answered = match called {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            match answered {
                Ok(Ok(response)) => {
                    Ok(response.map(|body| tonic::body::Body::new(Guarded { body: Box::pin(body), path, done: false })))
                }
                Ok(Err(err)) => Err(err),
                Err(panic) => {
                    tracing::error!(path, panic = panic_message(panic.as_ref()), "call panicked; answered INTERNAL");
                    Ok(internal().into_http())
                }
            }
        })
    }
}

/// A response body that ends with an INTERNAL status instead of unwinding when polling it panics.
struct Guarded<B> {
    body: Pin<Box<B>>,
    path: String,
    done: bool,
}

impl<B: Body<Data = Bytes>> Body for Guarded<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.body.as_mut().poll_frame(cx))) {
            Ok(polled) => polled,
            Err(panic) => {
                this.done = true;
                tracing::error!(path = %this.path, panic = panic_message(panic.as_ref()), "stream panicked; ended INTERNAL");
                let mut trailers = http::HeaderMap::new();
                // Only fails for a message that is not a valid header value; ours is.
                let _ = internal().add_header(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.done { SizeHint::with_exact(0) } else { self.body.size_hint() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn grpc_status(headers: &http::HeaderMap) -> Option<&str> {
        headers.get("grpc-status").and_then(|value| value.to_str().ok())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        let service = tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("handler bug");
            }
            Ok::<_, std::convert::Infallible>(Response::new(tonic::body::Body::empty()))
        });
        let response = CatchPanicLayer.layer(service).call(Request::new(())).await.unwrap();
        assert_eq!(grpc_status(response.headers()), Some("13"));
    }

    /// A body whose first poll panics, as a broken stream would.
    struct Exploding;

    impl Body for Exploding {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            panic!("stream bug")
        }
    }

    #[tokio::test]
    async fn a_panicking_stream_ends_with_internal() {
        let service =
            tower::service_fn(|_: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(Exploding)) });
        let response = CatchPanicLayer.layer(service).call(Request::new(())).await.unwrap();
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(grpc_status(&trailers), Some("13"));
    }
}
