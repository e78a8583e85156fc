//! Loading the peer registry from the config: each peer's CA certificates (and a verifier
//! that accepts only client certificates chaining to them) and its signing keys.

use std::collections::HashMap;
use std::path::PathBuf;

use kinbridge_core::{Keyring, NodeId, PeerKey};
use kinbridge_grpc::tls::{TlsError, client_verifier, load_certs, root_store};
use kinbridge_service::registry::{Peer, PeerRegistry};

use crate::config::PeerConfig;

/// Why the registry could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A CA certificate could not be loaded.
    #[error("peer {peer}: {source}")]
    Tls {
        /// The peer.
        peer: NodeId,
        /// The error.
        source: TlsError,
    },
    /// A public key could not be loaded.
    #[error("peer {peer}: signing key {path}: {reason}")]
    Key {
        /// The peer.
        peer: NodeId,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Builds the peer registry from config, loading every CA and key.
pub fn load_registry(peers: &[PeerConfig]) -> Result<PeerRegistry, RegistryError> {
    let mut out = HashMap::new();
    for p in peers {
        let tls = |source| RegistryError::Tls {
            peer: p.node_id.clone(),
            source,
        };
        let ca_certs = load_certs(&p.ca_certificate).map_err(tls)?;
        let ca_pem = std::fs::read(&p.ca_certificate).map_err(|e| {
            tls(TlsError::Pem {
                path: p.ca_certificate.clone(),
                reason: e.to_string(),
            })
        })?;
        let verifier = client_verifier(root_store(&ca_certs).map_err(tls)?).map_err(tls)?;
        let mut keys = Vec::with_capacity(p.signing_keys.len());
        for k in &p.signing_keys {
            let key_err = |reason: String| RegistryError::Key {
                peer: p.node_id.clone(),
                path: k.public_key.clone(),
                reason,
            };
            let pem = std::fs::read_to_string(&k.public_key).map_err(|e| key_err(e.to_string()))?;
            let mut key = PeerKey::from_public_key_pem(k.key_id.clone(), &pem)
                .map_err(|e| key_err(e.to_string()))?;
            key.not_before = k.not_before;
            key.not_after = k.not_after;
            keys.push(key);
        }
        out.insert(
            p.node_id.clone(),
            Peer {
                node_id: p.node_id.clone(),
                endpoint: p.endpoint.clone(),
                tls_server_name: p.tls_server_name.clone(),
                ca_certs,
                ca_pem,
                keyring: Keyring::new(keys),
                tags: p.tags.clone(),
                verifier,
            },
        );
    }
    Ok(PeerRegistry::new(out.into_values()))
}
