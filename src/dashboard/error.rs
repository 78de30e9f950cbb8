//! The one place where dashboard errors become HTTP statuses.
//!
//! Every error reaches here as a gRPC [`Status`]: the JSON endpoints call the gRPC handlers,
//! and store errors go through [`ApiError`] (the gRPC mapping) first, so a failure reads the
//! same over both protocols. The body is `{"error": message, "code": "Aborted"}`.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tonic::{Code, Status};

use crate::api::status::ApiError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct HttpError(pub Status);

impl From<Status> for HttpError {
    fn from(s: Status) -> Self {
        HttpError(s)
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e.into())
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// gRPC code → HTTP status.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        // The head moved (rollback's compare-and-set) or the thing exists already.
        Code::Aborted | Code::AlreadyExists => StatusCode::CONFLICT,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Internal | Code::Unknown | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.0.message(),
            "code": format!("{:?}", self.0.code()),
        });
        (http_status(self.0.code()), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        let s = |c| http_status(c).as_u16();
        assert_eq!(s(Code::InvalidArgument), 400);
        assert_eq!(s(Code::Unauthenticated), 401);
        assert_eq!(s(Code::PermissionDenied), 403);
        assert_eq!(s(Code::NotFound), 404);
        assert_eq!(s(Code::Aborted), 409);
        assert_eq!(s(Code::FailedPrecondition), 412);
        assert_eq!(s(Code::Unavailable), 503);
        assert_eq!(s(Code::Internal), 500);
    }
}
