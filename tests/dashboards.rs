//! What the Debian package ships for Prometheus and Grafana
//! (`collector/packaging/`): the alerting rules pass `promtool check rules`
//! and their unit tests (`tests/prometheus/alerts_test.yml`), the dashboard
//! is JSON, and both name only metrics a live daemon exports (with XDP and
//! ClickHouse on, so that every family is registered).

mod support;

use std::{collections::BTreeSet, fs, path::PathBuf, process::Command};

use support::{Flowtally, NetNs, TempDir, http_get, path_str, require_root};

fn packaging(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(name)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian prometheus) is installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {said}");
    said
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let rules = packaging("prometheus-alerts.yml");
    let said = promtool(&["check", "rules", path_str(&rules)]);
    assert!(said.contains("SUCCESS: 12 rules found"), "{said}");
    let tests =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/prometheus/alerts_test.yml");
    promtool(&["test", "rules", path_str(&tests)]);
}

/// `flowtally_*` names in `text`, outside `#` comments.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find("flowtally_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

/// The sample names of every family in an exposition, from its `# TYPE`
/// lines: families without samples yet (no RADIUS request so far) count.
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            match kind {
                "counter" => vec![format!("{name}_total")],
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                _ => vec![name.to_owned()],
            }
        })
        .collect()
}

#[test]
#[ignore = "needs root: run `cargo xtask test`"]
fn the_dashboard_and_alerts_name_only_metrics_the_daemon_exports() {
    require_root();
    let dashboard = fs::read_to_string(packaging("grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<&str> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 15, "{} queries", exprs.len());
    let in_dashboard = metric_names(&exprs.join("\n"));
    let in_rules = metric_names(&fs::read_to_string(packaging("prometheus-alerts.yml")).unwrap());

    let ns = NetNs::new();
    let tmp = TempDir::new();
    let config = tmp.path("flowtally.toml");
    // A ClickHouse nobody listens on: its metrics are registered all the same.
    fs::write(
        &config,
        "user_metrics_top = 3\n[clickhouse]\nurl = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let flowtally = Flowtally::start(
        Some(&ns),
        &[
            "--config",
            path_str(&config),
            "--iface",
            "lo",
            "--mode",
            "xdp",
            "--netflow",
            "127.0.0.1:0",
            "--radius",
            "127.0.0.1:0",
            "--radius-secret",
            "s",
            "--http",
            "127.0.0.1:0",
            "--db",
            path_str(&tmp.path("ft.db")),
        ],
    );
    let addr = flowtally.ready.http.unwrap();
    let scrape = ns.enter(|| http_get(addr, "/metrics", &[]));
    assert_eq!(scrape.status, 200);
    let live = exported(&scrape.body);
    assert!(
        live.contains("flowtally_xdp_frames_total"),
        "XDP on: {live:?}"
    );
    assert!(live.contains("flowtally_clickhouse_spool_rows"), "{live:?}");

    for (what, names) in [("dashboard", &in_dashboard), ("alerting rules", &in_rules)] {
        let unknown: Vec<&String> = names.iter().filter(|n| !live.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "the {what} name metrics nobody exports: {unknown:?}"
        );
    }
    // RADIUS latency (issue 20), which the dashboard plots.
    assert!(
        in_dashboard.contains("flowtally_radius_response_seconds_bucket"),
        "{in_dashboard:?}"
    );
    // Every area the issue names has a panel.
    for family in [
        "flowtally_records_total",
        "flowtally_unattributed_bytes_total",
        "flowtally_dropped_records_total",
        "flowtally_templates_compiled",
        "flowtally_radius_requests_total",
        "flowtally_clickhouse_spool_rows",
    ] {
        assert!(in_dashboard.contains(family), "no panel uses {family}");
    }
}
