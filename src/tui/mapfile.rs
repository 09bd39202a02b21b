//! Reading a GNU ddrescue mapfile (what `clone --map` saves) into the coarse one-char-per-cell
//! map the progress screen draws: '.' untried, '+' finished, '-' bad, '*' non-trimmed,
//! '/' non-scraped. Each cell shows the worst state inside it.

/// Cells of the coarse map computed from a mapfile.
pub const CELLS: usize = 512;
/// Most data lines read (a mapfile of a dying disk can be long; the screen needs no more).
const MAX_LINES: usize = 200_000;

fn rank(c: char) -> u8 {
    match c {
        '-' => 5,
        '/' => 4,
        '*' => 3,
        '.' => 2,
        '+' => 1,
        _ => 0,
    }
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The coarse map of `text` in `cells` cells; None when it has no extents.
pub fn coarse(text: &str, cells: usize) -> Option<String> {
    let mut extents = Vec::new();
    let mut seen_status = false;
    for line in text.lines().take(MAX_LINES) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if !seen_status {
            // The first non-comment line is "current_pos current_status [current_pass]".
            seen_status = true;
            continue;
        }
        if f.len() < 3 {
            continue;
        }
        let (Some(pos), Some(size)) = (parse_num(f[0]), parse_num(f[1])) else {
            continue;
        };
        let st = match f[2].chars().next().unwrap_or('x') {
            '?' => '.',
            c => c,
        };
        if rank(st) == 0 || size == 0 {
            continue;
        }
        extents.push((pos, size, st));
    }
    let end = extents.iter().map(|&(p, s, _)| p.saturating_add(s)).max()?;
    if cells == 0 || end == 0 {
        return None;
    }
    let mut out = vec![' '; cells];
    for (pos, size, st) in extents {
        let first = (pos as u128 * cells as u128 / end as u128) as usize;
        let last = ((pos.saturating_add(size) as u128 * cells as u128).div_ceil(end as u128)
            as usize)
            .min(cells);
        for c in out
            .iter_mut()
            .take(last.max(first + 1).min(cells))
            .skip(first)
        {
            if rank(st) > rank(*c) {
                *c = st;
            }
        }
    }
    Some(
        out.into_iter()
            .map(|c| if c == ' ' { '.' } else { c })
            .collect(),
    )
}

/// Resamples a coarse map to `cells` cells (worst state wins), for drawing at any width.
pub fn resample(map: &str, cells: usize) -> String {
    let src: Vec<char> = map.chars().collect();
    if src.is_empty() || cells == 0 {
        return String::new();
    }
    (0..cells)
        .map(|i| {
            let a = i * src.len() / cells;
            let b = ((i + 1) * src.len())
                .div_ceil(cells)
                .clamp(a + 1, src.len());
            src[a..b]
                .iter()
                .copied()
                .max_by_key(|&c| rank(c))
                .unwrap_or('.')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "# Mapfile. Created by GNU ddrescue version 1.27\n\
        # current_pos  current_status  current_pass\n\
        0x00010000     ?               1\n\
        #      pos        size  status\n\
        0x00000000  0x00008000  +\n\
        0x00008000  0x00000200  -\n\
        0x00008200  0x00007E00  *\n\
        0x00010000  0x00010000  ?\n";

    #[test]
    fn mapfile_to_cells() {
        // 0x20000 bytes in 4 cells of 0x8000: finished, bad (worst wins), untried ('?' is not drawn: stays '.')...
        let m = coarse(MAP, 4).unwrap();
        assert_eq!(m, "+-..");
        assert_eq!(coarse("# only comments\n", 4), None);
        assert_eq!(coarse("0 ? 1\n", 4), None);
    }

    #[test]
    fn untried_question_mark_is_untried() {
        let m = coarse("0 + 1\n0 0x100 +\n0x100 0x100 ?\n", 2).unwrap();
        assert_eq!(m, "+.");
    }

    #[test]
    fn resample_keeps_the_worst() {
        assert_eq!(resample("++++-+++", 4), "++-+");
        assert_eq!(resample("+.", 4), "++..");
        assert_eq!(resample("", 4), "");
    }
}
