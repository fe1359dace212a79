//! Counting packets in a pcapng file that dumpcap may still be writing, by walking
//! block headers only (no dissection), so status calls stay cheap.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// (packets, file bytes). A block still being written at the end is not counted.
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
