//! Least privilege. Capabilities are needed to set up: loading and
//! attaching the XDP program and creating its maps (`CAP_BPF`,
//! `CAP_NET_ADMIN`, `CAP_PERFMON`) and binding ports below 1024
//! (`CAP_NET_BIND_SERVICE`). What follows works on file descriptors already
//! held — map lookups, updates and deletes, the ring buffer, sockets, the
//! database — for which Linux 6.5 and later check no capability. Older
//! kernels ask for `CAP_BPF` on every `bpf()` call while
//! `kernel.unprivileged_bpf_disabled` is set (Debian's default), so there
//! `CAP_BPF` is kept, and nothing else.
//!
//! The drop covers every set — effective, permitted, inheritable, ambient
//! and, with `CAP_SETPCAP`, bounding — and sets no_new_privs, in every
//! thread: capabilities are per thread, and the async runtime's threads
//! already exist. Like libpsx, each thread drops its own from a signal
//! handler, and `/proc/self/task/<tid>/status` shows when all have.

use std::{
    fs, io,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_SETPCAP: u32 = 8;
const CAP_BPF: u32 = 39;
/// How long the other threads get to drop theirs.
const PATIENCE: Duration = Duration::from_secs(2);
/// The status lines that say what a thread may do.
const PRIVILEGE_LINES: [&str; 6] = [
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "NoNewPrivs",
];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What the drop achieved.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped {
    /// Threads that dropped theirs (this one included).
    pub threads: usize,
    /// Capabilities kept (bit N is capability N): none, or `CAP_BPF`.
    pub kept: u64,
    /// Whether the bounding set was emptied too (needs `CAP_SETPCAP`).
    pub bounding: bool,
}

/// The highest capability number this kernel knows, for the bounding set.
static LAST_CAP: AtomicU32 = AtomicU32::new(0);
/// What the signal handler keeps, as two 32-bit words.
static KEEP_LOW: AtomicU32 = AtomicU32::new(0);
static KEEP_HIGH: AtomicU32 = AtomicU32::new(0);

/// [`drop_all`] for the daemon once it is set up, saying what is left.
pub fn drop_after_setup() -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dropped = drop_all().context("cannot drop capabilities after setting up")?;
    let kept = if dropped.kept == 0 {
        "none kept"
    } else {
        "kept CAP_BPF (this kernel checks it on every bpf() call)"
    };
    let bounding = if dropped.bounding {
        "bounding set emptied"
    } else {
        "bounding set unchanged (no CAP_SETPCAP)"
    };
    tracing::info!(
        "privileges: capabilities dropped in all {} threads, {kept}, {bounding}, no_new_privs set",
        dropped.threads
    );
    Ok(())
}

/// Drops every capability of every thread of this process that it will not
/// need again, for good.
pub fn drop_all() -> io::Result<Dropped> {
    let read = |path| fs::read_to_string(path).map(|s| s.trim().to_owned());
    let last_cap = read("/proc/sys/kernel/cap_last_cap")?;
    let last_cap = last_cap
        .parse()
        .map_err(|_| io::Error::other(format!("cap_last_cap is {last_cap:?}")))?;
    LAST_CAP.store(last_cap, Ordering::SeqCst);
    let held = effective()?;
    let release = read("/proc/sys/kernel/osrelease")?;
    // Absent: a kernel without unprivileged BPF at all, which checks too.
    let disabled = read("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or_default();
    let kept = needed_after_setup(&release, &disabled) & held;
    KEEP_LOW.store(kept as u32, Ordering::SeqCst);
    KEEP_HIGH.store((kept >> 32) as u32, Ordering::SeqCst);
    let bounding = held & (1 << CAP_SETPCAP) != 0;

    let signal = libc::SIGRTMIN() + 3;
    set_handler(signal, on_signal as *const () as libc::sighandler_t)?;
    let result = drop_other_threads(signal);
    // Late duplicates of the signal must not terminate the process.
    set_handler(signal, libc::SIG_IGN)?;
    Ok(Dropped {
        threads: result?,
        kept,
        bounding,
    })
}

/// The capabilities the daemon still needs once set up, on a kernel of
/// this release with this `unprivileged_bpf_disabled`: `CAP_BPF` for map
/// access on kernels before 6.5 that restrict `bpf()`, else none.
fn needed_after_setup(release: &str, unprivileged_bpf_disabled: &str) -> u64 {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version < (6, 5) && unprivileged_bpf_disabled != "0" {
        1 << CAP_BPF
    } else {
        0
    }
}

fn drop_other_threads(signal: libc::c_int) -> io::Result<usize> {
    if drop_own() != 0 {
        return Err(io::Error::last_os_error());
    }
    let own = privilege_lines("thread-self")?;
    let (pid, me) = (std::process::id(), gettid());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut behind = Vec::new();
        let mut threads = 0;
        for entry in fs::read_dir("/proc/self/task")? {
            let tid: i32 = entry?.file_name().to_string_lossy().parse().unwrap_or(0);
            threads += 1;
            // A thread that has exited meanwhile has nothing left to drop.
            match privilege_lines(&format!("self/task/{tid}")) {
                Ok(lines) if lines != own => behind.push(tid),
                _ => {}
            }
        }
        if behind.is_empty() {
            return Ok(threads);
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "threads {behind:?} kept their capabilities (signal {signal} blocked?)"
            )));
        }
        for tid in behind.into_iter().filter(|&tid| tid != me) {
            // SAFETY: plain syscall; ESRCH (exited) is fine.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The privilege lines of `/proc/<task>/status`.
fn privilege_lines(task: &str) -> io::Result<Vec<String>> {
    let status = fs::read_to_string(format!("/proc/{task}/status"))?;
    Ok(status
        .lines()
        .filter(|l| PRIVILEGE_LINES.iter().any(|p| l.starts_with(p)))
        .map(str::to_owned)
        .collect())
}

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: errno is this thread's; the handler must leave it as it was.
    let errno = unsafe { *libc::__errno_location() };
    drop_own();
    unsafe { *libc::__errno_location() = errno };
}

/// Drops this thread's capabilities but the kept ones, with raw syscalls
/// only, so that a signal handler may do it: ambient, then bounding (while
/// `CAP_SETPCAP` is still effective; without it the kernel refuses and it
/// stays), then the rest. Returns 0, or -1 if setting the sets failed.
fn drop_own() -> libc::c_long {
    // SAFETY (all): syscalls on this thread's own credentials, with valid
    // pointers to initialised memory.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let keep = [
            KEEP_LOW.load(Ordering::SeqCst),
            KEEP_HIGH.load(Ordering::SeqCst),
        ];
        for cap in 0..=LAST_CAP.load(Ordering::SeqCst) {
            if keep[(cap / 32) as usize % 2] & (1 << (cap % 32)) == 0 {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
        }
        let header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = keep.map(|kept| CapData {
            effective: kept,
            permitted: kept,
            inheritable: 0,
        });
        let rc = libc::syscall(libc::SYS_capset, &header, data.as_ptr());
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        rc
    }
}

/// This thread's effective set (the low 64 capabilities).
fn effective() -> io::Result<u64> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: valid pointers to a v3 header and two data words.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(data[1].effective) << 32 | u64::from(data[0].effective))
}

fn set_handler(signal: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler only makes syscalls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn gettid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_bpf_stays_only_where_the_kernel_checks_it_on_every_bpf_call() {
        assert_eq!(needed_after_setup("6.18.0-1-amd64", "2"), 0);
        assert_eq!(needed_after_setup("6.5.0", "1"), 0);
        assert_eq!(needed_after_setup("6.1.0-28-amd64", "2"), 1 << CAP_BPF);
        assert_eq!(needed_after_setup("5.18.19", "1"), 1 << CAP_BPF);
        assert_eq!(needed_after_setup("6.1.0-28-amd64", "0"), 0);
        assert_eq!(
            needed_after_setup("6.1.0", ""),
            1 << CAP_BPF,
            "unknown: keep"
        );
    }
}
