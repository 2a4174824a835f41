//! Safe outputs: the one place where Chorus writes files and folders that a user asked for.
//!
//! Every output is built under a temporary sibling (same folder, so the final step is a rename on one file
//! system) and moved into place only when complete: a failed or killed run never leaves a partial file at
//! the destination and never touches what was there before. An existing non-empty output is refused
//! unless the caller passes `force`, and an output that is, contains or lies inside one of the run's inputs
//! is always refused (replacing it would destroy the input while it is read). On Linux a forced folder
//! replacement swaps old and new in one `renameat2(RENAME_EXCHANGE)`, so the destination is always either
//! the complete old folder or the complete new one.

use std::path::{Path, PathBuf};

/// Why an output cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The destination exists (a file, or a folder that is not empty) and `force` was not given.
    #[error("{}: already exists; pass --force to replace it", path.display())]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The destination overlaps an input of the same run.
    #[error("{}: the output {relation} the input {}; choose another output", out.display(), input.display())]
    Overlaps {
        /// The destination.
        out: PathBuf,
        /// The input it overlaps.
        input: PathBuf,
        /// "is", "contains" or "lies inside".
        relation: &'static str,
    },
    /// A destination path without a file name (`/`, `..`).
    #[error("{}: not a file or folder name", path.display())]
    BadPath {
        /// The path at fault.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{}: {err}", path.display())]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The operating system's error.
        err: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |err| OutputError::Io { path: path.to_path_buf(), err }
}

/// The absolute, symlink-free form of `p`, also for a path that does not exist yet (its deepest existing
/// ancestor is canonicalized and the rest appended), so overlaps are found through `..` and links.
fn absolute(p: &Path) -> PathBuf {
    let mut tail = Vec::new();
    let mut cur = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")).join(p)
    };
    loop {
        if let Ok(c) = cur.canonicalize() {
            let mut out = c;
            for part in tail.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                cur = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// True when `p` exists and is a file, or a folder with at least one entry.
fn occupied(p: &Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Err(_) => false,
        Ok(m) if m.is_dir() => std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(true),
        Ok(_) => true,
    }
}

/// Checks `out` before any work starts: refused when it overlaps one of `inputs`, or when it is occupied
/// and `force` is false. Call it first, so a long run does not end in a refusal.
pub fn check(out: &Path, inputs: &[&Path], force: bool) -> Result<(), OutputError> {
    if out.file_name().is_none() {
        return Err(OutputError::BadPath { path: out.to_path_buf() });
    }
    let o = absolute(out);
    for input in inputs {
        let i = absolute(input);
        let relation = if o == i {
            "is"
        } else if i.starts_with(&o) {
            "contains"
        } else if o.starts_with(&i) {
            "lies inside"
        } else {
            continue;
        };
        return Err(OutputError::Overlaps { out: out.to_path_buf(), input: input.to_path_buf(), relation });
    }
    if !force && occupied(out) {
        return Err(OutputError::Exists { path: out.to_path_buf() });
    }
    Ok(())
}

fn parent_of(path: &Path) -> Result<(&Path, String), OutputError> {
    let name = path.file_name().ok_or_else(|| OutputError::BadPath { path: path.to_path_buf() })?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((parent, format!(".{}.", name.to_string_lossy())))
}

/// Writes the file `path` through `fill`, which is given the path of a fresh temporary sibling to write
/// (for writers that want a path, such as image encoders); the sibling is flushed to disk and renamed
/// over `path` only when `fill` succeeds. Without `force` an existing `path` is refused (also one that
/// appeared while `fill` ran).
pub fn write_file_with<E: From<OutputError>>(
    path: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    if !force && occupied(path) {
        return Err(OutputError::Exists { path: path.to_path_buf() }.into());
    }
    let (parent, prefix) = parent_of(path)?;
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(&format!(".tmp{ext}"))
        .tempfile_in(parent)
        .map_err(io(parent))?;
    fill(tmp.path())?;
    tmp.as_file().sync_all().map_err(io(path))?;
    let persisted = if force { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    match persisted {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(OutputError::Exists { path: path.to_path_buf() }.into())
        }
        Err(e) => Err(OutputError::Io { path: path.to_path_buf(), err: e.error }.into()),
    }
}

/// Writes `bytes` to the file `path` atomically (see [`write_file_with`]).
pub fn write_file(path: &Path, bytes: &[u8], force: bool) -> Result<(), OutputError> {
    write_file_with(path, force, |tmp| std::fs::write(tmp, bytes).map_err(io(path)))
}

/// Builds the folder `dir`: `fill` writes into a fresh temporary sibling, which replaces `dir` only when
/// `fill` succeeds (an empty existing `dir` is replaced; an occupied one only with `force`). A failure
/// removes the temporary folder and leaves `dir` as it was.
pub fn write_dir<T, E: From<OutputError>>(
    dir: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    if !force && occupied(dir) {
        return Err(OutputError::Exists { path: dir.to_path_buf() }.into());
    }
    let (parent, prefix) = parent_of(dir)?;
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = tempfile::Builder::new().prefix(&prefix).suffix(".tmp").tempdir_in(parent).map_err(io(parent))?;
    let value = fill(tmp.path())?;
    put_dir(tmp.keep(), dir, force)?;
    Ok(value)
}

/// Moves the complete folder `new` to `dir`, replacing what is there.
fn put_dir(new: PathBuf, dir: &Path, force: bool) -> Result<(), OutputError> {
    let fail = |err| {
        std::fs::remove_dir_all(&new).ok();
        OutputError::Io { path: dir.to_path_buf(), err }
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return std::fs::rename(&new, dir).map_err(fail),
        Err(e) => return Err(fail(e)),
        Ok(m) if !m.is_dir() => {
            if !force {
                std::fs::remove_dir_all(&new).ok();
                return Err(OutputError::Exists { path: dir.to_path_buf() });
            }
            std::fs::remove_file(dir).map_err(fail)?;
            return std::fs::rename(&new, dir).map_err(fail);
        }
        Ok(_) => {}
    }
    if !force && occupied(dir) {
        std::fs::remove_dir_all(&new).ok();
        return Err(OutputError::Exists { path: dir.to_path_buf() });
    }
    swap_in(&new, dir).map_err(fail)?;
    // `new` now holds the previous folder.
    std::fs::remove_dir_all(&new).ok();
    Ok(())
}

/// Exchanges the folders `a` and `b` in one step (Linux `renameat2`), so `b` is never missing.
#[cfg(target_os = "linux")]
fn swap_in(a: &Path, b: &Path) -> std::io::Result<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, a, rustix::fs::CWD, b, rustix::fs::RenameFlags::EXCHANGE)
        .map_err(std::io::Error::from)
}

/// Elsewhere: the old folder is moved aside first and removed after the new one is in place; a kill
/// between the two renames leaves it, complete, at the `.NAME.old` sibling.
#[cfg(not(target_os = "linux"))]
fn swap_in(a: &Path, b: &Path) -> std::io::Result<()> {
    let aside = a.with_extension("old");
    std::fs::rename(b, &aside)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&aside, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_occupied_outputs_without_force_and_keeps_them() {
        let root = tempfile::tempdir().unwrap();
        let f = root.path().join("a.txt");
        write_file(&f, b"one", false).unwrap();
        let e = write_file(&f, b"two", false).unwrap_err();
        assert!(matches!(e, OutputError::Exists { .. }), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        write_file(&f, b"two", true).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");

        let d = root.path().join("dir");
        write_dir(&d, false, |t| std::fs::write(t.join("x"), b"1").map_err(io(t))).unwrap();
        let e = write_dir(&d, false, |_| Ok::<_, OutputError>(())).unwrap_err();
        assert!(matches!(e, OutputError::Exists { .. }), "{e}");
        write_dir(&d, true, |t| std::fs::write(t.join("y"), b"2").map_err(io(t))).unwrap();
        assert!(!d.join("x").exists() && d.join("y").exists());
        // An empty folder is no one's data: it is replaced without --force.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        write_dir(&empty, false, |t| std::fs::write(t.join("z"), b"3").map_err(io(t))).unwrap();
        assert!(empty.join("z").exists());
        // Nothing but the outputs is left in the parent: no temporary siblings.
        let mut names: Vec<_> =
            std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["a.txt", "dir", "empty"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_output_and_no_temporary() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("out");
        write_dir(&d, false, |t| std::fs::write(t.join("keep"), b"old").map_err(io(t))).unwrap();
        let r: Result<(), OutputError> = write_dir(&d, true, |t| {
            std::fs::write(t.join("partial"), b"new").map_err(io(t))?;
            Err(OutputError::BadPath { path: t.to_path_buf() })
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(d.join("keep")).unwrap(), b"old");
        assert!(!d.join("partial").exists());
        let f = root.path().join("f");
        let r: Result<(), OutputError> =
            write_file_with(&f, false, |_| Err(OutputError::BadPath { path: PathBuf::from("x") }));
        assert!(r.is_err() && !f.exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_output_overlapping_an_input_is_always_refused() {
        let root = tempfile::tempdir().unwrap();
        let input = root.path().join("model");
        std::fs::create_dir(&input).unwrap();
        for (out, rel) in [
            (input.clone(), "is"),
            (input.join("sub"), "lies inside"),
            (root.path().to_path_buf(), "contains"),
            (input.join("..").join("model"), "is"),
        ] {
            let e = check(&out, &[&input], true).unwrap_err();
            assert!(matches!(e, OutputError::Overlaps { relation, .. } if relation == rel), "{out:?}: {e}");
        }
        check(&root.path().join("other"), &[&input], false).unwrap();
        assert!(matches!(check(Path::new("/"), &[], true), Err(OutputError::BadPath { .. })));
    }
}
