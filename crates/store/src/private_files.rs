//! The node's data directory is its own user's alone: every directory in it is created 0700
//! and every file 0600 whatever the umask, files that a dependency (sled) creates are
//! restricted after it opens them, and a data directory that group or others can read or
//! write is refused at start. See docs/operations.md ("Files and permissions").

use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory under the data directory, and of the data directory itself.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file under the data directory.
pub const FILE_MODE: u32 = 0o600;
/// The permission bits of group and others: none may be set under the data directory.
const OTHERS: u32 = 0o077;
/// Deepest level walked below the data directory (the node's own tree is 3 levels deep).
const MAX_DEPTH: usize = 16;

/// Creates `path` and any missing parent as directories of mode [`DIR_MODE`], and sets
/// `path` itself to [`DIR_MODE`] (an existing directory included).
pub fn create_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))
}

/// Options that create a file of mode [`FILE_MODE`] (the umask can only take bits away).
pub fn file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Sets every directory under `root` (and `root`) to [`DIR_MODE`] and every file to
/// [`FILE_MODE`]. Symbolic links are neither followed nor changed.
pub fn restrict(root: &Path) -> io::Result<()> {
    walk(root, 0, &mut |path, meta| {
        let mode = if meta.is_dir() { DIR_MODE } else { FILE_MODE };
        if meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    })
}

/// An entry under the data directory that group or others can read, write or enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The directory or file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

/// The first entry of `root` (itself included) whose mode grants group or others any
/// access; `None` if there is none or `root` does not exist yet.
pub fn find_exposed(root: &Path) -> io::Result<Option<Exposed>> {
    if !root.exists() {
        return Ok(None);
    }
    let mut found = None;
    walk(root, 0, &mut |path, meta| {
        let mode = meta.permissions().mode() & 0o777;
        if found.is_none() && mode & OTHERS != 0 {
            found = Some(Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
        Ok(())
    })?;
    Ok(found)
}

/// Calls `visit` on `path` and, for a directory, on everything below it (not following
/// symbolic links), at most [`MAX_DEPTH`] levels down.
fn walk(
    path: &Path,
    depth: usize,
    visit: &mut dyn FnMut(&Path, &std::fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    visit(path, &meta)?;
    if meta.is_dir() && depth < MAX_DEPTH {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), depth + 1, visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn restrict_and_find_exposed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("data");
        assert_eq!(find_exposed(&root).expect("walk"), None);
        create_dir(&root.join("a/b")).expect("create");
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&root.join("a/b")), DIR_MODE);
        std::fs::write(root.join("a/b/f"), b"x").expect("write");
        std::fs::set_permissions(root.join("a/b/f"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert_eq!(
            find_exposed(&root).expect("walk"),
            Some(Exposed {
                path: root.join("a/b/f"),
                mode: 0o644
            })
        );
        restrict(&root).expect("restrict");
        assert_eq!(mode(&root.join("a/b/f")), FILE_MODE);
        assert_eq!(find_exposed(&root).expect("walk"), None);
        let f = file_options()
            .write(true)
            .create_new(true)
            .open(root.join("g"))
            .expect("create");
        drop(f);
        assert_eq!(mode(&root.join("g")), FILE_MODE);
    }
}
