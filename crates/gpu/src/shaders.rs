//! The shader registry: every WGSL file of the top-level `shaders/` folder, included here and nowhere
//! else, named by a [`ShaderId`] that also keys the pipeline cache. A test parses and validates each file
//! with naga and checks that every file in the folder is registered.

/// One registered shader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShaderId {
    /// Per-row max / argmax / log-sum-exp of a logits matrix.
    RowStats,
}

impl ShaderId {
    /// Every registered shader.
    pub const ALL: &'static [ShaderId] = &[ShaderId::RowStats];

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ShaderId::RowStats => "row_stats.wgsl",
        }
    }

    /// WGSL source.
    pub fn source(self) -> &'static str {
        match self {
            ShaderId::RowStats => include_str!("../../../shaders/row_stats.wgsl"),
        }
    }

    /// Entry point of the compute shader.
    pub fn entry_point(self) -> &'static str {
        "main"
    }
}
