//! libFuzzer entry point of the `node_config` target: `kinbridge_fuzzing::node_config` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kinbridge_fuzzing::node_config(data));
