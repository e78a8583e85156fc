//! What the benchmarks share: the referral they send, percentiles, and the machine.

use std::time::Duration;

use kinbridge_core::UnixMillis;
use kinbridge_proto::v1 as pb;

/// A referral of about 2 KiB encoded, with a guardian's consent for `to`.
pub fn request(to: &str) -> pb::SubmitReferralRequest {
    let now = UnixMillis::now();
    let consent = pb::ConsentScope {
        consent_id: "BENCH-1".into(),
        given_by: pb::ConsentGiver::Guardian as i32,
        purposes: vec![pb::Purpose::ServiceReferral as i32],
        categories: vec![
            pb::DataCategory::Identity as i32,
            pb::DataCategory::ProtectionConcerns as i32,
        ],
        recipients: vec![to.into()],
        valid_from_ms: now.0 - 60_000,
        expires_at_ms: now.0 + 86_400_000,
        ..Default::default()
    };
    pb::SubmitReferralRequest {
        kind: pb::MessageKind::Referral as i32,
        recipient: to.into(),
        purpose: pb::Purpose::ServiceReferral as i32,
        consent: Some(consent),
        correlation_id: String::new(),
        recipient_unit: String::new(),
        ttl_seconds: 3600,
        referral: Some(pb::ReferralPayload {
            case_reference: "BENCH".into(),
            identity: Some(pb::IdentityData {
                given_names: vec!["x".repeat(200)],
                ..Default::default()
            }),
            protection_concerns: Some(pb::ProtectionConcerns {
                narrative: "y".repeat(1500),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The `p` quantile of `sorted`, in milliseconds (0 for none).
pub fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// The CPU model, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// "N cores, MODEL".
pub fn machine() -> String {
    format!(
        "{} cores, {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model()
    )
}
