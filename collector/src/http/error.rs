//! The API's errors: JSON with a status code, naming the parameter when one
//! was wrong. `{"error": "...", "parameter": "from"}`.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub parameter: Option<String>,
    pub message: String,
}

impl ApiError {
    /// 400: `name` was wrong.
    pub fn parameter(name: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            parameter: Some(name.to_owned()),
            message: message.into(),
        }
    }

    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            parameter: None,
            message: message.into(),
        }
    }

    /// 500, logged: the server's own failure (a database it cannot read).
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::warn!("http: {message}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(parameter) = self.parameter {
            body["parameter"] = parameter.into();
        }
        (self.status, Json(body)).into_response()
    }
}
