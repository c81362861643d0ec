//! The in-flight window: which batches wait for which PUBACK. No I/O.
//!
//! rumqttc gives a publish its packet id only when it goes out (`Outgoing::Publish`),
//! in the order the publishes were queued; a fresh event loop per connection means no
//! publish is ever retransmitted behind our back, so that order is exact.

use crate::protocol::Gap;
use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// What one publish carries, to be forgotten by the buffer once acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seqs: Vec<Gap>,
    pub gaps: Vec<Gap>,
    pub samples: usize,
    pub sent_at: Instant,
    /// A command reply: its id, marked sent in the journal once acknowledged.
    pub reply: Option<String>,
}

impl Pending {
    /// A publish that carries no samples: a birth message, or a command's reply.
    pub fn control(reply: Option<String>) -> Pending {
        Pending {
            seqs: vec![],
            gaps: vec![],
            samples: 0,
            sent_at: Instant::now(),
            reply,
        }
    }
}

#[derive(Debug, Default)]
pub struct Window {
    queued: VecDeque<Pending>,
    by_pkid: HashMap<u16, Pending>,
}

impl Window {
    pub fn len(&self) -> usize {
        self.queued.len() + self.by_pkid.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A publish was handed to the client.
    pub fn queued(&mut self, p: Pending) {
        self.queued.push_back(p);
    }
    /// The client sent the oldest queued publish with this packet id.
    pub fn sent(&mut self, pkid: u16) {
        if let Some(p) = self.queued.pop_front() {
            self.by_pkid.insert(pkid, p);
        }
    }
    /// The broker acknowledged `pkid`; returns what it carried.
    pub fn acked(&mut self, pkid: u16) -> Option<Pending> {
        self.by_pkid.remove(&pkid)
    }
    /// Gap records currently in flight, so they are not sent twice on one connection.
    pub fn gaps_in_flight(&self) -> impl Iterator<Item = &Gap> {
        self.queued
            .iter()
            .chain(self.by_pkid.values())
            .flat_map(|p| p.gaps.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(first: u64) -> Pending {
        Pending {
            seqs: vec![Gap {
                first,
                last: first + 9,
            }],
            gaps: vec![],
            samples: 10,
            sent_at: Instant::now(),
            reply: None,
        }
    }

    #[test]
    fn acks_map_to_the_right_batch() {
        let mut w = Window::default();
        w.queued(p(1));
        w.queued(p(11));
        assert_eq!(w.len(), 2);
        w.sent(7);
        w.sent(8);
        assert_eq!(w.acked(8).unwrap().seqs[0].first, 11);
        assert_eq!(w.acked(8), None, "a duplicate ack is ignored");
        assert_eq!(w.acked(7).unwrap().seqs[0].first, 1);
        assert!(w.is_empty());
    }
}
