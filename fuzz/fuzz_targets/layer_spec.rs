#![no_main]
//! Fuzzes `depthprune::fuzz_targets::layer_spec`: any input must give an error or a result, never a panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| depthprune::fuzz_targets::layer_spec(data));
