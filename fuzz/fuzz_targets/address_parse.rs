#![no_main]
//! The UCXL address parser: never panics, and whatever it accepts prints
//! back to an address that parses to the same value.
use libfuzzer_sys::fuzz_target;
use slurp_protocol::UcxlAddress;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(a) = UcxlAddress::parse(s) {
            let shown = a.to_string();
            let back = UcxlAddress::parse(&shown).expect("display output must parse");
            assert_eq!(back, a);
            let _ = a.key();
        }
    }
});
