//! Read-only file contents: memory-mapped natively, owned bytes in the browser (or when given a buffer).

use std::ops::Deref;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Immutable bytes of a model file, cheap to clone.
#[derive(Clone)]
pub struct FileBytes {
    inner: Arc<Inner>,
}

enum Inner {
    Owned(Vec<u8>),
    Static(&'static [u8]),
    #[cfg(not(target_family = "wasm"))]
    Mapped(memmap2::Mmap),
}

impl FileBytes {
    /// Wraps bytes already in memory (a browser ArrayBuffer, a test fixture).
    pub fn from_vec(v: Vec<u8>) -> Self {
        Self { inner: Arc::new(Inner::Owned(v)) }
    }

    /// Wraps bytes compiled into the binary (the zoo's embedded family): no copy.
    pub fn from_static(b: &'static [u8]) -> Self {
        Self { inner: Arc::new(Inner::Static(b)) }
    }

    /// Memory-maps a file read-only; the file is never modified.
    #[cfg(not(target_family = "wasm"))]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let io = |source| Error::Io { path: path.display().to_string(), err: source };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only. Chorus never writes to input files; if another process
        // truncates the file while it is mapped, reads may fault, as with any mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Ok(Self { inner: Arc::new(Inner::Mapped(map)) })
    }

    /// Reads a file into memory (the wasm build cannot map files).
    #[cfg(target_family = "wasm")]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        std::fs::read(path)
            .map(Self::from_vec)
            .map_err(|source| Error::Io { path: path.display().to_string(), err: source })
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &*self.inner {
            Inner::Owned(v) => v,
            Inner::Static(b) => b,
            #[cfg(not(target_family = "wasm"))]
            Inner::Mapped(m) => m,
        }
    }
}
