//! The sensitive-word filter: many words matched at once with an Aho-Corasick automaton,
//! case-insensitively (Unicode lowercase, so "É" matches "é"), on any script: CJK words
//! match inside unspaced text as they should.
//!
//! Matching runs on a lowercased copy of the text with a map back to the original characters,
//! so masking replaces exactly the characters of each match (overlapping matches included)
//! with `*` and leaves the rest, case and all, as written.

use std::path::Path;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::Deserialize;

/// What a chat room does with a message that contains a listed word.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FilterPolicy {
    /// Replace every character of every match with `*` and send the rest.
    #[default]
    Mask,
    /// Refuse the whole message with an error to the sender.
    Reject,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("cannot read word list {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot build the word filter: {0}")]
    Build(String),
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct WordFilter {
    automaton: Option<AhoCorasick>,
    words: usize,
}

/// `text` lowercased, and for each byte of it the index of the original character it came
/// from (lowercasing may change a character's length).
fn lowercase_with_map(text: &str) -> (String, Vec<u32>) {
    let mut lower = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        let before = lower.len();
        lower.extend(c.to_lowercase());
        origin.resize(lower.len(), i as u32);
        debug_assert!(lower.len() > before);
    }
    (lower, origin)
}

impl WordFilter {
    /// A filter that matches nothing.
    pub fn empty() -> Self {
        Self {
            automaton: None,
            words: 0,
        }
    }

    /// A filter for `words`; blank entries are ignored, the rest are trimmed.
    pub fn new<I, S>(words: I) -> Result<Self, FilterError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words: Vec<String> = words
            .into_iter()
            .map(|w| w.as_ref().trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            return Ok(Self::empty());
        }
        // Standard semantics are what overlapping search needs: every occurrence of every
        // word, so masking covers the union of them.
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&words)
            .map_err(|e| FilterError::Build(e.to_string()))?;
        Ok(Self {
            automaton: Some(automaton),
            words: words.len(),
        })
    }

    /// Reads a word list file: one word or phrase per line, UTF-8; blank lines and lines
    /// starting with `#` are ignored.
    pub fn read_list(path: &Path) -> Result<Vec<String>, FilterError> {
        let text = std::fs::read_to_string(path).map_err(|source| FilterError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }

    /// Words in the list.
    pub fn len(&self) -> usize {
        self.words
    }

    pub fn is_empty(&self) -> bool {
        self.words == 0
    }

    /// True if `text` contains a listed word.
    pub fn matches(&self, text: &str) -> bool {
        let Some(ac) = &self.automaton else {
            return false;
        };
        // Most messages are clean ASCII-lowercase; skip the copy when it changes nothing.
        if !text.chars().any(char::is_uppercase) {
            return ac.is_match(text);
        }
        ac.is_match(&text.to_lowercase())
    }

    /// `text` with every character of every match replaced by `*`, or `None` if nothing
    /// matched.
    pub fn mask(&self, text: &str) -> Option<String> {
        let ac = self.automaton.as_ref()?;
        let (lower, origin) = lowercase_with_map(text);
        let mut hit: Vec<bool> = Vec::new();
        for m in ac.find_overlapping_iter(&lower) {
            if hit.is_empty() {
                hit = vec![false; text.chars().count()];
            }
            let first = origin[m.start()] as usize;
            let last = origin[m.end() - 1] as usize;
            hit[first..=last].iter_mut().for_each(|h| *h = true);
        }
        if hit.is_empty() {
            return None;
        }
        Some(
            text.chars()
                .zip(hit)
                .map(|(c, h)| if h { '*' } else { c })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(words: &[&str]) -> WordFilter {
        WordFilter::new(words.iter().copied()).unwrap()
    }

    #[test]
    fn latin_words_match_in_any_case_and_only_they_are_masked() {
        let f = filter(&["darn", "Heck"]);
        assert_eq!(f.len(), 2);
        assert!(f.matches("well DARN it"));
        assert!(!f.matches("a clean message"));
        assert_eq!(
            f.mask("Well DaRn it, heck!").unwrap(),
            "Well **** it, ****!"
        );
        assert_eq!(f.mask("nothing here"), None);
    }

    #[test]
    fn chinese_words_match_inside_unspaced_text() {
        let f = filter(&["笨蛋", "傻瓜"]);
        assert!(f.matches("你这个笨蛋啊"));
        assert_eq!(f.mask("你这个笨蛋，还有傻瓜").unwrap(), "你这个**，还有**");
        assert_eq!(f.mask("你好世界"), None);
    }

    #[test]
    fn overlapping_and_non_ascii_case_matches_are_masked_whole() {
        let f = filter(&["abc", "bcd", "élan"]);
        assert_eq!(f.mask("xABCDx").unwrap(), "x****x");
        assert_eq!(f.mask("ÉLAN vital").unwrap(), "**** vital");
        // A character whose lowercase is longer (İ → i̇) keeps the map straight.
        let f = filter(&["x"]);
        assert_eq!(f.mask("İx").unwrap(), "İ*");
    }

    #[test]
    fn a_word_list_file_skips_comments_and_blank_lines() {
        let path = std::env::temp_dir().join(format!("tickroom-words-{}.txt", std::process::id()));
        std::fs::write(&path, "# banned\n\nfoo\n  bar  \n坏话\n").unwrap();
        let f = WordFilter::new(WordFilter::read_list(&path).unwrap()).unwrap();
        assert_eq!(f.len(), 3);
        assert!(f.matches("BAR") && f.matches("说坏话") && !f.matches("banned"));
        assert!(WordFilter::read_list(Path::new("/nonexistent/words.txt")).is_err());
        assert!(WordFilter::empty().mask("anything").is_none());
    }
}
