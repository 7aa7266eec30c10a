//! The HTTP API end to end, against a real database that a running daemon
//! built from radclient sessions and NetFlow v5 exports (`usage_lab`):
//! `/api/v1/usage` is `flowtally report --format json` to the byte for the
//! same arguments, every endpoint answers with the lab's figures, bad
//! parameters are a 400 naming the parameter, and a listener off loopback
//! serves its API only to the token's holder.

mod support;
#[path = "support/usage_lab.rs"]
mod usage_lab;

use std::{fs, process::Command};

use serde_json::Value;
use support::{BIN, Flowtally, NetNs, TempDir, http_get, path_str, require_root};
use usage_lab::{UsageLab, expected};

const TARIFF: &str = r#"
currency = "EUR"
[[period]]
name = "flat"
price_per_gb = 2.5
price_per_hour = 0.01
"#;

/// A lab whose `[http] tariffs` directory holds `flat.toml`.
fn lab_with_tariffs() -> (UsageLab, TempDir) {
    let conf = TempDir::new();
    let tariffs = conf.path("tariffs");
    fs::create_dir(&tariffs).unwrap();
    fs::write(tariffs.join("flat.toml"), TARIFF).unwrap();
    let config = conf.path("flowtally.toml");
    fs::write(
        &config,
        format!("[http]\ntariffs = \"{}\"\n", path_str(&tariffs)),
    )
    .unwrap();
    (UsageLab::start(&["--config", path_str(&config)]), conf)
}

#[test]
fn usage_is_report_format_json_for_the_same_arguments() {
    let (lab, conf) = lab_with_tariffs();
    let from = (lab.t - 3600).to_string();
    let to = (lab.t + 3600).to_string();
    let tariff = conf.path("tariffs/flat.toml");
    let cases: [(&str, Vec<&str>); 9] = [
        ("", vec![]),
        ("&by=session", vec!["--by", "session"]),
        ("&by=subnet", vec!["--by", "subnet"]),
        (
            "&by=subnet&subnet_prefix_v4=30",
            vec!["--by", "subnet", "--subnet-prefix-v4", "30"],
        ),
        ("&user=alice", vec!["--user", "alice"]),
        ("&ip=198.18.100.8/29", vec!["--ip", "198.18.100.8/29"]),
        ("&tariff=flat", vec!["--tariff", path_str(&tariff)]),
        ("&percentile=95", vec!["--percentile", "95"]),
        ("&by=class", vec!["--by", "class"]),
    ];
    for (query, flags) in cases {
        let api = lab.get(&format!("/api/v1/usage?from={from}&to={to}{query}"));
        assert_eq!(api.status, 200, "{query}: {}", api.body);
        assert!(
            api.head.contains("content-type: application/json"),
            "{}",
            api.head
        );
        let mut args = vec!["--from", &from, "--to", &to, "--format", "json"];
        args.extend(flags);
        assert_eq!(api.body, lab.report(&args), "{query}");
    }
    // And the figures are the lab's.
    let alice = lab
        .get(&format!(
            "/api/v1/usage?from={from}&to={to}&user=alice&tariff=flat"
        ))
        .json();
    let line = &alice["groups"][0];
    assert_eq!(line["user"], "alice");
    let (down, up) = expected(Some("alice"));
    assert_eq!(line["bytes_down"], down);
    assert_eq!(line["bytes_up"], up);
    assert_eq!(alice["groups"].as_array().unwrap().len(), 1);
    assert!(line["cost"].as_f64().unwrap() > 0.0, "{line}");
    let nobody = lab
        .get(&format!(
            "/api/v1/usage?from={from}&to={to}&ip=198.18.100.9"
        ))
        .json();
    assert_eq!(nobody["groups"][0]["user"], "(unattributed)");
    assert_eq!(nobody["totals"]["bytes"], expected(None).0);
}

#[test]
fn every_endpoint_answers_with_the_daemons_figures() {
    let (lab, _conf) = lab_with_tariffs();
    let t = lab.t;

    let whois = lab
        .get(&format!("/api/v1/whois?ip=198.18.100.1&at={t}"))
        .json();
    assert_eq!(whois["owner"]["user"], "alice", "{whois}");
    assert_eq!(whois["owner"]["session_id"], "alice-1");
    let before = lab
        .get(&format!("/api/v1/whois?ip=198.18.100.1&at={}", t - 200))
        .json();
    assert_eq!(before["owner"], Value::Null, "{before}");
    let relative = lab.get("/api/v1/whois?ip=198.18.100.2&at=now").json();
    assert_eq!(relative["owner"], Value::Null, "bob's session has stopped");
    let port = lab
        .get(&format!("/api/v1/whois?ip=198.18.100.1:4000&at={t}"))
        .json();
    assert_eq!(
        port["bindings"],
        serde_json::json!([]),
        "no NAT binding: {port}"
    );

    let sessions = lab.get("/api/v1/sessions?user=alice").json();
    let list = sessions["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!(list[0]["addresses"][0]["net"], "198.18.100.1/32");
    assert_eq!(list[0]["terminate_cause"], "User-Request");
    assert_ne!(list[0]["stop"], Value::Null);
    let by_ip = lab.get("/api/v1/sessions?ip=198.18.100.2").json();
    assert_eq!(by_ip["sessions"][0]["user"], "bob", "{by_ip}");
    let later = lab
        .get(&format!("/api/v1/sessions?from={}", t + 3600))
        .json();
    assert_eq!(later["sessions"], Value::Array(vec![]), "{later}");

    let exporters = lab.get("/api/v1/exporters").json();
    let list = exporters["exporters"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{exporters}");
    let all: u64 = [Some("alice"), Some("bob"), None]
        .into_iter()
        .map(|u| expected(u).0 + expected(u).1)
        .sum();
    assert_eq!(list[0]["exporter"], "127.0.0.1");
    assert_eq!(list[0]["datagrams"], lab.exports);
    assert_eq!(list[0]["records"], lab.records);
    assert_eq!(list[0]["bytes"], all);
    // The lab's v5 sequence numbers run without a gap.
    assert_eq!(
        list[0]["estimated_loss"],
        serde_json::json!({ "records": 0, "exports": 0 })
    );
    assert_eq!(list[0]["restarts"], 0);
    assert!(
        list[0]["seconds_since"].as_u64().unwrap() < 60,
        "{exporters}"
    );

    let top = lab.get("/api/v1/top?by=user&window=15m").json();
    let users: Vec<(&str, u64)> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["user"].as_str().unwrap(), t["bytes"].as_u64().unwrap()))
        .collect();
    let total = |user| expected(Some(user)).0 + expected(Some(user)).1;
    assert_eq!(users, [("alice", total("alice")), ("bob", total("bob"))]);
    assert_eq!(top["exact"], true);
    let ips = lab.get("/api/v1/top?by=ip&limit=1").json();
    assert_eq!(ips["top"][0]["ip"], "198.18.100.1", "{ips}");
    assert_eq!(ips["top"].as_array().unwrap().len(), 1);

    let series = lab
        .get(&format!(
            "/api/v1/series?user=alice&from={}&to={}&step=10m",
            t - 3600,
            t + 3600
        ))
        .json();
    let steps = series["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 13, "two hours of 10-minute steps, aligned");
    let sum = |key: &str| steps.iter().map(|s| s[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("down"), sum("up")), expected(Some("alice")));
    assert_eq!(series["step_s"], 600);

    assert_eq!(lab.get("/api/v1/tariffs").json()["tariffs"][0], "flat");
    assert!(lab.get("/api/v1/").json()["endpoints"].is_array());

    let page = lab.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/console.js"), "{}", page.body);
    assert!(
        page.head
            .contains("content-security-policy: default-src 'none'")
    );
    assert_eq!(lab.get("/console.js").status, 200);
    assert_eq!(lab.get("/console.css").status, 200);
    let metrics = lab.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("flowtally_usage_rows_total"));
    let missing = lab.get("/api/v1/nothing");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());
}

#[test]
fn bad_parameters_are_a_400_in_json_naming_the_parameter() {
    let (lab, _conf) = lab_with_tariffs();
    for (path, parameter) in [
        ("/api/v1/usage?from=yesterday", "from"),
        ("/api/v1/usage?to=-1x", "to"),
        ("/api/v1/usage?from=now&to=-1h", "from"),
        ("/api/v1/usage?by=country", "by"),
        ("/api/v1/usage?by=planet", "by"),
        ("/api/v1/usage?percentile=101", "percentile"),
        ("/api/v1/usage?percentile=95", "percentile"),
        ("/api/v1/usage?by=org", "by"),
        ("/api/v1/usage?ip=300.1.2.3", "ip"),
        ("/api/v1/usage?tariff=nope", "tariff"),
        ("/api/v1/usage?tariff=../flowtally", "tariff"),
        ("/api/v1/usage?subnet_prefix_v4=33", "subnet_prefix_v4"),
        ("/api/v1/usage?frm=-1h", "frm"),
        ("/api/v1/usage?user=a&user=b", "user"),
        ("/api/v1/whois", "ip"),
        ("/api/v1/whois?ip=198.18.100.1:http", "ip"),
        (
            "/api/v1/whois?ip=198.18.100.1:4000&protocol=sctp",
            "protocol",
        ),
        ("/api/v1/whois?ip=alice", "ip"),
        ("/api/v1/whois?ip=198.18.100.1&at=soon", "at"),
        ("/api/v1/sessions?limit=0", "limit"),
        ("/api/v1/sessions?from=-1h&to=-2h", "from"),
        ("/api/v1/series?step=fortnightly", "step"),
        ("/api/v1/series?from=0&to=now&step=1s", "step"),
        ("/api/v1/top?window=1h", "window"),
        ("/api/v1/top?by=exporter", "by"),
        ("/api/v1/top?limit=many", "limit"),
    ] {
        let response = lab.get(path);
        assert_eq!(response.status, 400, "{path}: {}", response.body);
        let body = response.json();
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
}

#[test]
fn a_listener_off_loopback_needs_a_token_file() {
    let out = Command::new(BIN)
        .args(["check-config", "--http", "198.18.0.1:9725"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.token_file"), "{err}");
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn off_loopback_the_api_and_metrics_answer_only_the_token() {
    require_root();
    let ns = NetNs::new();
    ns.ip(&["addr", "add", "198.18.77.1/32", "dev", "lo"]);
    let dir = TempDir::new();
    let token = dir.path("token");
    fs::write(&token, "  k9-Zq.7\n").unwrap();
    for (metrics_public, metrics_status) in [(false, 401), (true, 200)] {
        let config = dir.path("flowtally.toml");
        fs::write(
            &config,
            format!(
                "[http]\nlisten = \"198.18.77.1:0\"\ntoken_file = \"{}\"\nmetrics_public = {metrics_public}\n",
                path_str(&token)
            ),
        )
        .unwrap();
        let db = dir.path(&format!("ft-{metrics_public}.db"));
        let flowtally = Flowtally::start(
            Some(&ns),
            &[
                "--config",
                path_str(&config),
                "--mode",
                "socket",
                "--netflow",
                "127.0.0.1:0",
                "--db",
                path_str(&db),
            ],
        );
        let addr = flowtally.ready.http.unwrap();
        assert_eq!(addr.ip().to_string(), "198.18.77.1");
        ns.enter(|| {
            let get = |path: &str, token: Option<&str>| {
                let bearer = token.map(|t| format!("Bearer {t}"));
                let headers: Vec<(&str, &str)> = bearer
                    .iter()
                    .map(|b| ("Authorization", b.as_str()))
                    .collect();
                http_get(addr, path, &headers)
            };
            for path in [
                "/api/v1/exporters",
                "/api/v1/usage",
                "/api/v1/whois?ip=1.2.3.4",
            ] {
                for wrong in [None, Some("k9-Zq.8"), Some("k9-Zq"), Some("")] {
                    let response = get(path, wrong);
                    assert_eq!(response.status, 401, "{path} with {wrong:?}");
                    assert!(response.head.contains("www-authenticate: Bearer"));
                    assert!(response.json()["error"].is_string());
                }
                assert_eq!(get(path, Some("k9-Zq.7")).status, 200, "{path}");
            }
            assert_eq!(get("/metrics", None).status, metrics_status);
            assert_eq!(get("/metrics", Some("k9-Zq.7")).status, 200);
            assert_eq!(
                get("/", None).status,
                200,
                "the console's page holds no data"
            );
        });
    }
}
