//! `list_network_interfaces`: what can be captured on here, as dumpcap sees it, and
//! whether this process is allowed to capture.

use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use crate::capture::{fix_for, run_dumpcap};
use crate::server::PcapServer;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Interface {
    /// The name to pass as `interface` to start_packet_capture.
    pub name: String,
    pub description: Option<String>,
    pub addresses: Vec<String>,
    pub loopback: bool,
    /// Operational state where the OS reports it (Linux: up, down, unknown).
    pub state: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InterfaceList {
    pub summary: String,
    pub interfaces: Vec<Interface>,
    /// Whether this process may capture (tried by opening an interface).
    pub capture_permitted: bool,
    /// dumpcap's message when capture is not permitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission_error: Option<String>,
    /// The one-line fix for this OS when capture is not permitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    pub dumpcap_command: String,
}

/// Parses `dumpcap -D -M`: `N. name\tvendor\tfriendly name\ttype\taddresses\tloopback|network`.
pub fn parse_dumpcap_list(text: &str) -> Vec<Interface> {
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(". ")?;
            let cols: Vec<&str> = rest.split('\t').collect();
            let name = cols.first()?.trim().to_string();
            if name.is_empty() {
                return None;
            }
            let description = cols
                .get(2)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .or_else(|| cols.get(1).map(|s| s.trim()).filter(|s| !s.is_empty()))
                .map(str::to_string);
            let addresses = cols
                .get(4)
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let loopback = cols.get(5).is_some_and(|s| s.trim() == "loopback");
            let state = std::fs::read_to_string(format!("/sys/class/net/{name}/operstate"))
                .ok()
                .map(|s| s.trim().to_string());
            Some(Interface {
                name,
                description,
                addresses,
                loopback,
                state,
            })
        })
        .collect()
}

#[tool_router(router = interfaces_router, vis = "pub(crate)")]
impl PcapServer {
    /// Network interfaces dumpcap can capture on (name, description, addresses,
    /// loopback, up/down) and whether this process is permitted to capture, with the fix if not.
    #[tool(
        name = "list_network_interfaces",
        annotations(
            title = "Capture interfaces",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn list_network_interfaces(&self) -> Result<Json<InterfaceList>, String> {
        let dumpcap = self.engine.cfg.dumpcap.clone().ok_or_else(|| {
            "dumpcap was not found, so interfaces cannot be listed. Install Wireshark's command-line tools \
             (Debian/Ubuntu: `sudo apt-get install tshark`) or set WIRESHARK_PATH"
                .to_string()
        })?;
        let out = run_dumpcap(&dumpcap, &["-D", "-M"]).await?;
        let interfaces = parse_dumpcap_list(&out.stdout);
        if interfaces.is_empty() {
            let why = crate::capture::dumpcap_error(&out.stderr);
            return Err(format!(
                "dumpcap listed no interfaces: {why}. {}",
                fix_for(&why)
            ));
        }
        // Opening an interface is the real permission test; prefer loopback (always present).
        let probe = interfaces
            .iter()
            .find(|i| i.loopback)
            .unwrap_or(&interfaces[0])
            .name
            .clone();
        let permission = self.engine.captures.can_capture(&probe).await;
        let (capture_permitted, permission_error) = match permission {
            Ok(()) => (true, None),
            Err(e) => (false, Some(crate::capture::dumpcap_error(&e))),
        };
        let summary = format!(
            "{} interface(s){}; capture is {}.",
            interfaces.len(),
            {
                let up: Vec<&str> = interfaces
                    .iter()
                    .filter(|i| {
                        i.state.as_deref() == Some("up") || (i.loopback && !i.addresses.is_empty())
                    })
                    .map(|i| i.name.as_str())
                    .collect();
                if up.is_empty() {
                    String::new()
                } else {
                    format!(" (usable: {})", up.join(", "))
                }
            },
            if capture_permitted {
                "permitted for this process".to_string()
            } else {
                "NOT permitted for this process (see fix)".to_string()
            }
        );
        Ok(Json(InterfaceList {
            summary,
            fix: permission_error.as_deref().map(fix_for),
            interfaces,
            capture_permitted,
            permission_error,
            dumpcap_command: format!("{} -D -M", dumpcap.display()),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_recorded_list() {
        // recorded: dumpcap -D -M on Debian 12, dumpcap 4.0.17
        let text = "1. eth0\t\t\t0\t192.0.2.2,fd00::2\tnetwork\t\n3. lo\t\tLoopback\t0\t127.0.0.1,::1\tloopback\t\n";
        let l = super::parse_dumpcap_list(text);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].name, "eth0");
        assert_eq!(l[0].addresses, vec!["192.0.2.2", "fd00::2"]);
        assert!(l[1].loopback);
        assert_eq!(l[1].description.as_deref(), Some("Loopback"));
    }
}
