//! Request planning: merge the points of one device into as few reads as the protocol
//! allows, and learn from exceptions which addresses must be read on their own.
//!
//! No I/O: the poller executes the blocks and reports back what failed.

use crate::model::registers::Function;
use std::collections::HashSet;

/// Where one point sits in the device's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointSpec {
    pub function: Function,
    pub address: u16,
    /// Registers (or bits) the point takes.
    pub width: u16,
}

impl PointSpec {
    fn end(&self) -> u32 {
        self.address as u32 + self.width as u32
    }
}

/// One read request: `count` items from `start` of `function`, covering `points`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub function: Function,
    pub start: u16,
    pub count: u16,
    /// Indexes into the planner's points, in address order.
    pub points: Vec<usize>,
}

impl ReadBlock {
    /// The slice of a block's response that belongs to `p`.
    pub fn offset_of(&self, p: &PointSpec) -> usize {
        (p.address - self.start) as usize
    }
}

/// The planner of one poll group (one device, one interval).
#[derive(Debug, Clone)]
pub struct Planner {
    points: Vec<PointSpec>,
    /// Largest run of unmapped registers a block may bridge.
    max_gap: u16,
    /// Largest register count per request (125 by the protocol; some devices take fewer).
    max_registers: u16,
    /// Points that failed on their own: read alone from now on.
    isolated: HashSet<usize>,
    /// Points that may not be joined to their predecessor across a gap, because a
    /// block bridging that gap failed while each point read fine alone.
    no_bridge: HashSet<usize>,
    blocks: Vec<ReadBlock>,
}

impl Planner {
    pub fn new(points: Vec<PointSpec>, max_gap: u16, max_registers: u16) -> Planner {
        let mut p = Planner {
            points,
            max_gap,
            max_registers: max_registers.clamp(1, 125),
            isolated: HashSet::new(),
            no_bridge: HashSet::new(),
            blocks: Vec::new(),
        };
        p.replan();
        p
    }

    pub fn points(&self) -> &[PointSpec] {
        &self.points
    }

    pub fn blocks(&self) -> &[ReadBlock] {
        &self.blocks
    }

    pub fn is_isolated(&self, point: usize) -> bool {
        self.isolated.contains(&point)
    }

    /// A block failed with an exception and its points were then read one by one:
    /// `failed` are those that also failed alone.
    pub fn learn(&mut self, block: &ReadBlock, failed: &[usize]) {
        if block.points.len() < 2 {
            return;
        }
        if failed.is_empty() {
            // Every point reads alone; the gaps between them are what the device refuses.
            self.no_bridge.extend(block.points.iter().skip(1).copied());
        } else {
            self.isolated.extend(failed.iter().copied());
        }
        self.replan();
    }

    fn replan(&mut self) {
        let mut order: Vec<usize> = (0..self.points.len()).collect();
        order.sort_by_key(|&i| (self.points[i].function, self.points[i].address, i));
        let mut blocks: Vec<ReadBlock> = Vec::new();
        let mut open: Option<(ReadBlock, u32)> = None; // block and its exclusive end
        for i in order {
            let p = self.points[i];
            let limit = if p.function.is_bits() {
                2000
            } else {
                self.max_registers as u32
            };
            let gap_limit = if p.function.is_bits() {
                self.max_gap as u32 * 16
            } else {
                self.max_gap as u32
            };
            if let Some((b, end)) = open.as_mut() {
                let gap = (p.address as u32).saturating_sub(*end);
                let fits = b.function == p.function
                    && !self.isolated.contains(&i)
                    && !b.points.iter().any(|q| self.isolated.contains(q))
                    && p.end().max(*end) - b.start as u32 <= limit
                    && gap <= gap_limit
                    && (gap == 0 || !self.no_bridge.contains(&i));
                if fits {
                    *end = p.end().max(*end);
                    b.count = (*end - b.start as u32) as u16;
                    b.points.push(i);
                    continue;
                }
            }
            if let Some((b, _)) = open.take() {
                blocks.push(b);
            }
            open = Some((
                ReadBlock {
                    function: p.function,
                    start: p.address,
                    count: p.width,
                    points: vec![i],
                },
                p.end(),
            ));
        }
        if let Some((b, _)) = open {
            blocks.push(b);
        }
        self.blocks = blocks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Function::*;

    fn reg(address: u16, width: u16) -> PointSpec {
        PointSpec {
            function: HoldingRegister,
            address,
            width,
        }
    }

    #[test]
    fn merges_across_small_gaps_and_splits_at_large_ones() {
        let p = Planner::new(vec![reg(0, 2), reg(4, 2), reg(100, 1), reg(2, 1)], 2, 125);
        let b = p.blocks();
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].start, b[0].count, b[0].points.clone()),
            (0, 6, vec![0, 3, 1])
        );
        assert_eq!((b[1].start, b[1].count), (100, 1));
    }

    #[test]
    fn respects_the_protocol_limit() {
        // 130 contiguous registers cannot be one request
        let pts: Vec<_> = (0..130).map(|a| reg(a, 1)).collect();
        let p = Planner::new(pts, 0, 125);
        assert_eq!(
            p.blocks().iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![125, 5]
        );
        // 2000 coils can
        let coils: Vec<_> = (0..2000)
            .map(|a| PointSpec {
                function: Coil,
                address: a,
                width: 1,
            })
            .collect();
        assert_eq!(Planner::new(coils, 0, 125).blocks().len(), 1);
    }

    #[test]
    fn functions_never_mix() {
        let p = Planner::new(
            vec![
                reg(0, 1),
                PointSpec {
                    function: InputRegister,
                    address: 1,
                    width: 1,
                },
            ],
            10,
            125,
        );
        assert_eq!(p.blocks().len(), 2);
    }

    #[test]
    fn isolates_a_failing_point() {
        let mut p = Planner::new(vec![reg(0, 1), reg(1, 1), reg(2, 1)], 0, 125);
        let block = p.blocks()[0].clone();
        p.learn(&block, &[1]);
        let b = p.blocks();
        assert_eq!(b.len(), 3);
        assert!(b.iter().any(|b| b.points == vec![1]));
        assert!(p.is_isolated(1));
    }

    #[test]
    fn stops_bridging_a_refused_gap() {
        let mut p = Planner::new(vec![reg(0, 1), reg(3, 1), reg(4, 1)], 5, 125);
        assert_eq!(p.blocks().len(), 1);
        let block = p.blocks()[0].clone();
        p.learn(&block, &[]);
        let b = p.blocks();
        // 0 alone; 3 and 4 are contiguous and stay together
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].points, vec![1, 2]);
    }

    /// The greedy plan is minimal: compare with an exhaustive optimum on small random maps.
    #[test]
    fn greedy_matches_the_optimum() {
        let mut x: u64 = 7;
        for _ in 0..300 {
            let mut pts = Vec::new();
            for _ in 0..8 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                pts.push(reg((x >> 33) as u16 % 60, 1 + ((x >> 20) % 4) as u16));
            }
            let gap = ((x >> 10) % 6) as u16;
            let max = 4 + ((x >> 5) % 20) as u16;
            let greedy = Planner::new(pts.clone(), gap, max).blocks().len();
            assert_eq!(
                greedy,
                optimum(&pts, gap, max as u32),
                "{pts:?} gap {gap} max {max}"
            );
        }
    }

    /// Minimum number of blocks by dynamic programming over points sorted by address.
    fn optimum(pts: &[PointSpec], gap: u16, max: u32) -> usize {
        let mut s = pts.to_vec();
        s.sort_by_key(|p| p.address);
        let n = s.len();
        let mut best = vec![usize::MAX; n + 1];
        best[0] = 0;
        for i in 0..n {
            if best[i] == usize::MAX {
                continue;
            }
            let start = s[i].address as u32;
            let mut end = s[i].end();
            for j in i..n {
                if j > i {
                    if s[j].address as u32 > end + gap as u32 {
                        break;
                    }
                    end = end.max(s[j].end());
                }
                if end - start > max {
                    break;
                }
                best[j + 1] = best[j + 1].min(best[i] + 1);
            }
        }
        best[n]
    }
}
