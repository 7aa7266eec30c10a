//! `cargo xtask deb`: the Debian package, built with dpkg-deb from the
//! release binary and `collector/packaging/` (unit, default configuration,
//! man page, Grafana dashboard and Prometheus alerting rules), then checked: its listing and control fields, the packaged
//! configuration through the packaged binary's `check-config`, and the unit
//! through `systemd-analyze verify` when systemd's tools are installed.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
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

/// `systemd-analyze verify` on the unit as installed in `root`, which must
/// say nothing at all (an unknown key is only a warning to it); skipped,
/// saying so, where systemd's tools are not installed.
fn verify_unit(root: &Path) -> Result<()> {
    if cmd::output(Command::new("systemd-analyze").arg("--version")).is_err() {
        eprintln!("deb: SKIPPED systemd-analyze verify: systemd-analyze is not installed");
        return Ok(());
    }
    // verify wants ExecStart's binary on this machine: point it at the
    // extracted one, in a copy of the unit under its own name.
    let installed = root.join("usr/lib/systemd/system/flowtally.service");
    let unit = fs::read_to_string(&installed)?;
    let binary = root.join("usr/bin/flowtally");
    let dir = root.join("unit-check");
    fs::create_dir_all(&dir)?;
    let copy = dir.join("flowtally.service");
    fs::write(
        &copy,
        unit.replace("/usr/bin/flowtally", &binary.to_string_lossy()),
    )?;
    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", "--man=no"]).arg(&copy);
    eprintln!("+ {}", cmd::line(&verify));
    let out = verify.output().context("could not run systemd-analyze")?;
    let said = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify rejects the unit ({}):\n{said}",
        out.status
    );
    let security = cmd::output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&copy),
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

    #[test]
    fn listed_paths_are_the_sixth_column_of_dpkg_deb_c() {
        let listing = "drwxr-xr-x root/root         0 2026-11-21 17:00 ./\n\
                       -rwxr-xr-x root/root   9000000 2026-11-21 17:00 ./usr/bin/flowtally\n";
        assert_eq!(listed_paths(listing), ["./", "./usr/bin/flowtally"]);
    }
}
