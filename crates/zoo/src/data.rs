//! Token batches for training: each line becomes ids plus per-position loss weights (position `p` is
//! weighted when it predicts a token that should be learnt: every token when pretraining, only the answer
//! and its newline when fine-tuning), cut or padded to a fixed length.

use burn::tensor::{Device, Int, Tensor, TensorData};
use chorus_models::TextTokenizer;

use crate::error::{Error, Result};
use crate::tasks::Example;

/// One training sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Weight of predicting `ids[p + 1]` from position `p` (same length as `ids`; the last is 0).
    pub weights: Vec<f32>,
}

fn encode(tk: &TextTokenizer, text: &str) -> Result<Vec<u32>> {
    tk.encode(text, false).map_err(|e| Error::Config { field: "tokenizer".into(), reason: e.to_string() })
}

/// A pretraining line: every next token counts.
pub fn line(tk: &TextTokenizer, text: &str) -> Result<Sequence> {
    let ids = encode(tk, text)?;
    let mut weights = vec![1.0; ids.len()];
    if let Some(w) = weights.last_mut() {
        *w = 0.0;
    }
    Ok(Sequence { ids, weights })
}

/// A fine-tuning example: prompt and answer are tokenized apart (as at inference, where the prompt is
/// encoded alone) and only the answer's tokens and the closing newline are learnt.
pub fn example(tk: &TextTokenizer, e: &Example) -> Result<Sequence> {
    let prompt = encode(tk, &e.prompt)?;
    let answer = encode(tk, &format!("{}\n", e.answer))?;
    let mut weights = vec![0.0; prompt.len() + answer.len()];
    for w in &mut weights[prompt.len().saturating_sub(1)..prompt.len() + answer.len() - 1] {
        *w = 1.0;
    }
    let mut ids = prompt;
    ids.extend(answer);
    Ok(Sequence { ids, weights })
}

/// Stacks sequences into `[B, len]` ids and weights: longer ones are cut (their last kept position gets
/// weight 0), shorter ones padded with `pad` at weight 0.
pub fn batch(seqs: &[Sequence], len: usize, pad: u32, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
    let b = seqs.len();
    let (mut ids, mut ws) = (Vec::with_capacity(b * len), Vec::with_capacity(b * len));
    for s in seqs {
        for p in 0..len {
            ids.push(s.ids.get(p).copied().unwrap_or(pad) as i64);
            ws.push(if p + 1 < len.min(s.ids.len()) { s.weights[p] } else { 0.0 });
        }
    }
    (
        Tensor::<1, Int>::from_data(TensorData::new(ids, [b * len]), device).reshape([b, len]),
        Tensor::<1>::from_data(TensorData::new(ws, [b * len]), device).reshape([b, len]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::Task;

    #[test]
    fn weights_cover_exactly_the_answer_and_padding_is_silent() {
        let texts: Vec<String> = Task::ALL.iter().flat_map(|t| t.examples(7, 0, 200)).map(|e| e.text()).collect();
        let z = crate::tokenizer::train(&texts, 300).unwrap();
        let tk = TextTokenizer::from_hf_parts("tokenizer.json", &z.json, None, None, None).unwrap();
        let e = Task::Add.examples(1, 2, 1).remove(0);
        let s = example(&tk, &e).unwrap();
        let prompt_len = tk.encode(&e.prompt, false).unwrap().len();
        // Positions prompt_len − 1 .. end − 1 predict the answer tokens and the newline.
        let learnt: Vec<u32> =
            s.weights.iter().enumerate().filter(|(_, w)| **w > 0.0).map(|(p, _)| s.ids[p + 1]).collect();
        assert_eq!(tk.decode(&learnt, false).unwrap(), format!("{}\n", e.answer));
        assert_eq!(*s.ids.last().unwrap(), z.eos);
        assert_eq!(s.ids.len() - prompt_len, learnt.len());
        let l = line(&tk, "the red fox sees the old tree.\n").unwrap();
        assert_eq!(l.weights.iter().filter(|w| **w > 0.0).count(), l.ids.len() - 1);
        let device = Device::flex();
        let (ids, w) = batch(&[s.clone(), l.clone()], s.ids.len() + 3, 0, &device);
        assert_eq!(ids.dims(), [2, s.ids.len() + 3]);
        let w = w.into_data().try_to_vec::<f32>().unwrap();
        let n = s.ids.len() + 3;
        assert!(w[s.ids.len() - 1..n].iter().all(|&x| x == 0.0), "padding and the last token carry no loss");
        let (_, cut) = batch(std::slice::from_ref(&l), 4, 0, &device);
        assert_eq!(cut.into_data().try_to_vec::<f32>().unwrap(), vec![1.0, 1.0, 1.0, 0.0]);
    }
}
