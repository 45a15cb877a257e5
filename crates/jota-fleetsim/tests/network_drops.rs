//! 200 simulated Jetsons update through a proxy that drops connections (loopback only):
//! each device's first two chunk downloads are cut part-way and every fifth poll is dropped
//! unanswered. Every download must resume after the last whole chunk it received, and no
//! chunk may reach a device twice.
//!
//! The proxy sits between the agents and the server (plain HTTP, so it can read the Range
//! of each request; TLS is the demo's and the provisioning tests' part). It asks the server
//! to close each connection after one answer, so every answer's bytes are known exactly.

mod common;

use common::{chunk_ranges, Fleet};
use jota_fleetsim::Behaviour;
use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request through the proxy.
#[derive(Clone, Debug)]
struct Seen {
    token: String,
    path: String,
    range: Option<(u64, u64)>,
    /// Body bytes the client received.
    delivered: u64,
    cut: bool,
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    cuts: HashMap<String, u32>,
    polls: HashMap<String, u32>,
}

/// Starts the proxy in front of `upstream` (host:port); chunk requests start at or after
/// `payload`.
fn proxy(upstream: String, payload: u64) -> (String, Arc<Mutex<Log>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Log::default()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let (up, log) = (upstream.clone(), Arc::clone(&log2));
            std::thread::spawn(move || {
                let _ = relay(c, &up, payload, &log);
            });
        }
    });
    (format!("http://{addr}"), log)
}

fn relay(client: TcpStream, upstream: &str, payload: u64, log: &Mutex<Log>) -> std::io::Result<()> {
    let mut r = BufReader::new(client.try_clone()?);
    let mut client = client;
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut head = line.clone();
    let (mut token, mut range, mut len) = (String::new(), None, 0usize);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("authorization: bearer ") {
            token = v.trim().to_string();
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap();
            range = Some((a.parse().unwrap(), b.parse::<u64>().unwrap() + 1));
        }
        head.push_str(&h);
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let chunked = path.starts_with("/artifacts/") && range.is_some_and(|(a, _)| a >= payload);
    // Drop every fifth poll without an answer, and the first two chunk answers part-way.
    let (drop_poll, cut_at) = {
        let mut l = log.lock().unwrap();
        let drop_poll = path.starts_with("/api/v1/device/poll") && {
            let n = l.polls.entry(token.clone()).or_default();
            *n += 1;
            (*n).is_multiple_of(5)
        };
        let cut_at = if chunked {
            let n = l.cuts.entry(token.clone()).or_default();
            if *n < 2 {
                *n += 1;
                range.map(|(a, b)| (b - a) * 3 / 5)
            } else {
                None
            }
        } else {
            None
        };
        (drop_poll, cut_at)
    };
    if drop_poll {
        return client.shutdown(Shutdown::Both);
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    // Relay the answer, counting body bytes after the head, cutting if chosen.
    let mut buf = vec![0u8; 64 << 10];
    let mut head_seen: Vec<u8> = Vec::new();
    let mut head_len: Option<usize> = None;
    let mut total = 0usize;
    let mut cut = false;
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if head_len.is_none() {
            head_seen.extend_from_slice(chunk);
            if let Some(p) = head_seen.windows(4).position(|w| w == b"\r\n\r\n") {
                head_len = Some(p + 4);
            }
        }
        if let (Some(h), Some(c)) = (head_len, cut_at) {
            let limit = h + c as usize;
            if total + chunk.len() >= limit {
                chunk = &chunk[..limit - total];
                cut = true;
            }
        }
        client.write_all(chunk)?;
        total += chunk.len();
        if cut {
            break;
        }
    }
    client.flush()?;
    let delivered = (total - head_len.unwrap_or(total)) as u64;
    log.lock().unwrap().seen.push(Seen {
        token,
        path,
        range,
        delivered,
        cut,
    });
    client.shutdown(Shutdown::Both)
}

#[test]
fn two_hundred_devices_resume_every_cut_download_and_fetch_no_chunk_twice() {
    let n = 200;
    let mut fleet = Fleet::new(n);
    let chunks = chunk_ranges(&fleet.bundle2);
    let payload = chunks.iter().map(|c| c.0).min().unwrap();
    let upstream = fleet.server.trim_start_matches("http://").to_string();
    let (via, log) = proxy(upstream, payload);
    let mut devices = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let (id, dir, mut config) = fleet.device(i, &via);
        config.server.connections = 2;
        ids.push(id.clone());
        devices.push((
            id,
            dir,
            config,
            Behaviour {
                max_sleep: Some(Duration::from_secs(2)),
                ..Behaviour::default()
            },
        ));
    }
    let _events = fleet.run(devices);
    fleet.wait_devices(300, "200 devices on 1.0.0", |l| {
        l.iter().filter(|d| d["version"] == "1.0.0").count() == n
    });
    let st = fleet.post(
        "/api/v1/rollouts",
        &json!({
            "artifact": fleet.v2,
            "phases": [{ "name": "all", "percent": 100.0 }],
            "policy": { "max_concurrent": 60 },
        }),
    );
    let rid = st["rollout"]["id"].as_str().unwrap().to_string();
    let end = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let s = fleet.get(&format!("/api/v1/rollouts/{rid}"));
        if s["rollout"]["state"] == "done" {
            assert_eq!(s["total"]["success"], n as u64, "{s}");
            break;
        }
        assert_ne!(s["rollout"]["state"], "halted", "{s}");
        assert!(
            std::time::Instant::now() < end,
            "rollout not done: {}",
            s["total"]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each reports its outcome, then its next poll carries the new version.
    fleet.wait_devices(30, "200 devices on 2.0.0", |l| {
        l.iter().filter(|d| d["version"] == "2.0.0").count() == n
    });
    fleet.stop();

    let log = log.lock().unwrap();
    let mut by_token: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in &log.seen {
        if s.path.starts_with("/artifacts/") && s.range.is_some_and(|(a, _)| a >= payload) {
            by_token.entry(s.token.as_str()).or_default().push(s);
        }
    }
    if by_token.len() != n {
        let mut other: HashMap<&str, Vec<String>> = HashMap::new();
        for s in &log.seen {
            if !by_token.contains_key(s.token.as_str()) {
                other
                    .entry(s.token.as_str())
                    .or_default()
                    .push(format!("{} {:?} {}", s.path, s.range, s.delivered));
            }
        }
        for (t, v) in other.iter().take(2) {
            eprintln!("{t}: {}", v.join("\n  "));
        }
    }
    assert_eq!(
        by_token.len(),
        n,
        "every device fetched chunks through the proxy"
    );
    let mut resumed = 0;
    let mut whole_chunks_delivered = 0u64;
    for (token, reqs) in &by_token {
        // No chunk reached the device whole twice.
        for &(cs, ce) in &chunks {
            let times = reqs
                .iter()
                .filter(|s| {
                    let (a, _) = s.range.unwrap();
                    a <= cs && ce <= a + s.delivered
                })
                .count();
            assert!(
                times <= 1,
                "device {token}: chunk at {cs} delivered {times} times"
            );
            whole_chunks_delivered += times as u64;
        }
        // Each cut answer is continued after the last whole chunk it delivered.
        let cuts: Vec<usize> = (0..reqs.len()).filter(|&i| reqs[i].cut).collect();
        assert_eq!(cuts.len(), 2, "device {token}: two cut downloads");
        for i in cuts {
            let (a, _) = reqs[i].range.unwrap();
            let kept_end = chunks
                .iter()
                .filter(|&&(cs, ce)| a <= cs && ce <= a + reqs[i].delivered)
                .map(|&(_, ce)| ce)
                .max();
            // The next request of the same group starts where the kept chunks end.
            let next = reqs[i + 1..]
                .iter()
                .map(|s| s.range.unwrap().0)
                .find(|&s| s >= a && s <= a + reqs[i].delivered)
                .unwrap_or_else(|| {
                    panic!("device {token}: the cut download at {a} was not continued")
                });
            match kept_end {
                Some(e) => {
                    assert!(
                        next >= e,
                        "device {token}: resumed at {next}, chunks up to {e} were already whole"
                    );
                    resumed += 1;
                }
                None => assert_eq!(next, a),
            }
        }
    }
    assert!(resumed >= n, "{resumed} resumptions after whole chunks");
    let dropped_polls: u32 = log.polls.values().map(|p| p / 5).sum();
    eprintln!(
        "{n} devices: {} chunk requests, {} cut part-way and resumed, {dropped_polls} polls dropped, {whole_chunks_delivered} whole chunks delivered, none twice",
        by_token.values().map(|v| v.len()).sum::<usize>(),
        2 * n
    );
}
