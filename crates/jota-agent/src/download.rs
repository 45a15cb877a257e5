//! Resumable bundle download (HTTP/HTTPS with rustls) into the data partition.
//!
//! The file grows as `<name>.part`; a dropped connection resumes with a `Range` request from
//! where the part ends (retrying with backoff), a server that ignores ranges starts it over,
//! and the finished file is fsynced and renamed. Nothing in it is trusted: the install
//! verifies the signature and every hash before anything is written.

use crate::AgentError;
use sha2::Digest as _;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Download settings.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Attempts before giving up (each resumes).
    pub attempts: u32,
    /// Connect and read timeout.
    pub timeout: Duration,
    /// Bytes to keep free on the data partition besides the download.
    pub reserve: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            attempts: 8,
            timeout: Duration::from_secs(30),
            reserve: 64 << 20,
        }
    }
}

/// What a download did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Downloaded {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes that were already there from an interrupted download.
    pub resumed_from: u64,
    /// Connections used.
    pub attempts: u32,
}

/// The file a URL downloads to in `dir`.
pub fn target(dir: &Path, url: &str) -> PathBuf {
    let h = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..8]);
    dir.join(format!("{h}.jota"))
}

enum Step {
    Done,
    Retry(String),
}

/// Downloads `url` into `dir`, resuming an earlier partial download of the same URL.
pub fn download(
    url: &str,
    dir: &Path,
    o: &DownloadOptions,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<Downloaded, AgentError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(AgentError::Download(format!(
            "`{url}` is not an http(s) URL"
        )));
    }
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(o.timeout)
        .timeout(None)
        .user_agent(concat!("jota-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| AgentError::Download(e.to_string()))?;
    download_with(&client, url, dir, o, progress)
}

/// [`download`] through `client` (the agent's mTLS client with the pinned fleet CA).
pub fn download_with(
    client: &reqwest::blocking::Client,
    url: &str,
    dir: &Path,
    o: &DownloadOptions,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<Downloaded, AgentError> {
    std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, e))?;
    let done = target(dir, url);
    if done.exists() {
        let bytes = std::fs::metadata(&done)
            .map_err(|e| AgentError::io(&done, e))?
            .len();
        return Ok(Downloaded {
            path: done,
            bytes,
            resumed_from: bytes,
            attempts: 0,
        });
    }
    let part = done.with_extension("jota.part");
    let resumed_from = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut last = String::new();
    for attempt in 1..=o.attempts.max(1) {
        match fetch(client, url, &part, o, progress) {
            Ok(Step::Done) => {
                let f = std::fs::File::open(&part).map_err(|e| AgentError::io(&part, e))?;
                f.sync_all().map_err(|e| AgentError::io(&part, e))?;
                let bytes = f.metadata().map_err(|e| AgentError::io(&part, e))?.len();
                std::fs::rename(&part, &done).map_err(|e| AgentError::io(&done, e))?;
                let _ = std::fs::remove_file(etag_file(&part));
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                return Ok(Downloaded {
                    path: done,
                    bytes,
                    resumed_from,
                    attempts: attempt,
                });
            }
            Ok(Step::Retry(why)) => {
                tracing::warn!(attempt, "download interrupted, resuming: {why}");
                last = why;
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(Duration::from_millis(200 * u64::from(attempt.min(10))));
    }
    Err(AgentError::Download(format!(
        "{url}: gave up after {} attempts: {last}",
        o.attempts
    )))
}

/// Where the part's validator (ETag) is kept for `If-Range`.
fn etag_file(part: &Path) -> PathBuf {
    part.with_extension("part.etag")
}

/// One connection: ask for what is missing, append it.
fn fetch(
    client: &reqwest::blocking::Client,
    url: &str,
    part: &Path,
    o: &DownloadOptions,
    progress: &dyn Fn(u64, Option<u64>),
) -> Result<Step, AgentError> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        // If the file changed on the server since the part began, the server answers the
        // whole new file (200) instead of stitching two versions together.
        if let Ok(tag) = std::fs::read_to_string(etag_file(part)) {
            req = req.header(reqwest::header::IF_RANGE, tag.trim());
        }
    }
    let mut resp = match req.send() {
        Ok(r) => r,
        Err(e) => return Ok(Step::Retry(e.to_string())),
    };
    let status = resp.status();
    let (start, total) = match status.as_u16() {
        200 => (0, resp.content_length()),
        206 => {
            let cr = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // "bytes START-END/TOTAL"
            let start = cr
                .strip_prefix("bytes ")
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse::<u64>().ok());
            let total = cr.rsplit('/').next().and_then(|t| t.parse::<u64>().ok());
            match start {
                Some(s) if s == have => (s, total),
                _ => {
                    return Err(AgentError::Download(format!(
                        "{url}: asked for bytes from {have}, the server sent `{cr}`"
                    )))
                }
            }
        }
        // The part already holds everything.
        416 if have > 0 => return Ok(Step::Done),
        s if s >= 500 || s == 408 || s == 429 => return Ok(Step::Retry(format!("HTTP {status}"))),
        _ => return Err(AgentError::Download(format!("{url}: HTTP {status}"))),
    };
    if let Some(t) = total {
        let need = t.saturating_sub(start) + o.reserve;
        if let Some(free) = crate::precheck::free_bytes(part) {
            if free < need {
                let _ = std::fs::remove_file(part);
                return Err(AgentError::Precheck(format!(
                    "{} MiB free on the data partition, the download needs {} MiB (partial download removed)",
                    free >> 20,
                    need >> 20
                )));
            }
        }
    }
    if start == 0 {
        let tag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.starts_with("W/"));
        match tag {
            Some(t) => std::fs::write(etag_file(part), t).map_err(|e| AgentError::io(part, e))?,
            None => {
                let _ = std::fs::remove_file(etag_file(part));
            }
        }
    }
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .append(start > 0)
        .truncate(start == 0)
        .open(part)
        .map_err(|e| AgentError::io(part, e))?;
    let mut got = start;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = f.flush();
                return Ok(Step::Retry(e.to_string()));
            }
        };
        f.write_all(&buf[..n])
            .map_err(|e| AgentError::io(part, e))?;
        got += n as u64;
        progress(got, total);
    }
    f.flush().map_err(|e| AgentError::io(part, e))?;
    match total {
        Some(t) if got < t => Ok(Step::Retry(format!(
            "connection closed at {got} of {t} bytes"
        ))),
        Some(t) if got > t => {
            let _ = std::fs::remove_file(part);
            Err(AgentError::Download(format!(
                "{url}: the server sent {got} bytes of {t}"
            )))
        }
        _ => Ok(Step::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Serves `data` with Range support; the first `drops` responses stop halfway.
    pub fn serve(data: Vec<u8>, drops: usize) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/b.jota", l.local_addr().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let s2 = Arc::clone(&served);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut from = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        from = v.trim().trim_end_matches('-').parse().unwrap();
                    }
                }
                let n = s2.fetch_add(1, Ordering::SeqCst);
                let body = &data[from..];
                let head = if from > 0 {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                        body.len(),
                        data.len() - 1,
                        data.len()
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                };
                let _ = c.write_all(head.as_bytes());
                let send = if n < drops {
                    &body[..body.len() / 3]
                } else {
                    body
                };
                let _ = c.write_all(send);
            }
        });
        (url, served)
    }

    #[test]
    fn resumes_after_dropped_connections() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (url, served) = serve(data.clone(), 2);
        let d = tempfile::tempdir().unwrap();
        let got = download(&url, d.path(), &DownloadOptions::default(), &|_, _| {}).unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), data);
        assert_eq!(got.attempts, 3);
        assert_eq!(served.load(Ordering::SeqCst), 3);
        // Done once: a second call finds the file.
        let again = download(&url, d.path(), &DownloadOptions::default(), &|_, _| {}).unwrap();
        assert_eq!((again.attempts, again.bytes), (0, data.len() as u64));
    }

    #[test]
    fn a_partial_file_from_an_earlier_run_is_resumed() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
        let (url, _) = serve(data.clone(), 0);
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            target(d.path(), &url).with_extension("jota.part"),
            &data[..400_000],
        )
        .unwrap();
        let got = download(&url, d.path(), &DownloadOptions::default(), &|_, _| {}).unwrap();
        assert_eq!(got.resumed_from, 400_000);
        assert_eq!(std::fs::read(&got.path).unwrap(), data);
    }

    #[test]
    fn no_space_and_bad_urls_are_errors() {
        let (url, _) = serve(vec![1; 1000], 0);
        let d = tempfile::tempdir().unwrap();
        let o = DownloadOptions {
            reserve: u64::MAX / 2,
            ..DownloadOptions::default()
        };
        let e = download(&url, d.path(), &o, &|_, _| {}).unwrap_err();
        assert!(matches!(e, AgentError::Precheck(_)), "{e}");
        assert!(!target(d.path(), &url).with_extension("jota.part").exists());
        let e = download("ftp://x/y", d.path(), &o, &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("not an http"), "{e}");
        let o = DownloadOptions {
            attempts: 2,
            timeout: Duration::from_secs(2),
            ..DownloadOptions::default()
        };
        let e = download("http://127.0.0.1:1/b.jota", d.path(), &o, &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("gave up after 2 attempts"), "{e}");
    }
}
