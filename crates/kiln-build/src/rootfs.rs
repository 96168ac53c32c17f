//! A read-only union view of a stack of snapshot directories, the way overlayfs shows them,
//! without mounting anything: the top layer wins, a whiteout (char device 0/0) hides a path,
//! an opaque directory hides everything below it in lower layers. Symlinks are resolved inside
//! the view, never on the host.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::fsmeta::{is_opaque, is_whiteout};
use kiln_context::scope::components;
use kiln_context::{resolve_scoped, Node, ScopedTree};

/// Snapshot directories, bottom layer first.
#[derive(Debug, Clone, Default)]
pub struct Rootfs {
    layers: Vec<PathBuf>,
}

/// Where a path of the view lives.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub meta: fs::Metadata,
}

impl ScopedTree for Rootfs {
    fn node(&self, relative: &Path) -> std::io::Result<Node> {
        match self.lstat(relative) {
            None => Ok(Node::Missing),
            Some(found) if found.meta.file_type().is_symlink() => {
                Ok(Node::Symlink(fs::read_link(&found.path)?))
            }
            Some(_) => Ok(Node::Other),
        }
    }
}

impl Rootfs {
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Rootfs { layers }
    }

    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The entry at `relative` (no symlink following), if the view has one.
    pub fn lstat(&self, relative: &Path) -> Option<Found> {
        let parts = components(relative);
        if parts.is_empty() {
            // The root always exists; its metadata comes from the top layer.
            let path = self.layers.last()?.clone();
            let meta = fs::symlink_metadata(&path).ok()?;
            return Some(Found { path, meta });
        }
        for layer in self.layers.iter().rev() {
            let path = layer.join(relative);
            if let Ok(meta) = fs::symlink_metadata(&path) {
                if is_whiteout(&meta) {
                    return None;
                }
                return Some(Found { path, meta });
            }
            if self.hidden_below(layer, &parts) {
                return None;
            }
        }
        None
    }

    /// Whether this layer hides lower layers' `parts` (an ancestor is opaque or whited out,
    /// or is something other than a directory here).
    fn hidden_below(&self, layer: &Path, parts: &[OsString]) -> bool {
        let mut dir = layer.to_path_buf();
        for part in &parts[..parts.len().saturating_sub(1)] {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {
                    if is_opaque(&dir) {
                        return true;
                    }
                }
                Ok(_) => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// Names in the directory `relative`, merged over the layers, sorted by bytes.
    pub fn list(&self, relative: &Path) -> Vec<OsString> {
        let parts = components(relative);
        let mut names = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in self.layers.iter().rev() {
            let dir = layer.join(relative);
            if let Ok(reader) = fs::read_dir(&dir) {
                for item in reader.flatten() {
                    let name = item.file_name();
                    if hidden.contains(&name) || names.contains(&name) {
                        continue;
                    }
                    match item.metadata() {
                        Ok(meta) if is_whiteout(&meta) => {
                            hidden.insert(name);
                        }
                        _ => {
                            names.insert(name);
                        }
                    }
                }
                if is_opaque(&dir) {
                    break;
                }
            } else if fs::symlink_metadata(&dir).is_ok()
                || (!parts.is_empty() && self.hidden_below(layer, &parts))
            {
                // Not a directory in this layer: lower layers are covered.
                break;
            }
        }
        let mut names: Vec<OsString> = names.into_iter().collect();
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        names
    }

    /// Resolves `path` inside the view: `..` stops at `/`, absolute symlink targets start at
    /// the view's root. Returns the resolved view path (relative) and what is there, if
    /// anything; the last component is followed only with `follow_last`.
    pub fn resolve(
        &self,
        path: &Path,
        follow_last: bool,
    ) -> Result<(PathBuf, Option<Found>), String> {
        let (relative, exists) =
            resolve_scoped(self, path, follow_last).map_err(|e| e.to_string())?;
        let found = if exists { self.lstat(&relative) } else { None };
        Ok((relative, found))
    }

    /// Reads a small file of the view (like /etc/passwd), following links inside the view.
    pub fn read_file(&self, path: &str) -> Option<String> {
        let (_, found) = self.resolve(Path::new(path), true).ok()?;
        let found = found?;
        if !found.meta.is_file() || found.meta.len() > 16 << 20 {
            return None;
        }
        fs::read_to_string(found.path).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layer(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        dir
    }

    fn whiteout(dir: &Path, name: &str) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join(name),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn top_layer_wins_and_lists_merge() {
        let low = layer(&[("etc/a", "low"), ("etc/b", "low")]);
        let high = layer(&[("etc/a", "high"), ("etc/c", "high")]);
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        assert_eq!(view.read_file("/etc/a").as_deref(), Some("high"));
        assert_eq!(view.read_file("etc/b").as_deref(), Some("low"));
        assert_eq!(view.list(Path::new("etc")), ["a", "b", "c"]);
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_entries() {
        let low = layer(&[("etc/a", "low"), ("etc/b", "low"), ("var/x", "low")]);
        let high = layer(&[("var/y", "high")]);
        whiteout(&high.path().join("etc").tap_create(), "a");
        rustix::fs::setxattr(
            high.path().join("var"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        assert!(view.lstat(Path::new("etc/a")).is_none());
        assert_eq!(view.list(Path::new("etc")), ["b"]);
        assert!(view.lstat(Path::new("var/x")).is_none());
        assert_eq!(view.list(Path::new("var")), ["y"]);
    }

    #[test]
    fn symlinks_resolve_inside_the_view() {
        let root = layer(&[("etc/passwd", "inside")]);
        symlink("/etc/passwd", root.path().join("abs")).unwrap();
        symlink("../../../etc/passwd", root.path().join("rel")).unwrap();
        let view = Rootfs::new(vec![root.path().into()]);
        assert_eq!(view.read_file("abs").as_deref(), Some("inside"));
        assert_eq!(view.read_file("rel").as_deref(), Some("inside"));
        symlink("loop", root.path().join("loop")).unwrap();
        assert!(view.resolve(Path::new("loop"), true).is_err());
    }

    trait TapCreate {
        fn tap_create(self) -> PathBuf;
    }

    impl TapCreate for PathBuf {
        fn tap_create(self) -> PathBuf {
            fs::create_dir_all(&self).unwrap();
            self
        }
    }
}
