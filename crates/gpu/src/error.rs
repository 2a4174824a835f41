//! The error type of `chorus-gpu`.

/// Errors from GPU setup and kernel launches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched (no GPU, no software Vulkan such as Mesa lavapipe).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("cannot open GPU device: {0}")]
    Device(String),
    /// A kernel's inputs have inconsistent shapes.
    #[error("{kernel}: {reason}")]
    Shape {
        /// Kernel name.
        kernel: &'static str,
        /// What does not fit.
        reason: String,
    },
    /// A burn tensor's device buffer could not be borrowed ([`crate::bridge`]).
    #[error("borrowing a burn tensor on wgpu: {0}")]
    Borrow(String),
    /// Reading results back failed.
    #[error("GPU read-back failed: {0}")]
    Readback(String),
}

/// Result alias for the GPU crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
