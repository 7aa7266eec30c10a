//! A real clickhouse-server (Debian's package) for one test: its own config,
//! data directory and ports, optionally inside a network namespace; killed
//! on drop.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{NetNs, PATIENCE, TempDir, eventually, in_netns, path_str, sh};

pub struct ClickHouse {
    child: Option<Child>,
    dir: TempDir,
    netns: Option<String>,
    /// The HTTP interface.
    pub http: SocketAddr,
    /// The HTTPS interface, when started with a certificate.
    pub https: Option<SocketAddr>,
}

/// What an HTTPS-serving server is started with.
struct Tls<'a> {
    https: SocketAddr,
    cert: &'a Path,
    key: &'a Path,
    user: &'a str,
    password: &'a str,
}

/// A CA made for one test with the openssl CLI, and a server certificate it
/// signed for the name `localhost` only (not 127.0.0.1).
pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    /// A CA called `name`.
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new();
        let subject = format!("/CN={name}");
        let p = |name: &str| dir.path(name).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", &subject];
        let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
        ca.extend_from_slice(&ec);
        ca.extend_from_slice(&["-keyout", &ca_key, "-out", &ca_pem]);
        sh("openssl", &ca);
        let (key, csr, cert, ext) = (p("server.key"), p("server.csr"), p("server.pem"), p("ext"));
        let mut request = vec![
            "req",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &key,
            "-out",
            &csr,
        ];
        request.extend_from_slice(&ec);
        sh("openssl", &request);
        fs::write(
            &ext,
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        sh(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
        );
        Self { dir }
    }

    /// The CA certificate (PEM), for `clickhouse.ca_file`.
    pub fn ca(&self) -> PathBuf {
        self.dir.path("ca.pem")
    }

    fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.path("server.pem"), self.dir.path("server.key"))
    }
}

impl ClickHouse {
    /// On loopback, on free ports.
    pub fn start() -> Self {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        Self::launch(None, http, "127.0.0.1", free_port(), None)
    }

    /// On loopback, with HTTPS too (the certificate `ca` signed) and a user
    /// `user` whose password is `password`.
    pub fn start_https(ca: &TestCa, user: &str, password: &str) -> Self {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let https = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let (cert, key) = ca.server();
        let tls = Tls {
            https,
            cert: &cert,
            key: &key,
            user,
            password,
        };
        Self::launch(None, http, "127.0.0.1", free_port(), Some(tls))
    }

    /// Inside `netns`, on all its addresses and the standard ports; `addr`
    /// is the one tests use.
    pub fn start_in(netns: &NetNs, addr: [u8; 4]) -> Self {
        let http = SocketAddr::from((addr, 8123));
        Self::launch(Some(netns.name.clone()), http, "0.0.0.0", 9000, None)
    }

    fn launch(
        netns: Option<String>,
        http: SocketAddr,
        listen: &str,
        tcp_port: u16,
        tls: Option<Tls>,
    ) -> Self {
        let dir = TempDir::new();
        let root = dir.0.display().to_string();
        // Poco's openSSL section: the server's certificate, no client's.
        let https = tls.as_ref().map_or(String::new(), |tls| {
            format!(
                "<https_port>{}</https_port>
  <openSSL><server><certificateFile>{}</certificateFile>
    <privateKeyFile>{}</privateKeyFile><verificationMode>none</verificationMode>
    <loadDefaultCAFile>false</loadDefaultCAFile>
    <disableProtocols>sslv2,sslv3</disableProtocols></server></openSSL>",
                tls.https.port(),
                path_str(tls.cert),
                path_str(tls.key)
            )
        });
        let user = tls.as_ref().map_or(String::new(), |tls| {
            format!(
                "<{0}><password>{1}</password><networks><ip>::/0</ip></networks>
    <profile>default</profile><quota>default</quota></{0}>",
                tls.user, tls.password
            )
        });
        fs::write(
            dir.path("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/server.log</log><errorlog>{root}/error.log</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  {https}
  <listen_host>{host}</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <users_config>{root}/users.xml</users_config>
  <mark_cache_size>5368709120</mark_cache_size>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
</yandex>
"#,
                http_port = http.port(),
                host = listen,
            ),
        )
        .unwrap();
        fs::write(
            dir.path("users.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>::/0</ip></networks>
    <profile>default</profile><quota>default</quota></default>{user}</users>
  <quotas><default></default></quotas>
</yandex>
"#
            ),
        )
        .unwrap();
        let mut this = Self {
            child: None,
            dir,
            netns,
            http,
            https: tls.map(|tls| tls.https),
        };
        this.resume();
        this
    }

    /// Starts the server again on the same data and ports.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let config = format!("--config-file={}", self.dir.path("config.xml").display());
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "clickhouse-server", &config]);
                c
            }
            None => {
                let mut c = Command::new("clickhouse-server");
                c.arg(&config);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server (Debian package clickhouse-server) is installed");
        self.child = Some(child);
        eventually("clickhouse-server to answer /ping", || {
            self.http("GET", "/ping", "")
                .is_some_and(|body| body == "Ok.\n")
        });
    }

    /// Kills the server as a crash would.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The HTTPS URL under `host` (the certificate names `localhost`).
    pub fn https_url(&self, host: &str) -> String {
        let port = self.https.expect("started with HTTPS").port();
        format!("https://{host}:{port}")
    }

    /// The result of `sql` in TSV, or a panic with ClickHouse's error.
    pub fn query(&self, sql: &str) -> String {
        self.http("POST", "/", sql)
            .unwrap_or_else(|| panic!("ClickHouse query failed: {sql}"))
    }

    /// One HTTP request; `None` if the server cannot be reached or answers
    /// with an error.
    fn http(&self, method: &str, path: &str, body: &str) -> Option<String> {
        let request = || {
            let mut stream =
                TcpStream::connect_timeout(&self.http, Duration::from_millis(500)).ok()?;
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nHost: ch\r\nConnection: close\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            let (head, body) = response.split_once("\r\n\r\n")?;
            if !head.starts_with("HTTP/1.1 200") {
                eprintln!("ClickHouse: {head}\n{body}");
                return None;
            }
            // 18.16 answers queries chunked.
            Some(if head.contains("chunked") {
                unchunk(body)
            } else {
                body.to_owned()
            })
        };
        match &self.netns {
            Some(ns) => in_netns(ns, request),
            None => request(),
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
