#![no_main]
//! Register decoding of whatever a device sends back, in every type and order.
use fieldgate::field::modbus::{codec, DataType, WordOrder};
use libfuzzer_sys::fuzz_target;

const TYPES: [DataType; 11] = [
    DataType::Bool, DataType::Bit, DataType::U16, DataType::I16, DataType::U32, DataType::I32,
    DataType::U64, DataType::I64, DataType::F32, DataType::F64, DataType::String,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let ty = TYPES[data[0] as usize % TYPES.len()];
    let order = WordOrder::ALL[data[1] as usize % 4];
    let words: Vec<u16> = data[2..].chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
    let _ = codec::decode(&words, ty, order, data[1] >> 2);
});
