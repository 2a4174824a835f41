//! The zoo's tasks: short prompts with one exact-match answer each, generated deterministically from a
//! seed. Each task has its own prompt prefix so that a prompt says which task it is; answers end at a
//! newline, which the family's tokenizer maps to end of answer.

use chorus_core::sampling::Rng;
use serde::{Deserialize, Serialize};

/// Split of the task generators used for testing (training uses split 0, the router split 1).
pub const TEST_SPLIT: u64 = 2;

/// A task of the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Sum of two 1–2 digit numbers: `add 52 49 =` → ` 101`.
    Add,
    /// A 3–8 letter word backwards: `rev plant =` → ` tnalp`.
    Reverse,
    /// 4–8 one-digit numbers in ascending order: `sort 5 2 9 1 =` → ` 1 2 5 9`.
    Sort,
    /// The value of one key among 3–6 pairs: `get b in a=4 b=7 c=1 =` → ` 7`.
    Recall,
    /// An ISO date as day/month/year: `date 2024-03-07 =` → ` 07/03/2024`.
    Date,
}

impl Task {
    /// Every task, in table order.
    pub const ALL: [Task; 5] = [Task::Add, Task::Reverse, Task::Sort, Task::Recall, Task::Date];

    /// Short name (CLI, JSON, file names).
    pub fn name(self) -> &'static str {
        match self {
            Task::Add => "add",
            Task::Reverse => "reverse",
            Task::Sort => "sort",
            Task::Recall => "recall",
            Task::Date => "date",
        }
    }

    /// The word its prompts start with.
    pub fn keyword(self) -> &'static str {
        match self {
            Task::Add => "add",
            Task::Reverse => "rev",
            Task::Sort => "sort",
            Task::Recall => "get",
            Task::Date => "date",
        }
    }

    /// The task a prompt is written for, by its first word.
    pub fn of_prompt(prompt: &str) -> Option<Task> {
        let word = prompt.split_whitespace().next()?;
        Task::ALL.into_iter().find(|t| t.keyword() == word)
    }

    /// Parses [`Task::name`].
    pub fn parse(s: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == s)
    }

    /// One example drawn from `rng`.
    pub fn example(self, rng: &mut Rng) -> Example {
        let mut r = |lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
        match self {
            Task::Add => {
                let digits = |r: &mut dyn FnMut(u64, u64) -> u64| {
                    let d = r(1, 2) as u32;
                    r(10u64.pow(d - 1), 10u64.pow(d) - 1)
                };
                let (a, b) = (digits(&mut r), digits(&mut r));
                Example::new(format!("add {a} {b} ="), format!(" {}", a + b))
            }
            Task::Reverse => {
                let n = r(3, 8);
                let w: String = (0..n).map(|_| (b'a' + r(0, 25) as u8) as char).collect();
                Example::new(format!("rev {w} ="), format!(" {}", w.chars().rev().collect::<String>()))
            }
            Task::Sort => {
                let n = r(4, 8);
                let mut v: Vec<u64> = (0..n).map(|_| r(0, 9)).collect();
                let shown = join(&v);
                v.sort_unstable();
                Example::new(format!("sort {shown} ="), format!(" {}", join(&v)))
            }
            Task::Recall => {
                let n = r(3, 6) as usize;
                // Distinct keys from a..h, in random order.
                let mut keys: Vec<char> = ('a'..='h').collect();
                for i in (1..keys.len()).rev() {
                    keys.swap(i, r(0, i as u64) as usize);
                }
                let pairs: Vec<(char, u64)> = keys[..n].iter().map(|&k| (k, r(0, 9))).collect();
                let (k, v) = pairs[r(0, n as u64 - 1) as usize];
                let shown: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                Example::new(format!("get {k} in {} =", shown.join(" ")), format!(" {v}"))
            }
            Task::Date => {
                let (y, m) = (r(1950, 2049), r(1, 12));
                let d = r(1, days_in_month(y, m));
                Example::new(format!("date {y:04}-{m:02}-{d:02} ="), format!(" {d:02}/{m:02}/{y:04}"))
            }
        }
    }

    /// `n` examples from the seed; the split (train, dev, test, …) is part of the seed so that splits
    /// never share a stream.
    pub fn examples(self, seed: u64, split: u64, n: usize) -> Vec<Example> {
        let mut rng = Rng::new(seed ^ (split.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ (self as u64 + 1) << 56);
        (0..n).map(|_| self.example(&mut rng)).collect()
    }
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One prompt and its exact answer (the answer starts with a space; the model must then end the line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// What the model is given.
    pub prompt: String,
    /// What it must produce, before the newline.
    pub answer: String,
}

impl Example {
    fn new(prompt: String, answer: String) -> Self {
        Self { prompt, answer }
    }

    /// The training text: prompt, answer, newline.
    pub fn text(&self) -> String {
        format!("{}{}\n", self.prompt, self.answer)
    }

    /// Whether `output` (generated after the prompt) is exactly the answer, up to the first newline.
    pub fn is_correct(&self, output: &str) -> bool {
        output.split('\n').next() == Some(self.answer.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_right_and_generation_is_deterministic() {
        for t in Task::ALL {
            let a = t.examples(1, 0, 200);
            assert_eq!(a, t.examples(1, 0, 200), "{}", t.name());
            assert_ne!(a, t.examples(1, 1, 200), "{}: splits differ", t.name());
            assert_eq!(Task::parse(t.name()), Some(t));
            assert!(a.iter().all(|e| Task::of_prompt(&e.prompt) == Some(t)), "{}", t.name());
            for e in &a {
                assert!(e.prompt.ends_with(" ="), "{e:?}");
                assert!(e.answer.starts_with(' ') && !e.answer.contains('\n'), "{e:?}");
                assert!(e.is_correct(&format!("{}\nrest", e.answer)) && !e.is_correct(" x"), "{e:?}");
                let args: Vec<&str> = e.prompt.trim_end_matches(" =").split(' ').skip(1).collect();
                let ans = e.answer.trim_start();
                match t {
                    Task::Add => {
                        let s: u64 = args.iter().map(|a| a.parse::<u64>().unwrap()).sum();
                        assert_eq!(ans, s.to_string());
                    }
                    Task::Reverse => assert_eq!(ans, args[0].chars().rev().collect::<String>()),
                    Task::Sort => {
                        let mut v: Vec<u64> = args.iter().map(|a| a.parse().unwrap()).collect();
                        v.sort_unstable();
                        assert_eq!(ans, join(&v));
                    }
                    Task::Recall => {
                        let key = args[0];
                        let found = args[2..].iter().find_map(|p| p.strip_prefix(&format!("{key}=")));
                        assert_eq!(Some(ans), found);
                    }
                    Task::Date => {
                        let p: Vec<&str> = args[0].split('-').collect();
                        assert_eq!(ans, format!("{}/{}/{}", p[2], p[1], p[0]));
                    }
                }
            }
        }
    }

    #[test]
    fn dates_are_valid_calendar_days() {
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2023, 4), 30);
    }
}
