#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sudo_agent_fuzz::split_words(data));
