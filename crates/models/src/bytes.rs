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

impl FileBytes {
    /// Tells the OS that `range` will not be read again soon, so a mapped file's pages can leave this
    /// process's resident set (a streaming merge reads each tensor once). A no-op for bytes in memory.
    pub fn release(&self, range: std::ops::Range<usize>) {
        #[cfg(all(unix, not(target_family = "wasm")))]
        if let Inner::Mapped(m) = &*self.inner
            && range.start < range.end
            && range.end <= m.len()
        {
            // SAFETY: the map is a read-only private file mapping: after MADV_DONTNEED the next read of
            // these pages reloads them from the file, so no content this process can observe changes.
            // The result is ignored: the advice is only an optimisation.
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len()) };
        }
        #[cfg(not(all(unix, not(target_family = "wasm"))))]
        let _ = range;
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
