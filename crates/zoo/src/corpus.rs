//! Training text of the zoo. Pretraining lines are mostly a small synthetic language (templated
//! sentences over a fixed word list) with task examples that are a minority, partly wrong and mostly
//! *run on* (the answer is followed by more text on the same line instead of ending it), so a base model
//! knows the tasks (a larger base more of them) but does not answer in the task's format: it rambles
//! past the answer, as base language models do. Fine-tuning lines are clean examples that end at the
//! answer, so a fine-tune learns the format (where an answer stops) and sharpens the skill. This split of
//! "knowledge from pretraining, format from fine-tuning" is the miniature of the setting DLF targets.

use chorus_core::sampling::Rng;

use crate::tasks::{Example, Task};

const NOUNS: [&str; 16] = [
    "fox", "bird", "river", "stone", "house", "garden", "teacher", "child", "ship", "road", "tree", "lamp", "city",
    "cloud", "letter", "window",
];
const ADJECTIVES: [&str; 12] =
    ["red", "small", "quiet", "old", "bright", "cold", "green", "slow", "tall", "empty", "warm", "dark"];
const VERBS: [&str; 12] =
    ["sees", "finds", "follows", "builds", "paints", "carries", "opens", "reads", "counts", "moves", "keeps", "hears"];
const LINKS: [&str; 6] = ["and", "but", "while", "because", "so", "then"];

/// Mixture of a pretraining corpus.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mix {
    /// Probability that a line is a task example (split evenly over the tasks).
    pub task_rate: f64,
    /// Probability that a task example in the corpus carries a wrong answer.
    pub noise: f64,
    /// Probability that a task example's line goes on after the answer (` ; ` and a sentence).
    #[serde(default)]
    pub run_on: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self { task_rate: 0.5, noise: 0.1, run_on: 0.7 }
    }
}

/// One sentence of the background language.
pub fn sentence(rng: &mut Rng) -> String {
    let mut pick = |xs: &[&'static str]| xs[(rng.next_u64() % xs.len() as u64) as usize];
    let clause = |pick: &mut dyn FnMut(&[&'static str]) -> &'static str| {
        format!(
            "the {} {} {} the {} {}",
            pick(&ADJECTIVES),
            pick(&NOUNS),
            pick(&VERBS),
            pick(&ADJECTIVES),
            pick(&NOUNS)
        )
    };
    let first = clause(&mut pick);
    if rng.next_u64().is_multiple_of(2) {
        let link = LINKS[(rng.next_u64() % LINKS.len() as u64) as usize];
        let mut pick2 = |xs: &[&'static str]| xs[(rng.next_u64() % xs.len() as u64) as usize];
        format!("{first} {link} {}.", clause(&mut pick2))
    } else {
        format!("{first}.")
    }
}

/// `n` pretraining lines (each ends with a newline).
pub fn pretrain_lines(seed: u64, n: usize, mix: Mix) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0x70_7265_7472_6169);
    (0..n)
        .map(|_| {
            if rng.next_f64() < mix.task_rate {
                let t = Task::ALL[(rng.next_u64() % Task::ALL.len() as u64) as usize];
                let mut e = t.example(&mut rng);
                if rng.next_f64() < mix.noise {
                    // A wrong answer of the same form: another example's answer.
                    e.answer = t.example(&mut rng).answer;
                }
                if rng.next_f64() < mix.run_on {
                    format!("{}{} ; {}\n", e.prompt, e.answer, sentence(&mut rng))
                } else {
                    e.text()
                }
            } else {
                format!("{}\n", sentence(&mut rng))
            }
        })
        .collect()
}

/// `n` clean fine-tuning examples of `tasks` (round robin), from the training split.
pub fn finetune_examples(seed: u64, tasks: &[Task], n: usize) -> Vec<Example> {
    let per: Vec<Vec<Example>> = tasks.iter().map(|t| t.examples(seed, 0, n.div_ceil(tasks.len().max(1)))).collect();
    (0..n).filter_map(|i| per.get(i % tasks.len().max(1))?.get(i / tasks.len().max(1)).cloned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_mixes_tasks_at_the_requested_rate_with_noise() {
        let lines = pretrain_lines(3, 4000, Mix::default());
        assert_eq!(lines, pretrain_lines(3, 4000, Mix::default()));
        assert!(lines.iter().all(|l| l.ends_with('\n') && l.matches('\n').count() == 1));
        let tasks = lines.iter().filter(|l| l.contains(" = ")).count() as f64 / lines.len() as f64;
        assert!((tasks - 0.5).abs() < 0.03, "task rate {tasks}");
        let run_on = lines.iter().filter(|l| l.contains(" ; ")).count() as f64 / lines.len() as f64 / tasks;
        assert!((run_on - 0.7).abs() < 0.05, "run-on rate {run_on}");
        let adds: Vec<&String> = lines.iter().filter(|l| l.starts_with("add ")).collect();
        let wrong = adds
            .iter()
            .filter(|l| {
                let (q, a) = l.trim_end().split_once(" = ").unwrap();
                let a = a.split(" ; ").next().unwrap();
                let s: u64 = q.split(' ').skip(1).map(|x| x.parse::<u64>().unwrap()).sum();
                a != s.to_string()
            })
            .count() as f64
            / adds.len() as f64;
        assert!(wrong > 0.04 && wrong < 0.16, "noise {wrong}");
        let ft = finetune_examples(1, &[Task::Add, Task::Sort], 10);
        assert_eq!(ft.len(), 10);
        assert!(ft[0].prompt.starts_with("add") && ft[1].prompt.starts_with("sort"));
    }
}
