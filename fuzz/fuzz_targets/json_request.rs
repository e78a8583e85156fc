//! libFuzzer entry point of the `json_request` target: `kinbridge_fuzzing::json_request` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::json_request(data));
