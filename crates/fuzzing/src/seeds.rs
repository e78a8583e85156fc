//! The seed inputs of every target: valid inputs, each in the byte layout its target reads
//! (a mode byte first where the target has modes). `cargo run -p kinbridge-fuzzing --example
//! seeds` writes them into `fuzz/corpus/NAME/`.

use kinbridge_audit::checkpoint::{Checkpoint, origin_of};
use kinbridge_audit::merkle::{MerkleTree, leaf_hash};
use kinbridge_proto::v1 as pb;
use prost::Message;
use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};

use crate::checkpoint::sign_body;
use crate::export::{export_of, valid_entry};
use crate::fixture::{MESSAGE_ID, sender, sender_key, valid_envelope};
use crate::receipt::{sign, valid_body};

const HANDLE: &str = "00112233445566778899aabbccddeeff";
const OTHER_HANDLE: &str = "ffeeddccbbaa99887766554433221100";

fn with(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(bytes);
    out
}

/// Every target's seeds, by target name.
pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        ("envelope", envelope()),
        ("tracing", tracing()),
        ("receipt", receipt()),
        ("deliver_batch", deliver_batch()),
        ("checkpoint", checkpoint()),
        ("audit_export", audit_export()),
        ("node_config", node_config()),
        ("json_request", json_request()),
        ("certificate_identity", certificate_identity()),
    ]
}

fn envelope() -> Vec<Vec<u8>> {
    let sealed = valid_envelope();
    let status = pb::StatusUpdate {
        referral_id: MESSAGE_ID.into(),
        state: pb::ReferralState::Accepted as i32,
        code: String::new(),
        at_ms: 1,
    };
    let revoke = pb::KeyUpdate {
        update: Some(pb::key_update::Update::Revoke(pb::KeyRevocation {
            key_id: "ZM-DSW-old".into(),
            revoked_at_ms: 1,
            reason: "compromised".into(),
        })),
    };
    vec![
        with(0, &pb::Envelope::from(sealed.clone()).encode_to_vec()),
        with(1, &sealed.header),
        with(2, &sealed.header),
        with(
            3,
            &[
                &[1u8, 1 << 4][..],
                &crate::fixture::referral_payload().encode_to_vec(),
            ]
            .concat(),
        ),
        with(3, &[&[2u8, 0][..], &status.encode_to_vec()].concat()),
        with(3, &[&[8u8, 0][..], &revoke.encode_to_vec()].concat()),
    ]
}

fn tracing() -> Vec<Vec<u8>> {
    let query = pb::TracingQuery {
        handle: HANDLE.into(),
        schema_id: "kinbridge-clk-v1".into(),
        key_epoch: 1,
        encoding: vec![0xa5; 256],
    };
    let notice = pb::TracingMatchNotice {
        query_handle: HANDLE.into(),
        candidates: vec![pb::TracingCandidate {
            handle: OTHER_HANDLE.into(),
            band: pb::MatchBand::Likely as i32,
        }],
    };
    let confirmation = pb::TracingConfirmation {
        query_handle: HANDLE.into(),
        candidate_handle: OTHER_HANDLE.into(),
        confirmed: true,
    };
    let disclosure = pb::TracingDisclosure {
        query_handle: HANDLE.into(),
        candidate_handle: OTHER_HANDLE.into(),
        identity: Some(pb::IdentityData {
            given_names: vec!["A".into()],
            estimated_birth_year: 2015,
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        with(0, &query.encode_to_vec()),
        with(4, &query.encode_to_vec()),
        with(1, &notice.encode_to_vec()),
        with(2, &confirmation.encode_to_vec()),
        with(3, &disclosure.encode_to_vec()),
    ]
}

fn receipt() -> Vec<Vec<u8>> {
    let body = valid_body();
    let mut receipt = pb::Receipt::from(sign(body.clone()));
    let whole = receipt.encode_to_vec();
    receipt.checkpoint = checkpoint_note(1);
    vec![
        with(0, &whole),
        with(0, &receipt.encode_to_vec()),
        with(1, &body),
    ]
}

fn deliver_batch() -> Vec<Vec<u8>> {
    let envelope = pb::Envelope::from(valid_envelope());
    let request = pb::DeliverBatchRequest {
        envelopes: vec![envelope.clone(), envelope.clone()],
    };
    vec![
        with(0, &request.encode_to_vec()),
        with(1, &[&[0u8, 3][..], &envelope.encode_to_vec()].concat()),
        with(1, &[&[2u8, 0][..], &envelope.encode_to_vec()].concat()),
    ]
}

/// A signed checkpoint of the sender's log over `size` fixed entries.
fn checkpoint_note(size: u64) -> String {
    let origin = origin_of(&sender());
    let mut tree = MerkleTree::new();
    for _ in 0..size {
        tree.push(leaf_hash(&valid_entry()));
    }
    let root = tree
        .root(size)
        .unwrap_or_else(|e| panic!("seed tree root: {e}"));
    Checkpoint {
        origin: &origin,
        size,
        root,
    }
    .sign(&sender_key())
}

fn checkpoint() -> Vec<Vec<u8>> {
    let note = checkpoint_note(3);
    let body_end = note.find("\n\n").map_or(note.len(), |i| i + 1);
    let origin = origin_of(&sender());
    let extension = format!("{}extension line\n", &note[..body_end]);
    vec![
        with(0, note.as_bytes()),
        with(1, &note.as_bytes()[..body_end]),
        with(1, extension.as_bytes()),
        with(
            0,
            sign_body(&note[..body_end], "other.log", &sender_key()).as_bytes(),
        ),
        with(0, format!("{origin}\n0\n").as_bytes()),
    ]
}

fn audit_export() -> Vec<Vec<u8>> {
    let entry = valid_entry();
    vec![
        with(0, &export_of(&[entry.clone(), entry.clone(), entry])),
        with(1, &[0, 2, 0x18, 0x05]),
        with(2, &[0, 40, b'x']),
    ]
}

fn node_config() -> Vec<Vec<u8>> {
    crate::config::EXAMPLES
        .iter()
        .map(|text| text.as_bytes().to_vec())
        .collect()
}

fn json_request() -> Vec<Vec<u8>> {
    let referral = include_bytes!("../../../config/referral-example.json");
    vec![
        with(0, referral),
        with(1, format!("{{\"messageId\":\"{MESSAGE_ID}\"}}").as_bytes()),
        with(3, b"{\"pageSize\":10,\"afterSequence\":\"5\"}"),
        with(
            6,
            b"{\"messageId\":\"x\",\"state\":\"REFERRAL_STATE_ACCEPTED\"}",
        ),
        with(12, b"{}"),
        with(15, b"{\"firstSize\":\"1\",\"secondSize\":\"2\"}"),
    ]
}

/// A self-signed certificate carrying `uris` as subject alternative names.
fn certificate(uris: &[&str]) -> Vec<u8> {
    let make = || -> Result<Vec<u8>, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI(Ia5String::try_from(*uri)?));
        }
        let key = KeyPair::generate()?;
        Ok(params.self_signed(&key)?.der().to_vec())
    };
    make().unwrap_or_else(|e| panic!("seed certificate: {e}"))
}

fn certificate_identity() -> Vec<Vec<u8>> {
    vec![
        certificate(&["urn:kinbridge:node:ZM-DSW"]),
        certificate(&[
            "urn:kinbridge:client:caseworker-1",
            "urn:kinbridge:role:caseworker",
            "urn:kinbridge:unit:lusaka-district",
            "urn:kinbridge:tag:child-protection",
        ]),
        certificate(&["urn:kinbridge:client:cms", "urn:kinbridge:role:system"]),
    ]
}
