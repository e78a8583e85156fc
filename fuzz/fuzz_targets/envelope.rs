//! libFuzzer entry point of the `envelope` target: `kinbridge_fuzzing::envelope` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::envelope(data));
