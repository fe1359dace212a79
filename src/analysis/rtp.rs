//! RTP streams as tshark's rtp,streams tap reports them (run in the index pass).

use schemars::JsonSchema;
use serde::Serialize;

use crate::engine::Analysis;
use crate::model::tcp::TcpModel;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RtpStream {
    pub source: String,
    pub destination: String,
    pub ssrc: String,
    pub payload: String,
    pub packets: u64,
    pub lost: i64,
    pub lost_pct: f64,
    pub max_delta_ms: f64,
    pub mean_jitter_ms: f64,
    pub max_jitter_ms: f64,
    pub problems: bool,
    pub display_filter: String,
}

/// Parses `tshark -q -z rtp,streams`: a header row, then one row per stream.
pub fn parse_rtp_streams(text: &str) -> Vec<RtpStream> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut t: Vec<&str> = line.split_whitespace().collect();
        // start end src sport dst dport ssrc PAYLOAD... pkts lost (pct) min mean max
        // minj meanj maxj [X]: the payload column may hold several words ("g711A, CN,
        // RTPType-100"), so the counts are read from the end of the row
        if t.len() < 17 || !t[6].starts_with("0x") {
            continue;
        }
        let problems = t.last() == Some(&"X");
        if problems {
            t.pop();
        }
        let n = t.len();
        if n < 17 {
            continue;
        }
        let tail = &t[n - 9..];
        let f = |i: usize| tail[i].parse::<f64>().unwrap_or(0.0);
        let lost_pct = tail[2]
            .trim_matches(|c| c == '(' || c == ')' || c == '%')
            .parse()
            .unwrap_or(0.0);
        let ep = |a: &str, p: &str| crate::report::endpoint(a, p.parse().ok());
        out.push(RtpStream {
            source: ep(t[2], t[3]),
            destination: ep(t[4], t[5]),
            ssrc: t[6].to_string(),
            payload: t[7..n - 9].join(" "),
            packets: tail[0].parse().unwrap_or(0),
            lost: tail[1].parse().unwrap_or(0),
            lost_pct,
            max_delta_ms: f(5),
            mean_jitter_ms: f(7),
            max_jitter_ms: f(8),
            problems,
            display_filter: format!("rtp.ssrc == {}", t[6]),
        });
    }
    out
}

/// tshark's RTP stream table, from the tap that ran in the index pass.
pub async fn rtp_streams(a: &mut Analysis, m: &TcpModel) -> Result<Vec<RtpStream>, String> {
    if m.rtp_packets == 0 {
        return Ok(Vec::new());
    }
    Ok(parse_rtp_streams(&a.index().await?.taps.rtp_streams))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_rtp_streams() {
        // recorded: tshark 4.0.17 -q -z rtp,streams on ndpi-FAX-Call-t38-CA-TDM-SIP-FB-1.pcap:
        // payload columns with commas and spaces
        let fax = "    29.970889     65.241311      10.23.1.52 16756    10.35.60.100 15580 0x17D90134 g711A, CN, RTPType-100  1171     0 (0.0%)           1.078          10.216          20.427           0.030           0.268           1.343 X
    27.803285     64.712503    10.35.60.100 15580      10.23.1.52 16756 0x0EAF0EAF g711A, RTPType-102   132  1712 (92.8%)           0.474         281.861       34261.832           0.051           1.414           7.007 X";
        let v = parse_rtp_streams(fax);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].payload, "g711A, CN, RTPType-100");
        assert_eq!((v[0].packets, v[0].lost, v[0].lost_pct), (1171, 0, 0.0));
        assert_eq!((v[1].packets, v[1].lost, v[1].lost_pct), (132, 1712, 92.8));
        assert!((v[1].max_delta_ms - 34261.832).abs() < 1e-9 && v[1].problems);
        // recorded: tshark 4.0.17 -q -z rtp,streams on ndpi-sip.pcap
        let text = "========================= RTP Streams ========================\n   Start time      End time     Src IP addr  Port    Dest IP addr  Port       SSRC          Payload  Pkts         Lost   Min Delta(ms)  Mean Delta(ms)   Max Delta(ms)  Min Jitter(ms) Mean Jitter(ms)  Max Jitter(ms) Problems?\n  1412.504162   1412.666787     192.168.1.2 30000   212.242.33.36 40392 0x3796CB71            g711A     9     0 (0.0%)           1.895          20.328          69.947           3.122           5.646           7.799 \n";
        let v = parse_rtp_streams(text);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].packets, 9);
        assert_eq!(v[0].source, "192.168.1.2:30000");
        assert_eq!(v[0].max_jitter_ms, 7.799);
        assert!(!v[0].problems);
    }
}
