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
        let all: Vec<Json> = serde_json::from_str(text).map_err(|e| Error::Parse {
            file: file.into(),
            line: e.line(),
            reason: e.to_string(),
        })?;
        all.into_iter().enumerate().map(|(i, v)| (i + 1, v)).collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map(|v| (i + 1, v)).map_err(|e| Error::Parse {
                    file: file.into(),
                    line: i + 1,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_>>()?
    };
    records
        .into_iter()
        .map(|(n, v)| {
            let perr = |reason: &str| Error::Parse { file: file.into(), line: n, reason: reason.into() };
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
        let perr = |line: usize, reason: String| Error::Parse { file: file.into(), line, reason };
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
}
