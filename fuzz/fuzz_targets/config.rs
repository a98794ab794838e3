//! The config parser must never panic: any bytes give a config or a list of errors naming the file.
#![no_main]

use floodgate_server::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    if let Err(e) = Config::from_str("fuzz.yaml", &src) {
        assert!(e.to_string().starts_with("fuzz.yaml"));
    }
});
