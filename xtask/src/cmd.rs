//! Child processes: where they run, the command line they echo, and errors
//! that name the command that failed.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, iter};

use anyhow::{Context as _, Error, Result, anyhow, ensure};

/// Locations every task needs.
pub struct Workspace {
    /// Workspace root; cargo commands run here.
    pub root: PathBuf,
    /// Where `cargo install` puts binaries and setup keeps its LLVM prefix.
    pub cargo_home: PathBuf,
    /// PATH with `$CARGO_HOME/bin` first: aya-build finds `bpf-linker` through
    /// rustc's linker lookup, which searches PATH.
    path: OsString,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask/ has no parent directory")?
            .to_path_buf();
        let cargo_home = env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| env::home_dir().map(|home| home.join(".cargo")))
            .context("cannot find the cargo home: neither CARGO_HOME nor HOME is set")?;
        let inherited = env::var_os("PATH").unwrap_or_default();
        let dirs = iter::once(cargo_home.join("bin")).chain(env::split_paths(&inherited));
        let path = env::join_paths(dirs).context("cannot add $CARGO_HOME/bin to PATH")?;
        Ok(Self {
            root,
            cargo_home,
            path,
        })
    }

    /// A command that sees `$CARGO_HOME/bin` on its PATH.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("PATH", &self.path);
        cmd
    }

    /// `cargo`, run from the workspace root.
    pub fn cargo(&self) -> Command {
        let mut cmd = self.command("cargo");
        cmd.current_dir(&self.root);
        cmd
    }
}

/// The command as a shell line, with the variables it sets except PATH, which
/// every command gets and would only be noise.
pub fn line(cmd: &Command) -> String {
    let vars = cmd
        .get_envs()
        .filter(|(key, _)| *key != "PATH")
        .map(|(key, value)| {
            let value = value.unwrap_or_default().to_string_lossy();
            format!("{}={value}", key.to_string_lossy())
        });
    let words = iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| word.to_string_lossy().into_owned());
    vars.chain(words).collect::<Vec<_>>().join(" ")
}

/// Runs a command with inherited stdio, echoing it first like `set -x`.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {}", line(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", line(cmd)))?;
    ensure!(status.success(), "`{}` failed ({status})", line(cmd));
    Ok(())
}

/// Runs a query quietly (setup runs several on every task) and returns its
/// stdout; on failure the error carries its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", line(cmd)))?;
    ensure!(
        out.status.success(),
        "`{}` failed ({}): {}",
        line(cmd),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", line(cmd)))
}

/// Replaces this process with the command, so signals such as Ctrl-C and the
/// exit code pass straight through; returns only if that fails.
pub fn exec(cmd: &mut Command) -> Error {
    eprintln!("+ {}", line(cmd));
    let err = cmd.exec();
    anyhow!(err).context(format!("could not start `{}`", line(cmd)))
}
