#![no_main]
//! Decoders of the protocol crate's framed records: never panic on any bytes.
use libfuzzer_sys::fuzz_target;
use slurp_protocol::{ContextNode, Framed, RecordMeta};

fuzz_target!(|data: &[u8]| {
    let _ = ContextNode::decode(data);
    let _ = RecordMeta::decode(data);
    let _ = slurp_protocol::wire::from_cbor::<slurp_protocol::Bytes>(data, 1 << 20);
});
