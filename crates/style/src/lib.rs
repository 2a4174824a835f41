//! Chorus text style transfer (gradient-guided unsupervised TST via contrastive learning, spec
//! `mvre_fit5_tst.md` §3): the two-style corpus (Rotten Tomatoes fresh/rotten snippets) with a fixed split, the
//! word-level vocabulary with the reference's special ids, BLEU with sacrebleu's and nltk's semantics, and the
//! autoencoder whose latent is edited, the siamese style net, training, latent editing and the evaluation
//! (a separate classifier, a language model's perplexity, BLEU).

pub mod ae;
pub mod bleu;
pub mod data;
pub mod error;
pub mod eval;
pub mod restyle;
pub mod siamese;
pub mod train;
pub mod vocab;

pub use error::{Error, Result};
