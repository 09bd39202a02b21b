//! The rescue domain of a used-blocks copy: the used byte ranges of a [`UsageMap`] as its
//! analysis collected them (each map is read once: see [`Bounded`]), aligned to whole sectors
//! into sorted `[start, len]` ranges for the rescue engine (GNU ddrescue's `--domain-mapfile`,
//! built from the filesystems' own maps) and the verify pass. Clone uses it; anything that
//! copies through the rescue engine can.
//!
//! Memory is bounded: a domain holds at most [`MAX_RANGES`] ranges (16 bytes each, and the
//! rescue map about two extents per range). The used blocks of a badly fragmented filesystem
//! can lie in more pieces; then the smallest free gaps are read too (the gap limit doubles
//! until the ranges fit), and [`Domain::gaps_read_below`] says so for the report. No used
//! byte is ever left out.
use super::UsageMap;

/// The most ranges a domain holds (see the module documentation).
pub const MAX_RANGES: usize = 1 << 18;

/// The most used ranges the analysis keeps (16 bytes each: 16 MiB): image create stores what
/// they say exactly (free blocks inside a chunk as zeros), so they are bounded well above a
/// rescue domain; past this the smallest free gaps count as used, as in a domain.
pub const ANALYSIS_MAX_RANGES: usize = 1 << 20;

/// What a used-blocks copy reads: see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// `[start, len]`, sorted, not touching, each start and end on a sector boundary (the
    /// end of the copy excepted).
    pub ranges: Vec<(u64, u64)>,
    /// Their total length.
    pub bytes: u64,
    /// Free gaps shorter than this were read too, to stay within [`MAX_RANGES`] (0: none).
    pub gaps_read_below: u64,
}

impl Domain {
    /// The parts of `[0, len)` outside the domain (`[start, len]`, ascending).
    pub fn free(&self, len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut p = 0u64;
        for &(a, l) in &self.ranges {
            if a > p {
                out.push((p, a - p));
            }
            p = a + l;
        }
        if p < len {
            out.push((p, len - p));
        }
        out
    }

    /// Bytes of the domain inside `[start, end)`.
    pub fn bytes_in(&self, start: u64, end: u64) -> u64 {
        let i = self.ranges.partition_point(|r| r.0 + r.1 <= start);
        self.ranges[i..]
            .iter()
            .take_while(|r| r.0 < end)
            .map(|r| (r.0 + r.1).min(end) - r.0.max(start))
            .sum()
    }
}

/// Appends `[a, e)` to sorted `v`, merging it with the last range when the gap is below `gap`.
fn push(v: &mut Vec<(u64, u64)>, a: u64, e: u64, gap: u64) {
    match v.last_mut() {
        Some(l) if a <= l.0 + l.1 || a - (l.0 + l.1) < gap => l.1 = e.max(l.0 + l.1) - l.0,
        _ => v.push((a, e - a)),
    }
}

/// Collects ascending byte ranges into at most `max` `[start, len]` ranges: past that, free
/// gaps shorter than a limit (doubling from `unit * 8`) are taken in too. Every range pushed
/// stays inside. The used-block analysis feeds it once, as it reads each map.
#[derive(Debug, Clone)]
pub(crate) struct Bounded {
    ranges: Vec<(u64, u64)>,
    gap: u64,
    unit: u64,
    max: usize,
}

impl Bounded {
    pub(crate) fn new(unit: u64, max: usize) -> Self {
        Bounded {
            ranges: Vec::new(),
            gap: 0,
            unit: unit.max(1),
            max: max.max(1),
        }
    }

    /// Adds `[a, e)`; `a` must not lie before the start of the last range added.
    pub(crate) fn push(&mut self, a: u64, e: u64) {
        if e <= a {
            return;
        }
        push(&mut self.ranges, a, e, self.gap);
        while self.ranges.len() > self.max {
            self.gap = (self.gap * 2).max(self.unit * 8);
            let old = std::mem::take(&mut self.ranges);
            for (a, l) in old {
                push(&mut self.ranges, a, a + l, self.gap);
            }
        }
    }

    /// Adds `[a, e)` whole, dropping what was added from `a` on (a map that failed part way:
    /// its partition is used from its start).
    pub(crate) fn replace_from(&mut self, a: u64, e: u64) {
        while self.ranges.last().is_some_and(|l| l.0 >= a) {
            self.ranges.pop();
        }
        self.push(a, e);
    }

    /// The ranges (`[start, len]`, sorted, not touching) and the gap limit (0: none).
    pub(crate) fn finish(self) -> (Vec<(u64, u64)>, u64) {
        (self.ranges, self.gap)
    }
}

/// Collects ascending used ranges `[start, end)` into at most `max` sector-aligned
/// `[start, len]` ranges within `[0, len)`: free gaps shorter than the returned limit (0: none)
/// are read too. Every used byte stays inside.
fn bounded(
    it: impl Iterator<Item = (u64, u64)>,
    len: u64,
    lbs: u64,
    max: usize,
) -> (Vec<(u64, u64)>, u64) {
    let lbs = lbs.max(1);
    let mut b = Bounded::new(lbs, max);
    for (s, e) in it {
        let (a, e) = (s / lbs * lbs, e.div_ceil(lbs).saturating_mul(lbs).min(len));
        if a >= e {
            if a >= len {
                break;
            }
            continue;
        }
        b.push(a, e);
    }
    b.finish()
}

impl UsageMap {
    /// The domain of a copy of the first `len` bytes of the analysed source (a target smaller
    /// than the source copies less), sectors of `lbs` bytes, made from what the analysis read:
    /// nothing is read again. `None` when no partition is copied by used blocks (the copy is
    /// every sector). Every partition's `used_bytes` becomes what the domain holds of it, so
    /// the report says what is really read.
    pub fn domain(&mut self, len: u64, lbs: u64) -> Option<Domain> {
        if !self.any_used_blocks() {
            return None;
        }
        let (ranges, gap) = bounded(self.extents(), len, lbs, MAX_RANGES);
        let d = Domain {
            bytes: ranges.iter().map(|r| r.1).sum(),
            ranges,
            gaps_read_below: gap.max(self.gaps_read_below),
        };
        for p in self.partitions.iter_mut() {
            p.used_bytes = d.bytes_in(p.start_bytes, p.start_bytes + p.size_bytes);
        }
        self.used_bytes = d.bytes;
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_merges_touching_and_small_gaps() {
        let mut v = Vec::new();
        push(&mut v, 0, 512, 0);
        push(&mut v, 512, 1024, 0);
        push(&mut v, 2048, 4096, 0);
        assert_eq!(v, vec![(0, 1024), (2048, 2048)]);
        push(&mut v, 4096 + 100, 8192, 200);
        assert_eq!(v, vec![(0, 1024), (2048, 6144)]);
        let d = Domain {
            ranges: v,
            bytes: 7168,
            gaps_read_below: 0,
        };
        assert_eq!(d.free(10000), vec![(1024, 1024), (8192, 1808)]);
        assert_eq!(d.bytes_in(512, 3000), 512 + 952);
        assert_eq!(d.bytes_in(8192, 9000), 0);
    }

    #[test]
    fn too_many_pieces_read_the_smallest_gaps_and_keep_every_used_byte() {
        // 1000 used pieces of 1 KiB with gaps growing from 512 B: at most 100 ranges.
        let mut used = Vec::new();
        let mut p = 0u64;
        for i in 0..1000u64 {
            used.push((p, p + 1024));
            p += 1024 + 512 * (1 + i % 7);
        }
        let (r, gap) = bounded(used.iter().copied(), u64::MAX, 512, 100);
        assert!(r.len() <= 100, "{} ranges", r.len());
        assert!(gap > 0);
        for &(a, e) in &used {
            assert!(
                r.iter().any(|x| a >= x.0 && e <= x.0 + x.1),
                "{a}..{e} lost"
            );
        }
        // Gaps left between ranges are at least the limit; none shorter were kept.
        for w in r.windows(2) {
            assert!(w[1].0 - (w[0].0 + w[0].1) >= gap, "{w:?} gap {gap}");
        }
        // Within the bound nothing is merged, and the copy length clips.
        let (r, gap) = bounded(used.iter().copied().take(10), 7000, 512, 100);
        assert_eq!(gap, 0);
        assert_eq!(r.last(), Some(&(6144, 856)));
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn unknown_content_has_no_domain() {
        use crate::rescue::sim::SimDevice;
        let sim = SimDevice::new(SimDevice::pattern(4 << 20, 9), 512);
        let mut m = UsageMap::analyze(&sim);
        assert!(m.domain(4 << 20, 512).is_none());
    }
}
