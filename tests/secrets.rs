//! Secrets from files and the environment, never from argv only: radclient
//! (freeradius-utils) against the daemon with secrets read from a file and
//! from environment variables; no secret in `check-config` output or in the
//! log; a warning for a readable file of secrets and for `--radius-secret`.

mod support;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Output},
};

use support::{BIN, Flowtally, TempDir, path_str, radclient};

const START: &str = "Acct-Status-Type = Start, NAS-IP-Address = 198.18.0.1, \
                     Acct-Session-Id = \"s1\", User-Name = \"alice\", \
                     Framed-IP-Address = 100.64.0.10";

fn write_private(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// `flowtally run` in socket mode on free loopback ports, database `db`,
/// logging at DEBUG, with `env` set and then `args`.
fn start(db: &Path, env: &[(&str, &str)], args: &[&str]) -> Flowtally {
    let mut command = Command::new(BIN);
    command
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .args(["run", "--mode", "socket", "--netflow", "127.0.0.1:0"])
        .args(["--sflow", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--radius", "127.0.0.1:0", "--db", path_str(db)])
        .args(args);
    Flowtally::spawn(&mut command)
}

fn stop(mut daemon: Flowtally) -> String {
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait().success(), "{}", daemon.stderr());
    daemon.stderr()
}

#[test]
fn a_secret_from_a_file_is_the_one_radclient_must_use_and_is_never_logged() {
    let tmp = TempDir::new();
    let secret = "file-secret-7f3a";
    let file = tmp.path("radius-secret");
    write_private(&file, &format!("{secret}\n"));
    let daemon = start(
        &tmp.path("db"),
        &[],
        &["--radius-secret-file", path_str(&file)],
    );
    let server = daemon
        .ready
        .radius
        .expect("RADIUS is on: a secret was read");
    assert!(
        radclient(server, secret, START),
        "answered with the file's secret"
    );
    assert!(
        !radclient(server, "testing123", START),
        "another secret gets no answer"
    );
    let log = stop(daemon);
    assert!(!log.contains(secret), "the secret is in the log:\n{log}");
    assert!(!log.contains("visible to every local user"), "{log}");
}

#[test]
fn secrets_from_the_environment_and_per_client_files_work_end_to_end() {
    let tmp = TempDir::new();
    let (shared, client, password) = ("env-secret-91c2", "client-secret-0d4e", "ch-pass-55b1");
    let client_file = tmp.path("client-secret");
    write_private(&client_file, client);
    let config = tmp.path("flowtally.toml");
    // Readable by others, but it holds no secret: no warning.
    fs::write(
        &config,
        format!(
            "[radius]\nsecret_env = \"SHARED_RADIUS_SECRET\"\n\
             [[radius.clients]]\naddress = \"127.0.0.1/32\"\nsecret_file = \"{}\"\n\
             [clickhouse]\nurl = \"http://127.0.0.1:9\"\npassword_env = \"CH_PASSWORD\"\n",
            path_str(&client_file)
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let daemon = start(
        &tmp.path("db"),
        &[("SHARED_RADIUS_SECRET", shared), ("CH_PASSWORD", password)],
        &["--config", path_str(&config)],
    );
    let server = daemon.ready.radius.unwrap();
    assert!(
        radclient(server, client, START),
        "127.0.0.1 has its own secret"
    );
    assert!(
        !radclient(server, shared, START),
        "the client's entry wins over the shared secret"
    );
    // ClickHouse is not there: delivery fails and is logged, without the
    // password; at SIGTERM it gives up within the default shutdown_timeout
    // (10s), though backing off.
    support::eventually("a failed delivery logged", || {
        daemon.stderr().contains("ClickHouse")
    });
    let log = stop(daemon);
    for secret in [shared, client, password] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
    assert!(!log.contains("readable by its group or others"), "{log}");

    // The documented variable: the shared secret of a daemon without a
    // file.
    let daemon = start(
        &tmp.path("db2"),
        &[("FLOWTALLY_RADIUS_SECRET", shared)],
        &[],
    );
    assert!(radclient(daemon.ready.radius.unwrap(), shared, START));
    let log = stop(daemon);
    assert!(!log.contains(shared), "{log}");
}

fn check_config(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["check-config", "--config", path_str(config)])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_prints_no_secret_and_warns_of_a_file_others_can_read() {
    let tmp = TempDir::new();
    let secrets = [
        "radius-7c1",
        "client-8d2",
        "ch-9e3",
        "community-af4",
        "coa-1b5",
    ];
    let config = tmp.path("flowtally.toml");
    fs::write(
        &config,
        format!(
            "[radius]\nsecret = \"{}\"\n\
             [[radius.clients]]\naddress = \"198.18.0.0/16\"\nsecret = \"{}\"\n\
             [clickhouse]\nurl = \"http://198.18.0.9:8123\"\npassword = \"{}\"\n\
             [[snmp.agents]]\nexporter = \"198.18.0.1\"\ncommunity = \"{}\"\ninterfaces = [1]\n\
             [[radius.nas]]\naddress = \"198.18.0.1\"\nsecret = \"{}\"\n",
            secrets[0], secrets[1], secrets[2], secrets[3], secrets[4]
        ),
    )
    .unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let out = check_config(&config, &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    for secret in secrets {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} printed:\n{stderr}");
    }
    assert_eq!(stdout.matches("\"***\"").count(), 5, "{stdout}");
    assert!(
        stderr.contains("readable by its group or others (mode 644)")
            && stderr.contains(
                "radius.secret, radius.clients.secret, radius.nas.secret, clickhouse.password"
            ),
        "{stderr}"
    );

    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let out = check_config(&config, &["--radius-secret", "flag-b05"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("readable by"), "mode 600: {stderr}");
    assert!(!stdout.contains("flag-b05"), "{stdout}");
    assert!(
        stderr.contains("--radius-secret is visible to every local user"),
        "{stderr}"
    );

    // A line the parser rejects is named by its key, not shown.
    fs::write(&config, "[radius]\nsecret = \"radius-7c1\nrate_limit = 5\n").unwrap();
    let out = check_config(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2 (secret)") && !stderr.contains("radius-7c1"),
        "{stderr}"
    );
}

#[test]
fn a_missing_secret_file_or_variable_exits_2_naming_the_key() {
    let tmp = TempDir::new();
    let config = tmp.path("flowtally.toml");
    for (text, key) in [
        (
            "[radius]\nsecret_file = \"/nonexistent/secret\"\n",
            "`radius.secret`",
        ),
        (
            "[clickhouse]\npassword_env = \"FLOWTALLY_TEST_UNSET\"\n",
            "`clickhouse.password`",
        ),
        (
            "[[radius.clients]]\naddress = \"198.18.0.0/16\"\n",
            "`radius.clients.secret`",
        ),
        (
            "[radius]\nsecret = \"a\"\nsecret_file = \"/etc/passwd\"\n",
            "`radius.secret_file`",
        ),
    ] {
        fs::write(&config, text).unwrap();
        let out = check_config(&config, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
}
