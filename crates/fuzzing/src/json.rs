//! Target `json_request`: a request body of the JSON face (`crates/http`), read as the face
//! reads it (JSON, an object) and decoded by `kinbridge_http::operations::decode` into the
//! operation's request message in the protobuf JSON mapping (pbjson).

use kinbridge_http::MAX_BODY_BYTES;
use kinbridge_http::operations::decode;
use kinbridge_proto::v1 as pb;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::assert_error_message;

/// Decodes `value` as `T` and asserts the properties.
fn check<T>(value: Value, name: &str)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match decode::<T>(value, name) {
        Ok(request) => {
            let json = serde_json::to_value(&request)
                .unwrap_or_else(|e| panic!("a decoded {name} does not encode: {e}"));
            let again = decode::<T>(json, name)
                .unwrap_or_else(|e| panic!("a {name} re-encoded does not decode: {}", e.message()));
            assert_eq!(request, again, "a {name} changes through JSON and back");
        }
        Err(e) => {
            assert!(!e.refusal_reason().is_empty());
            assert_error_message(e.message(), 512);
        }
    }
}

macro_rules! requests {
    ($selector:expr, $value:expr, $($ty:ident),+ $(,)?) => {{
        const NAMES: &[&str] = &[$(stringify!($ty)),+];
        let mut i = 0usize;
        $(
            if usize::from($selector) % NAMES.len() == i {
                return check::<pb::$ty>($value, stringify!($ty));
            }
            i += 1;
        )+
        let _ = i;
    }};
}

/// The fuzz bytes: the first byte picks the request message of one of the JSON face's
/// operations, the rest is the body (bounded by `MAX_BODY_BYTES`, as the face bounds it).
///
/// Asserts: a refusal is a `ServiceError` with a reason code and a short printable message
/// that never quotes the body (it may hold a child's data); an accepted request encodes back
/// to JSON that decodes to the same message.
pub fn json_request(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    if body.len() > MAX_BODY_BYTES {
        return;
    }
    let value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return,
        }
    };
    requests!(
        selector,
        value,
        SubmitReferralRequest,
        GetDeliveryRequest,
        GetReferralStatusRequest,
        ListInboxRequest,
        GetInboxItemRequest,
        AcknowledgeInboxItemRequest,
        UpdateReferralStatusRequest,
        ForwardReferralRequest,
        WithdrawConsentRequest,
        RegisterTracingCaseRequest,
        ListTracingMatchesRequest,
        ConfirmTracingMatchRequest,
        GetStatisticsRequest,
        GetCheckpointRequest,
        GetInclusionProofRequest,
        GetConsistencyProofRequest,
        ExportLogRequest,
        CheckPeersRequest,
    );
}
