//! IR metrics with the reference's and trec_eval's semantics: MRR@k averaged over the queries of the run
//! (FiT5's `get_mrr`), NDCG@k with graded gains and log2(rank + 1) discounts over the run's judged
//! queries (trec_eval `ndcg_cut`). Results are ranked in [`crate::trec::trec_order`] first.

use crate::trec::{Qrels, Run, trec_order};

/// Mean reciprocal rank of the first relevant (relevance ≥ 1) document within the top `k`, over every
/// query of `run` (a query without judgements counts 0, as in the reference).
pub fn mrr_at(run: &Run, qrels: &Qrels, k: usize) -> f64 {
    if run.is_empty() {
        return 0.0;
    }
    let total: f64 = run
        .iter()
        .map(|(q, docs)| {
            let mut docs = docs.clone();
            trec_order(&mut docs);
            let rel = qrels.get(q);
            docs.iter()
                .take(k)
                .position(|(d, _)| rel.and_then(|r| r.get(d)).is_some_and(|&g| g >= 1))
                .map_or(0.0, |p| 1.0 / (p + 1) as f64)
        })
        .sum();
    total / run.len() as f64
}

/// NDCG@k: DCG = Σ gain / log2(rank + 1) over the top `k` (gain = the graded relevance, negatives as 0),
/// divided by the ideal DCG of the query's qrels; averaged over the queries present in both the run and
/// the qrels (trec_eval's default). Queries without a positive judgement score 0.
pub fn ndcg_at(run: &Run, qrels: &Qrels, k: usize) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for (q, docs) in run {
        let Some(rel) = qrels.get(q) else { continue };
        n += 1;
        let mut docs = docs.clone();
        trec_order(&mut docs);
        let dcg: f64 = docs
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, (d, _))| rel.get(d).copied().unwrap_or(0).max(0) as f64 / ((i + 2) as f64).log2())
            .sum();
        let mut ideal: Vec<i32> = rel.values().copied().filter(|&g| g > 0).collect();
        ideal.sort_unstable_by(|a, b| b.cmp(a));
        let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, &g)| g as f64 / ((i + 2) as f64).log2()).sum();
        if idcg > 0.0 {
            sum += dcg / idcg;
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rows: &[(&str, &[(&str, f64)])]) -> Run {
        rows.iter().map(|(q, d)| (q.to_string(), d.iter().map(|(d, s)| (d.to_string(), *s)).collect())).collect()
    }

    fn qrels(rows: &[(&str, &str, i32)]) -> Qrels {
        let mut q: Qrels = Qrels::new();
        for (a, b, g) in rows {
            q.entry(a.to_string()).or_default().insert(b.to_string(), *g);
        }
        q
    }

    /// Hand-computed: q1's first relevant at rank 2 (1/2), q2's at rank 1 (1), q3 none in the top 2 (0);
    /// mean = 1.5 / 3 = 0.5.
    #[test]
    fn mrr_by_hand() {
        let r = run(&[
            ("q1", &[("a", 3.0), ("b", 2.0), ("c", 1.0)]),
            ("q2", &[("x", 1.0), ("y", 0.5)]),
            ("q3", &[("m", 2.0), ("n", 1.0), ("o", 0.5)]),
        ]);
        let j = qrels(&[("q1", "b", 1), ("q1", "c", 1), ("q2", "x", 2), ("q3", "o", 1), ("q3", "m", 0)]);
        assert!((mrr_at(&r, &j, 2) - 0.5).abs() < 1e-12);
        // At depth 3 q3's relevant document at rank 3 counts: (0.5 + 1 + 1/3) / 3.
        assert!((mrr_at(&r, &j, 3) - (0.5 + 1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        // Ties: equal scores rank the larger doc id first (trec_eval), so "b" precedes "a".
        let t = run(&[("q1", &[("a", 1.0), ("b", 1.0)])]);
        assert!((mrr_at(&t, &j, 10) - 1.0).abs() < 1e-12);
    }

    /// Hand-computed: gains [0, 2, 1] at ranks 1..3 → DCG = 2/log2(3) + 1/2 = 1.761859507;
    /// ideal [2, 1] → 2 + 1/log2(3) = 2.630929754; NDCG = 0.669671816.
    #[test]
    fn ndcg_by_hand() {
        let r = run(&[("q", &[("a", 3.0), ("b", 2.0), ("c", 1.0)]), ("unjudged", &[("z", 1.0)])]);
        let j = qrels(&[("q", "b", 2), ("q", "c", 1), ("q", "a", 0)]);
        let want = (2.0 / 3f64.log2() + 0.5) / (2.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&r, &j, 10) - want).abs() < 1e-12, "{}", ndcg_at(&r, &j, 10));
        assert!((want - 0.669_671_816).abs() < 1e-9);
        // Cut at 1: DCG 0 → 0.
        assert_eq!(ndcg_at(&r, &j, 1), 0.0);
        // Perfect order → 1.
        let p = run(&[("q", &[("b", 3.0), ("c", 2.0), ("a", 1.0)])]);
        assert!((ndcg_at(&p, &j, 10) - 1.0).abs() < 1e-12);
    }
}
