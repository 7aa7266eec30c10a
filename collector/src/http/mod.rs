//! The one HTTP listener (`--http`, config `[http]`): `/metrics` for
//! Prometheus, the JSON API under `/api/v1/` ([`api`]) and the console at
//! `/` ([`console`]), on axum and hyper.
//!
//! Rules:
//! - HTTP/1.1 only; a client has [`HEADER_TIMEOUT`] to send a request head,
//!   a request [`REQUEST_TIMEOUT`] to be answered, a connection
//!   [`CONNECTION_LIFETIME`]; at most [`MAX_CONNECTIONS`] at once (more
//!   wait to be accepted). Bodies are not read: every route is a GET, and a
//!   body over [`MAX_BODY`] is refused outright.
//! - With a token (`http.token_file`, required off loopback), the API and
//!   `/metrics` answer only `Authorization: Bearer <token>`; `/metrics`
//!   stays open with `http.metrics_public`. The console's own files carry no
//!   data and are always served; the console asks for the token.
//! - The console's pages may load only from this listener
//!   (Content-Security-Policy): nothing leaves for another host.

pub mod api;
mod console;
pub mod error;
pub mod params;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::{net::TcpListener, sync::Semaphore};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use self::error::ApiError;
use crate::{config::HttpConfig, metrics::Metrics, timestamp::Timestamp};

pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for a report over months of usage.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_BODY: usize = 1024;
/// Database reads at once (a report, a whois): the machine's cores, not a
/// queue of clients, set the pace.
pub const MAX_READS: usize = 2;

/// What the handlers read.
pub struct Shared {
    pub registry: Arc<Registry>,
    pub db: PathBuf,
    pub access: Access,
    pub tariffs: Option<PathBuf>,
    pub orgs: Option<PathBuf>,
    /// Live figures: exporters and the top talkers of the latest flushes.
    pub metrics: Metrics,
    /// Per exporter: templates held and compiled.
    pub templates: Box<dyn Fn() -> BTreeMap<IpAddr, (usize, usize)> + Send + Sync>,
    pub clock: fn() -> Timestamp,
    pub reads: Semaphore,
}

/// Who may read what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Required of API (and private `/metrics`) requests when set.
    pub token: Option<String>,
    pub metrics_public: bool,
}

impl Access {
    /// From the configuration, reading the token file.
    pub fn load(config: &HttpConfig) -> anyhow::Result<Self> {
        let token = config.token_file.as_deref().map(read_token).transpose()?;
        Ok(Self {
            token,
            metrics_public: config.metrics_public,
        })
    }

    /// Whether a request with this `Authorization` header may read.
    fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .is_some_and(|given| same(given, token.as_bytes()))
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("http.token_file {}", path.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()),
        "http.token_file {}: the token must be one word of printable ASCII",
        path.display()
    );
    Ok(token.to_owned())
}

/// Equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn router(shared: Arc<Shared>) -> Router {
    let metrics = Router::new().route("/metrics", get(metrics));
    let metrics = if shared.access.metrics_public {
        metrics
    } else {
        metrics.layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authorize,
        ))
    };
    let api = api::routes().layer(middleware::from_fn_with_state(
        Arc::clone(&shared),
        authorize,
    ));
    Router::new()
        .merge(metrics)
        .merge(api)
        .merge(console::routes())
        .fallback(not_found)
        .with_state(shared)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
}

/// Serves `router` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, router: Router) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = Arc::clone(&connections)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                tracing::warn!("http: accept failed: {err}");
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(err)) => tracing::debug!("http: connection: {err}"),
                Err(_) => tracing::debug!("http: connection closed after its lifetime"),
                Ok(Ok(())) => {}
            }
        });
    }
}

async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if shared.access.allows(authorization) {
        return next.run(request).await;
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required (Authorization: Bearer <token from http.token_file>)",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &shared.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => ApiError::internal("cannot encode the metrics").into_response(),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no such page: {} (try /, /metrics or /api/v1/)",
            request.uri().path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_let_in() {
        let access = Access {
            token: Some("s3cret".into()),
            metrics_public: false,
        };
        assert!(access.allows(Some(b"Bearer s3cret")));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret ",
            b"bearer s3cret",
            b"Basic s3cret",
            b"s3cret",
            b"",
        ] {
            assert!(!access.allows(Some(wrong)), "{wrong:?}");
        }
        assert!(!access.allows(None));
        let open = Access {
            token: None,
            metrics_public: false,
        };
        assert!(open.allows(None));
    }
}
