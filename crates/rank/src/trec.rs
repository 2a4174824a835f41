//! TREC-style files: `queries.tsv` (`qid<TAB>text`), `collection.tsv` (`docid<TAB>text` or
//! `docid<TAB>title<TAB>text`), first-stage runs (TREC `qid Q0 docid rank score tag`, or `qid docid score`),
//! qrels (`qid 0 docid rel`, or `qid docid rel`), and run-file output in trec_eval's order.
//!
//! Parsers take the text and the file name so every error names `file:line`; loaders read files; the
//! writer is the shared safe-output helper (`chorus_core::output`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Error, Result};

/// Query id → text.
pub type Queries = BTreeMap<String, String>;
/// Query id → (doc id → graded relevance).
pub type Qrels = BTreeMap<String, HashMap<String, i32>>;
/// Query id → (doc id, score) in rank order.
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

/// One passage of the collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Title ("" when the collection has none).
    pub title: String,
    /// Passage text.
    pub text: String,
}

/// Doc id → passage.
pub type Collection = HashMap<String, Doc>;

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r'))).filter(|(_, l)| !l.trim().is_empty())
}

fn perr(file: &str, line: usize, reason: impl Into<String>) -> Error {
    chorus_core::FileError::Parse { file: file.into(), line, reason: reason.into() }.into()
}

/// Parses `qid<TAB>text` lines.
pub fn parse_queries(file: &str, text: &str) -> Result<Queries> {
    let mut out = Queries::new();
    for (n, l) in lines(text) {
        let (id, q) = l.split_once('\t').ok_or_else(|| perr(file, n, "expected 'qid<TAB>text'"))?;
        let id = id.trim();
        if id.is_empty() {
            return Err(perr(file, n, "empty query id"));
        }
        if out.insert(id.to_string(), q.trim().to_string()).is_some() {
            return Err(perr(file, n, format!("query '{id}' appears twice")));
        }
    }
    Ok(out)
}

/// Parses `docid<TAB>text` or `docid<TAB>title<TAB>text` lines (the column count may not change).
pub fn parse_collection(file: &str, text: &str) -> Result<Collection> {
    let mut out = Collection::new();
    let mut cols = None;
    for (n, l) in lines(text) {
        let parts: Vec<&str> = l.split('\t').collect();
        if parts.len() != 2 && parts.len() != 3 {
            return Err(perr(
                file,
                n,
                format!("expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', found {} columns", parts.len()),
            ));
        }
        if *cols.get_or_insert(parts.len()) != parts.len() {
            return Err(perr(file, n, format!("{} columns after lines of {}", parts.len(), cols.unwrap_or(0))));
        }
        let id = parts[0].trim();
        if id.is_empty() {
            return Err(perr(file, n, "empty document id"));
        }
        let doc = if parts.len() == 3 {
            Doc { title: parts[1].trim().into(), text: parts[2].trim().into() }
        } else {
            Doc { title: String::new(), text: parts[1].trim().into() }
        };
        if out.insert(id.to_string(), doc).is_some() {
            return Err(perr(file, n, format!("document '{id}' appears twice")));
        }
    }
    Ok(out)
}

/// Parses a first-stage run: TREC's six columns (`qid Q0 docid rank score tag`) or three
/// (`qid docid score`). Candidates are ordered by rank (six columns) or by score (three).
pub fn parse_run(file: &str, text: &str) -> Result<Run> {
    let mut ranked: BTreeMap<String, Vec<(i64, String, f64)>> = BTreeMap::new();
    for (n, l) in lines(text) {
        let p: Vec<&str> = l.split_whitespace().collect();
        let (qid, docid, rank, score) = match p.len() {
            6 => {
                let rank =
                    p[3].parse::<i64>().map_err(|_| perr(file, n, format!("rank '{}' is not an integer", p[3])))?;
                (p[0], p[2], Some(rank), p[4])
            }
            3 => (p[0], p[1], None, p[2]),
            k => {
                return Err(perr(
                    file,
                    n,
                    format!("expected 'qid Q0 docid rank score tag' or 'qid docid score', found {k} columns"),
                ));
            }
        };
        let score: f64 = score.parse().map_err(|_| perr(file, n, format!("score '{score}' is not a number")))?;
        if !score.is_finite() {
            return Err(perr(file, n, format!("score {score} is not finite")));
        }
        let list = ranked.entry(qid.to_string()).or_default();
        if list.iter().any(|(_, d, _)| d == docid) {
            return Err(perr(file, n, format!("document '{docid}' appears twice for query '{qid}'")));
        }
        // Without ranks the score orders; its negation as a sortable key keeps one code path.
        let key = rank.unwrap_or(0);
        list.push((key, docid.to_string(), score));
    }
    Ok(ranked
        .into_iter()
        .map(|(q, mut v)| {
            if v.iter().all(|(k, _, _)| *k == 0) {
                v.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| b.1.cmp(&a.1)));
            } else {
                v.sort_by_key(|(k, _, _)| *k);
            }
            (q, v.into_iter().map(|(_, d, s)| (d, s)).collect())
        })
        .collect())
}

/// Parses qrels: `qid 0 docid rel` or `qid docid rel` (whitespace-separated).
pub fn parse_qrels(file: &str, text: &str) -> Result<Qrels> {
    let mut out = Qrels::new();
    for (n, l) in lines(text) {
        let p: Vec<&str> = l.split_whitespace().collect();
        let (qid, docid, rel) = match p.len() {
            4 => (p[0], p[2], p[3]),
            3 => (p[0], p[1], p[2]),
            k => {
                return Err(perr(file, n, format!("expected 'qid 0 docid rel' or 'qid docid rel', found {k} columns")));
            }
        };
        let rel: i32 = rel.parse().map_err(|_| perr(file, n, format!("relevance '{rel}' is not an integer")))?;
        out.entry(qid.to_string()).or_default().insert(docid.to_string(), rel);
    }
    Ok(out)
}

/// Reads a file as UTF-8, naming it in errors.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| chorus_core::FileError::Io { path: path.display().to_string(), reason: e.to_string() }.into())
}

/// Loads and parses one input file with `parse(file_name, text)`.
pub fn load<T>(path: &Path, parse: fn(&str, &str) -> Result<T>) -> Result<T> {
    parse(&path.display().to_string(), &read(path)?)
}

/// Sorts one query's results as trec_eval reads them: score descending, ties by doc id descending.
pub fn trec_order(v: &mut [(String, f64)]) {
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
}

/// A run file (`qid Q0 docid rank score tag`), each query's lines in [`trec_order`].
pub fn format_run(run: &Run, tag: &str) -> String {
    let mut s = String::new();
    for (q, docs) in run {
        let mut docs = docs.clone();
        trec_order(&mut docs);
        for (r, (d, score)) in docs.iter().enumerate() {
            s.push_str(&format!("{q} Q0 {d} {} {score:.6} {tag}\n", r + 1));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_name_file_and_line() {
        let e = parse_queries("q.tsv", "1\tfirst\n2 no tab\n").unwrap_err().to_string();
        assert_eq!(e, "q.tsv:2: expected 'qid<TAB>text'");
        let e = parse_queries("q.tsv", "1\ta\n1\tb\n").unwrap_err().to_string();
        assert!(e.contains("q.tsv:2") && e.contains("twice"), "{e}");
        let e = parse_collection("c.tsv", "d1\tt\tx\nd2\tonly\n").unwrap_err().to_string();
        assert!(e.starts_with("c.tsv:2:"), "{e}");
        let e = parse_run("r", "1 Q0 d1 1 2.5 x\n1 Q0 d2 two 2.0 x\n").unwrap_err().to_string();
        assert!(e.starts_with("r:2: rank 'two'"), "{e}");
        let e = parse_run("r", "1 d1 nan\n").unwrap_err().to_string();
        assert!(e.contains("r:1") && e.contains("not finite"), "{e}");
        let e = parse_qrels("qr", "1 0 d1 x\n").unwrap_err().to_string();
        assert!(e.starts_with("qr:1: relevance 'x'"), "{e}");
    }

    #[test]
    fn runs_keep_rank_order_and_three_column_runs_sort_by_score() {
        let r = parse_run("r", "q Q0 b 2 9.0 t\nq Q0 a 1 1.0 t\n").unwrap();
        assert_eq!(r["q"], vec![("a".to_string(), 1.0), ("b".to_string(), 9.0)]);
        let r = parse_run("r", "q a 1.0\nq b 9.0\n").unwrap();
        assert_eq!(r["q"][0].0, "b");
        let c = parse_collection("c", "d1\tTitle one\tText\n").unwrap();
        assert_eq!(c["d1"], Doc { title: "Title one".into(), text: "Text".into() });
    }

    #[test]
    fn run_files_follow_trec_eval_order() {
        let mut run = Run::new();
        run.insert("7".into(), vec![("a".into(), 1.0), ("c".into(), 2.0), ("b".into(), 2.0)]);
        let s = format_run(&run, "fit5");
        assert_eq!(s, "7 Q0 c 1 2.000000 fit5\n7 Q0 b 2 2.000000 fit5\n7 Q0 a 3 1.000000 fit5\n");
        assert_eq!(parse_run("s", &s).unwrap()["7"][0].0, "c");
    }
}
