//! Reconciling two nodes' verified exports: every delivery one side logged has its receipt
//! on the other, with the same envelope and the same signed receipt, and the other way round.

use std::collections::HashMap;

use kinbridge_proto::v1 as pb;

use crate::entry::decode;

/// One disagreement between two logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The sender logged a delivery (a receipt from the receiver) that the receiver never
    /// logged receiving.
    MissingReceive {
        /// Sender node.
        sender: String,
        /// Receiver node.
        receiver: String,
        /// The message.
        message_id: String,
    },
    /// The receiver logged receiving a message whose delivery the sender never logged.
    MissingDelivery {
        /// Sender node.
        sender: String,
        /// Receiver node.
        receiver: String,
        /// The message.
        message_id: String,
    },
    /// Both logged the message, with different envelope digests.
    EnvelopeMismatch {
        /// The message.
        message_id: String,
    },
    /// Both logged the message, with different receipts.
    ReceiptMismatch {
        /// The message.
        message_id: String,
        /// Receipt digest the sender logged.
        at_sender: String,
        /// Receipt digest(s) the receiver logged.
        at_receiver: Vec<String>,
    },
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::MissingReceive {
                sender,
                receiver,
                message_id,
            } => write!(
                f,
                "missing receive: {sender} logged delivering {message_id} to {receiver} with a receipt, but {receiver}'s log has no receipt of it"
            ),
            Mismatch::MissingDelivery {
                sender,
                receiver,
                message_id,
            } => write!(
                f,
                "missing delivery: {receiver} logged receiving {message_id} from {sender}, but {sender}'s log has no delivery of it (still in flight when exported?)"
            ),
            Mismatch::EnvelopeMismatch { message_id } => {
                write!(
                    f,
                    "envelope mismatch: the two logs name different envelopes for {message_id}"
                )
            }
            Mismatch::ReceiptMismatch {
                message_id,
                at_sender,
                at_receiver,
            } => write!(
                f,
                "receipt mismatch: for {message_id} the sender logged receipt {at_sender}, the receiver issued {}",
                at_receiver.join(", ")
            ),
        }
    }
}

/// The outcome of a reconciliation.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Deliveries found on both sides with matching envelope and receipt.
    pub matched: usize,
    /// Every disagreement.
    pub mismatches: Vec<Mismatch>,
}

/// (sender, message id): how both logs name one message.
type MessageKey = (String, String);

/// What a DELIVERED entry says.
struct Delivery {
    envelope: Vec<u8>,
    receipt: Vec<u8>,
    recipient: String,
}

/// What the RECEIVED and REDELIVERED entries of one message say.
struct Receipt {
    envelope: Vec<u8>,
    receipts: Vec<Vec<u8>>,
}

struct Side {
    node: String,
    delivered: HashMap<MessageKey, Delivery>,
    received: HashMap<MessageKey, Receipt>,
}

fn index(node: &str, entries: &[Vec<u8>]) -> Side {
    let mut side = Side {
        node: node.to_owned(),
        delivered: HashMap::new(),
        received: HashMap::new(),
    };
    for bytes in entries {
        let Ok(e) = decode(bytes) else { continue };
        let key = (e.sender.clone(), e.message_id.clone());
        match pb::AuditEvent::try_from(e.event) {
            Ok(pb::AuditEvent::Delivered) => {
                let delivery = Delivery {
                    envelope: e.envelope_digest,
                    receipt: e.receipt_digest,
                    recipient: e.recipient,
                };
                side.delivered.insert(key, delivery);
            }
            Ok(pb::AuditEvent::Received | pb::AuditEvent::Redelivered) => {
                let slot = side.received.entry(key).or_insert_with(|| Receipt {
                    envelope: e.envelope_digest.clone(),
                    receipts: Vec::new(),
                });
                if !slot.receipts.contains(&e.receipt_digest) {
                    slot.receipts.push(e.receipt_digest);
                }
            }
            _ => {}
        }
    }
    side
}

/// Reconciles the entries of node `a_node`'s log with those of node `b_node`'s log. Both
/// exports must have been verified first.
pub fn reconcile(
    a_node: &str,
    a_entries: &[Vec<u8>],
    b_node: &str,
    b_entries: &[Vec<u8>],
) -> Report {
    let a = index(a_node, a_entries);
    let b = index(b_node, b_entries);
    let mut report = Report::default();
    for (sender, receiver) in [(&a, &b), (&b, &a)] {
        let mut deliveries: Vec<_> = sender
            .delivered
            .iter()
            .filter(|(_, d)| d.recipient == receiver.node)
            .collect();
        deliveries.sort_by(|x, y| x.0.cmp(y.0));
        for ((from, id), delivery) in deliveries {
            match receiver.received.get(&(from.clone(), id.clone())) {
                None => report.mismatches.push(Mismatch::MissingReceive {
                    sender: sender.node.clone(),
                    receiver: receiver.node.clone(),
                    message_id: id.clone(),
                }),
                Some(r) if r.envelope != delivery.envelope => {
                    report.mismatches.push(Mismatch::EnvelopeMismatch {
                        message_id: id.clone(),
                    })
                }
                Some(r) if !r.receipts.contains(&delivery.receipt) => {
                    report.mismatches.push(Mismatch::ReceiptMismatch {
                        message_id: id.clone(),
                        at_sender: hex::encode(&delivery.receipt),
                        at_receiver: r.receipts.iter().map(hex::encode).collect(),
                    })
                }
                Some(_) => report.matched += 1,
            }
        }
        let mut receipts: Vec<_> = receiver
            .received
            .keys()
            .filter(|(from, _)| *from == sender.node)
            .collect();
        receipts.sort();
        for (from, id) in receipts {
            if !sender.delivered.contains_key(&(from.clone(), id.clone())) {
                report.mismatches.push(Mismatch::MissingDelivery {
                    sender: sender.node.clone(),
                    receiver: receiver.node.clone(),
                    message_id: id.clone(),
                });
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{encode, new_entry};

    fn delivered(id: &str, env: u8, receipt: u8) -> Vec<u8> {
        let mut e = new_entry(pb::AuditEvent::Delivered, "ZM-DSW");
        (e.message_id, e.sender, e.recipient) = (id.into(), "ZM-DSW".into(), "MW-DSW".into());
        (e.envelope_digest, e.receipt_digest) = (vec![env; 32], vec![receipt; 32]);
        encode(&e)
    }

    fn received(id: &str, env: u8, receipt: u8) -> Vec<u8> {
        let mut e = new_entry(pb::AuditEvent::Received, "MW-DSW");
        (e.message_id, e.sender, e.recipient) = (id.into(), "ZM-DSW".into(), "MW-DSW".into());
        (e.envelope_digest, e.receipt_digest) = (vec![env; 32], vec![receipt; 32]);
        encode(&e)
    }

    #[test]
    fn matching_logs_reconcile() {
        let a = vec![delivered("m1", 1, 2), delivered("m2", 3, 4)];
        let b = vec![received("m1", 1, 2), received("m2", 3, 4)];
        let r = reconcile("ZM-DSW", &a, "MW-DSW", &b);
        assert_eq!((r.matched, r.mismatches.len()), (2, 0));
    }

    #[test]
    fn constructed_mismatches_are_listed() {
        let a = vec![
            delivered("m1", 1, 2),
            delivered("m2", 3, 4),
            delivered("m3", 5, 6),
        ];
        let b = vec![
            received("m2", 3, 9),
            received("m3", 7, 6),
            received("m4", 8, 8),
        ];
        let r = reconcile("ZM-DSW", &a, "MW-DSW", &b);
        assert_eq!(r.matched, 0);
        let text: Vec<String> = r.mismatches.iter().map(ToString::to_string).collect();
        assert!(
            matches!(&r.mismatches[0], Mismatch::MissingReceive { message_id, .. } if message_id == "m1"),
            "{text:?}"
        );
        assert!(
            r.mismatches.iter().any(
                |m| matches!(m, Mismatch::ReceiptMismatch { message_id, .. } if message_id == "m2")
            ),
            "{text:?}"
        );
        assert!(
            r.mismatches.iter().any(
                |m| matches!(m, Mismatch::EnvelopeMismatch { message_id } if message_id == "m3")
            ),
            "{text:?}"
        );
        assert!(
            r.mismatches.iter().any(
                |m| matches!(m, Mismatch::MissingDelivery { message_id, .. } if message_id == "m4")
            ),
            "{text:?}"
        );
        assert_eq!(r.mismatches.len(), 4);
    }
}
