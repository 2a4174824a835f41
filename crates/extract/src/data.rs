//! Relation-extraction examples: TACRED-style JSON (`token`, `h`/`t` or `subj_start`… spans, `relation`),
//! SemEval-2010 Task 8 files (`N\t"… <e1>…</e1> … <e2>…</e2> …"`, the label line, a comment line), and the
//! reference's k-shot sampler.

use std::collections::BTreeMap;

use chorus_core::sampling::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{Error, Result};

/// One sentence with a subject span, an object span (token offsets, end exclusive) and its relation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Id (from the file, or the record number).
    pub id: String,
    /// Words.
    pub tokens: Vec<String>,
    /// Subject (head) span `[start, end)`.
    pub subj: (usize, usize),
    /// Object (tail) span `[start, end)`.
    pub obj: (usize, usize),
    /// Relation label.
    pub relation: String,
}

impl Example {
    /// Checks the spans lie inside the sentence, are non-empty and do not overlap.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::Example { id: self.id.clone(), reason });
        let n = self.tokens.len();
        for (name, (s, e)) in [("subject", self.subj), ("object", self.obj)] {
            if s >= e || e > n {
                return bad(format!("{name} span {s}..{e} is not inside the {n}-token sentence"));
            }
        }
        if self.subj.0 < self.obj.1 && self.obj.0 < self.subj.1 {
            return bad(format!("subject {:?} and object {:?} overlap", self.subj, self.obj));
        }
        Ok(())
    }

    /// The subject's words.
    pub fn subject(&self) -> String {
        self.tokens[self.subj.0..self.subj.1].join(" ")
    }

    /// The object's words.
    pub fn object(&self) -> String {
        self.tokens[self.obj.0..self.obj.1].join(" ")
    }
}

fn span(v: &Json, keys: [&str; 2]) -> Option<(usize, usize)> {
    // TACRED: subj_start/subj_end inclusive; KnowPrompt/MVRE: h.pos = [start, end) exclusive.
    match keys {
        ["h" | "t", _] => {
            let p = v.get(keys[0])?.get("pos")?.as_array()?;
            Some((p.first()?.as_u64()? as usize, p.get(1)?.as_u64()? as usize))
        }
        [s, e] => Some((v.get(s)?.as_u64()? as usize, v.get(e)?.as_u64()? as usize + 1)),
    }
}

/// Parses TACRED-style JSON: an array of objects, or one object per line (the MVRE repository's `.txt`). Each
/// has `token` and either `h.pos`/`t.pos` (`[start, end)`) or `subj_start`/`subj_end`/`obj_start`/`obj_end`
/// (inclusive, TACRED), and `relation`.
pub fn parse_tacred(file: &str, text: &str) -> Result<Vec<Example>> {
    let trimmed = text.trim_start();
    let records: Vec<(usize, Json)> = if trimmed.starts_with('[') {
        let all: Vec<Json> = serde_json::from_str(text).map_err(|e| {
            Error::from(chorus_core::FileError::Parse { file: file.into(), line: e.line(), reason: e.to_string() })
        })?;
        all.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map(|v| (i + 1, v)).map_err(|e| {
                    Error::from(chorus_core::FileError::Parse { file: file.into(), line: i + 1, reason: e.to_string() })
                })
            })
            .collect::<Result<_>>()?
    };
    records
        .into_iter()
        .map(|(n, v)| {
            let perr = |reason: &str| {
                Error::from(chorus_core::FileError::Parse { file: file.into(), line: n, reason: reason.into() })
            };
            let tokens: Vec<String> = v
                .get("token")
                .and_then(Json::as_array)
                .ok_or_else(|| perr("no 'token' array"))?
                .iter()
                .map(|t| t.as_str().map(str::to_string).ok_or_else(|| perr("'token' holds a non-string")))
                .collect::<Result<_>>()?;
            let subj = span(&v, ["h", ""])
                .or_else(|| span(&v, ["subj_start", "subj_end"]))
                .ok_or_else(|| perr("no subject span ('h.pos' or 'subj_start'/'subj_end')"))?;
            let obj = span(&v, ["t", ""])
                .or_else(|| span(&v, ["obj_start", "obj_end"]))
                .ok_or_else(|| perr("no object span ('t.pos' or 'obj_start'/'obj_end')"))?;
            let relation = v.get("relation").and_then(Json::as_str).ok_or_else(|| perr("no 'relation'"))?.to_string();
            let id = v.get("id").and_then(Json::as_str).map_or_else(|| n.to_string(), str::to_string);
            let ex = Example { id, tokens, subj, obj, relation };
            ex.validate().map_err(|e| perr(&e.to_string()))?;
            Ok(ex)
        })
        .collect()
}

/// Parses SemEval-2010 Task 8 (`N<TAB>"sentence with <e1>…</e1> and <e2>…</e2>"`, then the label line such as
/// `Cause-Effect(e1,e2)` or `Other`, then `Comment:` and a blank line). e1 is the subject and e2 the object;
/// the directional label is kept as written.
pub fn parse_semeval(file: &str, text: &str) -> Result<Vec<Example>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim();
        if l.is_empty() || l.starts_with("Comment") {
            i += 1;
            continue;
        }
        let perr = |line: usize, reason: String| {
            Error::from(chorus_core::FileError::Parse { file: file.into(), line, reason })
        };
        let (id, sent) = l.split_once('\t').ok_or_else(|| perr(i + 1, "expected 'N<TAB>\"sentence\"'".into()))?;
        let label = lines.get(i + 1).map(|s| s.trim()).filter(|s| !s.is_empty());
        let label = label.ok_or_else(|| perr(i + 2, "missing the relation line after the sentence".into()))?;
        let sent = sent.trim().trim_matches('"');
        let spaced = sent
            .replace("<e1>", " <e1> ")
            .replace("</e1>", " </e1> ")
            .replace("<e2>", " <e2> ")
            .replace("</e2>", " </e2> ");
        let (mut tokens, mut marks) = (Vec::new(), BTreeMap::new());
        for w in spaced.split_whitespace() {
            match w {
                "<e1>" | "</e1>" | "<e2>" | "</e2>" => {
                    marks.insert(w, tokens.len());
                }
                _ => tokens.push(w.to_string()),
            }
        }
        let get = |k: &str| marks.get(k).copied();
        let (Some(s1), Some(e1), Some(s2), Some(e2)) = (get("<e1>"), get("</e1>"), get("<e2>"), get("</e2>")) else {
            return Err(perr(i + 1, "the sentence lacks one of <e1>, </e1>, <e2>, </e2>".into()));
        };
        let ex = Example { id: id.trim().into(), tokens, subj: (s1, e1), obj: (s2, e2), relation: label.into() };
        ex.validate().map_err(|e| perr(i + 1, e.to_string()))?;
        out.push(ex);
        i += 2;
    }
    Ok(out)
}

/// The reference's k-shot split: the whole list is shuffled with the seed, then the first `k` examples of each
/// relation (NA included) are kept, in shuffled order. `cumulative` reproduces the code's quirk of shuffling one
/// list again for every seed in 1..=seed (seed s then equals the s-th split of a run over seeds 1..5).
pub fn k_shot(data: &[Example], k: usize, seed: u64, cumulative: bool) -> Vec<Example> {
    let mut v: Vec<Example> = data.to_vec();
    let rounds: Vec<u64> = if cumulative { (1..=seed).collect() } else { vec![seed] };
    for s in rounds {
        let mut rng = Rng::new(s);
        for i in (1..v.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    v.into_iter()
        .filter(|e| {
            let c = count.entry(e.relation.clone()).or_default();
            *c += 1;
            *c <= k
        })
        .collect()
}

pub use chorus_core::text::words;

fn find_words(hay: &[String], needle: &[String], avoid: Option<(usize, usize)>) -> Option<(usize, usize)> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .map(|s| (s, s + needle.len()))
        .find(|&(s, e)| hay[s..e] == *needle && avoid.is_none_or(|(a, b)| e <= a || b <= s))
}

impl Example {
    /// An example from free text and the subject's and object's words (first occurrences that do not
    /// overlap). An entity that does not occur is an error naming it: the reference drops such examples.
    pub fn from_text(id: &str, text: &str, subject: &str, object: &str, relation: &str) -> Result<Self> {
        let tokens = words(text);
        let bad = |reason: String| Error::Example { id: id.into(), reason };
        if tokens.is_empty() {
            return Err(bad("the text is empty".into()));
        }
        let (sw, ow) = (words(subject), words(object));
        let subj = find_words(&tokens, &sw, None)
            .ok_or_else(|| bad(format!("the subject '{subject}' does not occur in the text (as whole words)")))?;
        let obj = find_words(&tokens, &ow, Some(subj)).ok_or_else(|| {
            bad(format!("the object '{object}' does not occur in the text apart from the subject (as whole words)"))
        })?;
        let ex = Self { id: id.into(), tokens, subj, obj, relation: relation.into() };
        ex.validate()?;
        Ok(ex)
    }
}

/// Reads examples from a file: SemEval-2010 Task 8 when its first line is `N<TAB>"…"`, TACRED-style JSON
/// otherwise.
#[cfg(not(target_family = "wasm"))]
pub fn read_examples(path: &std::path::Path) -> Result<Vec<Example>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::from(chorus_core::FileError::Io { path: path.display().to_string(), reason: e.to_string() })
    })?;
    let name = path.display().to_string();
    parse_examples(&name, &text)
}

/// [`read_examples`] on text already in memory.
pub fn parse_examples(name: &str, text: &str) -> Result<Vec<Example>> {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let semeval = first.split_once('\t').is_some_and(|(n, rest)| {
        !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && rest.trim_start().starts_with('"')
    });
    let v = if semeval { parse_semeval(name, text)? } else { parse_tacred(name, text)? };
    if v.is_empty() {
        return Err(Error::from(chorus_core::FileError::Parse {
            file: name.into(),
            line: 1,
            reason: "no examples".into(),
        }));
    }
    Ok(v)
}

/// The relation inventory in id order (the reference's `rel2id.json`) and which one is "no relation".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relations {
    /// Names, index = relation id.
    pub names: Vec<String>,
    /// Index of NA (`NA`, `no_relation` or `Other`, the first found), excluded from micro-F1.
    pub na: Option<usize>,
}

impl Relations {
    /// From `rel2id.json` (`{"name": id, …}`; ids must be 0..R without gaps).
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let perr = |reason: String| Error::from(chorus_core::FileError::Parse { file: file.into(), line: 1, reason });
        let map: BTreeMap<String, usize> =
            serde_json::from_str(text).map_err(|e| perr(format!("expected {{\"relation\": id, …}}: {e}")))?;
        let mut names = vec![String::new(); map.len()];
        for (name, &id) in &map {
            let slot = names.get_mut(id).ok_or_else(|| {
                perr(format!("relation '{name}' has id {id}; ids must run 0..{} without gaps", map.len()))
            })?;
            if !slot.is_empty() {
                return Err(perr(format!("id {id} is given to both '{slot}' and '{name}'")));
            }
            *slot = name.clone();
        }
        Self::from_names(file, names)
    }

    /// From names in id order.
    pub fn from_names(file: &str, names: Vec<String>) -> Result<Self> {
        if names.len() < 2 {
            return Err(Error::from(chorus_core::FileError::Parse {
                file: file.into(),
                line: 1,
                reason: "fewer than 2 relations".into(),
            }));
        }
        let na = ["NA", "no_relation", "Other"].iter().find_map(|n| names.iter().position(|x| x == n));
        Ok(Self { names, na })
    }

    /// The relations of a data set in first-seen order with NA first (when no `rel2id.json` is given).
    pub fn from_examples(file: &str, data: &[Example]) -> Result<Self> {
        let mut names: Vec<String> = Vec::new();
        for e in data {
            if !names.contains(&e.relation) {
                names.push(e.relation.clone());
            }
        }
        if let Some(i) = names.iter().position(|n| ["NA", "no_relation", "Other"].contains(&n.as_str())) {
            let na = names.remove(i);
            names.insert(0, na);
        }
        Self::from_names(file, names)
    }

    /// The id of each example's relation; an unknown relation is an error naming the example.
    pub fn ids(&self, data: &[Example]) -> Result<Vec<usize>> {
        data.iter()
            .map(|e| {
                self.names.iter().position(|n| *n == e.relation).ok_or_else(|| Error::Example {
                    id: e.id.clone(),
                    reason: format!("relation '{}' is not one of the {} relations", e.relation, self.names.len()),
                })
            })
            .collect()
    }

    /// Number of relations.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tacred_spans_in_both_conventions() {
        let a = parse_tacred(
            "a.json",
            r#"[{"id": "x", "token": ["Steve", "Jobs", "founded", "Apple"], "subj_start": 0, "subj_end": 1, "obj_start": 3, "obj_end": 3, "relation": "org:founded_by"}]"#,
        )
        .unwrap();
        assert_eq!((a[0].subj, a[0].obj, a[0].subject().as_str()), ((0, 2), (3, 4), "Steve Jobs"));
        let b = parse_tacred(
            "b.txt",
            "{\"token\": [\"Apple\", \"hired\", \"Tim\"], \"h\": {\"pos\": [2, 3]}, \"t\": {\"pos\": [0, 1]}, \"relation\": \"per:employee_of\"}\n",
        )
        .unwrap();
        assert_eq!((b[0].id.as_str(), b[0].object().as_str()), ("1", "Apple"));
        let e = parse_tacred(
            "c.txt",
            "{\"token\": [\"a\"], \"h\": {\"pos\": [0, 1]}, \"t\": {\"pos\": [0, 2]}, \"relation\": \"r\"}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.txt:1:") && e.contains("object span 0..2"), "{e}");
    }

    #[test]
    fn semeval_markers_become_spans() {
        let t = "1\t\"The <e1>author</e1> of a keygen uses a <e2>disassembler</e2> to look at the raw assembly code.\"\nInstrument-Agency(e2,e1)\nComment:\n\n";
        let v = parse_semeval("s.txt", t).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].subject().as_str(), v[0].object().as_str()), ("author", "disassembler"));
        assert_eq!(v[0].relation, "Instrument-Agency(e2,e1)");
        let e = parse_semeval("s.txt", "2\t\"no markers here\"\nOther\n").unwrap_err().to_string();
        assert!(e.starts_with("s.txt:1:"), "{e}");
    }

    #[test]
    fn k_shot_takes_k_per_relation_deterministically() {
        let data: Vec<Example> = (0..30)
            .map(|i| Example {
                id: i.to_string(),
                tokens: vec!["a".into(), "b".into()],
                subj: (0, 1),
                obj: (1, 2),
                relation: ["r1", "r2", "NA"][i % 3].into(),
            })
            .collect();
        let a = k_shot(&data, 4, 1, true);
        assert_eq!(a.len(), 12);
        assert_eq!(a, k_shot(&data, 4, 1, true));
        assert_ne!(k_shot(&data, 4, 2, true), k_shot(&data, 4, 2, false));
        assert_eq!(k_shot(&data, 100, 3, false).len(), 30, "min(k, available)");
    }

    #[test]
    fn free_text_examples_and_relations() {
        assert_eq!(words("Steve Jobs founded Apple."), ["Steve", "Jobs", "founded", "Apple", "."]);
        assert_eq!(words("(Apple) ..."), ["(", "Apple", ")", "..."]);
        let e =
            Example::from_text("q", "Apple hired Tim Cook, and Tim Cook led Apple.", "Tim Cook", "Apple", "r").unwrap();
        assert_eq!((e.subj, e.obj), ((2, 4), (0, 1)));
        let err = Example::from_text("q", "Apple hired Tim.", "Steve", "Apple", "r").unwrap_err().to_string();
        assert!(err.contains("example q") && err.contains("subject 'Steve' does not occur"), "{err}");
        let err = Example::from_text("q", "Apple hired Tim.", "Apple", "Apple", "r").unwrap_err().to_string();
        assert!(err.contains("object 'Apple'"), "{err}");
        let r = Relations::parse("rel2id.json", r#"{"no_relation": 1, "per:title": 0}"#).unwrap();
        assert_eq!((r.names.clone(), r.na), (vec!["per:title".to_string(), "no_relation".into()], Some(1)));
        let err = Relations::parse("rel2id.json", r#"{"a": 0, "b": 2}"#).unwrap_err().to_string();
        assert!(err.contains("'b' has id 2"), "{err}");
        let err = r.ids(&[e]).unwrap_err().to_string();
        assert!(err.contains("relation 'r' is not one of"), "{err}");
    }
}
