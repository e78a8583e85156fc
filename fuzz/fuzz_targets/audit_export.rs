//! libFuzzer entry point of the `audit_export` target: `kinbridge_fuzzing::audit_export` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::audit_export(data));
