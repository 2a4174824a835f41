//! The style-transfer corpus from the real Rotten Tomatoes file (`scripts/fetch-models rotten-tomatoes`): the
//! reader keeps the 7 403 fresh and 5 405 rotten snippets, the split by film is fixed and disjoint, and the
//! training vocabulary (words seen twice) covers about 90 % of held-out words.

use chorus_style::data::{Style, read_rotten_tomatoes, split};
use chorus_style::vocab::{UNK, Vocab};

#[test]
fn rotten_tomatoes_reads_splits_and_builds_a_vocabulary() {
    let path = crate::common::models_dir().with_file_name("data").join("rotten_tomatoes_corpus_full.csv.bz2");
    assert!(path.exists(), "{} is missing: run `scripts/fetch-models rotten-tomatoes`", path.display());
    let all = read_rotten_tomatoes(&path).unwrap();
    let pos = all.iter().filter(|s| s.style == Style::Positive).count();
    assert_eq!((all.len(), pos), (12_808, 7_403));
    let s = split(&all, 60);
    let n = s.train.len() + s.dev.len() + s.test.len();
    assert!(n > 12_000 && n <= 12_808, "{n} after dropping long and duplicate snippets");
    for (name, part, lo, hi) in [("dev", &s.dev, 0.05, 0.15), ("test", &s.test, 0.05, 0.15)] {
        let f = part.len() as f64 / n as f64;
        assert!((lo..hi).contains(&f), "{name}: {f}");
        let p = part.iter().filter(|x| x.style == Style::Positive).count() as f64 / part.len() as f64;
        assert!((0.45..0.70).contains(&p), "{name}: both styles present ({p})");
    }
    let films = |v: &[chorus_style::data::Sentence]| {
        v.iter().map(|x| x.movie.clone()).collect::<std::collections::HashSet<_>>()
    };
    assert!(films(&s.train).is_disjoint(&films(&s.test)));
    // Words seen twice: about 9.6k words (the reference's Yelp vocabulary has 9.3k); the split is by film, so
    // held-out names are often unseen (measured: 9.6 % <UNK> at count ≥ 2, 15 % at the reference's ≥ 5).
    let vocab = Vocab::build(s.train.iter().map(|x| x.words.as_slice()), 2);
    assert!((8_000..12_000).contains(&vocab.len()), "{}", vocab.len());
    let (mut unk, mut total) = (0usize, 0usize);
    for x in &s.test {
        let (ids, u) = vocab.encode(&x.words);
        assert!(ids.iter().all(|&i| (i as usize) < vocab.len()));
        unk += u;
        total += ids.len();
    }
    let rate = unk as f64 / total as f64;
    assert!(rate < 0.12, "held-out <UNK> rate {rate}");
    assert_eq!(UNK, 1);
}
