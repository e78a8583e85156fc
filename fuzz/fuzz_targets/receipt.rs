//! libFuzzer entry point of the `receipt` target: `kinbridge_fuzzing::receipt` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::receipt(data));
