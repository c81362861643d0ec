//! The vocabulary of a register map: functions, data types and word orders.

use serde::Deserialize;
use std::fmt;

/// Which Modbus table a point lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// Read with function 0x01.
    #[serde(alias = "coils")]
    Coil,
    /// Read with function 0x02.
    #[serde(alias = "discrete_inputs", alias = "discrete")]
    DiscreteInput,
    /// Read with function 0x04.
    #[serde(alias = "input_registers", alias = "input")]
    InputRegister,
    /// Read with function 0x03.
    #[serde(alias = "holding_registers", alias = "holding")]
    HoldingRegister,
}

impl Function {
    /// Coils and discrete inputs are bits; the others are 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Function::Coil | Function::DiscreteInput)
    }
    /// The most items one request may read (Modbus application protocol, section 6).
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Function::Coil => "coil",
            Function::DiscreteInput => "discrete_input",
            Function::InputRegister => "input_register",
            Function::HoldingRegister => "holding_register",
        })
    }
}

/// How a point's registers are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A coil or discrete input.
    Bool,
    /// One bit (`bit = 0..15`) of a register.
    Bit,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// `length` registers of text, two characters per register.
    String,
}

impl DataType {
    /// How many registers (or bits) the value takes; `length` is used for strings.
    pub fn width(self, length: u16) -> u16 {
        match self {
            DataType::Bool | DataType::Bit | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length,
        }
    }
    /// Whether scale, offset and deadband apply.
    pub fn is_numeric(self) -> bool {
        !matches!(self, DataType::Bool | DataType::Bit | DataType::String)
    }
    pub const ALL: &'static str = "bool, bit, u16, i16, u32, i32, u64, i64, f32, f64, string";
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{self:?}").to_lowercase();
        f.write_str(&s)
    }
}

/// Byte order of multi-register values, named by where bytes A (most significant) to D land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum WordOrder {
    /// Big-endian words, big-endian bytes: the Modbus default.
    #[default]
    ABCD,
    /// Low word first, big-endian bytes ("word swap").
    CDAB,
    /// High word first, bytes swapped in each word ("byte swap").
    BADC,
    /// Fully little-endian.
    DCBA,
}

impl WordOrder {
    pub const ALL: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::CDAB,
        WordOrder::BADC,
        WordOrder::DCBA,
    ];
    pub fn swaps_words(self) -> bool {
        matches!(self, WordOrder::CDAB | WordOrder::DCBA)
    }
    pub fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::BADC | WordOrder::DCBA)
    }
}

impl fmt::Display for WordOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::str::FromStr for WordOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "ABCD" => Ok(WordOrder::ABCD),
            "CDAB" => Ok(WordOrder::CDAB),
            "BADC" => Ok(WordOrder::BADC),
            "DCBA" => Ok(WordOrder::DCBA),
            _ => Err(format!(
                "unknown word order `{s}`; valid: ABCD, CDAB, BADC, DCBA"
            )),
        }
    }
}
