//! Clients of a node's local service, for the `kinbridge` CLI, the demo and tests: a
//! mutual-TLS channel presenting a local-client certificate.

use std::path::Path;

use kinbridge_proto::v1::local_service_client::LocalServiceClient;
use tonic::transport::{Channel, Identity};

use crate::delivery::peer_channel;

/// Why a client could not be made.
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
    /// The channel could not be configured.
    #[error("{0}")]
    Channel(String),
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A local-service client for the node at `addr` (host:port), trusting the node's CA
/// `ca_cert` and presenting the client certificate `cert` with key `key`. Connects lazily.
pub fn local_client(
    addr: &str,
    ca_cert: &Path,
    cert: &Path,
    key: &Path,
) -> Result<LocalServiceClient<Channel>, ClientError> {
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    let channel = peer_channel(&format!("https://{addr}"), None, &read(ca_cert)?, &identity)
        .map_err(ClientError::Channel)?;
    Ok(LocalServiceClient::new(channel))
}
