//! The peer registry: which nodes this node talks to, how to reach them, which CA issues their
//! TLS certificates, and which Ed25519 keys sign their messages.

use std::collections::HashMap;
use std::sync::Arc;

use kinbridge_core::{Keyring, NodeId};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;

use crate::identity::node_id_of;

/// One registered peer.
pub struct Peer {
    /// Its node id.
    pub node_id: NodeId,
    /// Where to deliver to it, if anywhere.
    pub endpoint: Option<String>,
    /// Name expected in its TLS server certificate.
    pub tls_server_name: Option<String>,
    /// The CA certificates that issue its TLS certificates.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// The same, PEM-encoded, for the peer client's TLS configuration.
    pub ca_pem: Vec<u8>,
    /// Its signing keys.
    pub keyring: Keyring,
    /// Its tags, normalised.
    pub tags: Vec<kinbridge_core::firewall::Tag>,
    /// Accepts only client certificates chaining to this peer's own CA.
    pub verifier: Arc<dyn ClientCertVerifier>,
}

/// Why a peer's TLS client certificate proves no registered node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAuthError {
    /// The certificate names no valid node id.
    #[error("the client certificate is not a kinbridge node certificate: {0}")]
    NotANode(String),
    /// The node it names is not registered.
    #[error(
        "unknown peer '{node}': it is not in this node's peer registry; ask the operator to register it"
    )]
    UnknownPeer {
        /// The node the certificate names.
        node: NodeId,
        /// The registered peer whose CA issued the certificate, if any.
        issued_by: Option<NodeId>,
    },
    /// The certificate does not chain to the CA registered for the node it names.
    #[error(
        "impersonation refused: the certificate naming '{node}' is not issued by the CA registered for '{node}'{} ({reason})",
        issued_by.as_ref().map(|i| format!(" but by the CA registered for '{i}'")).unwrap_or_default()
    )]
    WrongCa {
        /// The node the certificate names.
        node: NodeId,
        /// The registered peer whose CA did issue it, if any.
        issued_by: Option<NodeId>,
        /// The verifier's reason.
        reason: String,
    },
}

impl PeerAuthError {
    /// What the certificate proved, for the audit log: the registered peer whose CA issued it
    /// (empty if none), and the node id it claimed (empty if it named none).
    pub fn identities(&self) -> (String, String) {
        match self {
            PeerAuthError::NotANode(_) => (String::new(), String::new()),
            PeerAuthError::UnknownPeer { node, issued_by }
            | PeerAuthError::WrongCa {
                node, issued_by, ..
            } => (
                issued_by
                    .as_ref()
                    .map(NodeId::to_string)
                    .unwrap_or_default(),
                node.to_string(),
            ),
        }
    }

    /// Stable reason code, as for envelope refusals.
    pub fn code(&self) -> &'static str {
        match self {
            PeerAuthError::NotANode(_) => "not-a-node-certificate",
            PeerAuthError::UnknownPeer { .. } => "unknown-peer",
            PeerAuthError::WrongCa { .. } => "impersonation",
        }
    }
}

/// The result of authenticating a peer's TLS client certificate: the node it proves, or why
/// it proves none.
pub type PeerAuth = Result<NodeId, PeerAuthError>;

/// All registered peers.
#[derive(Default)]
pub struct PeerRegistry {
    peers: HashMap<NodeId, Peer>,
}

impl PeerRegistry {
    /// The registry of `peers`.
    pub fn new(peers: impl IntoIterator<Item = Peer>) -> Self {
        Self {
            peers: peers.into_iter().map(|p| (p.node_id.clone(), p)).collect(),
        }
    }

    /// The peer `node`, if registered.
    pub fn get(&self, node: &NodeId) -> Option<&Peer> {
        self.peers.get(node)
    }

    /// Every registered peer.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// The CA certificates of all peers: the roots the peer listener trusts during the
    /// handshake. [`PeerRegistry::authenticate`] then checks each peer against its own CA.
    pub fn all_ca_certs(&self) -> Vec<CertificateDer<'static>> {
        self.peers
            .values()
            .flat_map(|p| p.ca_certs.iter().cloned())
            .collect()
    }

    /// Which node a verified client chain proves. The handshake only established that the chain
    /// ends at *some* peer's CA; this checks that it ends at the CA registered for the very
    /// node id the certificate names, so one country's CA cannot issue another's identity.
    pub fn authenticate(&self, chain: &[CertificateDer<'static>]) -> PeerAuth {
        let leaf = chain
            .first()
            .ok_or_else(|| PeerAuthError::NotANode("no client certificate was presented".into()))?;
        let node = node_id_of(leaf).map_err(|e| PeerAuthError::NotANode(e.to_string()))?;
        let Some(peer) = self.peers.get(&node) else {
            return Err(PeerAuthError::UnknownPeer {
                issued_by: self.issuer_of(chain),
                node,
            });
        };
        if let Err(e) = peer
            .verifier
            .verify_client_cert(leaf, &chain[1..], UnixTime::now())
        {
            return Err(PeerAuthError::WrongCa {
                issued_by: self.issuer_of(chain),
                node,
                reason: e.to_string(),
            });
        }
        Ok(node)
    }

    /// The registered peer whose CA issued `chain`, if any: what a refused certificate did
    /// prove, so the audit log names the country whose CA signed it.
    fn issuer_of(&self, chain: &[CertificateDer<'static>]) -> Option<NodeId> {
        let (leaf, rest) = chain.split_first()?;
        let mut peers: Vec<&Peer> = self.peers.values().collect();
        peers.sort_by(|a, b| a.node_id.as_str().cmp(b.node_id.as_str()));
        peers
            .into_iter()
            .find(|p| {
                p.verifier
                    .verify_client_cert(leaf, rest, UnixTime::now())
                    .is_ok()
            })
            .map(|p| p.node_id.clone())
    }
}
