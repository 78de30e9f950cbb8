//! Brace patterns for WebDataset shard lists: `shard-{000..063}.tar`, `{train,val}/x.tar`.
use crate::error::{Result, StorageError};

/// Most URLs one pattern may expand to.
pub const MAX_EXPANSION: usize = 10_000;

enum Part {
    Lit(String),
    Alt(Vec<String>),
}

/// Expands every brace group of `pattern`, left to right, as a shell does:
///
/// - `{000..008}`: a numeric range, inclusive, ascending or descending; zero-padded to the
///   wider bound when either bound has a leading zero (`{8..10}` is not padded).
/// - `{a,b,c}`: alternatives, taken literally (an alternative may contain `..`).
///
/// Several groups give every combination, in order:
/// `s3://b/{x,y}/shard-{0..1}.tar` → `x/shard-0`, `x/shard-1`, `y/shard-0`, `y/shard-1`.
/// A pattern without braces is returned as it is.
///
/// # Errors
/// [`StorageError::Invalid`] quoting the pattern for: an unmatched `{` or `}` (with its byte
/// offset), nested braces, an empty group or alternative, a group with neither `,` nor `..`,
/// range bounds that are not decimal numbers, and more than [`MAX_EXPANSION`] results.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let bad = |why: String| StorageError::Invalid(format!("brace pattern {pattern:?}: {why}"));
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = pattern.char_indices();
    while let Some((i, c)) = rest.next() {
        match c {
            '}' => return Err(bad(format!("unmatched '}}' at byte {i}"))),
            '{' => {
                let body_start = i + 1;
                let mut end = None;
                for (j, d) in rest.by_ref() {
                    match d {
                        '{' => {
                            return Err(bad(format!(
                                "nested '{{' at byte {j} (braces do not nest)"
                            )))
                        }
                        '}' => {
                            end = Some(j);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| bad(format!("unmatched '{{' at byte {i}")))?;
                parts.push(Part::Lit(std::mem::take(&mut lit)));
                parts.push(Part::Alt(group(&pattern[body_start..end]).map_err(bad)?));
            }
            c => lit.push(c),
        }
    }
    parts.push(Part::Lit(lit));

    let mut total: usize = 1;
    for p in &parts {
        if let Part::Alt(items) = p {
            total = total.saturating_mul(items.len());
        }
    }
    if total > MAX_EXPANSION {
        return Err(bad(format!(
            "expands to {} URLs; at most {MAX_EXPANSION} are allowed",
            if total == usize::MAX {
                "too many".to_string()
            } else {
                total.to_string()
            }
        )));
    }
    let mut out = vec![String::new()];
    for p in parts {
        match p {
            Part::Lit(s) => out.iter_mut().for_each(|o| o.push_str(&s)),
            Part::Alt(items) => {
                out = out
                    .iter()
                    .flat_map(|o| items.iter().map(move |i| format!("{o}{i}")))
                    .collect();
            }
        }
    }
    Ok(out)
}

/// The expansions of one group's body (between the braces).
fn group(body: &str) -> std::result::Result<Vec<String>, String> {
    if body.contains(',') {
        let items: Vec<String> = body.split(',').map(str::to_string).collect();
        if items.iter().any(String::is_empty) {
            return Err(format!("empty alternative in {{{body}}}"));
        }
        return Ok(items);
    }
    let Some((a, b)) = body.split_once("..") else {
        return Err(format!(
            "group {{{body}}} has neither ',' (alternatives) nor '..' (a range)"
        ));
    };
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 18 && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| {
                format!("range {{{body}}}: bounds must be decimal numbers of at most 18 digits")
            })
    };
    let (lo, hi) = (num(a)?, num(b)?);
    let padded = |s: &str| s.len() > 1 && s.starts_with('0');
    let width = if padded(a) || padded(b) {
        a.len().max(b.len())
    } else {
        0
    };
    let count = lo.abs_diff(hi).saturating_add(1);
    if count > MAX_EXPANSION as u64 {
        return Err(format!(
            "range {{{body}}} has {count} values; at most {MAX_EXPANSION} are allowed"
        ));
    }
    let values: Vec<u64> = if lo <= hi {
        (lo..=hi).collect()
    } else {
        (hi..=lo).rev().collect()
    };
    Ok(values.into_iter().map(|v| format!("{v:0width$}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_padded_ranges() {
        let urls = expand_braces("s3://b/emoji/shard-{000..008}.tar").unwrap();
        assert_eq!(urls.len(), 9);
        assert_eq!(urls[0], "s3://b/emoji/shard-000.tar");
        assert_eq!(urls[8], "s3://b/emoji/shard-008.tar");
        assert_eq!(expand_braces("x{8..10}").unwrap(), ["x8", "x9", "x10"]);
        assert_eq!(expand_braces("x{08..10}").unwrap(), ["x08", "x09", "x10"]);
        assert_eq!(expand_braces("x{3..1}").unwrap(), ["x3", "x2", "x1"]);
        assert_eq!(expand_braces("x{5..5}").unwrap(), ["x5"]);
    }

    #[test]
    fn lists_and_products_in_order() {
        assert_eq!(expand_braces("{a,b}").unwrap(), ["a", "b"]);
        assert_eq!(
            expand_braces("s3://b/{x,y}/s-{0..1}.tar").unwrap(),
            [
                "s3://b/x/s-0.tar",
                "s3://b/x/s-1.tar",
                "s3://b/y/s-0.tar",
                "s3://b/y/s-1.tar"
            ]
        );
        assert_eq!(expand_braces("{a..b,c}").unwrap(), ["a..b", "c"]);
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
    }

    #[test]
    fn malformed_patterns_are_refused_precisely() {
        let cases = [
            ("a{0..3", "unmatched '{' at byte 1"),
            ("a}b", "unmatched '}' at byte 1"),
            ("{a,{b,c}}", "nested '{' at byte 3"),
            ("x{}", "neither"),
            ("x{abc}", "neither"),
            ("x{a,}", "empty alternative"),
            ("x{a..z}", "decimal numbers"),
            ("x{-1..3}", "decimal numbers"),
            ("x{1..}", "decimal numbers"),
            ("x{0..99999999999}", "at most 10000"),
            ("{0..99}{0..99}{0..9}", "expands to 100000 URLs"),
        ];
        for (p, want) in cases {
            let e = expand_braces(p).unwrap_err().to_string();
            assert!(e.contains(want), "{p}: {e}");
            assert!(e.contains(&format!("{p:?}")), "{p}: {e}");
        }
        assert_eq!(
            expand_braces("{0..99}{0..99}").unwrap().len(),
            MAX_EXPANSION
        );
    }
}
