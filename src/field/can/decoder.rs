//! From frames to meaning: DBC messages by CAN id or, on J1939 buses, by PGN whatever the
//! source address (the J1939 DBC convention); J1939 transport transfers reassembled;
//! DM1 payloads turned into trouble codes. Sans-I/O and shared by the gateway, the
//! command-line tools and the benchmark.

use super::db::{self, CanDb, MessageDef};
use super::frame::Frame;
use super::j1939::{self, Dtc, J1939Id, Reassembler, TransportEvent, PGN_DM1};
use std::collections::HashMap;

/// What one frame amounts to.
#[derive(Debug)]
pub enum Decoded<'a> {
    Message {
        message: &'a MessageDef,
        /// The J1939 source address, on J1939 buses.
        source: Option<u8>,
        signals: Vec<db::Decoded<'a>>,
    },
    /// A DM1 message (single frame or reassembled): the active trouble codes of `source`.
    Dm1 { source: u8, dtcs: Vec<Dtc> },
    /// A J1939 transfer that was given up.
    TransferDropped {
        source: u8,
        pgn: u32,
        reason: &'static str,
    },
    /// Part of a transfer still in progress.
    Partial,
    /// No DBC message describes this frame.
    Unknown,
}

pub struct Decoder {
    db: CanDb,
    j1939: bool,
    /// J1939: PGN → the ids of the DBC messages defining it, lowest first.
    by_pgn: HashMap<u32, Vec<u32>>,
    tp: Reassembler,
}

impl Decoder {
    pub fn new(db: CanDb, j1939: bool) -> Decoder {
        let mut by_pgn: HashMap<u32, Vec<u32>> = HashMap::new();
        for m in db.messages().filter(|m| m.extended) {
            by_pgn
                .entry(J1939Id::from_can_id(m.id).pgn)
                .or_default()
                .push(m.id);
        }
        for ids in by_pgn.values_mut() {
            ids.sort_unstable();
        }
        Decoder {
            db,
            j1939,
            by_pgn,
            tp: Reassembler::default(),
        }
    }

    pub fn db(&self) -> &CanDb {
        &self.db
    }

    /// J1939: PGNs that several DBC messages define, with their names (lowest id
    /// first). Such a PGN decodes by the rule of `pick`; the bus reports these at start.
    pub fn ambiguities(&self) -> Vec<(u32, Vec<String>)> {
        let mut out: Vec<(u32, Vec<String>)> = self
            .by_pgn
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(pgn, ids)| {
                let names = ids
                    .iter()
                    .filter_map(|id| self.db.message(*id, true).map(|m| m.name.clone()))
                    .collect();
                (*pgn, names)
            })
            .collect();
        out.sort();
        out
    }

    /// The DBC message for a J1939 message of `pgn` from `source` that came in the
    /// frame `id` (for a transport transfer, its last packet's): the message with
    /// exactly that id first, then the one whose id names that source address, then
    /// the lowest id. The same frames decode the same way on every run.
    fn pick(&self, pgn: u32, source: u8, id: u32) -> Option<&crate::dbc::MessageDef> {
        if J1939Id::from_can_id(id).pgn == pgn {
            if let Some(m) = self.db.message(id, true) {
                return Some(m);
            }
        }
        let ids = self.by_pgn.get(&pgn)?;
        let chosen = ids
            .iter()
            .find(|i| (**i & 0xFF) as u8 == source)
            .or(ids.first())?;
        self.db.message(*chosen, true)
    }

    pub fn feed(&mut self, f: &Frame) -> Decoded<'_> {
        if !(self.j1939 && f.extended) {
            return match self.db.message(f.id, f.extended) {
                Some(m) => Decoded::Message {
                    message: m,
                    source: None,
                    signals: m.decode(&f.data),
                },
                None => Decoded::Unknown,
            };
        }
        match self.tp.feed(f.id, &f.data, f.ts_ns) {
            None => Decoded::Partial,
            Some(TransportEvent::Dropped {
                source,
                pgn,
                reason,
            }) => Decoded::TransferDropped {
                source,
                pgn,
                reason,
            },
            Some(TransportEvent::Complete(m)) if m.pgn == PGN_DM1 => Decoded::Dm1 {
                source: m.source,
                dtcs: j1939::dm1(&m.data),
            },
            Some(TransportEvent::Complete(m)) => match self.pick(m.pgn, m.source, f.id) {
                Some(def) => Decoded::Message {
                    message: def,
                    source: Some(m.source),
                    signals: def.decode(&m.data),
                },
                None => Decoded::Unknown,
            },
        }
    }

    /// Kernel receive filters (`(id, mask)` with SocketCAN's flag bits) that let through
    /// exactly the frames this decoder can use, or None when more than the kernel takes
    /// are needed (then everything is received and unknown frames are counted).
    pub fn filters(&self) -> Option<Vec<(u32, u32)>> {
        const EFF_FLAG: u32 = 0x8000_0000;
        const RTR_FLAG: u32 = 0x4000_0000;
        const SFF_MASK: u32 = 0x7FF;
        let mut out: Vec<(u32, u32)> = Vec::new();
        for m in self.db.messages() {
            let f = if !m.extended {
                (m.id, SFF_MASK | EFF_FLAG | RTR_FLAG)
            } else if self.j1939 {
                // By PGN: any priority and source; PDU1 also any destination.
                let pdu1 = (m.id >> 16) & 0xFF < 240;
                let mask = if pdu1 { 0x03FF_0000 } else { 0x03FF_FF00 };
                ((m.id & mask) | EFF_FLAG, mask | EFF_FLAG | RTR_FLAG)
            } else {
                (m.id | EFF_FLAG, 0x1FFF_FFFF | EFF_FLAG | RTR_FLAG)
            };
            if !out.contains(&f) {
                out.push(f);
            }
        }
        if self.j1939 {
            for pgn in [j1939::PGN_TP_CM, j1939::PGN_TP_DT, PGN_DM1] {
                let mask = if (pgn >> 8) & 0xFF < 240 {
                    0x03FF_0000
                } else {
                    0x03FF_FF00
                };
                let f = ((pgn << 8) | EFF_FLAG, mask | EFF_FLAG | RTR_FLAG);
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
        // CAN_RAW_FILTER_MAX is 512.
        (out.len() <= 512).then_some(out)
    }
}

/// Whether a frame passes a filter list, as the kernel decides it (for tests and for
/// replays, which have no kernel in between).
pub fn passes(filters: &[(u32, u32)], f: &Frame) -> bool {
    let word = if f.extended { f.id | 0x8000_0000 } else { f.id };
    filters.iter().any(|(id, mask)| word & mask == id & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DBC: &str = r#"VERSION ""

BO_ 2364540158 EEC1: 8 Vector__XXX
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX

BO_ 256 Plain: 2 Vector__XXX
 SG_ V : 0|16@1+ (1,0) [0|0] "" Vector__XXX
"#;

    fn frame(id: u32, extended: bool, data: &[u8]) -> Frame {
        Frame {
            ts_ns: 0,
            id,
            extended,
            fd: false,
            data: data.to_vec(),
        }
    }

    /// Two messages with one PGN: the same frame picks the same message on every run
    /// (an exact id first, then the source address, then the lowest id).
    #[test]
    fn one_pgn_in_two_messages_decodes_the_same_way_every_time() {
        let dbc = r#"VERSION ""

BO_ 2364540158 EEC1: 8 Vector__XXX
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX

BO_ 2364539904 K_EEC1: 8 Vector__XXX
 SG_ EngineSpeed : 24|16@1+ (0.125,0) [0|8031.875] "rpm" Vector__XXX
"#;
        for _ in 0..20 {
            // A new HashMap each time: a new iteration order.
            let mut d = Decoder::new(CanDb::parse(dbc, "t.dbc").unwrap(), true);
            assert_eq!(
                d.ambiguities(),
                vec![(61444, vec!["K_EEC1".to_string(), "EEC1".to_string()])]
            );
            for (id, want) in [
                (0x0CF00400u32, "K_EEC1"), // exactly K_EEC1's id
                (0x0CF004FE, "EEC1"),      // exactly EEC1's id
                (0x18F00400, "K_EEC1"),    // another priority, K_EEC1's source 0x00
                (0x0CF00417, "K_EEC1"),    // a source neither names: the lowest id
            ] {
                match d.feed(&frame(id, true, &[0; 8])) {
                    Decoded::Message { message, .. } => assert_eq!(message.name, want, "{id:#x}"),
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    /// A 200-byte PGN decodes from its reassembled BAM transfer.
    #[test]
    fn a_pgn_longer_than_a_frame_decodes_from_its_transfer() {
        let dbc = "VERSION \"\"\n\nBO_ 2566848254 Big: 200 Vector__XXX\n SG_ Far : 1200|16@1+ (0.5,0) [0|0] \"\" Vector__XXX\n";
        let mut d = Decoder::new(CanDb::parse(dbc, "t.dbc").unwrap(), true);
        let mut payload = [0u8; 200];
        payload[150] = 0x10;
        payload[151] = 0x27;
        // BAM from source 0x21: TP.CM (PGN 0xEC00) then TP.DT (0xEB00) packets.
        let pgn = 0x00FEFEu32.to_le_bytes();
        let cm = [32, 200, 0, 29, 0xFF, pgn[0], pgn[1], pgn[2]];
        assert!(matches!(
            d.feed(&frame(0x1CECFF21, true, &cm)),
            Decoded::Partial
        ));
        let mut last = None;
        for (i, chunk) in payload.chunks(7).enumerate() {
            let mut data = vec![i as u8 + 1];
            data.extend(chunk);
            data.resize(8, 0xFF);
            match d.feed(&frame(0x1CEBFF21, true, &data)) {
                Decoded::Message {
                    message,
                    source,
                    signals,
                } => last = Some((message.name.clone(), source, signals[0].value)),
                Decoded::Partial => {}
                other => panic!("packet {i}: {other:?}"),
            }
        }
        assert_eq!(last, Some(("Big".to_string(), Some(0x21), 5000.0)));
    }

    #[test]
    fn j1939_messages_match_by_pgn_from_any_source() {
        let db = CanDb::parse(DBC, "t.dbc").unwrap();
        let mut d = Decoder::new(db, true);
        // EEC1 (PGN 61444) from source 0x00 and from 0x01, priority 3 and 6.
        for (id, sa) in [(0x0CF00400u32, 0u8), (0x18F00401, 1)] {
            match d.feed(&frame(id, true, &[0, 0, 0, 0x40, 0x1F, 0, 0, 0])) {
                Decoded::Message {
                    message,
                    source,
                    signals,
                } => {
                    assert_eq!(message.name, "EEC1");
                    assert_eq!(source, Some(sa));
                    assert_eq!(signals[0].value, 1000.0);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            d.feed(&frame(0x18F00500, true, &[0; 8])),
            Decoded::Unknown
        ));
        assert!(matches!(
            d.feed(&frame(0x100, false, &[1, 0])),
            Decoded::Message { source: None, .. }
        ));
    }

    #[test]
    fn filters_pass_what_is_decoded_and_nothing_else() {
        let db = CanDb::parse(DBC, "t.dbc").unwrap();
        let d = Decoder::new(db.clone(), true);
        let f = d.filters().unwrap();
        assert!(passes(&f, &frame(0x0CF00400, true, &[])));
        assert!(passes(&f, &frame(0x18F004FE, true, &[])));
        assert!(passes(&f, &frame(0x18ECFF00, true, &[])), "TP.CM to global");
        assert!(passes(&f, &frame(0x1CEB0017, true, &[])), "TP.DT to 0");
        assert!(passes(&f, &frame(0x18FECA03, true, &[])), "DM1");
        assert!(passes(&f, &frame(0x100, false, &[])));
        assert!(!passes(&f, &frame(0x101, false, &[])));
        assert!(!passes(&f, &frame(0x100, true, &[])));
        assert!(!passes(&f, &frame(0x18F00500, true, &[])));
        let exact = Decoder::new(db, false).filters().unwrap();
        assert!(passes(&exact, &frame(0x0CF004FE, true, &[])));
        assert!(!passes(&exact, &frame(0x0CF00400, true, &[])));
    }
}
