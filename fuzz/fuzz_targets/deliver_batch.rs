//! libFuzzer entry point of the `deliver_batch` target: `kinbridge_fuzzing::deliver_batch` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::deliver_batch(data));
