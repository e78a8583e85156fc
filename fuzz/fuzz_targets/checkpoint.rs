//! libFuzzer entry point of the `checkpoint` target: `kinbridge_fuzzing::checkpoint` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::checkpoint(data));
