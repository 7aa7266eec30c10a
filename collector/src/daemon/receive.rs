//! Receiving flow exports on the socket path: per NetFlow address, N
//! sockets bound with `SO_REUSEPORT`, each read by its own thread in
//! `recvmmsg` batches, so that a host without XDP decodes on every core.
//!
//! Order: the kernel picks a socket by a hash of the datagram's addresses
//! and ports, so one exporter always reaches the same socket, and one
//! thread reads it: its exports are decoded in arrival order, template
//! sets before the data that uses them.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{clock::unix_ms, flow_socket::SocketPath};

/// Datagrams per `recvmmsg` call.
const BATCH: usize = 32;
/// Largest UDP payload; exports are never larger.
const MAX_DATAGRAM: usize = 65_535;
/// How long a blocked receive waits before it looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Most receive threads per address (`socket_receive_threads`).
pub const MAX_RECEIVE_THREADS: usize = 64;

/// The sockets of one address: bound to the same port with `SO_REUSEPORT`
/// (port 0: the first one's free port).
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets: Vec<UdpSocket> = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = bind_reuseport(addr)?;
        addr = socket.local_addr()?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Threads per address for `configured` (0: one per CPU).
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_RECEIVE_THREADS))
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<UdpSocket> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int we own and its length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes for this family.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The sender of a received datagram.
fn source(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(&raw const *storage).cast() };
            Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*(&raw const *storage).cast() };
            Some(Ipv6Addr::from(sin6.sin6_addr.s6_addr).into())
        }
        _ => None,
    }
}

/// The receive threads; [`Receivers::stop`] ends them.
pub struct Receivers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Receivers {
    /// One thread per socket, handing every datagram to `path`.
    pub fn start(sockets: Vec<UdpSocket>, path: &Arc<SocketPath>) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let (stop, path) = (Arc::clone(&stop), Arc::clone(path));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("netflow-rx-{i}"))
                    .spawn(move || receive(&socket, &path, &stop))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops receiving; returns once every thread has handed over what it
    /// had received.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a netflow receive thread panicked");
            }
        }
    }
}

/// Reads `socket` in batches until `stop`.
fn receive(socket: &UdpSocket, path: &SocketPath, stop: &AtomicBool) {
    let mut buffers = vec![0u8; BATCH * MAX_DATAGRAM];
    // SAFETY: all-zero is valid for these plain C structs.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; BATCH];
    let mut iovecs: Vec<libc::iovec> = buffers
        .chunks_mut(MAX_DATAGRAM)
        .map(|chunk| libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        })
        .collect();
    // SAFETY: as above.
    let mut messages: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
    for (i, message) in messages.iter_mut().enumerate() {
        message.msg_hdr.msg_name = (&raw mut names[i]).cast();
        message.msg_hdr.msg_iov = &raw mut iovecs[i];
        message.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        for message in &mut messages {
            message.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: `messages` points at BATCH live headers, names and
        // buffers, which outlive the call; MSG_WAITFORONE blocks for the
        // first datagram only (bounded by the socket's read timeout).
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let err = io::Error::last_os_error();
            // Timeouts let the loop see `stop`; ICMP errors surface on UDP
            // sockets as transient errors.
            if !matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                tracing::debug!("netflow socket: {err}");
            }
            continue;
        }
        let now_ms = unix_ms();
        for (i, message) in messages.iter().enumerate().take(received as usize) {
            let len = (message.msg_len as usize).min(MAX_DATAGRAM);
            if let Some(from) = source(&names[i]) {
                let start = i * MAX_DATAGRAM;
                path.handle(now_ms, from, &buffers[start..start + len]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_port_many_sockets_and_each_datagram_reaches_one_of_them() {
        let sockets = bind_group("127.0.0.1:0".parse().unwrap(), 4).unwrap();
        let port = sockets[0].local_addr().unwrap().port();
        assert!(
            sockets
                .iter()
                .all(|s| s.local_addr().unwrap().port() == port)
        );
        let senders: Vec<UdpSocket> = (0..16)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, sender) in senders.iter().enumerate() {
            for n in 0..3u8 {
                sender.send_to(&[i as u8, n], ("127.0.0.1", port)).unwrap();
            }
        }
        // Each sender's datagrams all land on one socket, in order.
        let mut seen = vec![Vec::new(); senders.len()];
        for (s, socket) in sockets.iter().enumerate() {
            let mut buf = [0; 8];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let i = senders
                    .iter()
                    .position(|x| x.local_addr().unwrap() == from)
                    .unwrap();
                seen[i].push((s, buf[1]));
            }
        }
        for got in &seen {
            assert_eq!(got.len(), 3, "{seen:?}");
            assert!(got.iter().all(|&(s, _)| s == got[0].0), "{seen:?}");
            assert_eq!(got.iter().map(|&(_, n)| n).collect::<Vec<_>>(), [0, 1, 2]);
        }
    }
}
