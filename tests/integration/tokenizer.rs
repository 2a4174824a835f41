//! Tokenizers built from GGUF metadata alone must give transformers' ids, and chat templates rendered
//! with minijinja must give transformers' text.

use chorus_models::{ChatMessage, ModelFiles};

fn check(key: &str) {
    let files = ModelFiles::open(&crate::common::model_path(key)).expect("open");
    let tk = &files.tokenizer;
    let g = crate::common::golden(key);
    for t in &g.tokenize {
        assert_eq!(tk.encode(&t.text, false).unwrap(), t.ids, "{key}: {:?}", t.text);
        // Decoding the ids gives the text back (byte-level BPE is lossless).
        assert_eq!(tk.decode(&t.ids, false).unwrap(), t.text, "{key}: decode {:?}", t.text);
    }
    for c in &g.cases {
        if c.chat {
            let rendered = tk.apply_chat_template(&[ChatMessage::user(c.prompt.clone())], true).unwrap();
            assert_eq!(rendered, c.rendered, "{key}: chat template");
        }
        assert_eq!(tk.encode(&c.rendered, false).unwrap(), c.ids, "{key}: {:?}", c.rendered);
    }
}

#[test]
fn smollm2_tokenizer_matches_transformers() {
    check("smollm2");
}

#[test]
fn qwen_tokenizer_matches_transformers() {
    check("qwen0.5b");
}
