//! The two-style corpus: Rotten Tomatoes review snippets (`fresh` = positive, `rotten` = negative; the `plot`
//! rows are dropped) from `scripts/fetch-models rotten-tomatoes`, word tokenisation, and a fixed split.
//!
//! The split is by film (FNV-1a of `movie_name`, mod 10: 0 → test, 1 → dev, the rest → train), so that no film's
//! names and plot words are shared between training and evaluation, and it does not depend on the file's order.
//! Snippets longer than the model's length are dropped (the reference's data has `max_sequence_length` 60), as
//! are exact duplicates (first kept).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The two styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// `rotten` (label 0, the reference's `test0`).
    Negative,
    /// `fresh` (label 1).
    Positive,
}

impl Style {
    /// 0 or 1.
    pub fn label(self) -> usize {
        match self {
            Self::Negative => 0,
            Self::Positive => 1,
        }
    }

    /// The other style.
    pub fn other(self) -> Self {
        match self {
            Self::Negative => Self::Positive,
            Self::Positive => Self::Negative,
        }
    }
}

impl std::str::FromStr for Style {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "negative" | "neg" | "0" => Ok(Self::Negative),
            "positive" | "pos" | "1" => Ok(Self::Positive),
            other => Err(Error::Input(format!("style '{other}': use positive or negative"))),
        }
    }
}

/// One snippet: its words (lower-cased, punctuation split off) and style.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentence {
    /// Words.
    pub words: Vec<String>,
    /// Style.
    pub style: Style,
    /// The film (the split key).
    pub movie: String,
}

/// Lower-cased [`chorus_core::text::words`] (punctuation split off word edges), as the reference's
/// pre-tokenised corpora are.
pub fn words(text: &str) -> Vec<String> {
    chorus_core::text::words(&text.to_lowercase())
}

/// Records of a CSV text (RFC 4180: quoted fields with doubled quotes and embedded newlines; the `csv`
/// crate), each with the 1-based line it starts on. Records may differ in length (the caller names a short
/// one); an unterminated quoted field runs to the end of the text, as in the `csv` crate and Python's.
pub fn csv_records(file: &str, text: &str) -> Result<Vec<(usize, Vec<String>)>> {
    let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            chorus_core::FileError::Parse { file: file.into(), line, reason: e.to_string() }
        })?;
        // The csv crate's line counter skips newlines inside quoted fields; count them from the byte offset.
        // After a CRLF the record's offset points at the '\n' (the '\r' ended the record), so line breaks
        // at the offset still belong before the record.
        let line = rec.position().map_or(0, |p| {
            let b = text.as_bytes();
            let mut start = (p.byte() as usize).min(b.len());
            while start < b.len() && matches!(b[start], b'\r' | b'\n') {
                start += 1;
            }
            1 + b[..start].iter().filter(|&&c| c == b'\n').count()
        });
        out.push((line, rec.iter().map(str::to_string).collect()));
    }
    Ok(out)
}

/// Parses the corpus CSV (`category,text,movie_name,has_plot_and_reviews`): `fresh` and `rotten` rows become
/// sentences, `plot` rows are skipped, any other category is an error naming the line.
pub fn parse_rotten_tomatoes(file: &str, text: &str) -> Result<Vec<Sentence>> {
    let recs = csv_records(file, text)?;
    let Some((_, header)) = recs.first() else {
        return Err(chorus_core::FileError::Parse { file: file.into(), line: 1, reason: "empty file".into() }.into());
    };
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| chorus_core::FileError::Parse {
            file: file.into(),
            line: 1,
            reason: format!("no '{name}' column (header: {})", header.join(",")),
        })
    };
    let (ci, ti, mi) = (col("category")?, col("text")?, col("movie_name")?);
    let mut out = Vec::new();
    for (line, r) in &recs[1..] {
        let get = |i: usize| {
            r.get(i).ok_or_else(|| chorus_core::FileError::Parse {
                file: file.into(),
                line: *line,
                reason: format!("{} fields, the header has {}", r.len(), header.len()),
            })
        };
        let style = match get(ci)?.as_str() {
            "fresh" => Style::Positive,
            "rotten" => Style::Negative,
            "plot" => continue,
            other => {
                return Err(chorus_core::FileError::Parse {
                    file: file.into(),
                    line: *line,
                    reason: format!("category '{other}' (expected fresh, rotten or plot)"),
                }
                .into());
            }
        };
        out.push(Sentence { words: words(get(ti)?), style, movie: get(mi)?.clone() });
    }
    Ok(out)
}

/// Reads the corpus from `.csv` or `.csv.bz2`.
#[cfg(not(target_family = "wasm"))]
pub fn read_rotten_tomatoes(path: &std::path::Path) -> Result<Vec<Sentence>> {
    use std::io::Read;
    let io = |e: std::io::Error| chorus_core::FileError::Io { path: path.display().to_string(), reason: e.to_string() };
    let raw = std::fs::read(path).map_err(io)?;
    let text = if path.extension().is_some_and(|e| e == "bz2") {
        let mut s = String::new();
        bzip2::read::BzDecoder::new(raw.as_slice()).read_to_string(&mut s).map_err(io)?;
        s
    } else {
        String::from_utf8(raw)
            .map_err(|e| chorus_core::FileError::Io { path: path.display().to_string(), reason: e.to_string() })?
    };
    parse_rotten_tomatoes(&path.display().to_string(), &text)
}

/// FNV-1a 64 (the split key's hash: fixed across platforms and releases, unlike std's hasher).
pub use chorus_core::hash::fnv1a_str as fnv1a;

/// Train, dev and test sets.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Split {
    /// Training sentences.
    pub train: Vec<Sentence>,
    /// Model selection.
    pub dev: Vec<Sentence>,
    /// Held out.
    pub test: Vec<Sentence>,
}

/// The fixed split (by film; see the module docs) of sentences with 1 to `max_words` words, duplicates dropped.
pub fn split(sentences: &[Sentence], max_words: usize) -> Split {
    let mut seen = HashSet::new();
    let mut out = Split::default();
    for s in sentences {
        if s.words.is_empty() || s.words.len() > max_words || !seen.insert(s.words.join(" ")) {
            continue;
        }
        match fnv1a(&s.movie) % 10 {
            0 => out.test.push(s.clone()),
            1 => out.dev.push(s.clone()),
            _ => out.train.push(s.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_newlines_and_errors() {
        let t = "a,b\n\"x, \"\"y\"\"\nz\",2\r\nplain,3";
        let r = csv_records("f.csv", t).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1], (2, vec!["x, \"y\"\nz".to_string(), "2".into()]));
        assert_eq!(r[2], (4, vec!["plain".to_string(), "3".into()]));
        assert_eq!(csv_records("f.csv", "a\n\"open").unwrap()[1], (2, vec!["open".to_string()]));
    }

    #[test]
    fn corpus_rows_split_by_film() {
        let t = "category,text,movie_name,has_plot_and_reviews\nplot,\"A plot.\",m1,True\nfresh,\"Great fun!\",m1,True\nrotten,Dull.,m2,False\n";
        let v = parse_rotten_tomatoes("rt.csv", t).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].words.clone(), v[0].style),
            (vec!["great".to_string(), "fun".into(), "!".into()], Style::Positive)
        );
        let e = parse_rotten_tomatoes("rt.csv", "category,text,movie_name\nmeh,x,m\n").unwrap_err().to_string();
        assert!(e.starts_with("rt.csv:2:") && e.contains("'meh'"), "{e}");
        let many: Vec<Sentence> = (0..200)
            .map(|i| Sentence {
                words: vec![format!("w{i}")],
                style: Style::Negative,
                movie: format!("film{}", i % 40),
            })
            .collect();
        let s = split(&many, 60);
        assert_eq!(s.train.len() + s.dev.len() + s.test.len(), 200);
        let films = |v: &[Sentence]| v.iter().map(|x| x.movie.clone()).collect::<HashSet<_>>();
        assert!(films(&s.train).is_disjoint(&films(&s.test)) && films(&s.dev).is_disjoint(&films(&s.test)));
        let mut rev = many.clone();
        rev.reverse();
        let r = split(&rev, 60);
        assert_eq!(films(&r.test), films(&s.test), "the split does not depend on order");
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(words("Don't -- stop."), ["don't", "--", "stop", "."]);
    }
}
