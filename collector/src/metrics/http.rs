//! A minimal HTTP/1.1 endpoint for Prometheus: `GET /metrics` and nothing
//! else. One request per connection, bounded in size and time.

use std::{sync::Arc, time::Duration};

use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `registry` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                tracing::warn!("metrics: accept failed: {err}");
                continue;
            }
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            if let Err(err) =
                tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &registry)).await
            {
                tracing::debug!("metrics: client too slow: {err}");
            }
        });
    }
}

async fn respond(mut stream: TcpStream, registry: &Registry) {
    let mut head = Vec::with_capacity(512);
    let request = loop {
        let mut chunk = [0; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        match parse_request(&head) {
            Parsed::Incomplete if head.len() < MAX_REQUEST_HEAD => continue,
            Parsed::Incomplete => break Request::Bad,
            Parsed::Done(request) => break request,
        }
    };
    let (status, content_type, body) = match request {
        Request::Get(path) if path == "/metrics" => {
            let mut body = String::new();
            match encode(&mut body, registry) {
                Ok(()) => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => ("500 Internal Server Error", "text/plain", String::new()),
            }
        }
        Request::Get(_) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        Request::OtherMethod => ("405 Method Not Allowed", "text/plain", String::new()),
        Request::Bad => ("400 Bad Request", "text/plain", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A GET (or HEAD-less GET) for this path, query string removed.
    Get(String),
    OtherMethod,
    Bad,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Incomplete,
    Done(Request),
}

/// Parses the request line once the whole head (up to the blank line) has
/// arrived; a body is never read.
fn parse_request(head: &[u8]) -> Parsed {
    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
        return Parsed::Incomplete;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let request = match (parts.next(), parts.next(), parts.next()) {
        (Some(b"GET"), Some(target), Some(version)) if version.starts_with(b"HTTP/1.") => {
            let path = target.split(|&b| b == b'?').next().unwrap_or_default();
            match std::str::from_utf8(path) {
                Ok(path) => Request::Get(path.to_owned()),
                Err(_) => Request::Bad,
            }
        }
        (Some(_), Some(_), Some(version)) if version.starts_with(b"HTTP/1.") => {
            Request::OtherMethod
        }
        _ => Request::Bad,
    };
    Parsed::Done(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_is_a_get_of_metrics() {
        let head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            parse_request(head),
            Parsed::Done(Request::Get("/metrics".into()))
        );
    }

    #[test]
    fn a_head_without_its_blank_line_is_incomplete() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Incomplete
        );
    }

    #[test]
    fn other_methods_and_garbage_are_told_apart() {
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Done(Request::OtherMethod)
        );
        assert_eq!(
            parse_request(b"\x16\x03\x01 hello\r\n\r\n"),
            Parsed::Done(Request::Bad)
        );
    }
}
