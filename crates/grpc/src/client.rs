//! Clients of a node's local port, for the `kinbridge` CLI, the demo and tests: mutual-TLS
//! channels presenting a local-client certificate, and the audit-log export.

use std::path::Path;

use kinbridge_audit::export::ExportWriter;
use kinbridge_proto::v1::audit_service_client::AuditServiceClient;
use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::{Channel, Identity};

use crate::peer_client::peer_channel;

/// Why a client could not be made or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PEM file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The channel could not be configured, or the call failed.
    #[error("{0}")]
    Channel(String),
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A channel to the local port of the node at `addr` (host:port), trusting the node's CA
/// `ca_cert` and presenting the client certificate `cert` with key `key`. Connects lazily.
pub fn local_channel(
    addr: &str,
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Channel, ClientError> {
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    peer_channel(&format!("https://{addr}"), None, &read(ca_cert)?, &identity)
        .map_err(ClientError::Channel)
}

/// A local-service client; see [`local_channel`].
pub fn local_client(
    addr: &str,
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
) -> Result<LocalServiceClient<Channel>, ClientError> {
    Ok(LocalServiceClient::new(local_channel(
        addr, ca_cert, cert, key,
    )?))
}

/// An audit-service client on the local port; see [`local_channel`].
pub fn audit_client(
    addr: &str,
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
) -> Result<AuditServiceClient<Channel>, ClientError> {
    Ok(AuditServiceClient::new(local_channel(
        addr, ca_cert, cert, key,
    )?))
}

/// Streams the node's audit log into an export written to `out`; returns the number of
/// entries written.
pub async fn export_log<W: std::io::Write>(
    client: &mut AuditServiceClient<Channel>,
    node: &str,
    out: W,
) -> Result<u64, ClientError> {
    use futures::StreamExt;
    let io = |e: std::io::Error| ClientError::Channel(format!("cannot write the export: {e}"));
    let mut stream = client
        .export_log(kinbridge_proto::v1::ExportLogRequest {})
        .await
        .map_err(|s| ClientError::Channel(format!("export refused: {}", s.message())))?
        .into_inner();
    let mut out = Some(out);
    let mut writer: Option<ExportWriter<W>> = None;
    let mut count = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|s| ClientError::Channel(format!("export failed: {}", s.message())))?;
        let w = match (&mut writer, out.take()) {
            (Some(w), _) => w,
            (None, Some(out)) => {
                let now = kinbridge_core::UnixMillis::now().0;
                writer.insert(ExportWriter::new(out, &chunk.origin, node, now).map_err(io)?)
            }
            (None, None) => return Err(ClientError::Channel("export stream out of order".into())),
        };
        if chunk.first_index != count {
            return Err(ClientError::Channel(format!(
                "export chunk starts at {} but {count} entries were received",
                chunk.first_index
            )));
        }
        for entry in &chunk.entries {
            w.entry(entry).map_err(io)?;
            count += 1;
        }
        for note in &chunk.checkpoints {
            w.checkpoint(note).map_err(io)?;
        }
    }
    match writer {
        Some(w) => {
            w.finish().map_err(io)?;
            Ok(count)
        }
        None => Err(ClientError::Channel("the node sent an empty export".into())),
    }
}
