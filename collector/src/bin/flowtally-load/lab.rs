//! The test bench's network: two namespaces joined by a veth pair. The
//! collector listens in `rx` on 198.19.0.1; the generator writes frames
//! from `tx`, whose exporter addresses 198.19.64.0/18 route back over the
//! veth (so reverse-path filtering keeps them).

use std::{
    fs, io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, OwnedFd},
    process::Command,
    thread,
};

use anyhow::{Context as _, Result, ensure};

pub const COLLECTOR_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const NAS_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
pub const RX_IF: &str = "ftl-rx";
const TX_IF: &str = "ftl-tx";

pub struct Netns {
    pub name: String,
    file: OwnedFd,
}

impl Netns {
    fn create(name: String) -> Result<Self> {
        ip(&["netns", "add", &name])?;
        let file = fs::File::open(format!("/run/netns/{name}"))
            .with_context(|| format!("opening netns {name}"))?
            .into();
        Ok(Self { name, file })
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens belong
    /// to the namespace and keep belonging to it when used elsewhere.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let fd = self.file.as_raw_fd();
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on this thread only; the fd stays open.
                    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .expect("netns thread panicked")
        })
    }

    /// `ip -n <ns> args`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `command` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

pub struct Lab {
    pub rx: Netns,
    pub tx: Netns,
    pub tx_ifindex: i32,
    pub rx_mac: [u8; 6],
    pub tx_mac: [u8; 6],
}

impl Lab {
    pub fn new() -> Result<Self> {
        let tag = std::process::id();
        // Namespaces first: dropping them removes the veth too.
        let rx = Netns::create(format!("ftload-rx-{tag}"))?;
        let tx = Netns::create(format!("ftload-tx-{tag}"))?;
        ip(&[
            "link", "add", RX_IF, "netns", &rx.name, "type", "veth", "peer", "name", TX_IF,
            "netns", &tx.name,
        ])?;
        for (ns, iface, addr) in [(&rx, RX_IF, "198.19.0.1/24"), (&tx, TX_IF, "198.19.0.2/24")] {
            ns.ip(&["link", "set", "lo", "up"])?;
            ns.ip(&["addr", "add", addr, "dev", iface])?;
            ns.ip(&["link", "set", iface, "up"])?;
        }
        rx.ip(&["route", "add", "198.19.64.0/18", "dev", RX_IF])?;
        let rx_mac = mac(&rx.ip(&["-br", "link", "show", RX_IF])?)?;
        let tx_mac = mac(&tx.ip(&["-br", "link", "show", TX_IF])?)?;
        let name = std::ffi::CString::new(TX_IF)?;
        let tx_ifindex = tx.enter(|| {
            // SAFETY: a valid C string.
            unsafe { libc::if_nametoindex(name.as_ptr()) }
        })? as i32;
        ensure!(tx_ifindex > 0, "no {TX_IF} in {}", tx.name);
        Ok(Self {
            rx,
            tx,
            tx_ifindex,
            rx_mac,
            tx_mac,
        })
    }

    /// Frames the sender's veth end refused or dropped because the
    /// collector's end was full (its transmit drops). With XDP on the
    /// receiving end, a full ring pushes back: the sender sees ENOBUFS and
    /// sends the frame again, so these are not lost.
    pub fn veth_drops(&self) -> Result<u64> {
        let out = self.tx.ip(&["-s", "link", "show", TX_IF])?;
        // "TX:  bytes packets errors dropped ..." then the numbers.
        let mut lines = out
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("TX:"));
        let numbers = lines.nth(1).context("no TX counters")?;
        let dropped = numbers.split_whitespace().nth(3).context("no TX dropped")?;
        Ok(dropped.parse()?)
    }
}

/// The MAC in `ip -br link` output: `name state mac <flags>`.
fn mac(brief: &str) -> Result<[u8; 6]> {
    let word = brief.split_whitespace().nth(2).context("no MAC")?;
    let bytes: Vec<u8> = word
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes.try_into().ok().context("bad MAC")
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
