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
    /// Matrix product with the weights in a GGUF block format, decoded inside the kernel.
    QMatmul(QFormat),
    /// [`ShaderId::QMatmul`] with the activations in a uniform buffer (CPU adapters, ≤ 64 KB of them).
    QMatmulUx(QFormat),
    /// Device decoder: RMSNorm of each token's hidden state.
    RmsNorm,
    /// Device decoder: RoPE on queries and keys, keys and values written into the KV cache.
    RopeCache,
    /// Device decoder: causal GQA attention of each query head over its row's cache.
    Attention,
    /// Device decoder: SiLU(gate) · up.
    SiluMul,
}

/// Invocations per output row, output rows per invocation and invocations per workgroup of
/// `qmatmul.wgsl` (its `LANES`, `RPI` and `WG`): 16, 1 and 64 on a GPU; 1, 8 and 16 on a CPU adapter,
/// where an invocation owning rows makes the activation loads uniform (one scalar load, not a gather per
/// lane) and shares each among eight rows, and small workgroups keep both threads of a 576-row matrix
/// busy. Measured on lavapipe, SmolLM2 decode, release build: LANES 1 and RPI 1 (activations in a uniform
/// buffer): 2.8 tok/s; RPI 4 written out without indexed arrays: 5.7–6.2; RPI 8 with WG 16 or 32: 6.1–6.2.
pub fn qmatmul_layout(software: bool) -> (u32, u32, u32) {
    if software { (1, 8, 16) } else { (16, 1, 64) }
}

/// Output rows one workgroup of `qmatmul.wgsl` computes.
pub fn qmatmul_rows_per_group(software: bool) -> usize {
    let (lanes, rpi, wg) = qmatmul_layout(software);
    (wg * rpi / lanes) as usize
}

/// The weight formats `shaders/qmatmul.wgsl` decodes (its `FMT` constant); other GGUF types are expanded
/// to F32 when uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QFormat {
    /// 32-bit floats.
    F32,
    /// IEEE halves.
    F16,
    /// bfloat16.
    BF16,
    /// GGML Q4_0.
    Q4_0,
    /// GGML Q4_1.
    Q4_1,
    /// GGML Q5_0.
    Q5_0,
    /// GGML Q5_1.
    Q5_1,
    /// GGML Q8_0.
    Q8_0,
    /// GGML Q4_K.
    Q4K,
    /// GGML Q5_K.
    Q5K,
    /// GGML Q6_K.
    Q6K,
}

impl QFormat {
    /// Every format, in the order of the shader's `FMT` codes.
    pub const ALL: [QFormat; 11] = [
        QFormat::F32,
        QFormat::F16,
        QFormat::BF16,
        QFormat::Q4_0,
        QFormat::Q4_1,
        QFormat::Q5_0,
        QFormat::Q5_1,
        QFormat::Q8_0,
        QFormat::Q4K,
        QFormat::Q5K,
        QFormat::Q6K,
    ];

    /// The kernel's format for a stored type; `None` for the types it does not decode (Q2_K, Q3_K).
    pub fn of(ty: chorus_core::GgmlType) -> Option<Self> {
        use chorus_core::GgmlType as G;
        Some(match ty {
            G::F32 => QFormat::F32,
            G::F16 => QFormat::F16,
            G::BF16 => QFormat::BF16,
            G::Q4_0 => QFormat::Q4_0,
            G::Q4_1 => QFormat::Q4_1,
            G::Q5_0 => QFormat::Q5_0,
            G::Q5_1 => QFormat::Q5_1,
            G::Q8_0 => QFormat::Q8_0,
            G::Q4_K => QFormat::Q4K,
            G::Q5_K => QFormat::Q5K,
            G::Q6_K => QFormat::Q6K,
            G::Q2_K | G::Q3_K => return None,
        })
    }

    /// The `FMT` code of `shaders/qmatmul.wgsl`.
    pub fn code(self) -> u32 {
        self as u32
    }
}

const DLF_FUSE: &str = include_str!("../../../shaders/dlf_fuse.wgsl");

impl ShaderId {
    /// Every registered entry point.
    pub fn all() -> Vec<ShaderId> {
        let mut v = vec![
            ShaderId::RowStats,
            ShaderId::DlfPrepare,
            ShaderId::DlfConstants,
            ShaderId::DlfLosses,
            ShaderId::DlfSelect,
            ShaderId::LowRankProject,
            ShaderId::LowRankExpand,
            ShaderId::RmsNorm,
            ShaderId::RopeCache,
            ShaderId::Attention,
            ShaderId::SiluMul,
        ];
        v.extend(QFormat::ALL.iter().flat_map(|&f| [ShaderId::QMatmul(f), ShaderId::QMatmulUx(f)]));
        v
    }

    /// File name under `shaders/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ShaderId::RowStats => "row_stats.wgsl",
            ShaderId::DlfPrepare | ShaderId::DlfConstants | ShaderId::DlfLosses | ShaderId::DlfSelect => {
                "dlf_fuse.wgsl"
            }
            ShaderId::LowRankProject | ShaderId::LowRankExpand => "lowrank_mix.wgsl",
            ShaderId::QMatmul(_) | ShaderId::QMatmulUx(_) => "qmatmul.wgsl",
            ShaderId::RmsNorm | ShaderId::RopeCache | ShaderId::Attention | ShaderId::SiluMul => "decoder.wgsl",
        }
    }

    /// WGSL source.
    pub fn source(self) -> &'static str {
        match self {
            ShaderId::RowStats => include_str!("../../../shaders/row_stats.wgsl"),
            ShaderId::DlfPrepare | ShaderId::DlfConstants | ShaderId::DlfLosses | ShaderId::DlfSelect => DLF_FUSE,
            ShaderId::LowRankProject | ShaderId::LowRankExpand => include_str!("../../../shaders/lowrank_mix.wgsl"),
            ShaderId::QMatmul(_) | ShaderId::QMatmulUx(_) => include_str!("../../../shaders/qmatmul.wgsl"),
            ShaderId::RmsNorm | ShaderId::RopeCache | ShaderId::Attention | ShaderId::SiluMul => {
                include_str!("../../../shaders/decoder.wgsl")
            }
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
            ShaderId::QMatmul(_) => "qmatmul",
            ShaderId::QMatmulUx(_) => "qmatmul_ux",
            ShaderId::RmsNorm => "rms_norm",
            ShaderId::RopeCache => "rope_cache",
            ShaderId::Attention => "attention",
            ShaderId::SiluMul => "silu_mul",
        }
    }

    /// Values of the entry point's pipeline-overridable constants (`override` in WGSL) on an adapter that
    /// is (`software`) or is not a CPU rasteriser.
    pub fn constants(self, software: bool) -> Vec<(&'static str, f64)> {
        match self {
            ShaderId::QMatmul(f) | ShaderId::QMatmulUx(f) => {
                let (lanes, rpi, wg) = qmatmul_layout(software);
                vec![
                    ("FMT", f64::from(f.code())),
                    ("LANES", f64::from(lanes)),
                    ("RPI", f64::from(rpi)),
                    ("WG", f64::from(wg)),
                ]
            }
            _ => Vec::new(),
        }
    }
}
