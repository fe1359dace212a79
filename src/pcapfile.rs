//! Walking pcap and pcapng records without dissection: counting the packets of a file
//! dumpcap may still be writing, and fetching the raw bytes of chosen frames (numbered
//! as Wireshark numbers them: 1-based, in file order) without a second tshark pass.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// Largest packet record we accept; larger lengths mean a damaged file.
const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Calls `on_packet(frame_number, bytes)` for each packet until it returns false or the
/// file ends (a record cut short at the end is not reported).
pub fn for_each_packet(
    path: &Path,
    mut on_packet: impl FnMut(u64, &[u8]) -> bool,
) -> std::io::Result<()> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => walk_pcapng(&mut r, &mut on_packet),
        _ => walk_pcap(&mut r, magic, &mut on_packet),
    }
}

fn walk_pcap(
    r: &mut impl Read,
    magic: [u8; 4],
    on_packet: &mut impl FnMut(u64, &[u8]) -> bool,
) -> std::io::Result<()> {
    let big = matches!(magic, [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d]);
    let u32_of = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let mut rest = [0u8; 20];
    r.read_exact(&mut rest)?;
    let mut hdr = [0u8; 16];
    let mut buf = Vec::new();
    let mut n = 0u64;
    while r.read_exact(&mut hdr).is_ok() {
        let incl = u32_of(&hdr[8..12]) as usize;
        if incl > MAX_RECORD {
            break;
        }
        buf.resize(incl, 0);
        if r.read_exact(&mut buf).is_err() {
            break;
        }
        n += 1;
        if !on_packet(n, &buf) {
            break;
        }
    }
    Ok(())
}

fn walk_pcapng(
    r: &mut impl Read,
    on_packet: &mut impl FnMut(u64, &[u8]) -> bool,
) -> std::io::Result<()> {
    // the first block's type was consumed as the magic; read the rest of its header
    let mut little = true;
    let mut first = true;
    let mut hdr = [0u8; 8];
    let mut body = Vec::new();
    let mut n = 0u64;
    loop {
        let block_type = if first {
            first = false;
            0x0a0d_0d0a
        } else {
            let mut t = [0u8; 4];
            if r.read_exact(&mut t).is_err() {
                break;
            }
            if little {
                u32::from_le_bytes(t)
            } else {
                u32::from_be_bytes(t)
            }
        };
        if r.read_exact(&mut hdr[..4]).is_err() {
            break;
        }
        let len_raw = [hdr[0], hdr[1], hdr[2], hdr[3]];
        if block_type == 0x0a0d_0d0a {
            // the byte-order magic follows the length and decides how to read both
            if r.read_exact(&mut hdr[4..8]).is_err() {
                break;
            }
            little = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) == 0x1a2b_3c4d;
        }
        let len = if little {
            u32::from_le_bytes(len_raw)
        } else {
            u32::from_be_bytes(len_raw)
        } as usize;
        let consumed = if block_type == 0x0a0d_0d0a { 12 } else { 8 };
        if len < consumed || len > MAX_RECORD {
            break;
        }
        body.resize(len - consumed, 0);
        if r.read_exact(&mut body).is_err() {
            break;
        }
        let u32_at = |o: usize| {
            let a = [body[o], body[o + 1], body[o + 2], body[o + 3]];
            if little {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        };
        let packet = match block_type {
            // enhanced packet: interface, ts high, ts low, captured len, original len, data
            6 if body.len() >= 20 => Some((20, u32_at(12) as usize)),
            // simple packet: original len, data (captured = rest of block)
            3 if body.len() >= 4 => Some((4, body.len() - 8)),
            // obsolete packet block: interface+drops, ts high, ts low, captured len, original len
            2 if body.len() >= 20 => Some((20, u32_at(12) as usize)),
            _ => None,
        };
        if let Some((off, cap)) = packet {
            let end = (off + cap).min(body.len().saturating_sub(4));
            n += 1;
            if !on_packet(n, &body[off.min(end)..end]) {
                break;
            }
        }
    }
    Ok(())
}

/// Packets in a pcapng file dumpcap may still be writing, and the file's size, by
/// seeking from block header to block header (status calls stay cheap on big files).
/// A block still being written at the end is not counted.
pub fn count_packets(path: &Path) -> (u64, u64) {
    let Ok(f) = File::open(path) else {
        return (0, 0);
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = BufReader::new(f);
    let mut packets = 0u64;
    let mut pos = 0u64;
    let mut little = true;
    let mut hdr = [0u8; 12];
    while pos + 12 <= size {
        if r.read_exact(&mut hdr).is_err() {
            break;
        }
        let block_type = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if block_type == 0x0a0d_0d0a {
            // section header: its byte-order magic decides how lengths are read
            little = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) == 0x1a2b_3c4d;
        }
        let len_bytes = [hdr[4], hdr[5], hdr[6], hdr[7]];
        let len = u64::from(if little {
            u32::from_le_bytes(len_bytes)
        } else {
            u32::from_be_bytes(len_bytes)
        });
        let block_type = if little {
            block_type
        } else {
            block_type.swap_bytes()
        };
        if len < 12 || pos + len > size {
            break;
        }
        if matches!(block_type, 2 | 3 | 6) {
            packets += 1;
        }
        pos += len;
        if r.seek(SeekFrom::Start(pos)).is_err() {
            break;
        }
    }
    (packets, size)
}

/// The raw bytes of the wanted frames, reading only as far as the last one.
pub fn frames(path: &Path, wanted: &BTreeSet<u64>) -> HashMap<u64, Vec<u8>> {
    let mut out = HashMap::new();
    let Some(&last) = wanted.iter().next_back() else {
        return out;
    };
    let _ = for_each_packet(path, |i, bytes| {
        if wanted.contains(&i) {
            out.insert(i, bytes.to_vec());
        }
        i < last
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name)
    }

    #[test]
    fn walks_pcap_and_pcapng_like_capinfos() {
        // capinfos: 136 and 8 packets
        let mut n = 0;
        for_each_packet(&fixture("zeek-wikipedia.pcap"), |i, _| {
            n = i;
            true
        })
        .unwrap();
        assert_eq!(n, 136);
        assert_eq!(count_packets(&fixture("cs-icmp_echo.pcapng")).0, 8);
        // tshark: frame 1 of cs-icmp_echo.pcapng has frame.cap_len 74, an Ethernet/IPv4 frame
        let f = frames(&fixture("cs-icmp_echo.pcapng"), &BTreeSet::from([1, 8]));
        assert_eq!(f[&1].len(), 74);
        assert_eq!(&f[&1][12..14], &[0x08, 0x00]);
        assert!(f.contains_key(&8));
    }

    #[test]
    fn stops_at_a_record_cut_short() {
        // the corpus' cut file: capinfos reads 11 whole packets before the damaged end
        let mut n = 0;
        let _ = for_each_packet(&fixture("derived-cs-http_google-cut.pcapng"), |i, _| {
            n = i;
            true
        });
        assert!(n <= 11);
    }
}
