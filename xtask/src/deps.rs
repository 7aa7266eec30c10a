//! What the tests need from outside Rust, in one list: the Debian packages
//! they drive and the PyPI packages they import, each with why. `cargo xtask
//! test` (and `cargo xtask deps` alone) checks the list before every run, with
//! one `dpkg-query` and one `python3` (offline, about a fifth of a second),
//! and installs what is missing: Debian packages with apt-get, which needs
//! root, PyPI packages with pip. When it cannot, it fails naming the packages
//! and the commands that would install them.
//!
//! Adding a package is one line in [`DEBIAN`] or [`PYPI`]: its name, (for
//! PyPI) the module the tests import, and what needs it. `cargo xtask run`
//! needs none of them: it only builds (see setup.rs) and attaches to `lo`.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd;

/// A Debian package the tests use.
struct Deb {
    name: &'static str,
    why: &'static str,
}

/// A PyPI package the tests import from `python3`.
struct PyPi {
    name: &'static str,
    /// What `import` names; often not the package's name.
    module: &'static str,
    why: &'static str,
}

const fn deb(name: &'static str, why: &'static str) -> Deb {
    Deb { name, why }
}

const fn pypi(name: &'static str, module: &'static str, why: &'static str) -> PyPi {
    PyPi { name, module, why }
}

// One line per package, which rustfmt would wrap.
#[rustfmt::skip]
const DEBIAN: &[Deb] = &[
    deb("iproute2", "ip netns and veth pairs for the privileged tests"),
    deb("util-linux", "setpriv, to run the daemon and xtask unprivileged"),
    deb("bpftool", "inspecting attached XDP programs when a privileged test fails"),
    deb("softflowd", "a real NetFlow v5/v9/IPFIX exporter"),
    deb("tcpreplay", "replays captured traffic live into softflowd"),
    deb("freeradius-utils", "radclient, a real RADIUS accounting client"),
    deb("pmacct", "pmacctd's sfprobe plugin, a real sFlow agent"),
    deb("clickhouse-server", "ClickHouse servers the ClickHouse tests start"),
    deb("openssl", "the CA and server certificates of the ClickHouse TLS test"),
    deb("systemd", "systemd-analyze verifies the packaged unit"),
    deb(
        "nftables",
        "a real NAT (masquerade) for the CGNAT test; drops exports on their way out of a test namespace (no netem here)",
    ),
    deb("conntrack", "conntrack -E: the bindings that NAT really makes"),
    deb("chromium", "a real browser for the console test (driven by playwright, never downloaded)"),
    deb("prometheus", "promtool checks and unit-tests the shipped alerting rules"),
    deb("snmpd", "a real SNMP agent serving a veth's IF-MIB counters"),
    deb("snmp", "snmpget, to know when the test's snmpd answers"),
    deb("python3-pip", "pip, which installs the PyPI packages below"),
    deb("libfuse3-3", "libfuse, which mfusepy binds"),
];

#[rustfmt::skip]
const PYPI: &[PyPi] = &[
    pypi("chdb-core", "chdb", "ClickHouse 26's engine as a library; a test replays inserts into it"),
    pypi("numpy", "numpy", "the independent computation the 95th-percentile report test checks against"),
    pypi("playwright", "playwright", "drives Debian's chromium (/usr/bin/chromium) in the console test"),
    pypi("mfusepy", "mfusepy", "a FUSE filesystem the fault tests turn read-only or slow under the daemon"),
    pypi("pyrad", "pyrad", "plays a NAS's RFC 5176 Disconnect/CoA server in the quota enforcement test"),
];

/// Installs whatever in the lists is missing, or fails saying how to.
pub fn ensure(root: bool) -> Result<()> {
    let lacking = Lacking::query();
    if lacking.is_empty() {
        eprintln!(
            "deps: all {} Debian and {} PyPI packages the tests use are installed",
            DEBIAN.len(),
            PYPI.len()
        );
        return Ok(());
    }
    let host = Host {
        root,
        apt_get: Command::new("apt-get").arg("--version").output().is_ok(),
    };
    let steps = plan(&lacking, &host)?;
    eprint!(
        "deps: installing what the tests need:\n{}",
        lacking.listing()
    );
    for step in steps {
        cmd::run(&mut step.command()).with_context(|| step.failed())?;
    }
    let still = Lacking::query();
    ensure!(
        still.is_empty(),
        "still missing after installing them:\n{}",
        still.listing()
    );
    Ok(())
}

/// The packages of the lists that this machine does not have.
#[derive(Default)]
struct Lacking {
    debian: Vec<&'static Deb>,
    pypi: Vec<&'static PyPi>,
}

impl Lacking {
    fn query() -> Self {
        let installed = installed_debian();
        Self {
            debian: DEBIAN
                .iter()
                .filter(|d| !installed.contains(d.name))
                .collect(),
            pypi: importable_missing(),
        }
    }

    fn is_empty(&self) -> bool {
        self.debian.is_empty() && self.pypi.is_empty()
    }

    fn listing(&self) -> String {
        let debian = self.debian.iter().map(|d| (d.name, "Debian", d.why));
        let pypi = self.pypi.iter().map(|p| (p.name, "PyPI", p.why));
        debian
            .chain(pypi)
            .map(|(name, source, why)| format!("    {name} ({source}): {why}\n"))
            .collect()
    }
}

/// Names of the installed packages among [`DEBIAN`]; none where dpkg-query
/// does not run. It exits 1 when it knows one of them not at all, and
/// still lists the others.
fn installed_debian() -> BTreeSet<String> {
    let out = Command::new("dpkg-query")
        .arg("--show")
        .arg("--showformat=${Package}\t${db:Status-Status}\n")
        .args(DEBIAN.iter().map(|d| d.name))
        .output();
    out.map(|out| installed(&String::from_utf8_lossy(&out.stdout)))
        .unwrap_or_default()
}

/// The `installed` names of `dpkg-query` lines `name<TAB>status`; a removed
/// package that kept its configuration files says `config-files`.
fn installed(dpkg_query: &str) -> BTreeSet<String> {
    dpkg_query
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| *status == "installed")
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The [`PYPI`] packages whose module `python3` cannot find (all of them
/// where python3 does not run). It looks for the module without importing
/// it: importing chdb alone takes most of a second, on every test run.
fn importable_missing() -> Vec<&'static PyPi> {
    let script = "import importlib.util, sys\n\
                  for m in sys.argv[1:]:\n    \
                      if importlib.util.find_spec(m) is None: print(m)\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .args(PYPI.iter().map(|p| p.module))
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let absent: BTreeSet<_> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect();
            PYPI.iter().filter(|p| absent.contains(p.module)).collect()
        }
        _ => PYPI.iter().collect(),
    }
}

/// What this machine allows.
struct Host {
    root: bool,
    apt_get: bool,
}

enum Step {
    AptUpdate,
    AptInstall(Vec<&'static Deb>),
    PipInstall(Vec<&'static PyPi>),
}

/// The installs that make `lacking` complete, in order (apt first: it
/// provides pip), or why they cannot happen here.
fn plan(lacking: &Lacking, host: &Host) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    if !lacking.debian.is_empty() {
        let by_hand = by_hand(lacking);
        if !host.apt_get {
            bail!(
                "the tests need packages this machine lacks:\n{}\
                 and there is no apt-get to install them (xtask installs with Debian's tools); \
                 install them or their equivalents yourself:\n{by_hand}",
                lacking.listing()
            );
        }
        if !host.root {
            bail!(
                "the tests need packages this machine lacks:\n{}\
                 and installing Debian packages needs root; run as root, which installs them:\n    \
                 sudo -E env \"PATH=$PATH\" cargo xtask test\n\
                 or install them yourself:\n{by_hand}",
                lacking.listing()
            );
        }
        steps.push(Step::AptUpdate);
        steps.push(Step::AptInstall(lacking.debian.clone()));
    }
    // pip installs for whoever runs it (into the user's site without root).
    if !lacking.pypi.is_empty() {
        steps.push(Step::PipInstall(lacking.pypi.clone()));
    }
    Ok(steps)
}

/// The commands that install `lacking`, for a person to run.
fn by_hand(lacking: &Lacking) -> String {
    let apt = [Step::AptUpdate, Step::AptInstall(lacking.debian.clone())];
    let apt = apt
        .iter()
        .map(|step| format!("sudo {}", cmd::line(&step.command())));
    let pip = (!lacking.pypi.is_empty())
        .then(|| cmd::line(&Step::PipInstall(lacking.pypi.clone()).command()));
    apt.chain(pip).map(|line| format!("    {line}\n")).collect()
}

impl Step {
    fn command(&self) -> Command {
        let apt_get = || {
            let mut apt = Command::new("apt-get");
            // Wait for another engineer's apt or dpkg instead of failing.
            apt.env("DEBIAN_FRONTEND", "noninteractive").args([
                "-q",
                "-o",
                "DPkg::Lock::Timeout=600",
            ]);
            apt
        };
        match self {
            Step::AptUpdate => {
                let mut apt = apt_get();
                apt.arg("update");
                apt
            }
            Step::AptInstall(debs) => {
                let mut apt = apt_get();
                apt.args(["install", "-y", "--no-install-recommends"])
                    .args(debs.iter().map(|d| d.name));
                apt
            }
            Step::PipInstall(packages) => {
                let mut pip = Command::new("python3");
                // Debian's own python3 refuses pip installs (PEP 668) unless
                // told otherwise; as root pip then writes to /usr/local, not
                // over apt's files. Older pips ignore both variables.
                pip.env("PIP_BREAK_SYSTEM_PACKAGES", "1")
                    .env("PIP_ROOT_USER_ACTION", "ignore")
                    .args(["-m", "pip", "install", "--quiet"])
                    .args(packages.iter().map(|p| p.name));
                pip
            }
        }
    }

    fn failed(&self) -> String {
        let names: Vec<_> = match self {
            Step::AptUpdate => {
                return "apt-get update failed (see its output above); \
                        check the network and /etc/apt/sources.list*, then retry"
                    .to_owned();
            }
            Step::AptInstall(debs) => debs.iter().map(|d| d.name).collect(),
            Step::PipInstall(packages) => packages.iter().map(|p| p.name).collect(),
        };
        format!(
            "installing {} failed (see the output above); fix that, then retry:\n    {}",
            names.join(" "),
            cmd::line(&self.command())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lacking(debian: &[&str], pypi: &[&str]) -> Lacking {
        Lacking {
            debian: DEBIAN.iter().filter(|d| debian.contains(&d.name)).collect(),
            pypi: PYPI.iter().filter(|p| pypi.contains(&p.name)).collect(),
        }
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| cmd::line(&s.command())).collect()
    }

    const ROOT: Host = Host {
        root: true,
        apt_get: true,
    };

    #[test]
    fn every_package_is_listed_once_with_a_reason() {
        let names: Vec<_> = DEBIAN
            .iter()
            .map(|d| (d.name, d.why))
            .chain(PYPI.iter().map(|p| (p.name, p.why)))
            .collect();
        let unique: BTreeSet<_> = names.iter().map(|(name, _)| name).collect();
        assert_eq!(unique.len(), names.len(), "a package is listed twice");
        assert!(names.iter().all(|(_, why)| !why.is_empty()));
    }

    #[test]
    fn dpkg_query_counts_only_installed_packages() {
        let out = "softflowd\tinstalled\nfreeradius-utils\tconfig-files\n\
                   tcpreplay\tnot-installed\ndpkg-query: no packages found matching x\n";
        assert_eq!(installed(out), BTreeSet::from(["softflowd".to_owned()]));
    }

    #[test]
    fn nothing_missing_installs_nothing_even_without_root() {
        let host = Host {
            root: false,
            apt_get: false,
        };
        assert!(plan(&lacking(&[], &[]), &host).unwrap().is_empty());
    }

    #[test]
    fn missing_debian_packages_are_installed_after_one_update() {
        let steps = plan(&lacking(&["softflowd", "tcpreplay"], &[]), &ROOT).unwrap();
        assert_eq!(
            lines(&steps),
            [
                "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update",
                "DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 \
                 install -y --no-install-recommends softflowd tcpreplay",
            ]
        );
    }

    #[test]
    fn debian_packages_come_before_pypi_ones_which_pip_installs() {
        let steps = plan(&lacking(&["python3-pip"], &["chdb-core"]), &ROOT).unwrap();
        let lines = lines(&steps);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[1].ends_with("install -y --no-install-recommends python3-pip"));
        assert_eq!(
            lines[2],
            "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
             python3 -m pip install --quiet chdb-core"
        );
    }

    #[test]
    fn pypi_packages_alone_install_without_root() {
        let host = Host {
            root: false,
            apt_get: true,
        };
        let steps = plan(&lacking(&[], &["chdb-core"]), &host).unwrap();
        assert_eq!(lines(&steps).len(), 1);
        assert!(lines(&steps)[0].ends_with("pip install --quiet chdb-core"));
    }

    #[test]
    fn without_root_the_error_names_each_package_and_the_commands() {
        let host = Host {
            root: false,
            apt_get: true,
        };
        let err = plan(&lacking(&["softflowd"], &["chdb-core"]), &host)
            .err()
            .expect("not root: refused")
            .to_string();
        for want in [
            "softflowd (Debian): a real NetFlow",
            "chdb-core (PyPI)",
            "needs root",
            "sudo -E env \"PATH=$PATH\" cargo xtask test",
            "\n    sudo DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update\n",
            "\n    sudo DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 \
             install -y --no-install-recommends softflowd\n",
            "\n    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
             python3 -m pip install --quiet chdb-core\n",
        ] {
            assert!(err.contains(want), "no {want:?} in:\n{err}");
        }
    }

    #[test]
    fn without_apt_get_the_error_names_each_package() {
        let host = Host {
            root: true,
            apt_get: false,
        };
        let err = plan(&lacking(&["tcpreplay"], &[]), &host)
            .err()
            .expect("no apt-get: refused")
            .to_string();
        assert!(err.contains("tcpreplay (Debian)"), "{err}");
        assert!(err.contains("no apt-get"), "{err}");
        assert!(!err.contains("pip"), "{err}");
    }
}
