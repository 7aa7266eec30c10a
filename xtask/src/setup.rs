//! `cargo xtask setup`: completes the toolchain that collector/build.rs uses
//! to build the eBPF crate (nightly, its rust-src, and a bpf-linker linked
//! against nightly's own libLLVM). Runs before every task, so the path where
//! everything is already in place must stay quick and offline.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::{env, fs};

use anyhow::{Context as _, Result, bail, ensure};

use crate::cmd::{self, Workspace};

pub fn run(ws: &Workspace) -> Result<()> {
    check_nightly(ws)?;
    ensure_rust_src(ws)?;
    ensure_bpf_linker(ws)
}

fn rustup(ws: &Workspace, args: &str) -> Command {
    let mut cmd = ws.command("rustup");
    cmd.args(args.split_whitespace());
    cmd
}

fn check_nightly(ws: &Workspace) -> Result<()> {
    let list = cmd::output(&mut rustup(ws, "toolchain list")).context(
        "cannot list rustup toolchains; the eBPF crate is built with `rustup run nightly`, \
         so rustup is required: install it from https://rustup.rs",
    )?;
    // `nightly-<host>`, not a dated `nightly-2026-05-19-<host>`.
    let is_nightly = |name: &str| {
        name.strip_prefix("nightly-")
            .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
    };
    ensure!(
        list.lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(is_nightly),
        "the nightly toolchain is not installed; the eBPF crate needs it for -Z build-std; \
         run `rustup toolchain install nightly --profile minimal`"
    );
    eprintln!("setup: nightly toolchain ok");
    Ok(())
}

fn ensure_rust_src(ws: &Workspace) -> Result<()> {
    let installed = cmd::output(&mut rustup(
        ws,
        "component list --toolchain nightly --installed",
    ))
    .context("cannot list nightly's components")?;
    if !installed.lines().any(|l| l.trim() == "rust-src") {
        eprintln!("setup: adding rust-src to nightly");
        cmd::run(&mut rustup(
            ws,
            "component add rust-src --toolchain nightly",
        ))
        .context(
            "adding rust-src failed; -Z build-std compiles `core` for the BPF target from it; \
             check the network and retry `rustup component add rust-src --toolchain nightly`",
        )?;
    }
    eprintln!("setup: rust-src ok");
    Ok(())
}

/// What `rustc +nightly -vV` says about the LLVM that bpf-linker must match.
struct Nightly {
    llvm_major: u32,
    release: String,
    commit: String,
}

impl Nightly {
    fn query(ws: &Workspace) -> Result<Self> {
        let text = cmd::output(&mut rustup(ws, "run nightly rustc -vV"))
            .context("cannot ask nightly rustc for its LLVM version")?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
                .with_context(|| format!("`rustc +nightly -vV` printed no `{key}:` line"))
        };
        let llvm = field("LLVM version")?;
        let llvm_major = llvm
            .split('.')
            .next()
            .and_then(|major| major.parse().ok())
            .with_context(|| format!("unexpected nightly LLVM version `{llvm}`"))?;
        Ok(Self {
            llvm_major,
            release: field("release")?.to_owned(),
            commit: field("commit-hash")?.to_owned(),
        })
    }

    fn stamp(&self) -> String {
        format!(
            "llvm-major={}\nrelease={}\ncommit-hash={}\n",
            self.llvm_major, self.release, self.commit
        )
    }
}

fn ensure_bpf_linker(ws: &Workspace) -> Result<()> {
    let nightly = Nightly::query(ws)?;
    let bin = ws.cargo_home.join("bin/bpf-linker");
    // Outside target/ on purpose: the built bpf-linker's RUNPATH points here.
    let prefix = ws.cargo_home.join("flowtally-llvm");
    let stamp = prefix.join("bpf-linker.stamp");
    let version = match installed_version(&bin, &stamp, nightly.llvm_major) {
        Ok(version) => version,
        Err(why) => {
            eprintln!("setup: building bpf-linker: {why}");
            build_bpf_linker(ws, &nightly, &prefix)?;
            fs::write(&stamp, nightly.stamp())
                .with_context(|| format!("cannot write {}", stamp.display()))?;
            linker_version(&bin).with_context(|| {
                format!(
                    "the freshly built {} does not run; it should load libLLVM from {}",
                    bin.display(),
                    prefix.join("lib").display()
                )
            })?
        }
    };
    eprintln!("setup: {version} (LLVM {}) ok", nightly.llvm_major);
    Ok(())
}

/// The installed bpf-linker's version, or why it has to be rebuilt.
fn installed_version(bin: &Path, stamp: &Path, llvm_major: u32) -> Result<String, String> {
    if !bin.exists() {
        return Err("bpf-linker missing".into());
    }
    let built_for = fs::read_to_string(stamp).ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("llvm-major=")?.parse::<u32>().ok())
    });
    match built_for {
        None => return Err(format!("no build stamp at {}", stamp.display())),
        Some(old) if old != llvm_major => {
            return Err(format!("nightly LLVM major changed {old} -> {llvm_major}"));
        }
        Some(_) => {}
    }
    linker_version(bin).map_err(|err| format!("bpf-linker no longer loads: {err:#}"))
}

/// Runs `bpf-linker --version` with a plain environment: it must find libLLVM
/// through its RUNPATH alone, as it will when rustc invokes it. This fails
/// once a nightly update renames the library file it was linked against.
fn linker_version(bin: &Path) -> Result<String> {
    Ok(cmd::output(Command::new(bin).arg("--version"))?
        .trim()
        .to_owned())
}

fn build_bpf_linker(ws: &Workspace, nightly: &Nightly, prefix: &Path) -> Result<()> {
    let sysroot = cmd::output(&mut rustup(ws, "run nightly rustc --print sysroot"))
        .context("cannot find nightly's sysroot")?;
    let lib = prefix.join("lib");
    link_libllvm(
        &Path::new(sysroot.trim()).join("lib"),
        &lib,
        nightly.llvm_major,
    )?;

    let mut install = ws.command("cargo");
    // Away from the workspace so its .cargo/config.toml does not apply, and
    // with a target dir of its own so that an inherited CARGO_TARGET_DIR does
    // not make it contend with workspace builds for locks.
    let build_dir = env::temp_dir().join("flowtally-bpf-linker");
    install
        .current_dir(prefix)
        .env("LLVM_PREFIX", prefix)
        .args("install bpf-linker --version ^0.13 --no-default-features --force".split_whitespace())
        .arg("--features")
        .arg(format!("llvm-{}", nightly.llvm_major))
        .arg("--root")
        .arg(&ws.cargo_home)
        .arg("--target-dir")
        .arg(&build_dir);
    cmd::run(&mut install).with_context(|| {
        format!(
            "building bpf-linker failed; it links nightly's libLLVM from {}; \
             see the output above, and retry the command below by hand",
            lib.display()
        )
    })?;

    // Hundreds of MB of intermediate files, of no use once installed.
    fs::remove_dir_all(&build_dir)
        .with_context(|| format!("cannot remove the build directory {}", build_dir.display()))
}

/// Fills `lib` with links to nightly's libLLVM files under their own names
/// (what the built binary loads at run time), plus `libLLVM.so` (what the
/// linker looks for at build time).
fn link_libllvm(sysroot_lib: &Path, lib: &Path, llvm_major: u32) -> Result<()> {
    // From scratch, so links to an older nightly's libraries do not linger.
    if lib.exists() {
        fs::remove_dir_all(lib).with_context(|| format!("cannot clear {}", lib.display()))?;
    }
    fs::create_dir_all(lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let entries = fs::read_dir(sysroot_lib)
        .with_context(|| format!("cannot list nightly's {}", sysroot_lib.display()))?;
    let versioned = format!("libLLVM-{llvm_major}-");
    let mut dev_lib = None;
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("libLLVM") && name.contains(".so")) {
            continue;
        }
        let target = sysroot_lib.join(name);
        symlink(&target, lib.join(name))
            .with_context(|| format!("cannot link {name} into {}", lib.display()))?;
        if name.starts_with(&versioned) && name.ends_with(".so") {
            dev_lib = Some(target);
        }
    }
    let Some(dev_lib) = dev_lib else {
        bail!(
            "nightly ships no {versioned}*.so in {}; bpf-linker must link nightly's own libLLVM; \
             reinstall nightly with `rustup toolchain install nightly --force`",
            sysroot_lib.display()
        );
    };
    symlink(&dev_lib, lib.join("libLLVM.so"))
        .with_context(|| format!("cannot link libLLVM.so into {}", lib.display()))
}
