//! What the Debian package installs besides the binary
//! (`collector/packaging/`): the default configuration passes
//! `check-config` and keeps `/metrics` local, the man page documents every
//! flag of `flowtally run`, and the unit runs what the man page says with
//! the privileges the daemon drops. `cargo xtask deb` (part of `cargo xtask
//! test`) builds the package and checks it as installed.

mod support;

use std::{collections::BTreeSet, fs, path::PathBuf, process::Command};

use support::BIN;

fn packaging(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_default_configuration_passes_check_config_and_keeps_metrics_local() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/flowtally.toml");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        effective.contains("[http]\nlisten = \"127.0.0.1:9725\""),
        "{effective}"
    );
    assert!(
        effective.contains("db = \"/var/lib/flowtally/flowtally.db\""),
        "{effective}"
    );
}

/// `--flag` words of a text.
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_man_page_documents_every_flag_of_run() {
    let help = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let man = packaging("flowtally.8").replace("\\-", "-");
    let documented = flags(&man);
    let missing: Vec<_> = flags(&help)
        .into_iter()
        .filter(|f| !["--help", "--version"].contains(&f.as_str()) && !documented.contains(f))
        .collect();
    assert!(flags(&help).len() >= 10, "{help}");
    assert_eq!(missing, Vec::<String>::new(), "not in flowtally.8");
}

#[test]
fn the_unit_grants_only_what_setting_up_needs_and_runs_the_packaged_config() {
    let unit = packaging("flowtally.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}="))
            .to_owned()
    };
    let caps = "CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_SETPCAP";
    assert_eq!(value("AmbientCapabilities"), caps);
    assert_eq!(value("CapabilityBoundingSet"), caps);
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "flowtally"),
    ] {
        assert_eq!(value(key), want, "{key}");
    }
    assert_eq!(
        value("ExecStart"),
        "/usr/bin/flowtally run --config /etc/flowtally/flowtally.toml"
    );
}
