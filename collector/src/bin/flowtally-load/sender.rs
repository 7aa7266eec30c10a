//! Puts the stream on the wire: prebuilt Ethernet frames written by
//! `sendmmsg` on AF_PACKET sockets (one per thread), paced to a target rate.
//! Raw frames let one interface speak for thousands of exporter addresses
//! and skip the sender's own UDP stack, so the sender stays cheap next to
//! the collector it measures.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    thread,
    time::{Duration, Instant},
};

use crate::stream::{Export, exporter_ip};

/// Frames handed to the kernel per `sendmmsg`, at most.
const MAX_BATCH: usize = 64;
const EXPORTER_PORT: u16 = 50_000;

/// Where frames go: from the sender's MAC to the collector's MAC and
/// address.
#[derive(Clone, Debug)]
pub struct Link {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
}

/// An export in its Ethernet frame, with what it carries.
pub struct Frame {
    pub bytes: Vec<u8>,
    pub records: u32,
    pub octets: u64,
    pub frame_octets: u64,
}

impl Frame {
    pub fn new(link: &Link, export: &Export) -> Self {
        Self {
            bytes: frame(link, exporter_ip(export.exporter), &export.payload),
            records: export.records,
            octets: export.bytes,
            frame_octets: export.frame_bytes,
        }
    }
}

/// What was handed to the kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub frames: u64,
    pub records: u64,
    /// IP bytes (see `stream::Export`).
    pub bytes: u64,
    /// sFlow frame bytes (see `stream::Export`).
    pub frame_bytes: u64,
    pub elapsed: Duration,
}

impl Sent {
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn add(&mut self, other: &Self) {
        self.frames += other.frames;
        self.records += other.records;
        self.bytes += other.bytes;
        self.frame_bytes += other.frame_bytes;
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// An AF_PACKET socket bound to the sending interface.
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open(ifindex: i32) -> io::Result<Self> {
        // SAFETY: plain socket calls; every pointer refers to a live local.
        unsafe {
            // Protocol 0: send only, nothing is queued for reading.
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = ifindex;
            let rc = libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // Straight to the driver: a veth has no queue to gain from.
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as u32,
            );
            Ok(Self(fd))
        }
    }
}

/// Sends `lanes[i]` on `sockets[i]`, one thread each, cycling through each
/// lane's frames for `duration`, together at `rate` frames/s (`None`: as
/// fast as the threads go).
pub fn blast(
    sockets: &[PacketSocket],
    lanes: &[Vec<Frame>],
    rate: Option<f64>,
    duration: Duration,
) -> io::Result<Sent> {
    assert_eq!(sockets.len(), lanes.len());
    let busy = lanes.iter().filter(|l| !l.is_empty()).count().max(1);
    let lane_rate = rate.map(|r| r / busy as f64);
    thread::scope(|scope| {
        let handles: Vec<_> = sockets
            .iter()
            .zip(lanes)
            .filter(|(_, frames)| !frames.is_empty())
            .map(|(socket, frames)| scope.spawn(move || lane(socket, frames, lane_rate, duration)))
            .collect();
        let mut total = Sent::default();
        for handle in handles {
            total.add(&handle.join().expect("sender thread panicked")?);
        }
        Ok(total)
    })
}

/// Sends every frame once, at most `rate` frames/s: template exports before
/// data, spread out so that no receive buffer overflows.
pub fn once(socket: &PacketSocket, frames: &[Frame], rate: f64) -> io::Result<Sent> {
    let duration = Duration::from_secs_f64(frames.len() as f64 / rate);
    let mut sent = Sent::default();
    let started = Instant::now();
    for (i, chunk) in frames.chunks(8).enumerate() {
        let due = started + duration.mul_f64((i * 8) as f64 / frames.len() as f64);
        pace_until(due);
        let mut hdrs = Headers::new(chunk);
        let mut at = 0;
        while at < chunk.len() {
            at += send_batch(socket, &mut hdrs.msgs[at..])?;
        }
        for f in chunk {
            sent.frames += 1;
            sent.records += u64::from(f.records);
            sent.bytes += f.octets;
            sent.frame_bytes += f.frame_octets;
        }
    }
    sent.elapsed = started.elapsed();
    Ok(sent)
}

fn lane(
    socket: &PacketSocket,
    frames: &[Frame],
    rate: Option<f64>,
    duration: Duration,
) -> io::Result<Sent> {
    let mut hdrs = Headers::new(frames);
    // Bursts of at most ~1 ms of traffic: pacing stays smooth at low rates.
    let batch = rate.map_or(MAX_BATCH, |r| ((r / 1000.0) as usize).clamp(1, MAX_BATCH));
    let mut sent = Sent::default();
    let mut cursor = 0;
    let started = Instant::now();
    let deadline = started + duration;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(sent.frames as f64 / rate);
            if due >= deadline {
                break;
            }
            pace_until(due);
        }
        let n = batch.min(frames.len() - cursor);
        let done = send_batch(socket, &mut hdrs.msgs[cursor..cursor + n])?;
        for f in &frames[cursor..cursor + done] {
            sent.records += u64::from(f.records);
            sent.bytes += f.octets;
            sent.frame_bytes += f.frame_octets;
        }
        sent.frames += done as u64;
        cursor = (cursor + done) % frames.len();
    }
    sent.elapsed = started.elapsed();
    Ok(sent)
}

/// Sleeps until `due`. No spinning: the sender shares the machine with the
/// collector it measures, and bursts of up to ~1 ms make the scheduler's
/// ~50 µs lateness harmless.
fn pace_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        thread::sleep(due - now);
    }
}

/// `sendmmsg` headers pointing at each frame, built once per lane.
struct Headers {
    msgs: Vec<libc::mmsghdr>,
    _iovs: Vec<libc::iovec>,
}

impl Headers {
    fn new(frames: &[Frame]) -> Self {
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.bytes.as_ptr().cast_mut().cast(),
                iov_len: f.bytes.len(),
            })
            .collect();
        let msgs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero msghdr is valid (no name, no control).
                let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
                hdr.msg_hdr.msg_iov = iov;
                hdr.msg_hdr.msg_iovlen = 1;
                hdr
            })
            .collect();
        Self { msgs, _iovs: iovs }
    }
}

/// Sends what it can of `msgs`; returns how many went (at least one).
fn send_batch(socket: &PacketSocket, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    loop {
        // SAFETY: the headers point at iovecs and frames that outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                socket.0.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as u32,
                0,
            )
        };
        if n > 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        // The device is busy (a veth whose peer's ring is full pushes back):
        // the frame was not taken. Sleep rather than spin, so that the
        // receiving side's NAPI poll, which may need this CPU, can empty it.
        if n == 0 || matches!(err.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
            thread::sleep(Duration::from_micros(50));
            continue;
        }
        return Err(err);
    }
}

/// `payload` in UDP from `src`, in IPv4 (header checksum set, UDP checksum
/// 0, which IPv4 allows), in Ethernet.
fn frame(link: &Link, src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 28 + payload.len());
    f.extend_from_slice(&link.dst_mac);
    f.extend_from_slice(&link.src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&link.dst_ip.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&EXPORTER_PORT.to_be_bytes());
    f.extend_from_slice(&link.dst_port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_valid_ipv4_header_and_the_udp_length() {
        let link = Link {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            dst_ip: Ipv4Addr::new(198, 19, 0, 1),
            dst_port: 2055,
        };
        let f = frame(&link, Ipv4Addr::new(198, 19, 64, 7), &[1, 2, 3]);
        assert_eq!(f.len(), 14 + 20 + 8 + 3);
        assert_eq!(checksum(&f[14..34]), 0, "a valid header sums to zero");
        assert_eq!(&f[26..30], &[198, 19, 64, 7]);
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 2055);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 11);
    }
}
