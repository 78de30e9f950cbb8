//! Caption templates and the seeded random numbers that pick them.
//!
//! All words come from the packages (CLDR labels and keywords, Unicode names, emojilib);
//! only the few templates are synthetic (docs/data.md, "Captions"). Varying the template keeps
//! the text encoder from learning one fixed phrasing, while most templates still contain
//! the CLDR label, which is what evaluation captions are.

/// SplitMix64: tiny, fast and fully specified, so an export is byte-identical for a given
/// seed on every platform and crate version (no dependency on `rand`'s stream stability).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for one part of the benchmark (e.g. one task), so that the content of
    /// task 3 does not change when only tasks 0..2 are exported.
    pub fn derive(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next_u64();
        r
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`); the modulo bias is negligible for list sizes here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// The text a training caption may draw on for one image.
#[derive(Debug, Clone, Copy)]
pub struct CaptionText<'a> {
    /// CLDR label (for a skin variant, its own label, e.g. "thumbs up: dark skin tone").
    pub label: &'a str,
    /// CLDR keywords.
    pub tags: &'a [String],
    /// emojilib keywords, used when CLDR has fewer than two.
    pub emojilib: &'a [String],
    /// Unicode name (base emoji only; skin variants have none of their own).
    pub unicode_name: Option<&'a str>,
}

/// Number of templates [`train_captions`] chooses from.
pub const TEMPLATES: usize = 4;

/// Keywords usable in a caption: CLDR tags, else emojilib words that read as words (its
/// first entry is a snake_case id and some entries are emoticons such as `:D`).
fn keywords(text: &CaptionText<'_>) -> Vec<String> {
    let label = text.label.to_lowercase();
    let usable = |w: &&String| {
        let w = w.as_str();
        !w.is_empty()
            && w.to_lowercase() != label
            && !w.contains('_')
            && w.chars().any(char::is_alphabetic)
    };
    let tags: Vec<String> = text.tags.iter().filter(usable).cloned().collect();
    if tags.len() >= 2 {
        return tags;
    }
    let mut all = tags;
    for w in text.emojilib.iter().filter(usable) {
        if !all.contains(w) {
            all.push(w.clone());
        }
    }
    all
}

/// Renders template `which` (0..[`TEMPLATES`]); a template whose words are missing falls
/// back to the next one, and template 0 (the bare label) always works.
pub fn render(which: usize, text: &CaptionText<'_>, rng: &mut Rng) -> String {
    match which % TEMPLATES {
        1 => format!("an emoji of {}", text.label),
        2 => {
            let mut words = keywords(text);
            if words.len() < 2 {
                return render(3, text, rng);
            }
            rng.shuffle(&mut words);
            let take = 2 + rng.below(2).min(words.len() - 2);
            // Skin-variant labels already contain a colon ("thumbs up: dark skin tone").
            let sep = if text.label.contains(':') { ", " } else { ": " };
            format!("{}{sep}{}", text.label, words[..take].join(", "))
        }
        3 => match text.unicode_name.map(str::to_lowercase) {
            Some(name) if !name.is_empty() && name != text.label.to_lowercase() => name,
            _ => render(1, text, rng),
        },
        _ => text.label.to_string(),
    }
}

/// `count` distinct-template training captions for one image (templates drawn without
/// replacement while there are unused ones left).
pub fn train_captions(text: &CaptionText<'_>, count: usize, rng: &mut Rng) -> Vec<String> {
    let mut order: Vec<usize> = (0..TEMPLATES).collect();
    rng.shuffle(&mut order);
    let mut out: Vec<String> = Vec::with_capacity(count);
    for i in 0..count {
        let caption = render(order[i % TEMPLATES], text, rng);
        out.push(caption);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(tags: &'a [String], name: Option<&'a str>) -> CaptionText<'a> {
        CaptionText {
            label: "grinning face",
            tags,
            emojilib: &[],
            unicode_name: name,
        }
    }

    #[test]
    fn rng_is_deterministic_and_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = Rng::derive(7, 0);
        let mut y = Rng::derive(7, 1);
        assert_ne!(x.next_u64(), y.next_u64());
        let mut v: Vec<u32> = (0..50).collect();
        Rng::new(1).shuffle(&mut v);
        let mut w: Vec<u32> = (0..50).collect();
        Rng::new(1).shuffle(&mut w);
        assert_eq!(v, w);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn templates_render_and_fall_back() {
        let tags: Vec<String> = ["face", "grin", "happy"].map(String::from).to_vec();
        let mut rng = Rng::new(3);
        let t = text(&tags, Some("GRINNING FACE WITH SMILING EYES"));
        assert_eq!(render(0, &t, &mut rng), "grinning face");
        assert_eq!(render(1, &t, &mut rng), "an emoji of grinning face");
        let kw = render(2, &t, &mut rng);
        assert!(kw.starts_with("grinning face: "), "{kw}");
        assert!(kw.matches(", ").count() >= 1, "{kw}");
        assert_eq!(render(3, &t, &mut rng), "grinning face with smiling eyes");
        // No keywords and a Unicode name equal to the label: both fall back.
        let bare = text(&[], Some("Grinning Face"));
        assert_eq!(render(2, &bare, &mut rng), "an emoji of grinning face");
        let caps = train_captions(&t, 4, &mut rng);
        let distinct: std::collections::HashSet<_> = caps.iter().collect();
        assert_eq!(distinct.len(), 4, "{caps:?}");
    }
}
