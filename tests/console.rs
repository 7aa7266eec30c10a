//! The console in a real browser (Debian's Chromium driven by Playwright
//! from PyPI, `tests/browser/console.py`) against a running daemon with
//! known usage (`usage_lab`): the page loads from the binary, a search for
//! a user shows their bytes, the usage chart and the usage by destination
//! class (the lab's one peer is in class `transit`), a search for an address
//! shows who held it, the top users and exporters pages list the lab's,
//! and no request leaves the listener's host.

mod support;
#[path = "support/usage_lab.rs"]
mod usage_lab;

use std::{path::PathBuf, process::Command};

use usage_lab::{UsageLab, expected};

#[test]
fn the_console_finds_users_and_addresses_in_a_real_browser() {
    let dir = support::TempDir::new();
    let config = dir.path("flowtally.toml");
    std::fs::write(
        &config,
        "[[classes]]\nname = \"transit\"\nnetworks = [\"198.51.100.0/24\"]\n",
    )
    .unwrap();
    let lab = UsageLab::start(&["--config", support::path_str(&config)]);
    let total = |user| expected(Some(user)).0 + expected(Some(user)).1;
    let expect = serde_json::json!({
        "from": lab.t - 3600,
        "to": lab.t + 3600,
        "at": lab.t,
        "users": {"alice": total("alice"), "bob": total("bob")},
        "classes": ["transit"],
        "ip": "198.18.100.1",
        "ip_user": "alice",
        "exporter": "127.0.0.1",
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser/console.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .arg(format!("http://{}/", lab.http()))
        .arg(expect.to_string());
    // Screenshots for a person to look at, when asked for.
    if let Ok(dir) = std::env::var("FLOWTALLY_SCREENSHOTS") {
        command.arg(dir);
    }
    let out = command.output().expect("python3 runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("requests went to"), "{said}");
}
