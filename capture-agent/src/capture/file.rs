//! Capture file reader: pcap (both byte orders, micro- and nanosecond timestamps) and pcapng
//! (SHB, IDB, EPB, SPB and the obsolete PB; per-interface link type, timestamp resolution and
//! offset; several sections). Other pcapng blocks are skipped.
//!
//! The reader keeps one buffer and hands out frames as slices of it, so reading a packet copies
//! nothing beyond the `read` into the buffer. A truncated or corrupt file stops with an error
//! naming the byte offset of the record that could not be read.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use super::{CaptureError, LinkType, Packet};

/// Largest pcap record or pcapng block accepted; anything larger is corruption.
const MAX_RECORD: usize = 64 * 1024 * 1024;
/// Largest frame in a pcap record (the usual maximum snap length is 262144).
const MAX_FRAME: u32 = 1024 * 1024;
const READ_CHUNK: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
struct Interface {
    link: LinkType,
    snaplen: u32,
    /// Timestamp units per second.
    units: u64,
    /// Seconds added to every timestamp.
    offset_s: i64,
}

#[derive(Debug)]
enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        link: LinkType,
        snaplen: u32,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// Reads packets from a pcap or pcapng stream.
pub struct CaptureFile<R: Read> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    format: Format,
}

impl CaptureFile<File> {
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: path.display().to_string(),
            source,
        })?;
        CaptureFile::new(file)
    }
}

#[inline]
fn u16_of(b: &[u8], big: bool) -> u16 {
    let a = [b[0], b[1]];
    if big {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

#[inline]
fn u32_of(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn ns_from_units(ts: u64, units: u64, offset_s: i64) -> i64 {
    let ns = (u128::from(ts) * 1_000_000_000 / u128::from(units.max(1))) as i64;
    ns.saturating_add(offset_s.saturating_mul(1_000_000_000))
}

impl<R: Read> CaptureFile<R> {
    /// Reads the file header and detects the format.
    pub fn new(reader: R) -> Result<Self, CaptureError> {
        let mut f = CaptureFile {
            reader,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            format: Format::Pcap {
                big_endian: false,
                nanos: false,
                link: LinkType::ETHERNET,
                snaplen: 0,
            },
        };
        f.require(4, "file header")?;
        let magic = u32::from_le_bytes(f.buf[0..4].try_into().expect("4 bytes"));
        match magic {
            0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => {
                f.require(24, "pcap file header")?;
                let big = matches!(magic, 0xd4c3_b2a1 | 0x4d3c_b2a1);
                let nanos = matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1);
                let h = &f.buf[0..24];
                let snaplen = u32_of(&h[16..], big);
                // The upper bits of the link type field may carry FCS information.
                let link = LinkType(u32_of(&h[20..], big) & 0x0fff_ffff);
                f.format = Format::Pcap {
                    big_endian: big,
                    nanos,
                    link,
                    snaplen,
                };
                f.start = 24;
            }
            0x0a0d_0d0a => {
                f.format = Format::PcapNg {
                    big_endian: false,
                    interfaces: Vec::new(),
                };
            }
            _ => return Err(CaptureError::UnknownFormat { magic }),
        }
        Ok(f)
    }

    /// File offset of the next record.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Makes at least `n` bytes available from `start`; false at end of file.
    fn fill(&mut self, n: usize) -> Result<bool, CaptureError> {
        if self.end - self.start >= n {
            return Ok(true);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.base += self.start as u64;
            self.start = 0;
        }
        if self.buf.len() < n {
            self.buf.resize(n.max(self.buf.len() * 2), 0);
        }
        while self.end < n && !self.eof {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CaptureError::Io {
                        offset: self.base + self.end as u64,
                        source,
                    })
                }
            }
        }
        Ok(self.end - self.start >= n)
    }

    /// Like `fill`, but running out of file is a truncation error.
    fn require(&mut self, n: usize, what: &'static str) -> Result<(), CaptureError> {
        if self.fill(n)? {
            Ok(())
        } else {
            Err(CaptureError::Truncated {
                offset: self.offset(),
                what,
                needed: n as u64,
                available: (self.end - self.start) as u64,
            })
        }
    }

    fn corrupt(&self, what: String) -> CaptureError {
        CaptureError::Corrupt {
            offset: self.offset(),
            what,
        }
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::PcapNg { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        let Format::Pcap {
            big_endian: big,
            nanos,
            link,
            snaplen,
        } = self.format
        else {
            unreachable!("pcap format")
        };
        if !self.fill(1)? {
            return Ok(None);
        }
        self.require(16, "pcap record header")?;
        let h = &self.buf[self.start..self.start + 16];
        let sec = u32_of(h, big);
        let frac = u32_of(&h[4..], big);
        let incl = u32_of(&h[8..], big);
        let orig = u32_of(&h[12..], big);
        let frac_limit = if nanos { 1_000_000_000 } else { 1_000_000 };
        if frac >= frac_limit {
            return Err(self.corrupt(format!(
                "record timestamp fraction {frac} out of range (record header damaged)"
            )));
        }
        if incl > MAX_FRAME.max(snaplen.min(MAX_RECORD as u32)) {
            return Err(self.corrupt(format!(
                "record claims {incl} captured bytes (snap length {snaplen})"
            )));
        }
        let total = 16 + incl as usize;
        self.require(total, "pcap record data")?;
        let ts = i64::from(sec) * 1_000_000_000 + i64::from(frac) * if nanos { 1 } else { 1000 };
        let data_start = self.start + 16;
        self.start += total;
        Ok(Some(Packet {
            ts,
            link,
            data: &self.buf[data_start..data_start + incl as usize],
            orig_len: orig,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        loop {
            if !self.fill(1)? {
                return Ok(None);
            }
            self.require(12, "pcapng block header")?;
            let block_type_raw = &self.buf[self.start..self.start + 4];
            if block_type_raw == [0x0a, 0x0d, 0x0d, 0x0a] {
                self.section_header()?;
                continue;
            }
            let Format::PcapNg {
                big_endian: big, ..
            } = self.format
            else {
                unreachable!("pcapng format")
            };
            let b = &self.buf[self.start..];
            let block_type = u32_of(b, big);
            let len = u32_of(&b[4..], big) as usize;
            if len < 12 || !len.is_multiple_of(4) || len > MAX_RECORD {
                return Err(self.corrupt(format!(
                    "block type {block_type:#x} has invalid length {len}"
                )));
            }
            self.require(len, "pcapng block")?;
            let b = &self.buf[self.start..self.start + len];
            let trailer = u32_of(&b[len - 4..], big) as usize;
            if trailer != len {
                return Err(self.corrupt(format!(
                    "block type {block_type:#x} length {len} does not match its trailer {trailer}"
                )));
            }
            let body_start = self.start + 8;
            let body_len = len - 12;
            match block_type {
                1 => {
                    self.interface_description(body_start, body_len, big)?;
                    self.start += len;
                }
                2 | 3 | 6 => {
                    let packet = self.packet_block(block_type, body_start, body_len, big)?;
                    self.start += len;
                    if let Some((ts, link, data_at, caplen, orig)) = packet {
                        return Ok(Some(Packet {
                            ts,
                            link,
                            data: &self.buf[data_at..data_at + caplen],
                            orig_len: orig,
                        }));
                    }
                }
                _ => self.start += len,
            }
        }
    }

    fn section_header(&mut self) -> Result<(), CaptureError> {
        let b = &self.buf[self.start..self.start + 12];
        let big = match u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) {
            0x1a2b_3c4d => false,
            0x4d3c_2b1a => true,
            bom => {
                return Err(self.corrupt(format!(
                "section header byte-order magic {bom:#010x} is neither 0x1a2b3c4d nor 0x4d3c2b1a"
            )))
            }
        };
        let len = u32_of(&b[4..], big) as usize;
        if len < 28 || !len.is_multiple_of(4) || len > MAX_RECORD {
            return Err(self.corrupt(format!("section header has invalid length {len}")));
        }
        self.require(len, "pcapng section header")?;
        let trailer = u32_of(&self.buf[self.start + len - 4..], big) as usize;
        if trailer != len {
            return Err(self.corrupt(format!(
                "section header length {len} does not match its trailer {trailer}"
            )));
        }
        self.format = Format::PcapNg {
            big_endian: big,
            interfaces: Vec::new(),
        };
        self.start += len;
        Ok(())
    }

    fn interface_description(
        &mut self,
        at: usize,
        len: usize,
        big: bool,
    ) -> Result<(), CaptureError> {
        if len < 8 {
            return Err(self.corrupt("interface description shorter than 8 bytes".into()));
        }
        let b = &self.buf[at..at + len];
        let mut iface = Interface {
            link: LinkType(u32::from(u16_of(b, big))),
            snaplen: u32_of(&b[4..], big),
            units: 1_000_000,
            offset_s: 0,
        };
        let mut opt = 8;
        while opt + 4 <= len {
            let code = u16_of(&b[opt..], big);
            let olen = usize::from(u16_of(&b[opt + 2..], big));
            let value = opt + 4;
            if code == 0 || value + olen > len {
                break;
            }
            match (code, olen) {
                (9, 1) => {
                    let r = b[value];
                    let exp = u32::from(r & 0x7f);
                    iface.units = if r & 0x80 == 0 {
                        10u64.checked_pow(exp).unwrap_or(1_000_000)
                    } else {
                        1u64.checked_shl(exp).unwrap_or(1_000_000)
                    };
                }
                (14, 8) => {
                    let hi = u32_of(&b[value..], big);
                    let lo = u32_of(&b[value + 4..], big);
                    iface.offset_s = if big {
                        (u64::from(hi) << 32 | u64::from(lo)) as i64
                    } else {
                        (u64::from(lo) << 32 | u64::from(hi)) as i64
                    };
                }
                _ => {}
            }
            opt = value + olen.div_ceil(4) * 4;
        }
        if let Format::PcapNg { interfaces, .. } = &mut self.format {
            interfaces.push(iface);
        }
        Ok(())
    }

    /// EPB (6), SPB (3) or obsolete PB (2): timestamp, link type, data position and lengths.
    #[allow(clippy::type_complexity)]
    fn packet_block(
        &self,
        block_type: u32,
        at: usize,
        len: usize,
        big: bool,
    ) -> Result<Option<(i64, LinkType, usize, usize, u32)>, CaptureError> {
        let Format::PcapNg { interfaces, .. } = &self.format else {
            unreachable!("pcapng format")
        };
        let b = &self.buf[at..at + len];
        let iface = |id: usize| {
            interfaces.get(id).copied().ok_or_else(|| {
                self.corrupt(format!(
                    "packet for interface {id}, but only {} interfaces are described",
                    interfaces.len()
                ))
            })
        };
        match block_type {
            3 => {
                if len < 4 {
                    return Err(self.corrupt("simple packet block shorter than 4 bytes".into()));
                }
                let i = iface(0)?;
                let orig = u32_of(b, big);
                let mut caplen = (orig as usize).min(len - 4);
                if i.snaplen > 0 {
                    caplen = caplen.min(i.snaplen as usize);
                }
                // No timestamp in an SPB.
                Ok(Some((0, i.link, at + 4, caplen, orig)))
            }
            _ => {
                let (id, head) = if block_type == 6 {
                    if len < 20 {
                        return Err(
                            self.corrupt("enhanced packet block shorter than 20 bytes".into())
                        );
                    }
                    (u32_of(b, big) as usize, 0)
                } else {
                    if len < 20 {
                        return Err(self.corrupt("packet block shorter than 20 bytes".into()));
                    }
                    (usize::from(u16_of(b, big)), 0)
                };
                let i = iface(id)?;
                let hi = u64::from(u32_of(&b[head + 4..], big));
                let lo = u64::from(u32_of(&b[head + 8..], big));
                let caplen = u32_of(&b[head + 12..], big) as usize;
                let orig = u32_of(&b[head + 16..], big);
                if 20 + caplen > len {
                    return Err(self.corrupt(format!(
                        "packet block claims {caplen} captured bytes in a {len}-byte body"
                    )));
                }
                let ts = ns_from_units(hi << 32 | lo, i.units, i.offset_s);
                Ok(Some((ts, i.link, at + 20, caplen, orig)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big: bool, nanos: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        out.extend_from_slice(&w16(2));
        out.extend_from_slice(&w16(4));
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&w32(65535));
        out.extend_from_slice(&w32(101));
        for (sec, frac, data) in records {
            out.extend_from_slice(&w32(*sec));
            out.extend_from_slice(&w32(*frac));
            out.extend_from_slice(&w32(data.len() as u32));
            out.extend_from_slice(&w32(data.len() as u32));
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn pcap_in_both_byte_orders_and_resolutions() {
        for big in [false, true] {
            for nanos in [false, true] {
                let bytes = pcap(big, nanos, &[(10, 5, b"abc"), (11, 7, b"")]);
                let mut f = CaptureFile::new(&bytes[..]).unwrap();
                let p = f.next_packet().unwrap().unwrap();
                assert_eq!(p.data, b"abc");
                assert_eq!(p.link, LinkType::RAW);
                assert_eq!(p.ts, 10_000_000_000 + if nanos { 5 } else { 5000 });
                let p = f.next_packet().unwrap().unwrap();
                assert_eq!(p.data, b"");
                assert!(f.next_packet().unwrap().is_none());
            }
        }
    }

    #[test]
    fn truncated_and_corrupt_pcap_name_the_offset() {
        let bytes = pcap(false, false, &[(1, 0, b"abcd"), (2, 0, b"efgh")]);
        let cut = &bytes[..bytes.len() - 2];
        let mut f = CaptureFile::new(cut).unwrap();
        assert!(f.next_packet().unwrap().is_some());
        let err = f.next_packet().unwrap_err();
        assert_eq!(err.offset(), Some(44));
        assert!(err.to_string().contains("byte offset 44"), "{err}");

        let mut bad = bytes.clone();
        bad[44 + 8..44 + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        let mut f = CaptureFile::new(&bad[..]).unwrap();
        assert!(f.next_packet().unwrap().is_some());
        let err = f.next_packet().unwrap_err();
        assert!(
            matches!(err, CaptureError::Corrupt { offset: 44, .. }),
            "{err}"
        );
    }

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = 12 + body.len().div_ceil(4) * 4;
        let mut out = Vec::new();
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(body);
        out.resize(len - 4, 0);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out
    }

    #[test]
    fn pcapng_interfaces_resolutions_and_simple_packets() {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut out = block(0x0a0d_0d0a, &shb);
        // Interface 0: Ethernet, microseconds. Interface 1: raw IP, nanoseconds (tsresol 9).
        let mut idb0 = vec![1, 0, 0, 0];
        idb0.extend_from_slice(&65535u32.to_le_bytes());
        out.extend(block(1, &idb0));
        let mut idb1 = vec![101, 0, 0, 0];
        idb1.extend_from_slice(&0u32.to_le_bytes());
        idb1.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(block(1, &idb1));
        let epb = |iface: u32, ts: u64, data: &[u8]| {
            let mut b = Vec::new();
            b.extend_from_slice(&iface.to_le_bytes());
            b.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            b.extend_from_slice(&(ts as u32).to_le_bytes());
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(&(data.len() as u32).to_le_bytes());
            b.extend_from_slice(data);
            block(6, &b)
        };
        out.extend(epb(0, 1_500_000, b"hello"));
        let second_epb = out.len();
        out.extend(epb(1, 2_000_000_007, b"ip"));
        out.extend(block(5, &[0; 8])); // statistics block: skipped
        let mut spb = 3u32.to_le_bytes().to_vec();
        spb.extend_from_slice(b"xyz");
        out.extend(block(3, &spb));
        let mut f = CaptureFile::new(&out[..]).unwrap();
        let p = f.next_packet().unwrap().unwrap();
        assert_eq!(
            (p.data, p.link, p.ts),
            (&b"hello"[..], LinkType::ETHERNET, 1_500_000_000)
        );
        let p = f.next_packet().unwrap().unwrap();
        assert_eq!(
            (p.data, p.link, p.ts),
            (&b"ip"[..], LinkType::RAW, 2_000_000_007)
        );
        let p = f.next_packet().unwrap().unwrap();
        assert_eq!(p.data, b"xyz");
        assert!(f.next_packet().unwrap().is_none());

        // A damaged trailer is named with its block's offset.
        let mut bad = out.clone();
        let at = second_epb + 8;
        bad[at] ^= 0xff; // interface id 1 -> garbage
        let mut f = CaptureFile::new(&bad[..]).unwrap();
        f.next_packet().unwrap();
        let err = f.next_packet().unwrap_err();
        assert_eq!(err.offset(), Some(second_epb as u64), "{err}");
    }

    proptest::proptest! {
        /// Garbage after a valid file header ends in packets, a clean end or an error: never a
        /// panic or a loop.
        #[test]
        fn garbage_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            ng in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = if ng {
                let mut shb = Vec::new();
                shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
                shb.extend_from_slice(&[1, 0, 0, 0]);
                shb.extend_from_slice(&u64::MAX.to_le_bytes());
                let mut out = block(0x0a0d_0d0a, &shb);
                let mut idb = vec![1, 0, 0, 0];
                idb.extend_from_slice(&0u32.to_le_bytes());
                out.extend(block(1, &idb));
                out
            } else {
                pcap(false, false, &[])
            };
            bytes.extend_from_slice(&body);
            let mut f = CaptureFile::new(&bytes[..]).unwrap();
            for _ in 0..=bytes.len() {
                match f.next_packet() {
                    Ok(Some(p)) => proptest::prop_assert!(p.data.len() <= bytes.len()),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
