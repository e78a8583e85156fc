//! Target `deliver_batch`: a peer's `DeliverBatch` request, decoded under the gRPC face's
//! message bound, through the service's batch check and each envelope's verification.

use kinbridge_grpc::MAX_GRPC_MESSAGE_BYTES;
use kinbridge_proto::v1 as pb;
use kinbridge_service::intake::{MAX_BATCH, check_batch};
use prost::Message;

use crate::assert_error_message;
use crate::envelope::check;
use crate::fixture::valid_envelope;

/// The fuzz bytes, by the first byte's parity: 0, a whole `DeliverBatchRequest` as received;
/// 1, a count (the next two bytes) of copies of a valid envelope followed by one `Envelope`
/// decoded from the rest, so the fuzzer reaches the batch bound.
///
/// Asserts: a request over `MAX_GRPC_MESSAGE_BYTES` is never decoded (tonic's bound); what
/// decodes holds no more envelope bytes than the input; `check_batch` accepts 1 to
/// `MAX_BATCH` envelopes and nothing else, refusing with a short printable message; each
/// envelope of an accepted batch is verified as the `envelope` target verifies one.
pub fn deliver_batch(data: &[u8]) {
    if data.len() > MAX_GRPC_MESSAGE_BYTES {
        return;
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (request, input_len) = if mode % 2 == 0 {
        match pb::DeliverBatchRequest::decode(rest) {
            Ok(r) => (r, rest.len()),
            Err(e) => return assert_error_message(&e.to_string(), 1024),
        }
    } else {
        let [hi, lo, tail @ ..] = rest else {
            return;
        };
        let copies = usize::from(u16::from_be_bytes([*hi, *lo]) % 1024);
        let mut envelopes = vec![pb::Envelope::from(valid_envelope()); copies];
        if let Ok(last) = pb::Envelope::decode(tail) {
            envelopes.push(last);
        }
        let request = pb::DeliverBatchRequest { envelopes };
        let len = request.encoded_len();
        (request, len)
    };
    let held: usize = request
        .envelopes
        .iter()
        .map(|e| e.header.len() + e.signature.len() + e.payload.len() + e.payload_salt.len())
        .sum();
    assert!(
        held <= input_len,
        "a request decoded into more bytes than it holds"
    );
    match check_batch(&request) {
        Ok(()) => {
            assert!((1..=MAX_BATCH).contains(&request.envelopes.len()));
            // Verification is per envelope and in order; the rest repeat the first copies.
            let mut seen = std::collections::HashSet::new();
            for envelope in request.envelopes {
                if seen.insert(envelope.clone()) {
                    check(envelope.into(), false);
                }
            }
        }
        Err(refusal) => {
            let n = request.envelopes.len();
            assert!(n == 0 || n > MAX_BATCH, "a batch of {n} refused: {refusal}");
            assert_error_message(&refusal.to_string(), 1024);
        }
    }
}
