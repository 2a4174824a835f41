//! The small hand-written relation set built into the binary (`crates/extract/data`, written by
//! `make_re_set.py`): 240/80/120 sentences over 8 TACRED relations and no_relation, with disjoint people
//! and organisations across splits, its `rel2id.json`, and one template sentence per relation for the
//! dynamic-initialisation probe.

use crate::data::{Example, Relations, parse_examples};
use crate::error::Result;
use crate::init::{Template, parse_templates};

/// `train.txt`.
pub const TRAIN: &str = include_str!("../data/train.txt");
/// `dev.txt`.
pub const DEV: &str = include_str!("../data/dev.txt");
/// `test.txt`.
pub const TEST: &str = include_str!("../data/test.txt");
/// `rel2id.json`.
pub const REL2ID: &str = include_str!("../data/rel2id.json");
/// `templates.txt` (the reference's `template/*.txt` format).
pub const TEMPLATES: &str = include_str!("../data/templates.txt");

/// The three splits, parsed.
pub fn splits() -> Result<(Vec<Example>, Vec<Example>, Vec<Example>)> {
    Ok((
        parse_examples("toy/train.txt", TRAIN)?,
        parse_examples("toy/dev.txt", DEV)?,
        parse_examples("toy/test.txt", TEST)?,
    ))
}

/// The relations in `rel2id.json` order.
pub fn relations() -> Result<Relations> {
    Relations::parse("toy/rel2id.json", REL2ID)
}

/// The probe templates.
pub fn templates() -> Result<Vec<Template>> {
    parse_templates("toy/templates.txt", TEMPLATES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_set_is_whole() {
        let (train, dev, test) = splits().unwrap();
        assert_eq!((train.len(), dev.len(), test.len()), (240, 80, 120));
        let rel = relations().unwrap();
        assert_eq!((rel.len(), rel.na), (9, Some(0)));
        for set in [&train, &dev, &test] {
            let ids = rel.ids(set).unwrap();
            assert!((0..9).all(|r| ids.contains(&r)), "every relation in every split");
        }
        let t = templates().unwrap();
        assert!(rel.names.iter().all(|r| t.iter().any(|x| &x.relation == r)));
    }
}
