//! Target `receipt`: a receiver's signed receipt through `verify_receipt`, what a sender
//! checks before it logs a delivery as done.

use kinbridge_core::limits::MAX_HEADER_BYTES;
use kinbridge_core::pae::{RECEIPT_BODY_TYPE, pae};
use kinbridge_core::{
    MessageId, SignedReceipt, VerifiedReceipt, issue_receipt, verify_envelope, verify_receipt,
};
use kinbridge_proto::v1 as pb;
use prost::Message;

use crate::assert_error_message;
use crate::fixture::{
    MESSAGE_ID, NOW, keyring, policy, receiver, receiver_key, sender, sender_key, valid_envelope,
};

/// The fuzz bytes, by the first byte's parity: 0, a whole `Receipt` as received; 1, the
/// receipt body, signed by the receiver's key (reaching the checks after the signature).
///
/// Asserts: a refusal is a `ReceiptError` with a short printable message; an accepted receipt
/// is the receiver's about the very envelope sent, its body within `MAX_HEADER_BYTES`, its
/// status known and its refusal texts bounded; the signature covers exact bytes; a body
/// decoded, re-encoded and signed again verifies the same.
pub fn receipt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        match pb::Receipt::decode(rest) {
            Ok(r) => {
                let _ = check(&SignedReceipt::from(r));
            }
            Err(e) => assert_error_message(&e.to_string(), 1024),
        }
        return;
    }
    let signed = sign(rest.to_vec());
    let result = check(&signed);
    let Ok(body) = pb::ReceiptBody::decode(rest) else {
        return;
    };
    let reencoded = body.encode_to_vec();
    if reencoded != rest {
        let moved = SignedReceipt {
            body: reencoded.clone(),
            signature: signed.signature.clone(),
        };
        assert!(
            check(&moved).is_err(),
            "a receipt signature verified over other bytes than the ones it signed"
        );
    }
    if rest.len() <= MAX_HEADER_BYTES {
        let again = check(&sign(reencoded));
        match (&result, &again) {
            (Ok(a), Ok(b)) => assert_eq!(
                (
                    a.status,
                    &a.refusal_reason,
                    &a.refusal_detail,
                    a.received_at
                ),
                (
                    b.status,
                    &b.refusal_reason,
                    &b.refusal_detail,
                    b.received_at
                )
            ),
            (Err(a), Err(b)) => assert_eq!(a, b, "a re-encoded body is refused otherwise"),
            _ => panic!("a receipt body and its re-encoding verify differently"),
        }
    }
}

/// `body` signed by the receiver's key.
pub fn sign(body: Vec<u8>) -> SignedReceipt {
    let signature = receiver_key()
        .sign(&pae(RECEIPT_BODY_TYPE, &body))
        .to_bytes()
        .to_vec();
    SignedReceipt { body, signature }
}

/// A valid receipt body: the receiver's for the fixed envelope.
pub fn valid_body() -> Vec<u8> {
    let keys = keyring(&sender_key());
    let verified = verify_envelope(valid_envelope(), &sender(), Some(&keys), &policy(), NOW)
        .unwrap_or_else(|e| panic!("fixture envelope: {e}"));
    issue_receipt(&verified, &receiver(), NOW, &receiver_key()).body
}

/// Verifies `receipt` as the sender of the fixed envelope does; a refusal as its message.
fn check(receipt: &SignedReceipt) -> Result<VerifiedReceipt, String> {
    let message_id =
        MessageId::new(MESSAGE_ID).unwrap_or_else(|e| panic!("fixture message id: {e}"));
    let digest = valid_envelope().digest();
    match verify_receipt(
        receipt,
        &sender(),
        message_id,
        digest,
        &receiver(),
        &keyring(&receiver_key()),
    ) {
        Ok(v) => {
            assert!(receipt.body.len() <= MAX_HEADER_BYTES);
            let body = pb::ReceiptBody::decode(receipt.body.as_slice())
                .unwrap_or_else(|e| panic!("an accepted receipt body does not decode: {e}"));
            assert_eq!(body.receiver, receiver().as_str());
            assert_eq!(body.sender, sender().as_str());
            assert_eq!(body.message_id, MESSAGE_ID);
            assert_eq!(body.envelope_digest, digest.0);
            assert_eq!(v.message_id, message_id);
            assert!(v.status != pb::ReceiptStatus::Unspecified);
            assert!(v.refusal_reason.chars().count() <= 64);
            assert!(v.refusal_detail.chars().count() <= 512);
            Ok(v)
        }
        Err(e) => {
            let message = e.to_string();
            assert_error_message(&message, 1024);
            Err(message)
        }
    }
}
