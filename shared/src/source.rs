//! Where log objects come from: S3 (streamed, never held whole) or a local file.

use std::pin::Pin;

use tokio::io::AsyncRead;

use crate::bigquery::auth::aws_error;
use crate::event::ObjectRef;

pub type ByteStream = Pin<Box<dyn AsyncRead + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The object is gone (deleted, or overwritten since the notification): retrying will
    /// not bring it back.
    #[error("{object} no longer exists ({detail})")]
    Gone { object: String, detail: String },
    /// S3 refused the read and the object exists (or existence could not be checked).
    #[error("reading {object}: access denied: {detail}")]
    Denied { object: String, detail: String },
    #[error("reading {object}: {detail}")]
    Read {
        object: String,
        detail: String,
        /// A network failure, throttling or 5xx: a retry can succeed.
        transient: bool,
    },
}

impl crate::retry::Transient for SourceError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Read {
                transient: true,
                ..
            }
        )
    }
}

/// A log object to read: in S3, or a local file (CLI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LogObject {
    S3(ObjectRef),
    File(std::path::PathBuf),
}

impl LogObject {
    /// `s3://bucket/key` or `file:///abs/path`: the lineage recorded in every row.
    pub fn uri(&self) -> String {
        match self {
            LogObject::S3(o) => o.to_string(),
            LogObject::File(p) => {
                let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                format!("file://{}", abs.display())
            }
        }
    }

    /// Parses a CLI argument: `s3://bucket/key` or a path.
    pub fn parse(arg: &str) -> LogObject {
        match arg
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
        {
            Some((bucket, key)) => LogObject::S3(ObjectRef {
                bucket: bucket.to_string(),
                key: key.to_string(),
                size: None,
                etag: None,
                version_id: None,
            }),
            None => LogObject::File(arg.into()),
        }
    }
}

/// Opens an object as a byte stream. For S3 the read is pinned to the object's ETag
/// (`If-Match`), so a later overwrite is never loaded as this object: an overwritten, deleted
/// or expired object (a delete marker on a versioned bucket too) is [`SourceError::Gone`].
pub async fn open(
    s3: &aws_sdk_s3::Client,
    object: &LogObject,
) -> Result<(ByteStream, Option<u64>), SourceError> {
    match object {
        LogObject::File(path) => {
            let file = tokio::fs::File::open(path).await.map_err(|e| {
                let object = path.display().to_string();
                let detail = e.to_string();
                if e.kind() == std::io::ErrorKind::NotFound {
                    SourceError::Gone { object, detail }
                } else {
                    SourceError::Read {
                        object,
                        detail,
                        transient: true,
                    }
                }
            })?;
            let size = file.metadata().await.ok().map(|m| m.len());
            Ok((Box::pin(file), size))
        }
        LogObject::S3(o) => {
            let mut request = s3.get_object().bucket(&o.bucket).key(&o.key);
            if let Some(etag) = &o.etag {
                request = request.if_match(format!("\"{etag}\""));
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    return Err(classify(
                        s3,
                        o,
                        e.raw_response().map(|r| r.status().as_u16()),
                        aws_error(&e),
                    )
                    .await)
                }
            };
            let size = response
                .content_length()
                .and_then(|l| u64::try_from(l).ok());
            Ok((Box::pin(response.body.into_async_read()), size))
        }
    }
}

/// The current version of `object` with its ETag and size (HeadObject); `None` when gone.
pub async fn head(
    s3: &aws_sdk_s3::Client,
    object: &ObjectRef,
) -> Result<Option<ObjectRef>, SourceError> {
    match s3
        .head_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .send()
        .await
    {
        Ok(head) => Ok(Some(ObjectRef {
            etag: head.e_tag().map(|t| t.trim_matches('"').to_string()),
            size: head.content_length().and_then(|l| u64::try_from(l).ok()),
            version_id: head.version_id().map(str::to_string),
            ..object.clone()
        })
        .filter(|o| o.etag.is_some())),
        Err(e) => match classify(
            s3,
            object,
            e.raw_response().map(|r| r.status().as_u16()),
            aws_error(&e),
        )
        .await
        {
            SourceError::Gone { .. } => Ok(None),
            other => Err(other),
        },
    }
}

/// What a failed read means. 404 (NoSuchKey) is gone and 412 is overwritten. 403 is what
/// real S3 answers for a missing key when the caller lacks s3:ListBucket, and also what it
/// answers for a real permission problem: listing the key tells them apart.
async fn classify(
    s3: &aws_sdk_s3::Client,
    object: &ObjectRef,
    status: Option<u16>,
    detail: String,
) -> SourceError {
    let gone = |detail| SourceError::Gone {
        object: object.to_string(),
        detail,
    };
    match status {
        Some(404) => gone(detail),
        Some(412) => gone(format!("overwritten since it was announced ({detail})")),
        Some(403) => match listed(s3, object).await {
            Ok(false) => gone(format!("no longer listed (GetObject answered 403: {detail})")),
            Ok(true) => SourceError::Denied {
                object: object.to_string(),
                detail: format!("{detail}; the key exists: check s3:GetObject on it and kms:Decrypt on its key"),
            },
            Err(list_detail) => SourceError::Denied {
                object: object.to_string(),
                detail: format!(
                    "{detail}; listing the key to tell a deleted object from a permission problem failed too \
                     ({list_detail}): grant s3:ListBucket on the log prefix"
                ),
            },
        },
        Some(status) => SourceError::Read {
            object: object.to_string(),
            detail,
            transient: status >= 500 || status == 429,
        },
        None => SourceError::Read {
            object: object.to_string(),
            detail,
            transient: true,
        },
    }
}

/// Whether `object`'s key is listed in its bucket.
async fn listed(s3: &aws_sdk_s3::Client, object: &ObjectRef) -> Result<bool, String> {
    let page = s3
        .list_objects_v2()
        .bucket(&object.bucket)
        .prefix(&object.key)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| aws_error(&e))?;
    Ok(page
        .contents()
        .iter()
        .any(|o| o.key() == Some(object.key.as_str())))
}

/// Random access to an object (v2 Parquet is read a row group at a time): S3 `Range` GETs
/// pinned to the object's ETag, or reads at an offset of a local file. Used from a blocking
/// thread: S3 calls run on the runtime through `handle`.
pub enum ObjectRanges {
    S3 {
        s3: aws_sdk_s3::Client,
        object: ObjectRef,
        size: u64,
        handle: tokio::runtime::Handle,
    },
    File {
        file: std::fs::File,
        size: u64,
    },
}

impl ObjectRanges {
    /// Random access to `object` of `size` bytes. Call from the runtime (it keeps a handle).
    pub fn open(
        s3: &aws_sdk_s3::Client,
        object: &LogObject,
        size: Option<u64>,
    ) -> std::io::Result<ObjectRanges> {
        match object {
            LogObject::File(path) => {
                let file = std::fs::File::open(path)?;
                let size = file.metadata()?.len();
                Ok(ObjectRanges::File { file, size })
            }
            LogObject::S3(o) => Ok(ObjectRanges::S3 {
                s3: s3.clone(),
                object: o.clone(),
                size: size.or(o.size).ok_or_else(|| {
                    std::io::Error::other(format!("{o}: size unknown, cannot read it by ranges"))
                })?,
                handle: tokio::runtime::Handle::current(),
            }),
        }
    }
}

impl crate::cloudfront::parquet::RangeSource for ObjectRanges {
    fn size(&self) -> u64 {
        match self {
            ObjectRanges::S3 { size, .. } | ObjectRanges::File { size, .. } => *size,
        }
    }

    fn read_range(&self, start: u64, len: u64) -> std::io::Result<bytes::Bytes> {
        let len = len.min(self.size().saturating_sub(start));
        if len == 0 {
            return Ok(bytes::Bytes::new());
        }
        match self {
            ObjectRanges::File { file, .. } => {
                use std::os::unix::fs::FileExt;
                let mut buffer = vec![0u8; len as usize];
                file.read_exact_at(&mut buffer, start)?;
                Ok(buffer.into())
            }
            ObjectRanges::S3 {
                s3, object, handle, ..
            } => handle.block_on(async {
                let mut request = s3
                    .get_object()
                    .bucket(&object.bucket)
                    .key(&object.key)
                    .range(format!("bytes={start}-{}", start + len - 1));
                if let Some(etag) = &object.etag {
                    request = request.if_match(format!("\"{etag}\""));
                }
                let response = request.send().await.map_err(|e| {
                    std::io::Error::other(format!(
                        "reading bytes {start}+{len} of {object}: {}",
                        aws_error(&e)
                    ))
                })?;
                let body = response.body.collect().await.map_err(|e| {
                    std::io::Error::other(format!("reading bytes {start}+{len} of {object}: {e}"))
                })?;
                Ok(body.into_bytes())
            }),
        }
    }
}
