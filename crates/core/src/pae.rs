//! DSSE pre-authentication encoding (PAE), which domain-separates what a signature covers.
//!
//! Implements the DSSE v1 protocol's `PAE(type, body)` =
//! `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, where `LEN` is the ASCII decimal byte
//! length and `SP` is one space (secure-systems-lab/dsse, `protocol.md`). Signing the PAE
//! rather than the raw bytes means a signature over a header can never be replayed as a
//! signature over a receipt, or over another protocol's message.

/// Payload type of a signed envelope header.
pub const ENVELOPE_HEADER_TYPE: &str = "application/vnd.kinbridge.envelope-header.v1+protobuf";
/// Payload type of a signed receipt body.
pub const RECEIPT_BODY_TYPE: &str = "application/vnd.kinbridge.receipt.v1+protobuf";

/// The DSSE v1 pre-authentication encoding of `body` under `payload_type`.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let type_len = payload_type.len().to_string();
    let body_len = body.len().to_string();
    let mut out = Vec::with_capacity(
        6 + 3 + type_len.len() + payload_type.len() + body_len.len() + body.len(),
    );
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(type_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the DSSE specification (`protocol.md`, "Test Vectors").
    #[test]
    fn dsse_spec_vector() {
        let encoded = pae("http://example.com/HelloWorld", b"hello world");
        assert_eq!(
            encoded,
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn types_separate_domains() {
        assert_ne!(
            pae(ENVELOPE_HEADER_TYPE, b"x"),
            pae(RECEIPT_BODY_TYPE, b"x")
        );
    }
}
