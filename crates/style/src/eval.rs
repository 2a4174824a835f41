//! Evaluation of style transfer, with judges independent of the model being judged: a separately trained
//! sentiment classifier (a fastText-style bag of word uni- and bigrams, logistic regression — the reference
//! scored with fastText) for transfer accuracy, an interpolated Kneser-Ney trigram language model trained on the
//! same training split for perplexity (fluency), and BLEU against the source (content) with sacrebleu's corpus
//! semantics and nltk's smoothed sentence BLEU. Both judges are plain Rust, deterministic, and trained in
//! seconds from the training split, so `chorus restyle eval` needs nothing but the corpus.

use std::collections::HashMap;

use chorus_core::sampling::Rng;
use serde::{Deserialize, Serialize};

use crate::bleu;
use crate::data::{Sentence, Style};

const BUCKETS: usize = 1 << 18;

fn features(words: &[String]) -> Vec<usize> {
    let h = |s: &str| (crate::data::fnv1a(s) as usize) % BUCKETS;
    let mut f: Vec<usize> = words.iter().map(|w| h(w)).collect();
    f.extend(words.windows(2).map(|p| h(&format!("{} {}", p[0], p[1]))));
    f.push(h("<bias>"));
    f
}

/// The transfer-accuracy judge: logistic regression over hashed word uni- and bigrams.
#[derive(Debug, Clone)]
pub struct Classifier {
    w: Vec<f32>,
}

impl Classifier {
    /// Trains with AdaGrad (lr 0.5, 10 epochs, L2 1e-6) on shuffled sentences (seeded).
    pub fn train(train: &[Sentence], seed: u64) -> Self {
        let mut w = vec![0f32; BUCKETS];
        let mut g2 = vec![1e-8f32; BUCKETS];
        let data: Vec<(Vec<usize>, f32)> = train.iter().map(|s| (features(&s.words), s.style.label() as f32)).collect();
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = Rng::new(seed);
        for _ in 0..10 {
            crate::train::shuffle(&mut order, &mut rng);
            for &i in &order {
                let (f, y) = &data[i];
                let p = sigmoid(f.iter().map(|&k| w[k]).sum());
                let g = p - y;
                for &k in f {
                    let gk = g + 1e-6 * w[k];
                    g2[k] += gk * gk;
                    w[k] -= 0.5 * gk / g2[k].sqrt();
                }
            }
        }
        Self { w }
    }

    /// P(positive | words).
    pub fn positive(&self, words: &[String]) -> f32 {
        sigmoid(features(words).iter().map(|&k| self.w[k]).sum())
    }

    /// The predicted style.
    pub fn predict(&self, words: &[String]) -> Style {
        if self.positive(words) >= 0.5 { Style::Positive } else { Style::Negative }
    }

    /// Accuracy on labelled sentences.
    pub fn accuracy(&self, data: &[Sentence]) -> f64 {
        let right = data.iter().filter(|s| self.predict(&s.words) == s.style).count();
        right as f64 / data.len().max(1) as f64
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The fluency judge: an interpolated Kneser-Ney trigram model (discount 0.75) over words; words seen fewer
/// than twice in training read as `<unk>`, sentences are padded with two `<s>` and end with `</s>`.
#[derive(Debug, Clone)]
pub struct KneserNey {
    vocab: HashMap<String, u32>,
    tri: HashMap<(u32, u32, u32), u32>,
    bi_ctx: HashMap<(u32, u32), (u32, u32)>,
    cont_bi: HashMap<(u32, u32), u32>,
    cont_mid: HashMap<u32, (u32, u32)>,
    cont_uni: HashMap<u32, u32>,
    cont_total: u32,
    size: usize,
}

const D: f64 = 0.75;
const UNK_ID: u32 = 0;
const BOS_ID: u32 = 1;
const EOS_ID: u32 = 2;

impl KneserNey {
    /// Counts the training sentences.
    pub fn train(train: &[Sentence]) -> Self {
        let mut freq: HashMap<&str, usize> = HashMap::new();
        for s in train {
            for w in &s.words {
                *freq.entry(w.as_str()).or_default() += 1;
            }
        }
        let mut words: Vec<&str> = freq.iter().filter(|(_, c)| **c >= 2).map(|(w, _)| *w).collect();
        words.sort_unstable();
        let vocab: HashMap<String, u32> =
            words.iter().enumerate().map(|(i, w)| (w.to_string(), i as u32 + 3)).collect();
        let mut tri: HashMap<(u32, u32, u32), u32> = HashMap::new();
        for s in train {
            let ids = Self::ids(&vocab, &s.words);
            for t in ids.windows(3) {
                *tri.entry((t[0], t[1], t[2])).or_default() += 1;
            }
        }
        let mut bi_ctx: HashMap<(u32, u32), (u32, u32)> = HashMap::new();
        let mut cont_bi: HashMap<(u32, u32), u32> = HashMap::new();
        for (&(u, v, w), &c) in &tri {
            let e = bi_ctx.entry((u, v)).or_default();
            e.0 += c;
            e.1 += 1;
            *cont_bi.entry((v, w)).or_default() += 1;
        }
        let mut cont_mid: HashMap<u32, (u32, u32)> = HashMap::new();
        let mut cont_uni: HashMap<u32, u32> = HashMap::new();
        for (&(v, w), &c) in &cont_bi {
            let e = cont_mid.entry(v).or_default();
            e.0 += c;
            e.1 += 1;
            *cont_uni.entry(w).or_default() += 1;
        }
        let cont_total = cont_uni.values().sum();
        Self { size: vocab.len() + 2, vocab, tri, bi_ctx, cont_bi, cont_mid, cont_uni, cont_total }
    }

    fn ids(vocab: &HashMap<String, u32>, words: &[String]) -> Vec<u32> {
        let mut v = vec![BOS_ID, BOS_ID];
        v.extend(words.iter().map(|w| vocab.get(w).copied().unwrap_or(UNK_ID)));
        v.push(EOS_ID);
        v
    }

    fn p_uni(&self, w: u32) -> f64 {
        let total = f64::from(self.cont_total.max(1));
        let c = f64::from(self.cont_uni.get(&w).copied().unwrap_or(0));
        let types = self.cont_uni.len() as f64;
        (c - D).max(0.0) / total + D * types / total / self.size as f64
    }

    fn p_bi(&self, v: u32, w: u32) -> f64 {
        match self.cont_mid.get(&v) {
            Some(&(n, types)) if n > 0 => {
                let c = f64::from(self.cont_bi.get(&(v, w)).copied().unwrap_or(0));
                (c - D).max(0.0) / f64::from(n) + D * f64::from(types) / f64::from(n) * self.p_uni(w)
            }
            _ => self.p_uni(w),
        }
    }

    fn p(&self, u: u32, v: u32, w: u32) -> f64 {
        match self.bi_ctx.get(&(u, v)) {
            Some(&(n, types)) if n > 0 => {
                let c = f64::from(self.tri.get(&(u, v, w)).copied().unwrap_or(0));
                (c - D).max(0.0) / f64::from(n) + D * f64::from(types) / f64::from(n) * self.p_bi(v, w)
            }
            _ => self.p_bi(v, w),
        }
    }

    /// Σ log p and the number of predicted tokens (words + `</s>`) of one sentence.
    pub fn log_prob(&self, words: &[String]) -> (f64, usize) {
        let ids = Self::ids(&self.vocab, words);
        let lp = ids.windows(3).map(|t| self.p(t[0], t[1], t[2]).ln()).sum();
        (lp, ids.len() - 2)
    }

    /// Corpus perplexity `exp(−Σ log p / tokens)`.
    pub fn perplexity<'a>(&self, sentences: impl IntoIterator<Item = &'a [String]>) -> f64 {
        let (mut lp, mut n) = (0.0, 0usize);
        for s in sentences {
            let (a, b) = self.log_prob(s);
            lp += a;
            n += b;
        }
        (-lp / n.max(1) as f64).exp()
    }
}

/// One row of the paper-style table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What produced the outputs.
    pub system: String,
    /// Sentences scored.
    pub sentences: usize,
    /// Share of outputs the classifier assigns to the target style.
    pub accuracy: f64,
    /// sacrebleu corpus BLEU of the outputs against their sources (content preservation).
    pub bleu: f64,
    /// Mean nltk sentence BLEU (method1) against the sources, ×100 (the reference's self-BLEU).
    pub self_bleu: f64,
    /// Perplexity of the outputs under the Kneser-Ney model.
    pub perplexity: f64,
    /// Geometric mean of accuracy (%) and BLEU.
    pub g_score: f64,
}

/// Scores outputs against their sources and target styles.
pub fn score(
    system: &str,
    sources: &[String],
    outputs: &[String],
    to: &[Style],
    clf: &Classifier,
    lm: &KneserNey,
) -> Row {
    let n = outputs.len();
    let toks: Vec<Vec<String>> = outputs.iter().map(|o| o.split_whitespace().map(String::from).collect()).collect();
    let right = toks.iter().zip(to).filter(|(w, s)| clf.predict(w) == **s).count();
    let hyps: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let refs: Vec<Vec<&str>> = vec![sources.iter().map(String::as_str).collect()];
    let corpus = bleu::corpus_bleu(&hyps, &refs);
    let sent: f64 = toks
        .iter()
        .zip(sources)
        .map(|(h, s)| {
            let r: Vec<String> = s.split_whitespace().map(String::from).collect();
            bleu::nltk_sentence_bleu(h, &[r])
        })
        .sum::<f64>()
        / n.max(1) as f64
        * 100.0;
    let accuracy = right as f64 / n.max(1) as f64;
    let perplexity = lm.perplexity(toks.iter().map(Vec::as_slice));
    Row {
        system: system.into(),
        sentences: n,
        accuracy,
        bleu: corpus,
        self_bleu: sent,
        perplexity,
        g_score: (accuracy * 100.0 * corpus.max(0.0)).sqrt(),
    }
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from("| system | n | ACC % | BLEU | self-BLEU | PPL | G |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.1} |\n",
            r.system,
            r.sentences,
            r.accuracy * 100.0,
            r.bleu,
            r.self_bleu,
            r.perplexity,
            r.g_score
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str, style: Style) -> Sentence {
        Sentence { words: t.split(' ').map(String::from).collect(), style, movie: String::new() }
    }

    #[test]
    fn classifier_learns_a_separable_toy_set() {
        let data = vec![
            s("a great film", Style::Positive),
            s("great fun", Style::Positive),
            s("a dull film", Style::Negative),
            s("dull and slow", Style::Negative),
        ];
        let c = Classifier::train(&data, 1);
        assert_eq!(c.accuracy(&data), 1.0);
        assert_eq!(c.predict(&["great".to_string()]), Style::Positive);
    }

    #[test]
    fn kneser_ney_is_a_distribution_and_prefers_seen_text() {
        let data = vec![
            s("the film is good", Style::Positive),
            s("the film is bad", Style::Negative),
            s("the film is good", Style::Positive),
        ];
        let lm = KneserNey::train(&data);
        // Σ_w p(w | u, v) = 1 over the model's words (+ <unk>, </s>) for a seen and an unseen context.
        for (u, v) in [(BOS_ID, BOS_ID), (3, 4), (UNK_ID, UNK_ID)] {
            let total: f64 = (0..lm.size as u32 + 1).filter(|&w| w != BOS_ID).map(|w| lm.p(u, v, w)).sum();
            assert!((total - 1.0).abs() < 1e-9, "context ({u}, {v}): {total}");
        }
        let seen = lm.perplexity([data[0].words.as_slice()]);
        let odd: Vec<String> = "is film good the".split(' ').map(String::from).collect();
        assert!(seen < lm.perplexity([odd.as_slice()]));
    }
}
