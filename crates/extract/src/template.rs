//! The MVRE prompt (spec §1.4): the sentence with `[subject_start] … [subject_end]` and `[object_start] …
//! [object_end]` markers, then `SUBJECT <mask>×m OBJECT`, then (faithful to the code) the marked sentence
//! again; or the paper figure's form `x [SEP] SUBJECT <mask>×m OBJECT`. The label words of dynamic
//! initialisation (§1.7) live here too.

use crate::data::Example;
use crate::error::{Error, Result};

/// The marker tokens, added to the tokenizer as special tokens in this order.
pub const MARKERS: [&str; 4] = ["[object_start]", "[object_end]", "[subject_start]", "[subject_end]"];

/// Which form of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// The released code: `marked prompt marked` (the sentence twice, no separator). Default, for parity.
    #[default]
    Code,
    /// The paper's figure: `marked SEP prompt`.
    Figure,
}

/// The words with markers inserted before the tokens at the span starts and ends. Unlike the reference, an
/// entity that ends at the last word still gets its end marker.
pub fn marked(ex: &Example) -> Vec<String> {
    let n = ex.tokens.len();
    let mut out = Vec::with_capacity(n + 4);
    for i in 0..=n {
        if i == ex.subj.0 {
            out.push("[subject_start]".to_string());
        }
        if i == ex.obj.0 {
            out.push("[object_start]".to_string());
        }
        if i == ex.subj.1 {
            out.push("[subject_end]".to_string());
        }
        if i == ex.obj.1 {
            out.push("[object_end]".to_string());
        }
        if i < n {
            out.push(ex.tokens[i].clone());
        }
    }
    out
}

/// The prompt text for `m` views (`mask` = the tokenizer's mask token, `sep` its separator for
/// [`Form::Figure`]). Checks the example first: a bad span is an error naming it (the reference drops it).
pub fn prompt(ex: &Example, m: usize, mask: &str, sep: &str, form: Form) -> Result<String> {
    ex.validate()?;
    if m == 0 {
        return Err(Error::Example { id: ex.id.clone(), reason: "m = 0 views".into() });
    }
    let sentence = marked(ex).join(" ");
    let masks = vec![mask; m].join(" ");
    let p = format!("{} {masks} {}", ex.subject(), ex.object());
    Ok(match form {
        Form::Code => format!("{sentence} {p} {sentence}"),
        Form::Figure => format!("{sentence} {sep} {p}"),
    })
}

/// Positions of the mask token in `ids`; exactly `m` are required (truncation must never cut the prompt).
pub fn mask_positions(id: &str, ids: &[u32], mask_id: u32, m: usize) -> Result<Vec<usize>> {
    let pos: Vec<usize> = ids.iter().enumerate().filter(|(_, t)| **t == mask_id).map(|(i, _)| i).collect();
    if pos.len() != m {
        return Err(Error::Example {
            id: id.into(),
            reason: format!(
                "{} mask tokens in the encoded prompt, expected {m} (the input was truncated or the text holds a mask)",
                pos.len()
            ),
        });
    }
    Ok(pos)
}

/// The label words of a relation name (§1.7.1): `no_relation`/`NA` → "no relation"; otherwise lower-case, cut
/// at `(`, `:` and `_` → space, `per` → `person`, `org` → `organization`.
pub fn label_words(relation: &str) -> String {
    if relation == "no_relation" || relation == "NA" {
        return "no relation".into();
    }
    let l = relation.to_lowercase();
    let l = l.split('(').next().unwrap_or("");
    let l = l.replace([':', '_'], " ");
    // The reference replaces substrings ("per" inside a word too); whole words are replaced here.
    l.split(' ')
        .map(|w| match w {
            "per" => "person",
            "org" => "organization",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex() -> Example {
        Example {
            id: "e".into(),
            tokens: "Steve Jobs founded Apple".split(' ').map(String::from).collect(),
            subj: (0, 2),
            obj: (3, 4),
            relation: "org:founded_by".into(),
        }
    }

    #[test]
    fn markers_and_masks() {
        let p = prompt(&ex(), 3, "<mask>", "</s>", Form::Code).unwrap();
        let s = "[subject_start] Steve Jobs [subject_end] founded [object_start] Apple [object_end]";
        assert_eq!(p, format!("{s} Steve Jobs <mask> <mask> <mask> Apple {s}"));
        assert_eq!(
            prompt(&ex(), 1, "<mask>", "</s>", Form::Figure).unwrap(),
            format!("{s} </s> Steve Jobs <mask> Apple")
        );
        assert_eq!(p.matches("<mask>").count(), 3);
        let mut bad = ex();
        bad.obj = (1, 3);
        let e = prompt(&bad, 3, "<mask>", "</s>", Form::Code).unwrap_err().to_string();
        assert!(e.contains("example e") && e.contains("overlap"), "{e}");
        let e = mask_positions("e", &[5, 9, 9, 1], 9, 3).unwrap_err().to_string();
        assert!(e.contains("2 mask tokens"), "{e}");
    }

    #[test]
    fn label_words_follow_the_reference() {
        assert_eq!(label_words("per:city_of_birth"), "person city of birth");
        assert_eq!(label_words("org:founded_by"), "organization founded by");
        assert_eq!(label_words("Cause-Effect(e1,e2)"), "cause-effect");
        assert_eq!(label_words("Other"), "other");
        assert_eq!(label_words("no_relation"), "no relation");
    }
}
