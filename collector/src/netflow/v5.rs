//! NetFlow v5 for the socket path: validation and record access shared with
//! the XDP program (`flowtally_common::v5`), plus an encoder for tests and
//! load generation.

use flowtally_common::v5::{HEADER_LEN, Header, Invalid, RECORD_LEN, RawHeader, RawRecord};

/// A validated export: its header and its raw records.
#[derive(Debug)]
pub struct Export<'a> {
    pub header: Header,
    records: &'a [u8],
}

impl<'a> Export<'a> {
    /// Checks the whole datagram before any record is used, exactly as the
    /// XDP program does.
    pub fn decode(datagram: &'a [u8]) -> Result<Self, Invalid> {
        let header: [u8; HEADER_LEN] = datagram
            .get(..HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(Invalid::Truncated)?;
        let header = Header::parse(&RawHeader(header));
        header.validate(datagram.len())?;
        Ok(Self {
            header,
            records: &datagram[HEADER_LEN..],
        })
    }

    pub fn records(&self) -> impl Iterator<Item = RawRecord> + use<'a> {
        self.records
            .chunks_exact(RECORD_LEN)
            .map(|r| RawRecord::from_bytes(r.try_into().expect("chunks_exact yields RECORD_LEN")))
    }
}

/// Every field of a v5 record, for building exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub next_hop: [u8; 4],
    pub input: u16,
    pub output: u16,
    pub packets: u32,
    pub octets: u32,
    /// Exporter uptime (ms) at the first and last packet.
    pub first: u32,
    pub last: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub protocol: u8,
    pub tos: u8,
    pub src_as: u16,
    pub dst_as: u16,
    pub src_mask: u8,
    pub dst_mask: u8,
}

/// Encodes an export; `header.count` is set from `records`.
pub fn encode(header: &Header, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + records.len() * RECORD_LEN);
    out.extend_from_slice(&header.version.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for word in [
        header.sys_uptime,
        header.unix_secs,
        header.unix_nsecs,
        header.flow_sequence,
    ] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(&[header.engine_type, header.engine_id]);
    out.extend_from_slice(&header.sampling.to_be_bytes());
    for r in records {
        out.extend_from_slice(&r.src);
        out.extend_from_slice(&r.dst);
        out.extend_from_slice(&r.next_hop);
        out.extend_from_slice(&r.input.to_be_bytes());
        out.extend_from_slice(&r.output.to_be_bytes());
        for word in [r.packets, r.octets, r.first, r.last] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&r.src_port.to_be_bytes());
        out.extend_from_slice(&r.dst_port.to_be_bytes());
        out.extend_from_slice(&[0, r.tcp_flags, r.protocol, r.tos]);
        out.extend_from_slice(&r.src_as.to_be_bytes());
        out.extend_from_slice(&r.dst_as.to_be_bytes());
        out.extend_from_slice(&[r.src_mask, r.dst_mask, 0, 0]);
    }
    out
}

#[cfg(test)]
mod tests {
    use flowtally_common::agg::{FLAG_SCALE_SAMPLING, ip_from_v4};

    use super::*;

    fn header() -> Header {
        Header {
            version: 5,
            sys_uptime: 100_000,
            unix_secs: 1_700_000_000,
            ..Header::default()
        }
    }

    fn record(i: u8) -> Record {
        Record {
            src: [198, 18, 100, i],
            dst: [198, 19, 0, 1],
            packets: 2,
            octets: 1000 + u32::from(i),
            first: 90_000,
            last: 99_000,
            src_port: 40_000,
            dst_port: 443,
            protocol: 6,
            ..Record::default()
        }
    }

    #[test]
    fn encoded_exports_decode_to_their_records() {
        let records: Vec<Record> = (1..=30).map(record).collect();
        let bytes = encode(&header(), &records);
        let export = Export::decode(&bytes).unwrap();
        assert_eq!(export.header.count, 30);
        let decoded: Vec<_> = export
            .records()
            .map(|raw| export.header.record(&raw, FLAG_SCALE_SAMPLING))
            .collect();
        assert_eq!(decoded.len(), 30);
        assert_eq!(decoded[4].src, ip_from_v4([198, 18, 100, 5]));
        assert_eq!(decoded[4].bytes, 1005);
        assert_eq!(decoded[4].time_ms, 1_700_000_000_000 - 1_000);
    }

    #[test]
    fn malformed_exports_are_rejected_whole() {
        let good = encode(&header(), &[record(1), record(2)]);
        assert_eq!(Export::decode(&good[..20]).unwrap_err(), Invalid::Truncated);
        assert_eq!(
            Export::decode(&good[..good.len() - 1]).unwrap_err(),
            Invalid::LengthMismatch
        );
        let mut lying = good.clone();
        lying[3] = 31;
        assert_eq!(Export::decode(&lying).unwrap_err(), Invalid::BadCount);
        let mut v9 = good;
        v9[1] = 9;
        assert_eq!(Export::decode(&v9).unwrap_err(), Invalid::BadVersion);
    }
}
