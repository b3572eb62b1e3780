//! The object store: exported files, datasets and model artifacts.
//!
//! One URL configures it: `file:///path` (the default, a folder in the data dir)
//! or `s3://bucket/prefix` (AWS S3, Cloudflare R2, MinIO; credentials, region and
//! endpoint from the usual `AWS_*` environment variables). Keys are `/`-separated
//! and relative to the configured prefix.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use url::Url;

use crate::{Error, Result};

/// An object found by [`Objects::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key, relative to the configured prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A configured object store.
#[derive(Clone)]
pub struct Objects {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// The folder of a `file://` store: its writes are fsynced (file, then the
    /// folders up to it) before `put` returns, as the database is (`synchronous
    /// = FULL`), so a manifest or registry row never points at a file a power
    /// cut could lose.
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").field("url", &self.url).finish()
    }
}

impl Objects {
    /// Opens the store named by `url` (`file:///…` or `s3://bucket/prefix`).
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = Url::parse(url).map_err(|e| {
            Error::Objects(format!(
                "MANIREC_OBJECT_STORE {url:?} is not a URL ({e}); use file:///PATH or s3://BUCKET/PREFIX"
            ))
        })?;
        match parsed.scheme() {
            "file" => {
                let dir = parsed.to_file_path().map_err(|()| {
                    Error::Objects(format!("{url:?} is not an absolute file:// path"))
                })?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::Objects(format!(
                        "cannot create object folder {}: {e}",
                        dir.display()
                    ))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| Error::Objects(e.to_string()))?;
                Ok(Objects {
                    inner: Arc::new(fs),
                    prefix: ObjectPath::default(),
                    url: url.to_owned(),
                    local_root: Some(dir),
                })
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .ok_or_else(|| Error::Objects(format!("{url:?} names no bucket")))?;
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| Error::Objects(format!("S3 configuration: {e}")))?;
                Ok(Objects {
                    inner: Arc::new(s3),
                    prefix: ObjectPath::from(parsed.path().trim_matches('/')),
                    url: url.to_owned(),
                    local_root: None,
                })
            }
            other => Err(Error::Objects(format!(
                "unsupported object store scheme {other:?} in {url:?}; use file:// or s3://"
            ))),
        }
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjectPath {
        let key = ObjectPath::from(key);
        self.prefix.parts().chain(key.parts()).collect()
    }

    /// Writes `bytes` under `key`, atomically (readers see all of it or nothing).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.inner
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| Error::Objects(format!("writing {key}: {e}")))?;
        if let Some(root) = self.local_root.clone() {
            let path = self.path(key);
            let file = path
                .parts()
                .fold(root.clone(), |dir, part| dir.join(part.as_ref()));
            // Blocking, briefly: puts run on the jobs' threads, not the server's.
            match fsync_up_to(&file, &root) {
                Ok(()) => {}
                // A key the local store encodes into another file name: the
                // write stands, unsynced; say so rather than fail it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(key, "object written but not found to fsync");
                }
                Err(e) => return Err(Error::Objects(format!("syncing {key}: {e}"))),
            }
        }
        Ok(())
    }

    /// Reads the object under `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let got = self
            .inner
            .get(&self.path(key))
            .await
            .map_err(|e| Error::Objects(format!("reading {key}: {e}")))?;
        got.bytes()
            .await
            .map_err(|e| Error::Objects(format!("reading {key}: {e}")))
    }
}

impl Objects {
    /// Every object whose key starts with the folder `prefix` (`datasets/v1.0`),
    /// sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = self.prefix.parts().count();
        let mut found: Vec<ObjectInfo> = self
            .inner
            .list(Some(&self.path(prefix)))
            .map_ok(|meta| ObjectInfo {
                key: meta
                    .location
                    .parts()
                    .skip(base)
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: meta.size,
            })
            .try_collect()
            .await
            .map_err(|e| Error::Objects(format!("listing {prefix}: {e}")))?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// Deletes the object under `key` (nothing happens when there is none).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Objects(format!("deleting {key}: {e}"))),
        }
    }
}

/// Fsyncs `file`, then every folder from its own up to `root` (a new folder's
/// entry lives in its parent).
fn fsync_up_to(file: &std::path::Path, root: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    let mut dir = file.parent();
    while let Some(d) = dir {
        std::fs::File::open(d)?.sync_all()?;
        if d == root {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_folder_round_trips_nested_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/objects", dir.path().display());
        let objects = Objects::from_url(&url).unwrap();
        objects
            .put("training-data/a.csv", Bytes::from_static(b"x,y\n"))
            .await
            .unwrap();
        assert_eq!(
            objects.get("training-data/a.csv").await.unwrap(),
            Bytes::from_static(b"x,y\n")
        );
        assert!(dir.path().join("objects/training-data/a.csv").is_file());
        // put found the file it fsynced (the key maps to this path) and its folders.
        fsync_up_to(
            &dir.path().join("objects/training-data/a.csv"),
            &dir.path().join("objects"),
        )
        .unwrap();

        objects
            .put("training-data/b.csv", Bytes::from_static(b"z\n"))
            .await
            .unwrap();
        objects.put("other/c", Bytes::new()).await.unwrap();
        let listed = objects.list("training-data").await.unwrap();
        assert_eq!(
            listed,
            [
                ObjectInfo {
                    key: "training-data/a.csv".into(),
                    size: 4
                },
                ObjectInfo {
                    key: "training-data/b.csv".into(),
                    size: 2
                }
            ]
        );
        objects.delete("training-data/a.csv").await.unwrap();
        objects.delete("training-data/a.csv").await.unwrap();
        assert_eq!(objects.list("training-data").await.unwrap().len(), 1);
    }

    #[test]
    fn unknown_schemes_are_named_in_the_error() {
        let err = Objects::from_url("ftp://x/y").unwrap_err().to_string();
        assert!(err.contains("ftp"), "{err}");
    }
}
