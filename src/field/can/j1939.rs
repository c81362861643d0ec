//! J1939 on top of CAN: identifiers (priority, PGN, source and destination addresses),
//! the transport protocol as a listener (TP.CM BAM and RTS/CTS, TP.DT) that reassembles
//! multi-packet messages, and DM1 active diagnostic trouble codes. Sans-I/O: frames in,
//! messages out; the caller passes the time.

use std::collections::HashMap;

/// PGN of TP.CM (connection management).
pub const PGN_TP_CM: u32 = 0xEC00;
/// PGN of TP.DT (data transfer).
pub const PGN_TP_DT: u32 = 0xEB00;
/// PGN of DM1, active diagnostic trouble codes.
pub const PGN_DM1: u32 = 0xFECA;
/// T1: the most time between two TP.DT packets of one transfer (J1939-21).
pub const T1_NS: i64 = 750_000_000;

/// The parts of a 29-bit J1939 identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct J1939Id {
    pub priority: u8,
    pub pgn: u32,
    pub source: u8,
    /// PDU1 messages (PF < 240) are addressed; PDU2 messages are broadcast.
    pub destination: Option<u8>,
}

impl J1939Id {
    pub fn from_can_id(id: u32) -> J1939Id {
        let id = id & 0x1FFF_FFFF;
        let pf = (id >> 16) & 0xFF;
        let ps = ((id >> 8) & 0xFF) as u8;
        let (pgn, destination) = if pf < 240 {
            ((id >> 8) & 0x3FF00, Some(ps))
        } else {
            ((id >> 8) & 0x3FFFF, None)
        };
        J1939Id {
            priority: ((id >> 26) & 7) as u8,
            pgn,
            source: (id & 0xFF) as u8,
            destination,
        }
    }
}

/// A complete J1939 message: a single frame, or a reassembled transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub pgn: u32,
    pub source: u8,
    pub destination: Option<u8>,
    pub data: Vec<u8>,
}

/// Why a transfer was given up (counted and logged by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    Complete(Message),
    /// Packets missing or out of order, or T1 passed.
    Dropped {
        source: u8,
        pgn: u32,
        reason: &'static str,
    },
}

struct Session {
    pgn: u32,
    size: usize,
    packets: u16,
    /// The sequence number expected next: up to 256 after the 255th packet, so the
    /// counter is wider than the packet's byte.
    next: u16,
    data: Vec<u8>,
    last_ns: i64,
    destination: Option<u8>,
}

/// Listens to TP.CM/TP.DT and reassembles, per (source, destination).
#[derive(Default)]
pub struct Reassembler {
    sessions: HashMap<(u8, Option<u8>), Session>,
}

impl Reassembler {
    /// Feeds one frame (`id` is the 29-bit CAN id). Returns a finished or failed transfer;
    /// frames that are not TP frames are returned whole as messages.
    pub fn feed(&mut self, id: u32, data: &[u8], now_ns: i64) -> Option<TransportEvent> {
        let j = J1939Id::from_can_id(id);
        let key = (j.source, j.destination.filter(|d| *d != 0xFF));
        match j.pgn {
            PGN_TP_CM if data.len() >= 8 => {
                let size = u16::from_le_bytes([data[1], data[2]]) as usize;
                let pgn = u32::from_le_bytes([data[5], data[6], data[7], 0]);
                match data[0] {
                    // BAM (32) and RTS (16) open a transfer; we only listen.
                    32 | 16 if size > 8 && size <= crate::dbc::MAX_TRANSFER && data[3] > 0 => {
                        let replaced = self.sessions.insert(
                            key,
                            Session {
                                pgn,
                                size,
                                packets: data[3] as u16,
                                next: 1,
                                data: Vec::with_capacity(size),
                                last_ns: now_ns,
                                destination: key.1,
                            },
                        );
                        replaced.map(|s| TransportEvent::Dropped {
                            source: j.source,
                            pgn: s.pgn,
                            reason: "a new transfer replaced an unfinished one",
                        })
                    }
                    // Connection abort.
                    255 => self.sessions.remove(&key).map(|s| TransportEvent::Dropped {
                        source: j.source,
                        pgn: s.pgn,
                        reason: "aborted by the sender",
                    }),
                    _ => None,
                }
            }
            PGN_TP_DT if !data.is_empty() => {
                let s = self.sessions.get_mut(&key)?;
                if now_ns - s.last_ns > T1_NS {
                    let pgn = s.pgn;
                    self.sessions.remove(&key);
                    return Some(TransportEvent::Dropped {
                        source: j.source,
                        pgn,
                        reason: "T1 timeout between packets",
                    });
                }
                if data[0] as u16 != s.next {
                    let pgn = s.pgn;
                    self.sessions.remove(&key);
                    return Some(TransportEvent::Dropped {
                        source: j.source,
                        pgn,
                        reason: "packet out of sequence",
                    });
                }
                s.data.extend_from_slice(&data[1..data.len().min(8)]);
                s.next += 1;
                s.last_ns = now_ns;
                if s.next > s.packets {
                    let mut s = self.sessions.remove(&key)?;
                    if s.data.len() < s.size {
                        return Some(TransportEvent::Dropped {
                            source: j.source,
                            pgn: s.pgn,
                            reason: "transfer shorter than announced",
                        });
                    }
                    s.data.truncate(s.size);
                    return Some(TransportEvent::Complete(Message {
                        pgn: s.pgn,
                        source: j.source,
                        destination: s.destination,
                        data: s.data,
                    }));
                }
                None
            }
            PGN_TP_CM | PGN_TP_DT => None,
            _ => Some(TransportEvent::Complete(Message {
                pgn: j.pgn,
                source: j.source,
                destination: j.destination,
                data: data.to_vec(),
            })),
        }
    }
}

/// One active diagnostic trouble code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtc {
    /// Suspect parameter number (19 bits).
    pub spn: u32,
    /// Failure mode identifier (5 bits).
    pub fmi: u8,
    /// Occurrence count (7 bits).
    pub occurrences: u8,
}

/// The DTCs of a DM1 payload (2 lamp bytes, then 4 bytes per DTC; SPN conversion
/// method 4). A DM1 saying "no active DTC" (SPN 0, FMI 0) yields none.
pub fn dm1(data: &[u8]) -> Vec<Dtc> {
    data.get(2..)
        .unwrap_or(&[])
        .chunks_exact(4)
        .map(|c| Dtc {
            spn: c[0] as u32 | (c[1] as u32) << 8 | ((c[2] as u32) >> 5) << 16,
            fmi: c[2] & 0x1F,
            occurrences: c[3] & 0x7F,
        })
        .filter(|d| !(d.spn == 0 && d.fmi == 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 29-bit id from priority, PGN and source (PDU2, or PDU1 with destination in PGN).
    fn id(priority: u32, pgn: u32, sa: u32) -> u32 {
        priority << 26 | pgn << 8 | sa
    }

    #[test]
    fn identifiers_by_hand() {
        // EEC1 (PGN 61444 = 0xF004) from the engine (SA 0), priority 3: 0x0CF00400.
        let j = J1939Id::from_can_id(0x0CF0_0400);
        assert_eq!(
            j,
            J1939Id {
                priority: 3,
                pgn: 61444,
                source: 0,
                destination: None
            }
        );
        // TP.CM to the global address 0xFF from SA 0x17: PDU1, destination 0xFF.
        let j = J1939Id::from_can_id(0x1CEC_FF17);
        assert_eq!(
            (j.pgn, j.source, j.destination),
            (PGN_TP_CM, 0x17, Some(0xFF))
        );
    }

    /// DM1 with two DTCs sent by BAM: SPN 100 (oil pressure) FMI 1, 3 occurrences; and
    /// SPN 520348 (0x7F09C, needs the 3 high bits) FMI 31, 127 occurrences.
    fn dm1_payload() -> Vec<u8> {
        let mut p = vec![0x04, 0xFF]; // lamps
        p.extend([100, 0, 1, 3]);
        let spn: u32 = 0x7F09C;
        p.extend([
            (spn & 0xFF) as u8,
            (spn >> 8 & 0xFF) as u8,
            ((spn >> 16) as u8) << 5 | 31,
            127,
        ]);
        p
    }

    fn bam(sa: u32, payload: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let packets = payload.len().div_ceil(7) as u8;
        let size = payload.len() as u16;
        let pgn = PGN_DM1.to_le_bytes();
        let mut frames = vec![(
            id(7, PGN_TP_CM | 0xFF, sa),
            vec![
                32,
                size as u8,
                (size >> 8) as u8,
                packets,
                0xFF,
                pgn[0],
                pgn[1],
                pgn[2],
            ],
        )];
        for (i, chunk) in payload.chunks(7).enumerate() {
            let mut d = vec![i as u8 + 1];
            d.extend(chunk);
            d.resize(8, 0xFF);
            frames.push((id(7, PGN_TP_DT | 0xFF, sa), d));
        }
        frames
    }

    /// 255 packets (1,785 bytes at most, 1,782 here) complete: the packet counter
    /// passes 255 without wrapping.
    #[test]
    fn a_255_packet_transfer_completes() {
        let payload: Vec<u8> = (0..1782u32).map(|i| i as u8).collect();
        assert_eq!(payload.len().div_ceil(7), 255);
        let mut r = Reassembler::default();
        let mut done = None;
        for (i, (id, d)) in bam(0x00, &payload).into_iter().enumerate() {
            if let Some(TransportEvent::Complete(m)) = r.feed(id, &d, i as i64 * 1_000_000) {
                done = Some(m);
            }
        }
        assert_eq!(done.expect("complete").data, payload);
    }

    #[test]
    fn dm1_by_bam_from_two_sources() {
        let mut r = Reassembler::default();
        let mut done = Vec::new();
        // Interleave two senders: reassembly is per source address.
        let (a, b) = (bam(0x00, &dm1_payload()), bam(0x03, &dm1_payload()));
        let mut t = 0;
        for i in 0..a.len().max(b.len()) {
            for frames in [&a, &b] {
                if let Some((id, d)) = frames.get(i) {
                    t += 10_000_000;
                    if let Some(TransportEvent::Complete(m)) = r.feed(*id, d, t) {
                        done.push(m);
                    }
                }
            }
        }
        assert_eq!(
            done.iter().map(|m| (m.pgn, m.source)).collect::<Vec<_>>(),
            vec![(PGN_DM1, 0), (PGN_DM1, 3)]
        );
        for m in &done {
            assert_eq!(
                dm1(&m.data),
                vec![
                    Dtc {
                        spn: 100,
                        fmi: 1,
                        occurrences: 3
                    },
                    Dtc {
                        spn: 0x7F09C,
                        fmi: 31,
                        occurrences: 127
                    }
                ]
            );
        }
    }

    #[test]
    fn broken_transfers_are_dropped_with_a_reason() {
        let frames = bam(0x21, &dm1_payload());
        let mut r = Reassembler::default();
        r.feed(frames[0].0, &frames[0].1, 0);
        // packet 2 before packet 1
        let e = r.feed(frames[2].0, &frames[2].1, 1);
        assert_eq!(
            e,
            Some(TransportEvent::Dropped {
                source: 0x21,
                pgn: PGN_DM1,
                reason: "packet out of sequence"
            })
        );
        // a gap longer than T1
        r.feed(frames[0].0, &frames[0].1, 0);
        r.feed(frames[1].0, &frames[1].1, 1);
        let e = r.feed(frames[2].0, &frames[2].1, 1 + T1_NS + 1);
        assert!(matches!(
            e,
            Some(TransportEvent::Dropped {
                reason: "T1 timeout between packets",
                ..
            })
        ));
        // garbage never panics
        for len in 0..10 {
            let _ = r.feed(id(7, PGN_TP_CM | 0xFF, 1), &vec![32; len], 0);
            let _ = r.feed(id(7, PGN_TP_DT | 0xFF, 1), &vec![1; len], 0);
        }
        assert!(dm1(&[1]).is_empty());
        assert!(
            dm1(&[0, 0, 0, 0, 0, 0]).is_empty(),
            "SPN 0 FMI 0 means no active DTC"
        );
    }
}
