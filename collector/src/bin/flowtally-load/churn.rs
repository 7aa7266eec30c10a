//! RADIUS session churn: a NAS opening, updating and closing sessions on
//! the subscriber addresses at a steady rate, with the collector's own
//! encoder. Each step starts session k, sends an Interim-Update for the
//! session started `open / 2` steps ago and stops the one started `open`
//! steps ago, so `open` sessions stay open.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant, SystemTime},
};

use flowtally::radius::{AccountingRequest, StatusType};

use crate::stream::subscriber_ip;

/// Sessions start an hour before the stream's records, so that every
/// record falls inside the session holding its address.
const STARTED_BEFORE_S: u32 = 3600;

pub struct Churn {
    pub rate: f64,
    pub open: u32,
    pub subscribers: u32,
    pub secret: String,
    /// The step to begin at: a soak continues its churn across trials.
    pub first_step: u32,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ChurnReport {
    pub sent: u64,
    pub answered: u64,
    /// The step after the last one taken.
    pub next_step: u32,
}

impl Churn {
    /// Sends requests at `rate` per second for `duration` from `socket`,
    /// then waits a little for the last answers.
    pub fn run(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        unix_secs: u32,
        duration: Duration,
    ) -> io::Result<ChurnReport> {
        socket.set_nonblocking(true)?;
        let mut report = ChurnReport::default();
        let started = Instant::now();
        let mut step = self.first_step;
        let mut buf = [0; 4096];
        let mut identifier = 0u8;
        let window = self.open.min(self.subscribers).max(2);
        loop {
            while let Ok(n) = socket.recv(&mut buf) {
                // Code 5: Accounting-Response.
                if n >= 20 && buf[0] == 5 {
                    report.answered += 1;
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= duration {
                break;
            }
            if (report.sent as f64) < self.rate * elapsed.as_secs_f64() {
                let mut requests = vec![self.request(StatusType::Start, step, unix_secs)];
                if step >= window / 2 {
                    let k = step - window / 2;
                    requests.push(self.request(StatusType::InterimUpdate, k, unix_secs));
                }
                if step >= window {
                    requests.push(self.request(StatusType::Stop, step - window, unix_secs));
                }
                for r in requests {
                    identifier = identifier.wrapping_add(1);
                    let bytes = r
                        .encode(identifier, self.secret.as_bytes())
                        .expect("a small request encodes");
                    socket.send_to(&bytes, server)?;
                    report.sent += 1;
                }
                step += 1;
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        report.next_step = step;
        // Answers come only once durable: give the last commit time.
        let deadline = Instant::now() + Duration::from_secs(5);
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        while report.answered < report.sent && Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf)
                && n >= 20
                && buf[0] == 5
            {
                report.answered += 1;
            }
        }
        Ok(report)
    }

    fn request(&self, status: StatusType, k: u32, unix_secs: u32) -> AccountingRequest {
        let mut r = AccountingRequest::new(status);
        r.user_name = Some(format!("load{k}"));
        r.session_id = Some(format!("L{k:08x}"));
        r.framed_ip = Some(subscriber_ip(k % self.subscribers));
        r.nas_ip = Some(crate::lab::NAS_IP);
        r.event_timestamp = Some(match status {
            StatusType::Start => unix_secs - STARTED_BEFORE_S,
            // Updates and stops carry the real time: after every record.
            _ => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(unix_secs, |d| d.as_secs() as u32)
                .max(unix_secs + 1),
        });
        if status != StatusType::Start {
            r.session_time = Some(STARTED_BEFORE_S);
            r.input_octets = Some(u64::from(k) * 1000);
            r.output_octets = Some(u64::from(k) * 4000);
        }
        r
    }
}
