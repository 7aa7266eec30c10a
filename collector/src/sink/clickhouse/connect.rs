//! How ClickHouse is reached: plain HTTP for `http://` URLs; for
//! `https://`, TLS (rustls) that verifies the server's certificate and name
//! against the system's CA roots, or only against the CAs of
//! `clickhouse.ca_file`. No option skips verification: usage and
//! credentials go to the server the URL names or nowhere.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use clickhouse::Client;
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject as _},
};

/// Where ClickHouse is and who writes or reads it.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    pub url: &'a str,
    pub database: &'a str,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// PEM CA certificates trusted instead of the system's (https only).
    pub ca_file: Option<&'a Path>,
}

/// Idle connections close before the server's keep-alive timeout (3 s
/// in 18.16) would close them under a request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A client for `endpoint`: RowBinary without schema validation (which
/// needs a newer server than Debian's 18.16) and without compression. Fails
/// only when the CA roots cannot be read.
pub fn client(endpoint: &Endpoint) -> anyhow::Result<Client> {
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    let mut pool = HttpClient::builder(TokioExecutor::new());
    pool.pool_idle_timeout(POOL_IDLE_TIMEOUT);
    let client = if endpoint.url.starts_with("https://") {
        http.enforce_http(false);
        let tls = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots(endpoint.ca_file)?)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Client::with_http_client(pool.build(https))
    } else {
        Client::with_http_client(pool.build(http))
    };
    let mut client = client
        .with_url(endpoint.url)
        .with_database(endpoint.database)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    if let Some(user) = endpoint.user {
        client = client.with_user(user);
    }
    if let Some(password) = endpoint.password {
        client = client.with_password(password);
    }
    Ok(client)
}

/// What to check when `err` is a TLS failure (rustls says what failed,
/// not what was expected); empty otherwise.
pub fn tls_hint(err: &anyhow::Error) -> &'static str {
    // rustls's error comes up inside io::Errors (tokio-rustls's, then
    // hyper-rustls's), whose `source` skips what they wrap.
    let tls = |cause: &(dyn std::error::Error + 'static)| {
        let mut cause = cause;
        loop {
            if cause.is::<rustls::Error>() {
                return true;
            }
            match cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => cause = inner,
                None => return false,
            }
        }
    };
    if err.chain().any(tls) {
        " (TLS: the server's certificate must chain to a CA of clickhouse.ca_file, or of the \
         system's roots without it, and must name the URL's host)"
    } else {
        ""
    }
}

/// ring's cryptography: TLS 1.3 and 1.2 with the usual suites and groups.
/// rustls deprecates it for lacking post-quantum key exchange (X25519MLKEM768,
/// which its aws-lc-rs provider has); that provider builds a large C library
/// (minutes on the 2-core build machine), and ClickHouse 18.16's OpenSSL
/// could not negotiate it anyway.
#[expect(
    deprecated,
    reason = "post-quantum key exchange is not worth aws-lc-rs here"
)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The CAs of `ca_file`, else the system's.
fn roots(ca_file: Option<&Path>) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let what = || format!("clickhouse.ca_file {}", path.display());
            for cert in CertificateDer::pem_file_iter(path).with_context(what)? {
                roots
                    .add(cert.with_context(what)?)
                    .with_context(|| format!("{}: a certificate rustls cannot use", what()))?;
            }
            if roots.is_empty() {
                bail!("{}: no PEM certificate in it", what());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                bail!(
                    "no CA certificates in the system's store (the Debian package \
                     ca-certificates) to verify ClickHouse with; give clickhouse.ca_file{}",
                    found
                        .errors
                        .first()
                        .map(|err| format!(" ({err})"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(roots)
}
