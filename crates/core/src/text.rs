//! Word splitting shared by the data readers of relation extraction and style transfer: whitespace, then
//! ASCII punctuation split off both ends of each word (`"Apple."` → `Apple`, `.`; an apostrophe inside a word
//! stays: `don't`); a word made only of punctuation (`...`, `--`) stays whole.

/// The words of `text`.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in text.split_whitespace() {
        let chars: Vec<char> = w.chars().collect();
        let lead = chars.iter().take_while(|c| c.is_ascii_punctuation()).count();
        if lead == chars.len() {
            out.push(w.to_string());
            continue;
        }
        let trail = chars.iter().rev().take_while(|c| c.is_ascii_punctuation()).count();
        out.extend(chars[..lead].iter().map(|c| c.to_string()));
        out.push(chars[lead..chars.len() - trail].iter().collect());
        out.extend(chars[chars.len() - trail..].iter().map(|c| c.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_at_the_edges() {
        assert_eq!(words("Steve Jobs founded Apple."), ["Steve", "Jobs", "founded", "Apple", "."]);
        assert_eq!(words("(Apple) ... don't"), ["(", "Apple", ")", "...", "don't"]);
        assert!(words("  ").is_empty());
    }
}
