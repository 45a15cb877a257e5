//! Artifacts: uploads are stored whole, then verified before they are recorded — a jota
//! bundle against the server's keyring and its signed payload hash, a SWUpdate `.swu` (for
//! devices on hawkBit DDI) as SWUpdate will read it; downloads honour Range, If-Range and
//! If-None-Match with the file's sha256 as its ETag. Files live in a local directory or in
//! an S3-compatible bucket ([`ArtifactStore`]).

use crate::store::{now, ArtifactRow};
use crate::ServerError;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use jota_bundle::read::{Bundle, Trust};
use jota_bundle::sign::Keyring;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Where artifact files live, in a local directory.
pub fn file_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.artifact"))
}

/// Where artifact files are kept.
#[derive(Clone, Debug)]
pub enum ArtifactStore {
    /// A local directory (`DATA_DIR/artifacts`).
    Local(PathBuf),
    /// An S3-compatible bucket, under a prefix (`s3://bucket/prefix`).
    Object {
        /// The bucket.
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        /// The prefix of every key.
        prefix: object_store::path::Path,
    },
}

fn storage(e: object_store::Error) -> ServerError {
    ServerError::Storage(e.to_string())
}

/// A stream of an artifact's bytes.
pub type ByteStream =
    futures_util::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

impl ArtifactStore {
    /// The store for `url` (`s3://bucket[/prefix]`, credentials, region and endpoint from the
    /// usual `AWS_*` variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`), or the local directory `dir` without one.
    pub fn open(url: Option<&str>, dir: &Path) -> Result<ArtifactStore, ServerError> {
        let Some(url) = url else {
            return Ok(ArtifactStore::Local(dir.to_path_buf()));
        };
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(ServerError::BadRequest(format!(
                "artifact store `{url}`: an s3://bucket[/prefix] URL"
            )));
        };
        let prefix = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build()
            .map_err(|e| ServerError::BadRequest(format!("artifact store `{url}`: {e}")))?;
        Ok(ArtifactStore::Object {
            store: std::sync::Arc::new(store),
            prefix: object_store::path::Path::from(prefix),
        })
    }

    fn key(prefix: &object_store::path::Path, id: &str) -> object_store::path::Path {
        prefix.child(format!("{id}.artifact"))
    }

    /// Keeps a verified upload as artifact `id` (the temporary file goes either way).
    async fn put(&self, id: &str, tmp: tempfile::TempPath) -> Result<(), ServerError> {
        match self {
            ArtifactStore::Local(dir) => {
                let dest = file_of(dir, id);
                tmp.persist(&dest)
                    .map_err(|e| ServerError::io(&dest, e.error))?;
            }
            ArtifactStore::Object { store, prefix } => {
                // Multipart when large; the object appears only when complete.
                let mut f = tokio::fs::File::open(&tmp)
                    .await
                    .map_err(|e| ServerError::io(&tmp, e))?;
                let mut w =
                    object_store::buffered::BufWriter::new(store.clone(), Self::key(prefix, id));
                tokio::io::copy(&mut f, &mut w)
                    .await
                    .map_err(|e| ServerError::Storage(format!("uploading {id}: {e}")))?;
                w.shutdown()
                    .await
                    .map_err(|e| ServerError::Storage(format!("uploading {id}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The bytes of artifact `id`, all of them or `first..=last`.
    pub async fn stream(
        &self,
        id: &str,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, ServerError> {
        match self {
            ArtifactStore::Local(dir) => {
                let path = file_of(dir, id);
                let mut f = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| ServerError::io(&path, e))?;
                Ok(match range {
                    None => tokio_util::io::ReaderStream::new(f).boxed(),
                    Some((s, e)) => {
                        f.seek(std::io::SeekFrom::Start(s))
                            .await
                            .map_err(|err| ServerError::io(&path, err))?;
                        tokio_util::io::ReaderStream::new(f.take(e - s + 1)).boxed()
                    }
                })
            }
            ArtifactStore::Object { store, prefix } => {
                let opts = object_store::GetOptions {
                    range: range.map(|(s, e)| object_store::GetRange::Bounded(s..e + 1)),
                    ..Default::default()
                };
                let r = store
                    .get_opts(&Self::key(prefix, id), opts)
                    .await
                    .map_err(storage)?;
                Ok(r.into_stream()
                    .map(|c| c.map_err(std::io::Error::other))
                    .boxed())
            }
        }
    }
}

/// Receives an uploaded body into a temporary file under `dir`, verifies it (a jota bundle
/// trusted by `keyring`, or a `.swu`, told apart by the cpio magic), keeps it in `into` and
/// returns its record. Nothing is kept when it is rejected.
pub async fn receive(
    into: &ArtifactStore,
    dir: &Path,
    keyring: &Path,
    body: Body,
    max: u64,
) -> Result<ArtifactRow, ServerError> {
    use sha2::Digest;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ServerError::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".upload-")
        .tempfile_in(dir)
        .map_err(|e| ServerError::io(dir, e))?;
    let (std_file, tmp_path) = tmp.into_parts();
    let mut f = tokio::fs::File::from_std(std_file);
    let mut h = sha2::Sha256::new();
    let (mut h1, mut h5) = (sha1::Sha1::new(), md5::Md5::new());
    let mut head: Vec<u8> = Vec::with_capacity(6);
    let mut size = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ServerError::BadRequest(format!("upload: {e}")))?;
        size += chunk.len() as u64;
        if size > max {
            return Err(ServerError::TooLarge(format!(
                "uploads are limited to {max} bytes"
            )));
        }
        h.update(&chunk);
        h1.update(&chunk);
        h5.update(&chunk);
        if head.len() < 6 {
            head.extend(chunk.iter().take(6 - head.len()));
        }
        f.write_all(&chunk)
            .await
            .map_err(|e| ServerError::io(&tmp_path, e))?;
    }
    f.sync_all()
        .await
        .map_err(|e| ServerError::io(&tmp_path, e))?;
    drop(f);
    let sha256 = hex::encode(h.finalize());
    let path: PathBuf = tmp_path.to_path_buf();
    let ring_dir = keyring.to_path_buf();
    let swu = head.as_slice() == jota_bundle::cpio::MAGIC_NEWC.as_slice()
        || head.as_slice() == jota_bundle::cpio::MAGIC_CRC.as_slice();
    let checked =
        tokio::task::spawn_blocking(move || -> Result<(String, String, u64), ServerError> {
            if swu {
                let f = std::fs::File::open(&path).map_err(|e| ServerError::io(&path, e))?;
                let info = jota_bundle::swu::inspect(&mut std::io::BufReader::new(f))
                    .map_err(|e| ServerError::Rejected(format!("not a valid .swu: {e}")))?;
                return Ok((info.version, String::new(), 0));
            }
            let ring = Keyring::load(&ring_dir)
                .map_err(|e| ServerError::Rejected(format!("server keyring: {e}")))?;
            let b = Bundle::open(&path, Trust::Keyring(&ring))
                .map_err(|e| ServerError::Rejected(format!("not a trusted jota bundle: {e}")))?;
            b.check_payload_hash()
                .map_err(|e| ServerError::Rejected(format!("damaged bundle: {e}")))?;
            let m = &b.parsed;
            Ok((
                m.manifest.version.clone(),
                jota_bundle::Digest::of(&m.manifest_bytes).to_string(),
                m.chunked_delta_bytes(),
            ))
        })
        .await
        .map_err(|e| ServerError::Database(format!("verification task: {e}")))??;
    let id = sha256[..16].to_string();
    into.put(&id, tmp_path).await?;
    Ok(ArtifactRow {
        id,
        kind: if swu { "swu" } else { "jota" }.into(),
        version: checked.0,
        size: size as i64,
        sha256,
        sha1: hex::encode(h1.finalize()),
        md5: hex::encode(h5.finalize()),
        manifest_sha256: checked.1,
        chunked_bytes: checked.2 as i64,
        created: now(),
    })
}

/// The answer to a `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Send the whole file (no byte range, or several: one range is what resuming devices
    /// and CDNs send).
    Whole,
    /// Send bytes `start..=end`.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Reads a `Range` header against a file of `len` bytes.
pub fn parse_range(v: &str, len: u64) -> RangeAnswer {
    match range(v, len) {
        Ok(Some((s, e))) => RangeAnswer::Part(s, e),
        Ok(None) => RangeAnswer::Whole,
        Err(()) => RangeAnswer::Unsatisfiable,
    }
}

fn range(v: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e: u64 = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (s, e)
    };
    if len == 0 || start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// Serves artifact `id` (`len` bytes, sha256 `sha256`) from `from` with Range, If-Range and
/// If-None-Match.
pub async fn serve(
    from: &ArtifactStore,
    id: &str,
    len: u64,
    sha256: &str,
    headers: &HeaderMap,
) -> Result<Response, ServerError> {
    let etag = format!("\"{sha256}\"");
    let hv = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    let base = || {
        Response::builder()
            .header(header::ETAG, hv(&etag))
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
    };
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return base()
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(|e| ServerError::BadRequest(e.to_string()));
    }
    let range_ok = get(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let range = match get(header::RANGE).filter(|_| range_ok) {
        Some(v) => parse_range(v, len),
        None => RangeAnswer::Whole,
    };
    let resp = match range {
        RangeAnswer::Unsatisfiable => base()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, hv(&format!("bytes */{len}")))
            .body(Body::empty()),
        RangeAnswer::Whole => base()
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from_stream(from.stream(id, None).await?)),
        RangeAnswer::Part(s, e) => base()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, e - s + 1)
            .header(header::CONTENT_RANGE, hv(&format!("bytes {s}-{e}/{len}")))
            .body(Body::from_stream(from.stream(id, Some((s, e))).await?)),
    };
    resp.map_err(|e| ServerError::BadRequest(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{parse_range, RangeAnswer::*};

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=95-200", 100), Part(95, 99));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=9-3", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=x-3", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
    }

    proptest::proptest! {
        /// Any header, any length: no panic, and a part is inside the file.
        #[test]
        fn any_range_header(v in "(bytes=)?[-0-9, ]{0,24}|.{0,40}", len in 0u64..1 << 40) {
            if let Part(s, e) = parse_range(&v, len) {
                proptest::prop_assert!(s <= e && e < len);
            }
        }
    }
}
