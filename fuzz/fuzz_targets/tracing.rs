//! libFuzzer entry point of the `tracing` target: `kinbridge_fuzzing::tracing` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::tracing(data));
