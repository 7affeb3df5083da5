//! Where log objects come from: S3 (streamed, never held whole) or a local file.

use std::pin::Pin;

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::get_object::GetObjectError;
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
    #[error("reading {object}: {detail}")]
    Read { object: String, detail: String },
}

/// A log object to read: in S3, or a local file (CLI).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Opens an object as a byte stream. For S3 the read is checked against the announced ETag
/// (or pinned to the version) so a later overwrite is never loaded as this object.
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
                    SourceError::Read { object, detail }
                }
            })?;
            let size = file.metadata().await.ok().map(|m| m.len());
            Ok((Box::pin(file), size))
        }
        LogObject::S3(o) => {
            let mut request = s3.get_object().bucket(&o.bucket).key(&o.key);
            if let Some(v) = &o.version_id {
                request = request.version_id(v);
            }
            let response = request.send().await.map_err(|e| classify(o, e))?;
            // Overwritten since the notification: this version is gone, and the new one
            // brings its own notification (and its own ledger entry).
            let current = response.e_tag().map(|t| t.trim_matches('"'));
            if let (Some(announced), Some(current)) = (o.etag.as_deref(), current) {
                if o.version_id.is_none() && announced != current {
                    return Err(SourceError::Gone {
                        object: o.to_string(),
                        detail: format!(
                            "overwritten: ETag is now {current}, announced {announced}"
                        ),
                    });
                }
            }
            let size = response
                .content_length()
                .and_then(|l| u64::try_from(l).ok());
            Ok((Box::pin(response.body.into_async_read()), size))
        }
    }
}

fn classify(object: &ObjectRef, e: SdkError<GetObjectError>) -> SourceError {
    let gone = match &e {
        SdkError::ServiceError(service) => {
            matches!(service.err(), GetObjectError::NoSuchKey(_))
                || matches!(service.raw().status().as_u16(), 404 | 412)
        }
        _ => false,
    };
    let detail = aws_error(&e);
    if gone {
        SourceError::Gone {
            object: object.to_string(),
            detail,
        }
    } else {
        SourceError::Read {
            object: object.to_string(),
            detail,
        }
    }
}
