//! Text as moderation compares it: NFKC-normalized (fullwidth `ｂａｄ` is `bad`, ligatures
//! are split) and without format characters (Unicode category Cf: zero-width spaces and
//! joiners, bidi controls, the BOM, soft hyphens), so `tr\u{200d}oll` is `troll` and
//! `bad\u{200b}word` is `badword` before the block list and the word filter look.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// `text` in NFKC without format characters.
pub fn normalize(text: &str) -> String {
    text.nfkc()
        .filter(|c| c.general_category() != GeneralCategory::Format)
        .collect()
}

/// True if `text` holds a bidi control (embeddings, overrides, isolates, marks): they
/// change how the text around them is displayed, so a name must not carry them.
pub fn has_bidi_controls(text: &str) -> bool {
    text.chars().any(|c| {
        matches!(
            c,
            '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_compatibility_forms_normalize_away() {
        assert_eq!(normalize("troll\u{200b}"), "troll");
        assert_eq!(normalize("tr\u{200d}oll"), "troll");
        assert_eq!(normalize("bad\u{200b}word"), "badword");
        assert_eq!(normalize("笨\u{200b}蛋"), "笨蛋");
        assert_eq!(normalize("ｂａｄｗｏｒｄ"), "badword");
        assert_eq!(normalize("\u{feff}\u{00ad}"), "");
        assert_eq!(normalize("héllo wörld"), "héllo wörld");
    }

    #[test]
    fn bidi_controls_are_found() {
        assert!(has_bidi_controls("abc\u{202e}def"));
        assert!(has_bidi_controls("\u{2067}x"));
        assert!(!has_bidi_controls("שלום عربي plain"));
    }
}
