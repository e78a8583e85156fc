//! Targets `envelope` and `tracing`: a peer's envelope through `verify_envelope`, the checks
//! every envelope a peer delivers goes through before a node acts on it.

use kinbridge_core::consent::MAX_SCOPE_NODES;
use kinbridge_core::family_tracing::{self, MAX_CANDIDATES, MAX_ENCODING_BYTES};
use kinbridge_core::limits::{
    MAX_HEADER_BYTES, MAX_MESSAGE_LIFETIME_MS, MAX_PAYLOAD_BYTES, MAX_REFERENCE_BYTES, SALT_BYTES,
    SIGNATURE_BYTES,
};
use kinbridge_core::verify::{MAX_REASON_CODE_LEN, VerifiedPayload};
use kinbridge_core::{
    KeyChange, PayloadCommitment, PayloadSalt, SealedEnvelope, VerifiedEnvelope, issue_receipt,
    verify_envelope, verify_receipt,
};
use kinbridge_proto::v1 as pb;
use prost::Message;

use crate::assert_error_message;
use crate::fixture::{
    NOW, keyring, policy, receiver, receiver_key, resign, sender, sender_key, valid_envelope,
};

/// Longest refusal message a node answers a peer with.
const MAX_REFUSAL_MESSAGE: usize = 1024;

/// The fuzz bytes, by the first byte's value modulo 4: 0, a whole `Envelope` as received;
/// 1, the header bytes, signed by the sender's key; 2, an `EnvelopeHeader` whose payload
/// digest is set to the fixed payload's and which is then signed (reaching the time, payload
/// and category checks); 3, a payload (after a kind byte and a data-category bit mask) under
/// a valid header committing to it.
///
/// Asserts: a refusal is a `Refusal` with a code and a short printable message; an accepted
/// envelope keeps every limit of `kinbridge_core::limits`, is the sender's to this node, and
/// its receipt verifies at the sender; the signature covers exact bytes (a re-encoded header
/// under the original signature is refused when its bytes differ); and a header decoded,
/// re-encoded and signed again verifies the same as the original.
pub fn envelope(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let base = valid_envelope();
    match mode % 4 {
        0 => match pb::Envelope::decode(rest) {
            Ok(e) => check(e.into(), false),
            Err(e) => assert_error_message(&e.to_string(), MAX_REFUSAL_MESSAGE),
        },
        1 => check(resign(&base, rest.to_vec(), &sender_key()), true),
        2 => {
            let Ok(mut header) = pb::EnvelopeHeader::decode(rest) else {
                return;
            };
            let salt = PayloadSalt::from_slice(&base.payload_salt)
                .unwrap_or_else(|| panic!("fixture salt is {SALT_BYTES} bytes"));
            header.payload_digest = PayloadCommitment::compute(&salt, &base.payload).0.to_vec();
            check(resign(&base, header.encode_to_vec(), &sender_key()), true);
        }
        _ => {
            let [kind, categories, payload @ ..] = rest else {
                return;
            };
            let declared = (1..=8)
                .filter(|bit| categories & (1 << (bit - 1)) != 0)
                .collect();
            check(seal_payload(i32::from(*kind), declared, payload), true);
        }
    }
}

/// The fuzz bytes as the payload of a tracing message, the kind chosen by the first byte's
/// value modulo 4 (query, match notice, confirmation, disclosure), under a valid header that
/// declares the data categories such a message must (so the fuzzer reaches
/// `kinbridge_core::family_tracing`'s checks). Asserts what [`envelope`] does, and the bounds
/// of each tracing message.
pub fn tracing(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let (kind, declared) = match selector % 4 {
        0 => {
            let location = selector & 4 != 0;
            let mut declared = vec![pb::DataCategory::Identity as i32];
            if location {
                declared.push(pb::DataCategory::Location as i32);
            }
            (pb::MessageKind::TracingRequest, declared)
        }
        1 => (pb::MessageKind::TracingMatchNotice, vec![]),
        2 => (pb::MessageKind::TracingConfirmation, vec![]),
        _ => {
            let declared = pb::TracingDisclosure::decode(payload)
                .map(|d| {
                    family_tracing::categories(&d)
                        .into_iter()
                        .map(|c| c as i32)
                        .collect()
                })
                .unwrap_or_default();
            (pb::MessageKind::TracingDisclosure, declared)
        }
    };
    check(seal_payload(kind as i32, declared, payload), true);
}

/// A valid envelope of `kind` declaring `categories`, carrying `payload` under a fixed salt,
/// signed by the sender's key.
fn seal_payload(kind: i32, categories: Vec<i32>, payload: &[u8]) -> SealedEnvelope {
    let base = valid_envelope();
    let salt = PayloadSalt([5; SALT_BYTES]);
    let mut header = pb::EnvelopeHeader::decode(base.header.as_slice())
        .unwrap_or_else(|e| panic!("fixture header: {e}"));
    header.kind = kind;
    header.data_categories = categories;
    header.payload_digest = PayloadCommitment::compute(&salt, payload).0.to_vec();
    let sealed = SealedEnvelope {
        payload: payload.to_vec(),
        payload_salt: salt.0.to_vec(),
        ..base
    };
    resign(&sealed, header.encode_to_vec(), &sender_key())
}

/// Verifies `sealed` as the receiver does and asserts the properties. `signed`: the header
/// bytes carry a valid signature by the sender's key, so a re-signed re-encoding must verify
/// the same.
pub(crate) fn check(sealed: SealedEnvelope, signed: bool) {
    let result = verify(sealed.clone());
    match &result {
        Ok(verified) => assert_accepted(&sealed, verified),
        Err(code) => assert!(!code.is_empty()),
    }
    let Ok(raw) = pb::EnvelopeHeader::decode(sealed.header.as_slice()) else {
        return;
    };
    let reencoded = raw.encode_to_vec();
    if signed && reencoded != sealed.header {
        let moved = SealedEnvelope {
            header: reencoded.clone(),
            ..sealed.clone()
        };
        assert!(
            verify(moved).is_err(),
            "a signature verified over other header bytes than the ones it signed"
        );
    }
    if signed && sealed.header.len() <= MAX_HEADER_BYTES {
        let again = verify(resign(&sealed, reencoded, &sender_key()));
        match (&result, &again) {
            (Ok(a), Ok(b)) => {
                assert_eq!(format!("{:?}", a.header()), format!("{:?}", b.header()));
                assert_eq!(format!("{:?}", a.payload()), format!("{:?}", b.payload()));
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "a re-encoded header is refused otherwise"),
            (a, b) => panic!(
                "a header and its re-encoding verify differently: {:?} then {:?}",
                a.as_ref().map(|_| "accepted"),
                b.as_ref().map(|_| "accepted")
            ),
        }
    }
}

/// `verify_envelope` as the receiver calls it for a peer whose certificate proved the sender;
/// a refusal as its code, after asserting its message.
fn verify(sealed: SealedEnvelope) -> Result<VerifiedEnvelope, &'static str> {
    let keys = keyring(&sender_key());
    verify_envelope(sealed, &sender(), Some(&keys), &policy(), NOW).map_err(|refusal| {
        assert_error_message(&refusal.to_string(), MAX_REFUSAL_MESSAGE);
        refusal.code()
    })
}

fn assert_accepted(sealed: &SealedEnvelope, verified: &VerifiedEnvelope) {
    assert_eq!(
        verified.sealed(),
        sealed,
        "the envelope is kept as received"
    );
    assert_eq!(verified.digest(), sealed.digest());
    assert!(sealed.header.len() <= MAX_HEADER_BYTES);
    assert!(sealed.payload.len() <= MAX_PAYLOAD_BYTES);
    assert_eq!(sealed.signature.len(), SIGNATURE_BYTES);
    assert_eq!(sealed.payload_salt.len(), SALT_BYTES);
    let h = verified.header();
    assert_eq!(
        h.sender,
        sender(),
        "accepted from another sender than TLS proved"
    );
    assert_eq!(
        h.recipient,
        receiver(),
        "accepted though addressed elsewhere"
    );
    assert!(h.consent_id.len() <= MAX_REFERENCE_BYTES);
    assert!(h.correlation_id.len() <= MAX_REFERENCE_BYTES);
    assert!(h.custody.len() <= MAX_SCOPE_NODES);
    let lifetime = h.expires_at.0 - h.created_at.0;
    assert!(lifetime > 0 && lifetime <= MAX_MESSAGE_LIFETIME_MS);
    assert!(h.created_at.0 <= NOW.0 + policy().max_clock_skew_ms);
    assert!(h.expires_at > NOW, "accepted after its expiry");
    assert!(h.data_categories.windows(2).all(|w| w[0] < w[1]));
    match verified.payload() {
        VerifiedPayload::TracingQuery(q) => assert!(q.encoding.len() <= MAX_ENCODING_BYTES),
        VerifiedPayload::TracingNotice(n) => assert!(n.candidates.len() <= MAX_CANDIDATES),
        VerifiedPayload::Key(KeyChange::Revoke { reason, at, .. }) => {
            assert!(reason.len() <= MAX_REASON_CODE_LEN && at.0 > 0);
        }
        _ => {}
    }
    let receipt = issue_receipt(verified, &receiver(), NOW, &receiver_key());
    let checked = verify_receipt(
        &receipt,
        &sender(),
        h.message_id,
        verified.digest(),
        &receiver(),
        &keyring(&receiver_key()),
    );
    assert!(
        checked.is_ok(),
        "the receipt of an accepted envelope does not verify: {checked:?}"
    );
}
