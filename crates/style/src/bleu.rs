//! BLEU with two reference implementations' semantics, checked against them on fixed cases
//! (`tests/fixtures/make_bleu_fixtures.py`): sacrebleu's corpus and sentence BLEU (mteval-v13a tokenisation,
//! `exp` smoothing; effective order for sentences) for reporting, and nltk's `sentence_bleu` with
//! `SmoothingFunction().method1` on pre-split tokens, which the style-transfer reference uses for content
//! preservation.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

const MAX_ORDER: usize = 4;

static RULES: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", " $1 "),
        (r"([^0-9])([\.,])", "$1 $2 "),
        (r"([\.,])([^0-9])", " $1 $2"),
        (r"([0-9])(-)", "$1 $2 "),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).expect("a fixed pattern compiles"), r))
    .collect()
});

/// sacrebleu's default tokeniser (`13a`, mteval-v13a.pl).
pub fn tokenize_13a(line: &str) -> String {
    let mut l = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if l.contains('&') {
        l = l.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut l = format!(" {l} ");
    for (re, rep) in RULES.iter() {
        l = re.replace_all(&l, *rep).into_owned();
    }
    l.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ngrams<T: AsRef<str>>(tokens: &[T], n: usize) -> HashMap<Vec<&str>, usize> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w.iter().map(AsRef::as_ref).collect()).or_default() += 1;
        }
    }
    m
}

/// Clipped matches and totals per order, hypothesis length and closest reference length (ties → shorter).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// Clipped n-gram matches, n = 1..4.
    pub correct: [usize; MAX_ORDER],
    /// Hypothesis n-grams, n = 1..4.
    pub total: [usize; MAX_ORDER],
    /// Hypothesis length.
    pub hyp_len: usize,
    /// Closest reference length.
    pub ref_len: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        for n in 0..MAX_ORDER {
            self.correct[n] += o.correct[n];
            self.total[n] += o.total[n];
        }
        self.hyp_len += o.hyp_len;
        self.ref_len += o.ref_len;
    }
}

/// The statistics of one tokenised hypothesis against its tokenised references.
pub fn stats<T: AsRef<str>, R: AsRef<str>>(hyp: &[T], refs: &[Vec<R>]) -> Stats {
    let mut s = Stats { hyp_len: hyp.len(), ..Stats::default() };
    s.ref_len = refs.iter().map(Vec::len).min_by_key(|&l| (l.abs_diff(hyp.len()), l)).unwrap_or(0);
    for n in 1..=MAX_ORDER {
        let h = ngrams(hyp, n);
        let mut max_ref: HashMap<Vec<&str>, usize> = HashMap::new();
        for r in refs {
            for (g, c) in ngrams(r, n) {
                let e = max_ref.entry(g).or_default();
                *e = (*e).max(c);
            }
        }
        s.total[n - 1] = h.values().sum();
        s.correct[n - 1] = h.iter().map(|(g, &c)| c.min(max_ref.get(g).copied().unwrap_or(0))).sum();
    }
    s
}

/// sacrebleu's `compute_bleu` with `exp` smoothing, on a 0–100 scale.
pub fn sacre_score(s: &Stats, effective_order: bool) -> f64 {
    // sacrebleu 2 stops early when nothing matches (its issue #141) rather than smoothing zeros.
    if s.correct.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let bp = if s.hyp_len < s.ref_len {
        if s.hyp_len > 0 { (1.0 - s.ref_len as f64 / s.hyp_len as f64).exp() } else { 0.0 }
    } else {
        1.0
    };
    let mut prec = [0.0f64; MAX_ORDER];
    let mut smooth = 1.0f64;
    let mut eff = MAX_ORDER;
    for n in 1..=MAX_ORDER {
        if s.total[n - 1] == 0 {
            break;
        }
        if effective_order {
            eff = n;
        }
        prec[n - 1] = if s.correct[n - 1] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * s.total[n - 1] as f64)
        } else {
            100.0 * s.correct[n - 1] as f64 / s.total[n - 1] as f64
        };
    }
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    bp * (prec[..eff].iter().map(|&p| log(p)).sum::<f64>() / eff as f64).exp()
}

/// sacrebleu's `corpus_bleu(hyps, [refs…])` (13a, exp smoothing): `refs[k][i]` is the k-th reference of
/// hypothesis i.
pub fn corpus_bleu(hyps: &[&str], refs: &[Vec<&str>]) -> f64 {
    let mut total = Stats::default();
    for (i, h) in hyps.iter().enumerate() {
        let ht: Vec<String> = tokenize_13a(h).split(' ').filter(|t| !t.is_empty()).map(String::from).collect();
        let rt: Vec<Vec<String>> = refs
            .iter()
            .filter_map(|r| r.get(i))
            .map(|r| tokenize_13a(r).split(' ').filter(|t| !t.is_empty()).map(String::from).collect())
            .collect();
        total += stats(&ht, &rt);
    }
    sacre_score(&total, false)
}

/// sacrebleu's `sentence_bleu(hyp, refs)` (13a, exp smoothing, effective order).
pub fn sentence_bleu(hyp: &str, refs: &[&str]) -> f64 {
    let ht: Vec<String> = tokenize_13a(hyp).split(' ').filter(|t| !t.is_empty()).map(String::from).collect();
    let rt: Vec<Vec<String>> =
        refs.iter().map(|r| tokenize_13a(r).split(' ').filter(|t| !t.is_empty()).map(String::from).collect()).collect();
    sacre_score(&stats(&ht, &rt), true)
}

/// nltk's `sentence_bleu(refs, hyp, smoothing_function=SmoothingFunction().method1)` with uniform 4-gram
/// weights, on a 0–1 scale: 0 without a unigram match, ε = 0.1 added to zero numerators.
pub fn nltk_sentence_bleu<T: AsRef<str>, R: AsRef<str>>(hyp: &[T], refs: &[Vec<R>]) -> f64 {
    let s = stats(hyp, refs);
    if s.correct[0] == 0 {
        return 0.0;
    }
    let bp = if s.hyp_len > s.ref_len {
        1.0
    } else if s.hyp_len == 0 {
        0.0
    } else {
        (1.0 - s.ref_len as f64 / s.hyp_len as f64).exp()
    };
    let sum: f64 = (0..MAX_ORDER)
        .map(|n| {
            let den = s.total[n].max(1) as f64;
            let num = if s.correct[n] == 0 { 0.1 } else { s.correct[n] as f64 };
            0.25 * (num / den).ln()
        })
        .sum();
    bp * sum.exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a_by_hand() {
        assert_eq!(tokenize_13a("Hello, world! It's 3.5-4 (ok)."), "Hello , world ! It's 3.5 - 4 ( ok ) .");
        assert_eq!(tokenize_13a("a &amp; b"), "a & b");
    }

    /// The cases of `tests/fixtures/make_bleu_fixtures.py`, scored by sacrebleu 2.6 and nltk 3.10.
    #[test]
    fn matches_sacrebleu_and_nltk() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/bleu/cases.json")).expect("fixture parses");
        let cases = doc["cases"].as_array().expect("cases");
        for c in cases {
            let hyp = c["hyp"].as_str().unwrap_or_default();
            let refs: Vec<&str> = c["refs"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
            assert_eq!(tokenize_13a(hyp), c["tok13a"].as_str().unwrap_or_default(), "13a of {hyp:?}");
            let want = c["sacre_sentence"].as_f64().unwrap_or(f64::NAN);
            assert!((sentence_bleu(hyp, &refs) - want).abs() < 1e-9, "sacrebleu sentence BLEU of {hyp:?}: {want}");
            let hw: Vec<&str> = hyp.split_whitespace().collect();
            let rw: Vec<Vec<&str>> = refs.iter().map(|r| r.split_whitespace().collect()).collect();
            let want = c["nltk_method1"].as_f64().unwrap_or(f64::NAN);
            assert!((nltk_sentence_bleu(&hw, &rw) - want).abs() < 1e-12, "nltk method1 of {hyp:?}: {want}");
        }
        let hyps: Vec<&str> = cases.iter().map(|c| c["hyp"].as_str().unwrap_or_default()).collect();
        let streams: Vec<Vec<&str>> = doc["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect())
            .collect();
        let want = doc["corpus"].as_f64().unwrap_or(f64::NAN);
        assert!((corpus_bleu(&hyps, &streams) - want).abs() < 1e-9, "corpus BLEU {want}");
    }

    #[test]
    fn identical_and_disjoint() {
        let t = "the cat sat on the mat";
        assert!((sentence_bleu(t, &[t]) - 100.0).abs() < 1e-9);
        assert!((corpus_bleu(&[t], &[vec![t]]) - 100.0).abs() < 1e-9);
        let w: Vec<&str> = t.split(' ').collect();
        assert!((nltk_sentence_bleu(&w, std::slice::from_ref(&w)) - 1.0).abs() < 1e-12);
        assert_eq!(nltk_sentence_bleu(&["x"], &[vec!["y"]]), 0.0);
    }
}
