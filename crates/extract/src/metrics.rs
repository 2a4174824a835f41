//! Micro-F1 over non-NA relations (the reference's `f1_score`, KnowPrompt's convention): precision = correct /
//! predictions that are not NA, recall = correct / gold labels that are not NA, F1 = 0 when nothing is guessed.

/// Precision, recall and F1 of `pred` against `gold` (relation indices), NA = `na`.
pub fn micro_f1(pred: &[usize], gold: &[usize], na: usize) -> (f64, f64, f64) {
    let (mut correct, mut guessed, mut relevant) = (0usize, 0usize, 0usize);
    for (&p, &g) in pred.iter().zip(gold) {
        if p != na {
            guessed += 1;
        }
        if g != na {
            relevant += 1;
        }
        if p == g && g != na {
            correct += 1;
        }
    }
    let prec = if guessed == 0 { 0.0 } else { correct as f64 / guessed as f64 };
    let rec = if relevant == 0 { 0.0 } else { correct as f64 / relevant as f64 };
    let f1 = if prec + rec == 0.0 { 0.0 } else { 2.0 * prec * rec / (prec + rec) };
    (prec, rec, f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_by_hand() {
        // NA = 2 (not index 0). Gold [0, 1, 2, 0], predicted [0, 2, 1, 1]: correct 1 (first), guessed 3,
        // relevant 3 → P = R = 1/3, F1 = 1/3.
        let (p, r, f) = micro_f1(&[0, 2, 1, 1], &[0, 1, 2, 0], 2);
        assert!((p - 1.0 / 3.0).abs() < 1e-12 && (r - 1.0 / 3.0).abs() < 1e-12 && (f - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(micro_f1(&[2, 2], &[0, 1], 2), (0.0, 0.0, 0.0), "all NA: no guesses, F1 0");
        assert_eq!(micro_f1(&[0, 1, 2], &[0, 1, 2], 2).2, 1.0);
    }
}
