//! The family's one tokenizer: byte-level BPE trained on the zoo corpus with the tokenizers crate. Digits
//! are split one per token before BPE (so sums are learnt digit by digit, not as memorised chunks), and the
//! newline, a token of its own, ends every answer (the family's EOS).

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{
    DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder, TokenizerImpl,
};

use crate::error::{Error, Result};

/// A trained tokenizer as the loaders read it.
#[derive(Debug, Clone)]
pub struct ZooTokenizer {
    /// `tokenizer.json` contents.
    pub json: Vec<u8>,
    /// Vocabulary size (embedding rows of every family member).
    pub vocab_size: usize,
    /// Id of the newline token: end of an answer.
    pub eos: u32,
}

type Impl = TokenizerImpl<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// Trains on `texts` up to `vocab_size` tokens (the 256 byte symbols included).
pub fn train(texts: &[String], vocab_size: usize) -> Result<ZooTokenizer> {
    let err = |reason: String| Error::Config { field: "tokenizer".into(), reason };
    if vocab_size < 257 {
        return Err(err(format!("vocab_size {vocab_size} is below the 256 byte symbols plus one")));
    }
    // GPT-2's split regex (the last `true`) keeps merges inside words: without it BPE learns pieces such as
    // " = " that span a prompt's end and its answer's start, so a prompt encoded alone at inference ends in
    // token pieces the model never saw in pretraining.
    let pre = Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]);
    let mut tk: Impl = TokenizerBuilder::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(pre.into()))
        .with_decoder(Some(ByteLevelDecoder::default().into()))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    tk.train(&mut trainer, texts.iter()).map_err(|e| err(e.to_string()))?;
    let eos = tk.token_to_id("Ċ").ok_or_else(|| err("the corpus has no newline".into()))?;
    let json = tk.to_string(false).map_err(|e| err(e.to_string()))?.into_bytes();
    Ok(ZooTokenizer { json, vocab_size: tk.get_vocab_size(true), eos })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Task;

    #[test]
    fn trained_tokenizer_round_trips_splits_digits_and_loads_in_the_runtime() {
        let texts: Vec<String> = Task::ALL.iter().flat_map(|t| t.examples(7, 0, 300)).map(|e| e.text()).collect();
        let z = train(&texts, 320).unwrap();
        assert!(z.vocab_size <= 320 && z.vocab_size > 256, "{}", z.vocab_size);
        let tk = chorus_models::TextTokenizer::from_hf_parts("tokenizer.json", &z.json, None, None, None).unwrap();
        for s in ["add 352 419 = 771\n", "rev plant = tnalp\n", "date 2024-03-07 = 07/03/2024\n"] {
            let ids = tk.encode(s, false).unwrap();
            assert_eq!(tk.decode(&ids, false).unwrap(), s);
            assert_eq!(*ids.last().unwrap(), z.eos, "{s:?}: the newline is its own token");
            for d in ["352", "771", "2024"] {
                if s.contains(d) {
                    // Each digit of a number is one token.
                    let n = tk.encode(&format!(" {d}"), false).unwrap().len();
                    assert!(n >= d.len(), "{d}: {n} tokens");
                }
            }
        }
        // A prompt encoded alone followed by its answer encoded alone is the whole line encoded at once:
        // inference (prompt alone) sees the token boundary pretraining (whole lines) saw.
        for t in Task::ALL {
            for e in t.examples(9, 1, 200) {
                let mut split = tk.encode(&e.prompt, false).unwrap();
                split.extend(tk.encode(&format!("{}\n", e.answer), false).unwrap());
                assert_eq!(split, tk.encode(&e.text(), false).unwrap(), "{e:?}");
            }
        }
        assert_eq!(train(&texts, 320).unwrap().json, z.json, "training is deterministic");
        assert!(train(&texts, 100).is_err());
    }
}
