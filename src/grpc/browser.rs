//! gRPC-Web for browsers on the serving port. tonic-web translates a `application/grpc-web*`
//! call into a plain gRPC call (and its answer back), but refuses every other HTTP/1.1 request;
//! here only gRPC-Web calls go through it, so the page and the SSO callback are served over
//! HTTP/1.1 beside it.

use futures::TryFutureExt;
use futures::future::{Either, MapOk};
use http::{Request, Response, header};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service};

#[derive(Clone, Copy, Default)]
pub struct BrowserLayer;

impl<S> Layer<S> for BrowserLayer {
    type Service = Browser<S>;

    fn layer(&self, inner: S) -> Browser<S> {
        Browser { inner }
    }
}

#[derive(Clone)]
pub struct Browser<S> {
    inner: S,
}

/// Whether the request is a gRPC-Web call (binary or base64 text, any message encoding).
fn is_grpc_web<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|content_type| content_type.starts_with("application/grpc-web"))
}

type Plain<F, B> = MapOk<F, fn(Response<B>) -> Response<Body>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Browser<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone,
    ReqBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ReqBody::Error: Into<tonic::codegen::StdError> + std::fmt::Display,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<tonic::codegen::StdError> + std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<tonic_web::ResponseFuture<S::Future>, Plain<S::Future, ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service polled ready takes this call; a fresh clone waits for the next one.
        let fresh = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, fresh);
        if is_grpc_web(&request) {
            let mut grpc_web: GrpcWebService<S> = GrpcWebLayer::new().layer(ready);
            Either::Left(grpc_web.call(request))
        } else {
            let mut plain = ready;
            let to_body: fn(Response<ResBody>) -> Response<Body> = |response| response.map(Body::new);
            Either::Right(plain.call(request.map(Body::new)).map_ok(to_body))
        }
    }
}
