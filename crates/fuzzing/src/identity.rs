//! Target `certificate_identity`: the identity a node reads from a TLS certificate a peer or
//! a local client presented (DER, parsed by x509-parser): a peer's node id, a local client's
//! name, role, unit and tags.

use kinbridge_core::NodeId;
use kinbridge_service::identity::{
    Role, client_name_of, is_development, local_client_of, node_id_of,
};
use rustls::pki_types::CertificateDer;

use crate::assert_error_message;

/// The fuzz bytes as a DER certificate, read as the peer port reads one (`node_id_of`) and
/// as the local port does (`local_client_of`, `client_name_of`, `is_development`).
///
/// Asserts: a refusal is an `IdentityError` with a short printable message; a node id read
/// is a valid node id; a local client read has a name of 1 to 64 characters without control
/// characters (it is written into logs and the audit log), the same name `client_name_of`
/// reads, a unit when it is a caseworker, and its tags sorted without repeats.
pub fn certificate_identity(data: &[u8]) {
    let cert = CertificateDer::from(data);
    match node_id_of(&cert) {
        Ok(node) => assert_eq!(NodeId::new(node.as_str()).as_ref(), Ok(&node)),
        Err(e) => assert_error_message(&e.to_string(), 256),
    }
    match local_client_of(&cert) {
        Ok(client) => {
            let chars = client.name.chars().count();
            assert!(
                (1..=64).contains(&chars),
                "a client name of {chars} characters"
            );
            assert!(
                !client.name.chars().any(char::is_control),
                "a client name with a control character: {:?}",
                client.name
            );
            assert_eq!(client_name_of(&cert).as_deref(), Some(client.name.as_str()));
            assert!(client.role != Role::Caseworker || client.unit.is_some());
            assert!(client.tags.windows(2).all(|w| w[0] < w[1]));
        }
        Err(e) => assert_error_message(&e.to_string(), 256),
    }
    let _ = is_development(&cert);
}
