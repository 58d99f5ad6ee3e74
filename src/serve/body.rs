//! Every request's body is read here, before routing, within the limits: a declared
//! Content-Length over `--max-request-bytes` gets 413 before a byte of the body is read (it
//! waited for the body, which a client may never send), and a body that does not arrive within
//! `--body-timeout-ms` gets 408 (a client trickling a byte at a time held its request open
//! for ever).

use super::error::ApiError;
use super::Limits;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// 413, naming the flag.
pub fn too_large(limits: &Limits) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request is larger than the server's --max-request-bytes ({} bytes)",
            limits.max_request_bytes
        ),
    )
}

/// Reads the whole body within the limits, then hands the request on with it.
pub async fn read_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let declared = (req.headers().get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_request_bytes as u64) {
        return too_large(&limits).into_response();
    }
    let (parts, body) = req.into_parts();
    // the limit is DefaultBodyLimit's, set by the router's outer layer
    let read = Bytes::from_request(Request::from_parts(parts.clone(), body), &());
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(r)) => return rejected(&r, &limits).into_response(),
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request's body did not arrive within the server's --body-timeout-ms \
                     ({} ms)",
                    limits.body_timeout.as_millis()
                ),
            )
            .into_response()
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// A body that could not be read: 413 past the limit (a chunked body passes it only as it
/// is read), else the reason.
pub fn rejected(r: &BytesRejection, limits: &Limits) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(limits),
        status => ApiError::new(
            status,
            format!("cannot read the request: {}", r.body_text()),
        ),
    }
}
