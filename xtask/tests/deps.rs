//! `cargo xtask deps` refusing for real, as the xtask binary: it fails
//! naming the packages and the commands that install them, and installs
//! nothing. A dpkg database of our own (DPKG_ADMINDIR, an empty status file)
//! makes every Debian package of the list missing without touching the
//! machine's, which other tests rely on.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const DEBIAN: [&str; 3] = ["softflowd", "tcpreplay", "freeradius-utils"];

fn require_root() {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1));
    assert_eq!(euid, Some("0"), "this test changes users: it needs root");
}

/// A directory of the test's own, emptied, under target/tmp (readable by
/// all, as the unprivileged user needs).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deps-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A dpkg database that knows no package, in `dir`.
fn empty_dpkg_db(dir: &Path) -> PathBuf {
    let db = dir.join("dpkg");
    fs::create_dir_all(&db).unwrap();
    fs::write(db.join("status"), "").unwrap();
    db
}

fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "deps succeeded:\n{stderr}");
    assert!(
        !stderr.contains("deps: installing") && !stderr.contains("+ apt-get"),
        "deps tried to install:\n{stderr}"
    );
    for name in DEBIAN {
        assert!(
            stderr.contains(&format!("    {name} (Debian): ")),
            "{name} not named:\n{stderr}"
        );
    }
    stderr
}

#[test]
#[ignore = "needs root (setpriv)"]
fn as_an_unprivileged_user_missing_debian_packages_are_named_with_the_commands() {
    require_root();
    let dir = scratch("unprivileged");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args([XTASK, "deps"])
        .env("DPKG_ADMINDIR", empty_dpkg_db(&dir))
        .output()
        .expect("setpriv runs (Debian package util-linux)");
    let stderr = refused(&out);
    for want in [
        "installing Debian packages needs root",
        "sudo -E env \"PATH=$PATH\" cargo xtask test",
        "apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends iproute2 ",
    ] {
        assert!(stderr.contains(want), "no {want:?} in:\n{stderr}");
    }
}

#[test]
#[ignore = "needs root, to show that only apt-get is missing"]
fn without_apt_get_missing_debian_packages_are_named() {
    require_root();
    let dir = scratch("no-apt");
    // A PATH with dpkg-query and nothing else.
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("/usr/bin/dpkg-query", bin.join("dpkg-query")).unwrap();
    let out = Command::new(XTASK)
        .arg("deps")
        .env("PATH", &bin)
        .env("DPKG_ADMINDIR", empty_dpkg_db(&dir))
        .output()
        .unwrap();
    let stderr = refused(&out);
    assert!(
        stderr.contains("there is no apt-get to install them"),
        "{stderr}"
    );
}
