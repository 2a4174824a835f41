//! The embedded default behind `chorus demo`: the shipped family's bases and small experts loaded from
//! the binary, fused with DLF on a prompt (the task's expert when the prompt names a task, all experts
//! otherwise), next to the large base and the expert alone.

use std::sync::Arc;

use chorus_engine::{Backend, FusionSetup, LoadedModel, Member};

use crate::embedded;
use crate::error::{Error, Result};
use crate::family::member_name;
use crate::tasks::TEST_SPLIT;
use crate::tasks::{Example, Task};

/// The loaded embedded family.
pub struct Demo {
    /// Large base.
    pub large: Arc<LoadedModel>,
    /// Small base.
    pub base: Arc<LoadedModel>,
    /// One small expert per task, in the family's task order.
    pub experts: Vec<(Task, Arc<LoadedModel>)>,
    seed: u64,
}

/// A fusion member without an instruction (zoo models take the bare task prompt).
pub(crate) fn member(name: &str, model: &Arc<LoadedModel>) -> Member {
    Member { name: name.into(), model: Arc::clone(model), instruction: None }
}

impl Demo {
    /// Loads the embedded members on `backend`.
    pub fn load(backend: Backend) -> Result<Self> {
        let manifest = embedded::manifest()?;
        let device = chorus_engine::device(backend).map_err(|e| Error::Device(e.to_string()))?;
        let load = |name: String| -> Result<Arc<LoadedModel>> {
            let files = embedded::files(&name)?;
            LoadedModel::load(files, backend, &device, None, &mut |_, _| {})
                .map(Arc::new)
                .map_err(|e| Error::Device(format!("{name}: {e}")))
        };
        let experts =
            manifest.spec.tasks.iter().map(|&t| Ok((t, load(member_name(false, t.name()))?))).collect::<Result<_>>()?;
        Ok(Self {
            large: load(member_name(true, "base"))?,
            base: load(member_name(false, "base"))?,
            experts,
            seed: manifest.spec.seed,
        })
    }

    /// The expert of `task`, if the family has one.
    pub fn expert(&self, task: Task) -> Option<&Arc<LoadedModel>> {
        self.experts.iter().find(|(t, _)| *t == task).map(|(_, m)| m)
    }

    /// The fusion for a prompt: its task's expert alone when the prompt names a task with an expert, every
    /// expert otherwise.
    pub fn setup(&self, prompt: &str) -> FusionSetup {
        let experts = match Task::of_prompt(prompt).and_then(|t| Some((t, self.expert(t)?))) {
            Some((t, e)) => vec![member(t.name(), e)],
            None => self.experts.iter().map(|(t, e)| member(t.name(), e)).collect(),
        };
        FusionSetup { large: member("large", &self.large), base: member("base", &self.base), experts }
    }

    /// One held-out test example per task (the evaluation's test split), the demo's default prompts.
    pub fn default_examples(&self) -> Vec<Example> {
        self.experts.iter().filter_map(|(t, _)| t.examples(self.seed, TEST_SPLIT, 1).pop()).collect()
    }
}
