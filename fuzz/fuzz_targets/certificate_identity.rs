//! libFuzzer entry point of the `certificate_identity` target: `kinbridge_fuzzing::certificate_identity` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::certificate_identity(data));
