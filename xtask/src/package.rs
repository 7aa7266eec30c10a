//! `cargo xtask deb`: the Debian package, built with dpkg-deb from the
//! release binary and `collector/packaging/` (unit, default configuration,
//! man page, Grafana dashboard and Prometheus alerting rules), then checked: its listing and control fields, the packaged
//! configuration through the packaged binary's `check-config`, and the unit
//! through `systemd-analyze verify` when systemd's tools are installed.

use std::fs;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

use crate::cmd::{self, Workspace};

/// Every path the package must install, as `dpkg-deb -c` lists them.
pub const CONTENTS: [&str; 9] = [
    "./usr/bin/flowtally",
    "./usr/lib/systemd/system/flowtally.service",
    "./etc/flowtally/flowtally.toml",
    "./usr/share/flowtally/grafana-dashboard.json",
    "./usr/share/flowtally/prometheus-alerts.yml",
    "./usr/share/man/man8/flowtally.8.gz",
    "./usr/share/doc/flowtally/README.md.gz",
    "./usr/share/doc/flowtally/copyright",
    "./usr/share/doc/flowtally/changelog.gz",
];

/// Builds the package into `target/deb/` and returns its path.
pub fn build(ws: &Workspace) -> Result<PathBuf> {
    cmd::run(ws.cargo().args(["build", "--release", "-p", "flowtally"]))
        .context("building the release binary failed; see the compiler output above")?;
    let version = package_version(ws)?;
    let arch = cmd::output(Command::new("dpkg").arg("--print-architecture"))
        .context("dpkg is needed to build the Debian package")?;
    let arch = arch.trim();
    let out = ws.root.join("target/deb");
    let stage = out.join(format!("flowtally_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    let packaging = ws.root.join("collector/packaging");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| ws.root.join("target"), |dir| ws.root.join(dir));
    install(
        &target_dir.join("release/flowtally"),
        &stage,
        "usr/bin/flowtally",
        0o755,
    )?;
    install(
        &packaging.join("flowtally.service"),
        &stage,
        "usr/lib/systemd/system/flowtally.service",
        0o644,
    )?;
    install(
        &packaging.join("flowtally.toml"),
        &stage,
        "etc/flowtally/flowtally.toml",
        0o644,
    )?;
    for file in ["grafana-dashboard.json", "prometheus-alerts.yml"] {
        install(
            &packaging.join(file),
            &stage,
            &format!("usr/share/flowtally/{file}"),
            0o644,
        )?;
    }
    let doc = stage.join("usr/share/doc/flowtally");
    install_gz(
        &packaging.join("flowtally.8"),
        &stage.join("usr/share/man/man8"),
    )?;
    install_gz(&ws.root.join("README.md"), &doc)?;
    let changelog = out.join("changelog");
    fs::write(
        &changelog,
        format!(
            "flowtally ({version}) unstable; urgency=medium\n\n  * Built by cargo xtask deb.\n\n \
             -- flowtally developers <flowtally@users.noreply.github.com>  Thu, 01 Jan 1970 00:00:00 +0000\n"
        ),
    )?;
    install_gz(&changelog, &doc)?;
    fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: flowtally\nSource: https://github.com/flowtally/flowtally\n\n\
         Files: *\nLicense: MIT or Apache-2.0\n",
    )?;

    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    fs::write(debian.join("control"), control(&version, arch, &stage)?)?;
    fs::write(debian.join("conffiles"), "/etc/flowtally/flowtally.toml\n")?;
    // Tell a running systemd about the unit; starting it is the admin's
    // call, once interfaces and RADIUS clients are configured.
    let reload = "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n  \
                  systemctl --system daemon-reload >/dev/null || true\nfi\n";
    for script in ["postinst", "postrm"] {
        let path = debian.join(script);
        fs::write(&path, reload)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    }

    let deb = out.join(format!("flowtally_{version}_{arch}.deb"));
    cmd::run(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&stage)
            .arg(&deb),
    )
    .context("dpkg-deb failed")?;
    Ok(deb)
}

/// Checks a built package (see the module docs).
pub fn check(ws: &Workspace, deb: &Path) -> Result<()> {
    let listing = cmd::output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    let paths = listed_paths(&listing);
    for want in CONTENTS {
        ensure!(paths.contains(&want), "{} lacks {want}", deb.display());
    }
    let info = cmd::output(Command::new("dpkg-deb").arg("-I").arg(deb))?;
    for field in ["Package: flowtally", "Depends: libc6", "Section: net"] {
        ensure!(
            info.contains(field),
            "{}: no `{field}` in\n{info}",
            deb.display()
        );
    }

    let root = ws.root.join("target/deb/check");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    let mut control = Command::new("dpkg-deb");
    control.arg("-e").arg(deb).arg(root.join("DEBIAN"));
    cmd::run(&mut control)?;
    let conffiles = fs::read_to_string(root.join("DEBIAN/conffiles"))?;
    ensure!(
        conffiles
            .lines()
            .any(|l| l == "/etc/flowtally/flowtally.toml"),
        "the configuration is not a conffile: {conffiles}"
    );
    let config = root.join("etc/flowtally/flowtally.toml");
    let effective = cmd::output(
        Command::new(root.join("usr/bin/flowtally"))
            .arg("check-config")
            .arg("--config")
            .arg(&config),
    )
    .context("the packaged configuration fails the packaged binary's check-config")?;
    ensure!(
        effective.contains("[http]\nlisten = \"127.0.0.1:9725\""),
        "the packaged configuration does not keep the HTTP listener local:\n{effective}"
    );
    verify_unit(&root)?;
    println!(
        "deb: {} ok ({} files checked)",
        deb.display(),
        CONTENTS.len()
    );
    Ok(())
}

/// `systemd-analyze verify` of flowtally's unit alone, in `root` (the
/// extracted package) completed with systemd's own unit files and nothing
/// else: on the host, verify also loads the units of other packages that
/// systemd's targets pull in, and warns about them (FreeRADIUS's
/// `MemoryLimit=`), which says nothing about ours. In this root all it says
/// is about flowtally's unit, so anything it says fails the check (an
/// unknown key is only a warning to it). ExecStart's `/usr/bin/flowtally` is
/// the packaged binary, inside the root. Skipped, saying so, where systemd's
/// tools are not installed.
fn verify_unit(root: &Path) -> Result<()> {
    if cmd::output(Command::new("systemd-analyze").arg("--version")).is_err() {
        eprintln!("deb: SKIPPED systemd-analyze verify: systemd-analyze is not installed");
        return Ok(());
    }
    add_systemd_units(Path::new("/"), root)?;
    verify_alone(root)?;
    let security = cmd::output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(root_arg(root))
            .arg(UNIT),
    )?;
    if let Some(level) = security
        .lines()
        .find(|l| l.contains("Overall exposure level"))
    {
        println!(
            "deb: {}",
            level.trim_start_matches(|c: char| !c.is_alphabetic())
        );
    }
    Ok(())
}

const UNIT: &str = "flowtally.service";

fn root_arg(root: &Path) -> String {
    format!("--root={}", root.display())
}

/// Copies the unit files of Debian's `systemd` package, as installed under
/// `host`, into `root`: the targets and services every unit depends on
/// (sysinit.target, network-online.target, ...), without which verify
/// fails. Their paths are as dpkg lists them (/lib on Debian 12), so `root`
/// gets /lib -> usr/lib, as a merged-/usr host has.
fn add_systemd_units(host: &Path, root: &Path) -> Result<()> {
    let listed = cmd::output(Command::new("dpkg").args(["--listfiles", "systemd"]))
        .context("cannot list the files of Debian's systemd package")?;
    let lib = root.join("lib");
    if !lib.exists() {
        fs::create_dir_all(root.join("usr/lib"))?;
        symlink("usr/lib", &lib)?;
    }
    for file in listed.lines().filter(|f| f.contains("/systemd/system/")) {
        let from = host.join(file.trim_start_matches('/'));
        let to = root.join(file.trim_start_matches('/'));
        // Directories come with their files; dpkg also lists diverted files.
        let Ok(meta) = fs::symlink_metadata(&from) else {
            continue;
        };
        fs::create_dir_all(to.parent().context("a unit file has a directory")?)?;
        let copied = if meta.is_symlink() {
            fs::read_link(&from).and_then(|link| symlink(link, &to))
        } else if meta.is_file() {
            fs::copy(&from, &to).map(drop)
        } else {
            continue;
        };
        copied.with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Fails on anything `systemd-analyze verify` says about flowtally's unit
/// in `root`.
fn verify_alone(root: &Path) -> Result<()> {
    let mut verify = Command::new("systemd-analyze");
    verify
        .args(["verify", "--man=no"])
        .arg(root_arg(root))
        .arg(UNIT);
    eprintln!("+ {}", cmd::line(&verify));
    let out = verify.output().context("could not run systemd-analyze")?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify rejects the unit ({}):\n{said}",
        out.status
    );
    Ok(())
}

/// The `./path` entries of a `dpkg-deb -c` listing.
fn listed_paths(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect()
}

fn package_version(ws: &Workspace) -> Result<String> {
    let manifest = fs::read_to_string(ws.root.join("collector/Cargo.toml"))?;
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .context("no version in collector/Cargo.toml")
}

fn control(version: &str, arch: &str, stage: &Path) -> Result<String> {
    let kib = cmd::output(Command::new("du").args(["-sk"]).arg(stage))?;
    let kib = kib.split_whitespace().next().unwrap_or("0");
    Ok(format!(
        "Package: flowtally\nVersion: {version}\nArchitecture: {arch}\n\
         Maintainer: flowtally developers <flowtally@users.noreply.github.com>\n\
         Installed-Size: {kib}\nDepends: libc6 (>= 2.34), libgcc-s1\nSection: net\nPriority: optional\n\
         Homepage: https://github.com/flowtally/flowtally\n\
         Description: per-user network usage from NetFlow/IPFIX and RADIUS\n \
         flowtally parses NetFlow v5/v9 and IPFIX exports in an XDP program,\n \
         runs a RADIUS accounting server, and attributes every flow aggregate\n \
         to the subscriber who held the address at the time, in SQLite.\n"
    ))
}

fn install(from: &Path, stage: &Path, to: &str, mode: u32) -> Result<()> {
    let to = stage.join(to);
    fs::create_dir_all(to.parent().context("a path with a parent")?)?;
    fs::copy(from, &to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(&to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `gzip -9n` (reproducible: no name or time) of `from` into `dir`.
fn install_gz(from: &Path, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let name = from.file_name().context("a file name")?.to_string_lossy();
    let out = fs::File::create(dir.join(format!("{name}.gz")))?;
    let status = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(from)
        .stdout(out)
        .status()
        .context("gzip is needed")?;
    ensure!(status.success(), "gzip {} failed", from.display());
    fs::set_permissions(
        dir.join(format!("{name}.gz")),
        fs::Permissions::from_mode(0o644),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("xtask-package-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn packaged_unit() -> String {
        let unit =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../collector/packaging/flowtally.service");
        fs::read_to_string(unit).unwrap()
    }

    /// `root` as `check` extracts the package, with `unit` as flowtally's
    /// unit; a script stands in for the binary when there is to be one
    /// (verify only looks for an executable).
    fn stage_package(root: &Path, unit: &str, binary: bool) {
        let units = root.join("usr/lib/systemd/system");
        fs::create_dir_all(&units).unwrap();
        fs::write(units.join(UNIT), unit).unwrap();
        if binary {
            install_script(root, "usr/bin/flowtally");
        }
    }

    fn install_script(root: &Path, path: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Verify's complaint about flowtally's unit `unit`, alone with
    /// systemd's units.
    fn rejection(name: &str, unit: &str, binary: bool) -> String {
        let root = Scratch::new(name);
        stage_package(&root.0, unit, binary);
        add_systemd_units(Path::new("/"), &root.0).unwrap();
        let err = verify_alone(&root.0).expect_err("verify passed");
        format!("{err:#}")
    }

    #[test]
    fn another_packages_unit_that_verify_warns_about_is_not_judged() {
        // A host with FreeRADIUS installed and enabled, as Debian ships it:
        // its unit still says MemoryLimit=.
        let host = Scratch::new("host");
        stage_package(&host.0, &packaged_unit(), true);
        add_systemd_units(Path::new("/"), &host.0).unwrap();
        fs::write(
            host.0.join("lib/systemd/system/freeradius.service"),
            "[Unit]\nDescription=FreeRADIUS multi-protocol policy server\n\
             [Service]\nType=notify\nMemoryLimit=2G\nExecStart=/usr/sbin/freeradius -f\n\
             [Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        install_script(&host.0, "usr/sbin/freeradius");
        let wants = host.0.join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants).unwrap();
        symlink(
            "/lib/systemd/system/freeradius.service",
            wants.join("freeradius.service"),
        )
        .unwrap();
        // Verified on that host as a whole, flowtally's unit draws
        // FreeRADIUS's warning (what failed the check before).
        let whole = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(root_arg(&host.0))
            .arg(UNIT)
            .output()
            .expect("systemd-analyze runs (Debian package systemd)");
        let said = String::from_utf8_lossy(&whole.stderr);
        assert!(
            said.contains("freeradius.service") && said.contains("MemoryLimit="),
            "the host does not reproduce FreeRADIUS's warning:\n{said}"
        );

        let root = Scratch::new("alone");
        stage_package(&root.0, &packaged_unit(), true);
        add_systemd_units(&host.0, &root.0).unwrap();
        verify_alone(&root.0).unwrap();
    }

    #[test]
    fn an_unknown_key_in_flowtallys_unit_fails() {
        let unit = packaged_unit().replace("[Service]\n", "[Service]\nFrobnicate=yes\n");
        let err = rejection("unknown-key", &unit, true);
        assert!(err.contains("Unknown key 'Frobnicate'"), "{err}");
    }

    #[test]
    fn a_missing_binary_in_flowtallys_unit_fails() {
        let err = rejection("no-binary", &packaged_unit(), false);
        assert!(
            err.contains("/usr/bin/flowtally is not executable"),
            "{err}"
        );
    }

    #[test]
    fn listed_paths_are_the_sixth_column_of_dpkg_deb_c() {
        let listing = "drwxr-xr-x root/root         0 2026-11-21 17:00 ./\n\
                       -rwxr-xr-x root/root   9000000 2026-11-21 17:00 ./usr/bin/flowtally\n";
        assert_eq!(listed_paths(listing), ["./", "./usr/bin/flowtally"]);
    }
}
