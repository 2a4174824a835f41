//! The word vocabulary of the autoencoder: the reference's special ids (0 `<PAD>`, 1 `<UNK>`, 2 `<BOS>`,
//! 3 `<EOS>`), then the training words seen at least `min_count` times, most frequent first (ties
//! alphabetical, so a vocabulary is a pure function of its corpus). Stored as one word per line, the line
//! number being the id.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Padding.
pub const PAD: u32 = 0;
/// Unknown word.
pub const UNK: u32 = 1;
/// Start of a decoder input.
pub const BOS: u32 = 2;
/// End of a target.
pub const EOS: u32 = 3;
/// The special words in id order.
pub const SPECIALS: [&str; 4] = ["<PAD>", "<UNK>", "<BOS>", "<EOS>"];

/// Words ↔ ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    words: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl Vocab {
    fn from_words(words: Vec<String>) -> Self {
        let index = words.iter().enumerate().map(|(i, w)| (w.clone(), i as u32)).collect();
        Self { words, index }
    }

    /// Builds the vocabulary of `sentences` (words seen ≥ `min_count` times; the reference keeps count ≥ 5).
    pub fn build<'a>(sentences: impl IntoIterator<Item = &'a [String]>, min_count: usize) -> Self {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for s in sentences {
            for w in s {
                *count.entry(w.as_str()).or_default() += 1;
            }
        }
        let mut kept: Vec<(&str, usize)> =
            count.into_iter().filter(|(w, c)| *c >= min_count.max(1) && !SPECIALS.contains(w)).collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Self::from_words(
            SPECIALS.iter().map(|s| s.to_string()).chain(kept.into_iter().map(|(w, _)| w.to_string())).collect(),
        )
    }

    /// Parses the one-word-per-line form written by [`Self::to_text`].
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let words: Vec<String> = text.lines().map(str::to_string).collect();
        for (i, s) in SPECIALS.iter().enumerate() {
            if words.get(i).map(String::as_str) != Some(s) {
                return Err(chorus_core::FileError::Parse {
                    file: file.into(),
                    line: i + 1,
                    reason: format!("expected {s}"),
                }
                .into());
            }
        }
        let v = Self::from_words(words);
        if v.index.len() != v.words.len() {
            let dup = v.words.iter().enumerate().find(|(i, w)| v.index[*w] as usize != *i);
            let (i, w) = dup.map_or((0, ""), |(_, w)| (v.index[w] as usize, w.as_str()));
            return Err(chorus_core::FileError::Parse {
                file: file.into(),
                line: i + 1,
                reason: format!("'{w}' appears twice"),
            }
            .into());
        }
        Ok(v)
    }

    /// One word per line.
    pub fn to_text(&self) -> String {
        let mut s = self.words.join("\n");
        s.push('\n');
        s
    }

    /// Size, specials included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Never true (the specials are always there); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The id of a word (`<UNK>` when absent).
    pub fn id(&self, word: &str) -> u32 {
        self.index.get(word).copied().unwrap_or(UNK)
    }

    /// Ids of words and how many were unknown.
    pub fn encode(&self, words: &[String]) -> (Vec<u32>, usize) {
        let ids: Vec<u32> = words.iter().map(|w| self.id(w)).collect();
        let unk = ids.iter().filter(|&&i| i == UNK).count();
        (ids, unk)
    }

    /// The reference's `id2text`: words up to the first `<EOS>` or `<PAD>`; ids outside the vocabulary read as
    /// `<UNK>`.
    pub fn decode(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .take_while(|&&i| i != EOS && i != PAD)
            .map(|&i| self.words.get(i as usize).map_or(SPECIALS[UNK as usize], String::as_str).to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn build_encode_decode_round_trip() {
        let corpus = [w("the film is good"), w("the film is bad"), w("the plot")];
        let v = Vocab::build(corpus.iter().map(Vec::as_slice), 2);
        assert_eq!(v.to_text(), "<PAD>\n<UNK>\n<BOS>\n<EOS>\nthe\nfilm\nis\n");
        let (ids, unk) = v.encode(&w("the film is great"));
        assert_eq!((ids.clone(), unk), (vec![4, 5, 6, UNK], 1));
        assert_eq!(v.decode(&[4, 5, 99, EOS, 6]), w("the film <UNK>"));
        assert_eq!(v.decode(&[4, PAD, 5]), w("the"));
        let back = Vocab::parse("v.txt", &v.to_text()).unwrap();
        assert_eq!(back.id("is"), 6);
        let e = Vocab::parse("v.txt", "<PAD>\n<UNK>\n<BOS>\n<EOS>\na\nb\na\n").unwrap_err().to_string();
        assert!(e.starts_with("v.txt:7:") && e.contains("'a' appears twice"), "{e}");
        let e = Vocab::parse("v.txt", "a\n").unwrap_err().to_string();
        assert!(e.contains("v.txt:1: expected <PAD>"), "{e}");
    }
}
