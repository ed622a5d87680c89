//! The explorer's one error type: every refusal names the request field at fault and maps to a 4xx (or, for
//! a failure of the server's own work, a 500) JSON answer `{ "error": ..., "field": ... }`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is missing, of the wrong type or out of range.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field (JSON key) at fault.
        field: String,
        /// Why it was refused, with the allowed values or range.
        message: String,
    },
    /// The body is not the JSON the endpoint expects (syntax, type, unknown key) or is too large.
    #[error("{message}")]
    Body {
        /// The HTTP status (400, 413, 415, 422).
        status: StatusCode,
        /// The parser's message, which names the key or position.
        message: String,
    },
    /// The named run or training does not exist.
    #[error("{field}: {message}")]
    NotFound {
        /// The request field that named it.
        field: String,
        /// What was not found.
        message: String,
    },
    /// The client already trains (one training per client), or the server's training slots are full.
    #[error("{field}: {message}")]
    Busy {
        /// The request field (the client id).
        field: String,
        /// Why.
        message: String,
    },
    /// The computation itself failed (a solver or the engine).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// A refused value of `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Body { status, .. } => *status,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Busy { .. } => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. }
            | ApiError::NotFound { field, .. }
            | ApiError::Busy { field, .. } => Some(field),
            ApiError::Body { .. } | ApiError::Internal(_) => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string(), "field": self.field() });
        (self.status(), Json(body)).into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::Body {
            status: rejection.status(),
            message: rejection.body_text(),
        }
    }
}

/// Checks that `value` lies in `min..=max`.
pub fn check_range(field: &str, value: i64, min: i64, max: i64) -> Result<usize, ApiError> {
    if value < min || value > max {
        return Err(ApiError::invalid(
            field,
            format!("{value} is outside {min}..={max}"),
        ));
    }
    Ok(value as usize)
}

/// Checks that `value` is finite and lies in `min..=max`.
pub fn check_real(field: &str, value: f64, min: f64, max: f64) -> Result<f64, ApiError> {
    if !value.is_finite() || value < min || value > max {
        return Err(ApiError::invalid(
            field,
            format!("{value} is not a finite number in [{min}, {max}]"),
        ));
    }
    Ok(value)
}
