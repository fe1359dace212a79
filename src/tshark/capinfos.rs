//! capinfos: file facts without dissection (packet count, span, link type, snaplen).

use std::path::Path;

/// Facts capinfos reports about a capture file.
#[derive(Debug, Clone, Default, serde::Serialize, schemars::JsonSchema)]
pub struct CapInfo {
    /// capinfos' file type, e.g. `pcap`, `pcapng`.
    pub file_type: String,
    /// Link-layer encapsulation, e.g. `ether`, `linux-sll`, or `per-packet` when mixed.
    pub encapsulation: String,
    pub packets: u64,
    pub file_bytes: u64,
    /// Sum of captured packet lengths.
    pub data_bytes: u64,
    pub duration_s: f64,
    /// Seconds since the epoch.
    pub first_epoch: Option<f64>,
    pub last_epoch: Option<f64>,
    /// The snapshot length in the file header, when the format records one.
    pub snaplen: Option<u64>,
    pub strict_time_order: Option<bool>,
}

/// `-T -M -r -S`: one tab-separated row, no header, exact numbers, epoch times; only
/// the columns we use, so capinfos does not hash the file.
pub fn args(path: &Path) -> Vec<String> {
    [
        "-T", "-M", "-r", "-S", "-t", "-E", "-l", "-c", "-s", "-d", "-u", "-a", "-e", "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(path.display().to_string()))
    .collect()
}

/// Parses the row: name, type, encap, snaplen, snaplen min, snaplen max, packets,
/// file size, data size, duration, start, end, strict order.
pub fn parse(text: &str) -> Option<CapInfo> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let cols: Vec<&str> = line.split('\t').collect();
    if cols.len() < 13 {
        return None;
    }
    let num = |s: &str| s.trim().parse::<f64>().ok();
    Some(CapInfo {
        file_type: cols[1].trim().to_string(),
        encapsulation: cols[2].trim().to_string(),
        snaplen: cols[3].trim().parse().ok().filter(|&v: &u64| v > 0),
        packets: cols[6].trim().parse().unwrap_or(0),
        file_bytes: cols[7].trim().parse().unwrap_or(0),
        data_bytes: cols[8].trim().parse().unwrap_or(0),
        duration_s: num(cols[9]).unwrap_or(0.0),
        first_epoch: num(cols[10]),
        last_epoch: num(cols[11]),
        strict_time_order: match cols[12].trim() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_recorded_row() {
        // recorded: capinfos -T -M -r -S -t -E -l -c -s -d -u -a -e -o zeek-wikipedia.pcap
        let row = "zeek-wikipedia.pcap\tpcap\tether\t65535\tn/a\tn/a\t136\t27460\t25260\t6.378866\t1300475167.096535\t1300475173.475401\tTrue\n";
        let c = super::parse(row).unwrap();
        assert_eq!(c.packets, 136);
        assert_eq!(c.snaplen, Some(65535));
        assert_eq!(c.encapsulation, "ether");
        assert!((c.duration_s - 6.378866).abs() < 1e-9);
        assert_eq!(c.strict_time_order, Some(true));
    }
}
