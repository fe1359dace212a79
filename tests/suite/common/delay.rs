//! A path with delay and loss between two network namespaces, for tests: this kernel
//! has no netem, so the "wire" is a userspace relay between two TUN devices, one in
//! each namespace. Every IP packet one side sends is held for the one-way delay, then
//! written into the other side, unless the relay drops it (a seeded random draw per
//! packet). Its own counters are the oracle for what was dropped.
//!
//! client namespace: dl0 10.216.0.1 peer 10.216.0.2
//! server namespace: dl0 10.216.0.2 peer 10.216.0.1

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const CLIENT_IP: &str = "10.216.0.1";
pub const SERVER_IP: &str = "10.216.0.2";

/// Packets each way: forwarded and dropped (index 0: client to server).
#[derive(Default)]
pub struct Counters {
    pub forwarded: [AtomicU64; 2],
    pub dropped: [AtomicU64; 2],
}

pub struct DelayLink {
    pub client_ns: String,
    pub server_ns: String,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Opens a TUN device named `name` (IP packets, no extra header) inside namespace
/// `ns`, from a thread that enters the namespace and leaves it again.
fn tun_in(ns: &str, name: &str) -> std::io::Result<OwnedFd> {
    let ns_path = format!("/var/run/netns/{ns}");
    let name = name.to_string();
    std::thread::spawn(move || -> std::io::Result<OwnedFd> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(&ns_path)?;
        // SAFETY: setns on this thread only, with a namespace file we hold open
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let opened = (|| {
            let path = c"/dev/net/tun";
            // SAFETY: a valid NUL-terminated path
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor we own
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            // struct ifreq: 16 bytes of name, then the flags (short)
            let mut ifr = [0u8; 40];
            ifr[..name.len()].copy_from_slice(name.as_bytes());
            let flags: libc::c_short = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
            ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
            const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
            // SAFETY: ifr is a buffer the size of struct ifreq
            if unsafe { libc::ioctl(fd, TUNSETIFF, ifr.as_mut_ptr()) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(owned)
        })();
        // SAFETY: back to the namespace this thread started in
        unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
        opened
    })
    .join()
    .expect("tun thread")
}

/// A deterministic per-packet draw (xorshift), so a test's loss pattern does not
/// depend on a global random source.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl DelayLink {
    /// Two namespaces joined by a relay that delays each direction by `one_way` and
    /// drops each packet with probability `loss[dir]` (0: client to server).
    pub fn create(tag: u8, one_way: Duration, loss: [f64; 2]) -> Option<Self> {
        let id = std::process::id() % 10_000;
        let client_ns = format!("dlc{id}t{tag}");
        let server_ns = format!("dls{id}t{tag}");
        if !(ip(&["netns", "add", &client_ns]) && ip(&["netns", "add", &server_ns])) {
            return None;
        }
        let mut link = DelayLink {
            client_ns: client_ns.clone(),
            server_ns: server_ns.clone(),
            counters: Arc::new(Counters::default()),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let c = tun_in(&client_ns, "dl0").ok()?;
        let s = tun_in(&server_ns, "dl0").ok()?;
        let ok = [
            (&client_ns, CLIENT_IP, SERVER_IP),
            (&server_ns, SERVER_IP, CLIENT_IP),
        ]
        .iter()
        .all(|(ns, me, peer)| {
            ip(&["-n", ns, "addr", "add", me, "peer", peer, "dev", "dl0"])
                && ip(&["-n", ns, "link", "set", "dl0", "up"])
                && ip(&["-n", ns, "link", "set", "lo", "up"])
        });
        if !ok {
            return None;
        }
        let c = Arc::new(c);
        let s = Arc::new(s);
        for (dir, (from, to)) in [(c.clone(), s.clone()), (s, c)].into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
            let counters = link.counters.clone();
            let stop = link.stop.clone();
            let p = loss[dir];
            link.threads.push(std::thread::spawn(move || {
                let mut draw = Draw(0x9E37_79B9_7F4A_7C15 ^ (dir as u64 + 1));
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: from.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd for a descriptor we hold
                    if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                        continue;
                    }
                    // SAFETY: buf is writable for its length
                    let n =
                        unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        continue;
                    }
                    // only IPv4 takes part (the kernel's own IPv6 chatter is dropped
                    // unseen and uncounted)
                    if buf[0] >> 4 != 4 {
                        continue;
                    }
                    if p > 0.0 && draw.next() < p {
                        counters.dropped[dir].fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counters.forwarded[dir].fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send((Instant::now() + one_way, buf[..n as usize].to_vec()));
                }
            }));
            let stop = link.stop.clone();
            link.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((due, pkt)) = rx.recv_timeout(Duration::from_millis(50)) else {
                        continue;
                    };
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    // SAFETY: pkt is readable for its length
                    unsafe { libc::write(to.as_raw_fd(), pkt.as_ptr().cast(), pkt.len()) };
                }
            }));
        }
        Some(link)
    }

    pub fn dropped(&self, dir: usize) -> u64 {
        self.counters.dropped[dir].load(Ordering::Relaxed)
    }

    /// Runs a command inside the client namespace.
    pub fn in_client(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.client_ns]).args(args);
        c
    }

    /// Runs a command inside the server namespace.
    pub fn in_server(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.server_ns]).args(args);
        c
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
