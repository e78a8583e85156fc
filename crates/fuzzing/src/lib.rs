//! The fuzz targets of kinbridge, as plain functions over bytes: each decodes input from outside
//! the node and asserts the properties the decoder must keep. `fuzz/` runs them under libFuzzer;
//! the tests replay every committed corpus file through them on the stable toolchain.
