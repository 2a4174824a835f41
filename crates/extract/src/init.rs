//! Dynamic initialisation of the virtual relation words (spec §1.7): each `[class{y}_{j}]` row starts as the
//! mean of the embeddings of the relation's label words and, with a fill-mask probe, of the masked LM's top-1
//! word at mask j of the relation's template sentence. Without an MLM head (MiniLM) the probe is meaningless,
//! so `auto` falls back to the label words alone (the reference's behaviour without `--pipeline_init`).

use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_core::sampling::{Rng, argmax};
use chorus_models::bert::Bert;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::data::Relations;
use crate::error::{Error, Result};
use crate::template::label_words;

/// How the virtual words start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// `probe` when the model has a trained MLM head and templates are given, `label-words` otherwise.
    #[default]
    Auto,
    /// The reference (`--pipeline_init`): mean of the probe's top-1 word at mask j and the label words.
    Probe,
    /// Mean of the label words for every view.
    LabelWords,
    /// N(0, 0.02) rows (the "−DI" ablation).
    Random,
}

/// One line of the reference's `template/*.txt`: a hand-written sentence describing the relation with
/// placeholder head and tail names.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Relation name.
    pub relation: String,
    /// The sentence (its `token` list joined by spaces).
    pub sentence: String,
    /// Head placeholder (`h.name`).
    pub head: String,
    /// Tail placeholder (`t.name`).
    pub tail: String,
}

/// Parses template lines (`{"token": [...], "h": {"name": …}, "t": {"name": …}, "relation": …}` per line).
pub fn parse_templates(file: &str, text: &str) -> Result<Vec<Template>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let perr =
                |reason: String| Error::from(chorus_core::FileError::Parse { file: file.into(), line: i + 1, reason });
            let v: Json = serde_json::from_str(l).map_err(|e| perr(e.to_string()))?;
            let s =
                |path: &[&str]| path.iter().try_fold(&v, |v, k| v.get(k)).and_then(Json::as_str).map(str::to_string);
            let sentence = v
                .get("token")
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).collect::<Vec<_>>().join(" "))
                .ok_or_else(|| perr("no 'token' array".into()))?;
            Ok(Template {
                relation: s(&["relation"]).ok_or_else(|| perr("no 'relation'".into()))?,
                sentence,
                head: s(&["h", "name"]).ok_or_else(|| perr("no 'h.name'".into()))?,
                tail: s(&["t", "name"]).ok_or_else(|| perr("no 't.name'".into()))?,
            })
        })
        .collect()
}

/// The token ids of each relation's label words (no special tokens), right-padded with id 0 to a common
/// length when `pad` (the reference pads with 0 and averages the pad rows too).
pub fn label_ids(tok: &tokenizers::Tokenizer, relations: &Relations, pad: bool) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(relations.len());
    for r in &relations.names {
        let words = label_words(r);
        let enc = tok.encode(words.as_str(), false).map_err(|e| Error::config("tokenizer", e.to_string()))?;
        if enc.get_ids().is_empty() {
            return Err(Error::config(format!("relation '{r}'"), "its label words tokenize to nothing"));
        }
        out.push(enc.get_ids().to_vec());
    }
    if pad {
        let n = out.iter().map(Vec::len).max().unwrap_or(0);
        out.iter_mut().for_each(|v| v.resize(n, 0));
    }
    Ok(out)
}

/// The probe (spec §1.7.3): `sentence + head + " " + "<mask> "×m + tail` through the masked LM; the top-1
/// vocabulary id at each mask. The reference re-encodes the decoded top-1 string and keeps its first piece,
/// which is the same id for a whole-word token; the id is used directly here.
pub fn probe(
    bert: &Bert,
    tok: &tokenizers::Tokenizer,
    mask: &str,
    t: &Template,
    m: usize,
    dev: &Device,
) -> Result<Vec<u32>> {
    let text = format!("{}{} {}{}", t.sentence, t.head, format!("{mask} ").repeat(m), t.tail);
    let enc = tok.encode(text.as_str(), true).map_err(|e| Error::config("tokenizer", e.to_string()))?;
    let ids = enc.get_ids().to_vec();
    let mask_id = tok.token_to_id(mask).ok_or_else(|| Error::config("tokenizer", format!("no {mask} token")))?;
    let pos = crate::template::mask_positions(&format!("template of {}", t.relation), &ids, mask_id, m)?;
    let rows = vec![ids];
    bert.check_inputs(&rows)?;
    let positions = bert.position_ids(&rows);
    let n = rows[0].len();
    let int = |v: &[u32]| {
        Tensor::<2, Int>::from_data(TensorData::new(v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>(), [1, n]), dev)
    };
    let hidden = bert.hidden(int(&rows[0]), int(&positions[0]), Tensor::ones([1, n], dev));
    let logits = bert.mlm_logits(hidden);
    let v = bert.config().vocab_size;
    let flat = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::config("device", format!("{e:?}")))?;
    Ok(pos.iter().map(|&p| argmax(&flat[p * v..(p + 1) * v]) as u32).collect())
}

/// Which rows each virtual word averages: `sources[y][j]`.
pub fn sources(label: &[Vec<u32>], probes: &[Option<Vec<u32>>], m: usize) -> Vec<Vec<Vec<u32>>> {
    label
        .iter()
        .zip(probes)
        .map(|(words, probe)| {
            (0..m)
                .map(|j| match probe {
                    Some(p) => std::iter::once(p[j]).chain(words.iter().copied()).collect(),
                    None => words.clone(),
                })
                .collect()
        })
        .collect()
}

/// The rows `[R·m, H]` (relation-major: `[class{y}_{j}]` at `y·m + j`) as the mean of each source list's rows
/// of the embedding `table` (`[V, H]` row-major).
pub fn mean_rows(table: &[f32], h: usize, sources: &[Vec<Vec<u32>>]) -> Result<Vec<f32>> {
    let v = table.len() / h.max(1);
    let mut out = Vec::new();
    for (y, per_view) in sources.iter().enumerate() {
        for ids in per_view {
            let mut acc = vec![0f64; h];
            for &id in ids {
                let id = id as usize;
                if id >= v {
                    return Err(Error::config(
                        format!("relation {y}"),
                        format!("token id {id} is outside the {v}-row table"),
                    ));
                }
                acc.iter_mut().zip(&table[id * h..(id + 1) * h]).for_each(|(a, &x)| *a += f64::from(x));
            }
            let n = ids.len().max(1) as f64;
            out.extend(acc.iter().map(|a| (a / n) as f32));
        }
    }
    Ok(out)
}

/// `n·h` values drawn N(0, std) (transformers' `_init_weights` for new rows).
pub fn normal_rows(n: usize, h: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * h)
        .map(|_| {
            // Box–Muller; 1 − u keeps the logarithm finite.
            let (u, w) = (1.0 - rng.next_f64(), rng.next_f64());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos() * std) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_the_means_of_their_sources() {
        // V = 4, H = 2.
        let table = [0.0f32, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let label = vec![vec![1u32, 2], vec![3, 0]];
        let probes = vec![Some(vec![3u32, 0]), None];
        let s = sources(&label, &probes, 2);
        assert_eq!(s[0], vec![vec![3, 1, 2], vec![0, 1, 2]]);
        assert_eq!(s[1], vec![vec![3, 0], vec![3, 0]]);
        let r = mean_rows(&table, 2, &s).unwrap();
        assert_eq!(r, vec![3.0, 4.0, 4.0 / 3.0, 2.0, 2.5, 3.0, 2.5, 3.0]);
        let e = mean_rows(&table, 2, &[vec![vec![9]]]).unwrap_err().to_string();
        assert!(e.contains("token id 9"), "{e}");
        let n = normal_rows(1000, 4, 0.02, 1);
        let sd = (n.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / n.len() as f64).sqrt();
        assert!((sd - 0.02).abs() < 0.002, "{sd}");
    }

    #[test]
    fn templates_parse_and_name_bad_lines() {
        let t = parse_templates(
            "t.txt",
            "{\"token\": [\"subject was founded by object.\"], \"h\": {\"name\": \"subject\"}, \"t\": {\"name\": \"object\"}, \"relation\": \"org:founded_by\"}\n",
        )
        .unwrap();
        assert_eq!(t[0].sentence, "subject was founded by object.");
        let e = parse_templates("t.txt", "\n{\"token\": []}\n").unwrap_err().to_string();
        assert!(e.starts_with("t.txt:2:"), "{e}");
    }
}
