//! The shader registry: every WGSL file of the top-level `shaders/` folder, included here and nowhere
//! else, named by a [`ShaderId`] (one per entry point) that also keys the pipeline cache. A test parses
//! and validates each file with naga and checks that every file in the folder is registered.

/// One registered entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShaderId {
    /// Per-row max / argmax / log-sum-exp of a logits matrix.
    RowStats,
    /// DLF step 1: support mask, sanitised large/base logits and expert deltas.
    DlfPrepare,
    /// DLF step 2: the α-independent constants per row and expert.
    DlfConstants,
    /// DLF step 3: the loss of every candidate α per row.
    DlfLosses,
    /// DLF step 4: argmin, fused logits and greedy token per row.
    DlfSelect,
    /// Twin-Merging mixed matmul, pass 1: per-row weighted projection onto every task's right factors.
    LowRankProject,
    /// Twin-Merging mixed matmul, pass 2: the left factors of each output part, added to the shared output.
    LowRankExpand,
}

const DLF_FUSE: &str = include_str!("../../../shaders/dlf_fuse.wgsl");

impl ShaderId {
    /// Every registered entry point.
    pub const ALL: &'static [ShaderId] = &[
        ShaderId::RowStats,
        ShaderId::DlfPrepare,
        ShaderId::DlfConstants,
        ShaderId::DlfLosses,
        ShaderId::DlfSelect,
        ShaderId::LowRankProject,
        ShaderId::LowRankExpand,
    ];

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ShaderId::RowStats => "row_stats.wgsl",
            ShaderId::DlfPrepare | ShaderId::DlfConstants | ShaderId::DlfLosses | ShaderId::DlfSelect => {
                "dlf_fuse.wgsl"
            }
            ShaderId::LowRankProject | ShaderId::LowRankExpand => "lowrank_mix.wgsl",
        }
    }

    /// WGSL source.
    pub fn source(self) -> &'static str {
        match self {
            ShaderId::RowStats => include_str!("../../../shaders/row_stats.wgsl"),
            ShaderId::DlfPrepare | ShaderId::DlfConstants | ShaderId::DlfLosses | ShaderId::DlfSelect => DLF_FUSE,
            ShaderId::LowRankProject | ShaderId::LowRankExpand => include_str!("../../../shaders/lowrank_mix.wgsl"),
        }
    }

    /// Entry point of the compute shader.
    pub fn entry_point(self) -> &'static str {
        match self {
            ShaderId::RowStats => "main",
            ShaderId::DlfPrepare => "prepare",
            ShaderId::DlfConstants => "constants",
            ShaderId::DlfLosses => "losses_main",
            ShaderId::DlfSelect => "select_main",
            ShaderId::LowRankProject => "project",
            ShaderId::LowRankExpand => "expand",
        }
    }
}
