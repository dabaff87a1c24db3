//! `weir-object-store`: a store's shared second home in object storage, so
//! that machines sharing one records database also share artifacts: what
//! one machine computed is fetched (and verified) by another instead of
//! being computed again.
//!
//! [`BucketRemote`] implements `weir-core`'s [`ObjectRemote`] over the
//! `object_store` crate: `s3://bucket/prefix` (AWS S3 and S3-compatible
//! servers: MinIO, Ceph, moto), `gs://bucket/prefix` (Google Cloud Storage)
//! and `az://container/prefix` (Azure Blob Storage). Objects are named
//! `PREFIX/objects/<2 hex>/<64 hex>` by their blake3 digest, the layout of
//! `weir-runtime`'s `FolderRemote`. Credentials and endpoints come from
//! each service's standard environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_ENDPOINT`, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_*`, ...),
//! read by the host; guests never see them (steps have no network).
//!
//! The calls are blocking (the store calls them from its own threads); the
//! remote runs its requests on a small runtime of its own.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let remote = weir_object_store::BucketRemote::connect("s3://ml-artifacts/weir")?;
//! let mut config = weir_runtime::Config::new(".weir");
//! config.remote(std::sync::Arc::new(remote));
//! # Ok(()) }
//! ```

use anyhow::{Context as _, anyhow};
use futures_util::StreamExt as _;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;
use weir_core::digest::Digest;
use weir_core::remote::ObjectRemote;

/// Object storage as a store's remote (see the crate docs).
pub struct BucketRemote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The URL as given, for messages (it holds no credentials).
    url: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for BucketRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketRemote")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Whether `text` names object storage this crate can open.
pub fn is_url(text: &str) -> bool {
    SCHEMES.iter().any(|s| {
        text.strip_prefix(s)
            .is_some_and(|rest| rest.starts_with("://"))
    })
}

/// The schemes [`BucketRemote::connect`] takes.
pub const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

impl BucketRemote {
    /// Opens the bucket `url` names, configured from the environment. Makes
    /// no request: a wrong bucket or credentials show on the first upload
    /// or download, with the URL in the message.
    pub fn connect(url: &str) -> anyhow::Result<BucketRemote> {
        let parsed = url::Url::parse(url).map_err(|e| {
            anyhow!("remote {url:?}: not a URL ({e}); expected s3://bucket/prefix, gs://bucket/prefix or az://container/prefix")
        })?;
        let store = open(&parsed).map_err(|e| anyhow!("remote {url}: {e}"))?;
        let prefix = ObjectPath::from_url_path(parsed.path())
            .map_err(|e| anyhow!("remote {url}: the prefix {:?}: {e}", parsed.path()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-remote")
            .enable_all()
            .build()
            .context("starting the remote's runtime")?;
        Ok(BucketRemote {
            store,
            prefix,
            url: url.to_string(),
            rt: Some(rt),
        })
    }

    /// Where object `d` lives in the bucket.
    fn location(&self, d: &Digest) -> ObjectPath {
        let hex = d.to_hex();
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(["objects".to_string(), hex[..2].to_string(), hex]);
        ObjectPath::from_iter(parts)
    }

    /// Runs `fut` on the remote's runtime and waits for it: callable from
    /// any thread, including an async worker (which it blocks meanwhile).
    fn call<T, Fut>(&self, fut: Fut) -> anyhow::Result<T>
    where
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| anyhow!("the remote's runtime has stopped"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| {
            anyhow!("a request to the remote ended without an answer (a panic in it)")
        })?
    }
}

impl Drop for BucketRemote {
    fn drop(&mut self) {
        // Dropping a runtime inside an async context panics; shut down
        // without waiting instead.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The backend for `url`'s scheme, configured from the environment.
fn open(url: &url::Url) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let text = url.as_str();
    Ok(match url.scheme() {
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(text)
                .build()?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(text)
                .build()?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(text)
                .build()?,
        ),
        other => anyhow::bail!(
            "the scheme {other:?} is not object storage weir can use (expected one of {})",
            SCHEMES.join(", ")
        ),
    })
}

impl ObjectRemote for BucketRemote {
    fn put(&self, d: &Digest, local: &Path) -> anyhow::Result<()> {
        let (store, at, local) = (self.store.clone(), self.location(d), local.to_path_buf());
        let (url, short) = (self.url.clone(), d.short());
        self.call(async move {
            // Streamed: a large artifact goes up in parts (multipart
            // upload, completed at the end: the object appears whole or
            // not at all), never whole in memory.
            let mut file = tokio::fs::File::open(&local)
                .await
                .with_context(|| format!("reading {}", local.display()))?;
            let mut up = object_store::buffered::BufWriter::new(store, at);
            if let Err(e) = tokio::io::copy(&mut file, &mut up).await {
                let _ = up.abort().await;
                return Err(anyhow!("uploading {short} to {url}: {e}"));
            }
            // Completes the upload (or aborts it on failure, itself).
            up.shutdown()
                .await
                .map_err(|e| anyhow!("uploading {short} to {url}: {e}"))
        })
    }

    fn get(&self, d: &Digest, dest: &Path) -> anyhow::Result<bool> {
        let (store, at, dest) = (self.store.clone(), self.location(d), dest.to_path_buf());
        let (url, short) = (self.url.clone(), d.short());
        self.call(async move {
            let got = match store.get(&at).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(anyhow!("downloading {short} from {url}: {e}")),
            };
            let mut file = tokio::fs::File::create(&dest)
                .await
                .with_context(|| format!("writing {}", dest.display()))?;
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| anyhow!("downloading {short} from {url}: {e}"))?;
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("s3://bucket/prefix"));
        assert!(is_url("gs://b"));
        assert!(is_url("az://container/x"));
        assert!(!is_url("/mnt/shared"));
        assert!(!is_url("s3:/bucket"));
        assert!(!is_url("postgres://db/weir"));
    }

    #[test]
    fn objects_are_named_by_digest_under_the_prefix() {
        let r = BucketRemote::connect("s3://bucket/team/weir").unwrap();
        let d = Digest::of(b"x");
        let hex = d.to_hex();
        assert_eq!(
            r.location(&d).as_ref(),
            format!("team/weir/objects/{}/{hex}", &hex[..2])
        );
        let r = BucketRemote::connect("s3://bucket").unwrap();
        assert_eq!(
            r.location(&d).as_ref(),
            format!("objects/{}/{hex}", &hex[..2])
        );
    }

    #[test]
    fn an_unknown_scheme_is_named() {
        let e = BucketRemote::connect("ftp://host/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ftp\"") && e.contains("s3"), "{e}");
        let e = BucketRemote::connect("not a url").unwrap_err().to_string();
        assert!(e.contains("s3://bucket/prefix"), "{e}");
    }
}
