//! The one table from failure to response: every error the services can return knows its gRPC
//! code and its HTTP status, so the gRPC and HTTP front ends never disagree about a failure.

use axum::http::StatusCode;

/// Errors returned by the collector's services (ingest, queries, decisions).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field or parameter is invalid; `field` names it (e.g. `records[3].client_address`).
    #[error("{field}: {reason}")]
    InvalidField {
        /// The offending field or parameter, as the caller spelled it.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request conflicts with existing state (e.g. a ban covered by an allowlist entry).
    #[error("{0}")]
    Conflict(String),
    /// The thing the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller did not present valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but its credential does not cover the request.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller exceeded a limit (failed authentications, concurrent calls); it may retry
    /// later.
    #[error("{0}")]
    TooManyRequests(String),
    /// The request carries more than the endpoint accepts at once (a body, a batch); smaller
    /// requests would be accepted.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed; the caller should retry. Never reported as success.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The collector is shutting down and accepts no more work.
    #[error("the collector is shutting down")]
    ShuttingDown,
}

impl Error {
    /// Builds an [`Error::InvalidField`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC status code for this error. Storage failures are `UNAVAILABLE` on purpose: the
    /// filter retries those, and Envoy-side code treats `UNKNOWN` ambiguously.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Error::InvalidField { .. } => tonic::Code::InvalidArgument,
            Error::Conflict(_) => tonic::Code::FailedPrecondition,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Error::PermissionDenied(_) => tonic::Code::PermissionDenied,
            Error::TooManyRequests(_) | Error::TooLarge(_) => tonic::Code::ResourceExhausted,
            Error::Storage(_) | Error::ShuttingDown => tonic::Code::Unavailable,
        }
    }

    /// The HTTP status for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidField { .. } => StatusCode::BAD_REQUEST,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Storage(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

// The status comes from `Error::http_status`; the CLI reads the body back with this same type.
/// What every failed API call answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong; for an invalid parameter or field, `<name>: <reason>`.
    pub error: String,
}

impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        let body = ErrorBody {
            error: self.to_string(),
        };
        let mut response = (self.http_status(), axum::Json(body)).into_response();
        if matches!(self, Error::Unauthenticated(_)) {
            // RFC 6750: say which scheme the API expects.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"warden\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_maps_to_invalid_argument_and_400() {
        let e = Error::invalid("records[3].client_address", "\"abc\" is not an IP address");
        assert_eq!(
            e.to_string(),
            "records[3].client_address: \"abc\" is not an IP address"
        );
        assert_eq!(e.grpc_code(), tonic::Code::InvalidArgument);
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn storage_failure_is_unavailable_never_ok() {
        let e = Error::Storage("disk full".into());
        assert_eq!(e.grpc_code(), tonic::Code::Unavailable);
        assert_eq!(e.http_status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
