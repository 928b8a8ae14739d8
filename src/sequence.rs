//! Frame-numbered files (`shot_010.0001.exr`, `plate.1001.dpx`,
//! `A001_C002_0001.ari`): a run of at least three digits right before the
//! extension, with the same folder, prefix, padding and extension, is one
//! sequence; a number missing between its first and last frame is a gap.

use std::collections::BTreeMap;

/// The sequence a path belongs to ("dir/shot_010.####.exr") and its frame.
pub fn frame(path: &str) -> Option<(String, u64)> {
    let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let digits = stem.len() - stem.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if !(3..=12).contains(&digits) {
        return None;
    }
    let (prefix, number) = stem.split_at(stem.len() - digits);
    let n = number.parse().ok()?;
    let slash = if dir.is_empty() { "" } else { "/" };
    Some((format!("{dir}{slash}{prefix}{}.{ext}", "#".repeat(digits)), n))
}

/// Each sequence (two frames or more) with frames missing: its pattern and
/// the missing numbers.
pub fn gaps<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<(String, Vec<u64>)> {
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in paths {
        if let Some((key, n)) = frame(p) {
            seqs.entry(key).or_default().push(n);
        }
    }
    let mut out = Vec::new();
    for (key, mut frames) in seqs {
        if frames.len() < 2 {
            continue;
        }
        frames.sort_unstable();
        frames.dedup();
        let mut missing = Vec::new();
        for pair in frames.windows(2) {
            // At most a million numbers listed per sequence (a typo'd frame
            // number would otherwise list billions).
            if missing.len() < 1_000_000 {
                missing.extend(pair[0] + 1..pair[1]);
            }
        }
        if !missing.is_empty() {
            out.push((key, missing));
        }
    }
    out
}

/// "1017-1019, 1044" (sorted numbers as ranges; at most 10 ranges shown).
pub fn compact(numbers: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &n in numbers {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => ranges.push((n, n)),
        }
    }
    let mut parts: Vec<String> = ranges
        .iter()
        .take(10)
        .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
        .collect();
    if ranges.len() > 10 {
        parts.push(format!("… ({} more ranges)", ranges.len() - 10));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_the_usual_namings() {
        assert_eq!(frame("shot_010.0001.exr"), Some(("shot_010.####.exr".into(), 1)));
        assert_eq!(
            frame("plates/plate.1001.dpx"),
            Some(("plates/plate.####.dpx".into(), 1001))
        );
        assert_eq!(
            frame("A001_C002_0001.ari"),
            Some(("A001_C002_####.ari".into(), 1))
        );
        assert_eq!(frame("take1.mov"), None, "one digit is a take, not a frame");
        assert_eq!(frame("card.mhl"), None);
    }

    #[test]
    fn gaps_are_found_per_sequence_and_named_compactly() {
        let mut names: Vec<String> = (1001..=1050)
            .filter(|n| ![1017, 1018, 1019, 1044].contains(n))
            .map(|n| format!("plate.{n}.dpx"))
            .collect();
        names.extend((1..=3).map(|n| format!("other.{n:04}.exr")));
        names.push("plate.01001.dpx".into()); // another padding: another sequence
        let g = gaps(names.iter().map(String::as_str));
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(g[0].0, "plate.####.dpx");
        assert_eq!(compact(&g[0].1), "1017-1019, 1044");
        assert_eq!(compact(&[57]), "57");
    }
}
