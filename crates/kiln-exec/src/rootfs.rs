//! A read-only union view of a stack of snapshot directories, the way overlayfs shows them,
//! without mounting anything: the top layer wins, a whiteout (char device 0/0) hides a path,
//! an opaque directory hides everything below it in lower layers. Symlinks are resolved inside
//! the view, never on the host.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use crate::fsmeta::{find_whiteout, is_opaque, whiteout_of, WHITEOUT_PREFIX};
use kiln_context::scope::components;
use kiln_context::{resolve_scoped, Node, ScopedTree};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;

/// Snapshot directories, bottom layer first.
#[derive(Debug, Clone, Default)]
pub struct Rootfs {
    layers: Vec<PathBuf>,
}

/// Where a path of the view lives.
#[derive(Debug, Clone)]
pub struct Found {
    /// The file in the snapshot that holds it.
    pub path: PathBuf,
    /// Its metadata (not following a symlink).
    pub meta: fs::Metadata,
}

/// What one layer says about a path.
enum InLayer {
    /// The layer has it (never reached through a symlink: every ancestor is a real directory).
    Entry(PathBuf, fs::Metadata),
    /// The layer hides it from lower layers: a whiteout, an opaque ancestor, or an ancestor
    /// that is not a directory here.
    Covered,
    /// The layer says nothing; look below.
    Absent,
}

/// Looks `parts` up in one layer, checking each ancestor with lstat first, so a symlink in a
/// layer is never followed on the host (the kernel would follow it in `layer/a/b`).
fn probe(layer: &Path, parts: &[OsString]) -> InLayer {
    let Some((last, ancestors)) = parts.split_last() else {
        return match fs::symlink_metadata(layer) {
            Ok(meta) => InLayer::Entry(layer.to_path_buf(), meta),
            Err(_) => InLayer::Absent,
        };
    };
    let mut path = layer.to_path_buf();
    for (depth, part) in ancestors.iter().enumerate() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return InLayer::Covered,
            Err(_)
                if opaque_among(layer, &ancestors[..depth]) || find_whiteout(&path).is_some() =>
            {
                return InLayer::Covered
            }
            Err(_) => return InLayer::Absent,
        }
    }
    // `.wh.` names are markers (OCI-form whiteouts and opaque markers), never entries.
    if last.as_bytes().starts_with(WHITEOUT_PREFIX) {
        return if opaque_among(layer, ancestors) {
            InLayer::Covered
        } else {
            InLayer::Absent
        };
    }
    path.push(last);
    match fs::symlink_metadata(&path) {
        Ok(meta) if whiteout_of(last, &meta).is_some() => InLayer::Covered,
        Ok(meta) => InLayer::Entry(path, meta),
        Err(_) if opaque_among(layer, ancestors) || find_whiteout(&path).is_some() => {
            InLayer::Covered
        }
        Err(_) => InLayer::Absent,
    }
}

/// Whether one of the directories `layer/dirs[0]`, `layer/dirs[0]/dirs[1]`, ... is opaque.
/// Asked only when a name is missing from the layer: an entry that is there is found
/// without reading any directory's xattrs.
fn opaque_among(layer: &Path, dirs: &[OsString]) -> bool {
    let mut path = layer.to_path_buf();
    dirs.iter().any(|dir| {
        path.push(dir);
        is_opaque(&path)
    })
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
    /// The view of `layers` (snapshot directories, lowest first).
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Rootfs { layers }
    }

    /// The snapshot directories, lowest first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// Whether the view has no layer (`FROM scratch`).
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
            match probe(layer, &parts) {
                InLayer::Entry(path, meta) => return Some(Found { path, meta }),
                InLayer::Covered => return None,
                InLayer::Absent => {}
            }
        }
        None
    }

    /// Names in the directory `relative`, merged over the layers, sorted by bytes.
    pub fn list(&self, relative: &Path) -> Vec<OsString> {
        let parts = components(relative);
        let mut names = BTreeSet::new();
        let mut hidden = BTreeSet::new();
        for layer in self.layers.iter().rev() {
            let dir = match probe(layer, &parts) {
                InLayer::Entry(dir, meta) if meta.is_dir() => dir,
                InLayer::Absent => continue,
                // A file, link or whiteout here covers whatever lower layers have.
                _ => break,
            };
            if let Ok(reader) = fs::read_dir(&dir) {
                for item in reader.flatten() {
                    let name = item.file_name();
                    if hidden.contains(&name) || names.contains(&name) {
                        continue;
                    }
                    // Only a character device or a `.wh.` name can be a whiteout: the others
                    // need no stat (the type comes with the listing).
                    let maybe_whiteout = name.as_bytes().starts_with(WHITEOUT_PREFIX)
                        || item.file_type().map_or(true, |kind| kind.is_char_device());
                    if maybe_whiteout {
                        let meta = item.metadata().ok();
                        if let Some(gone) = meta.as_ref().and_then(|m| whiteout_of(&name, m)) {
                            hidden.insert(gone.to_os_string());
                            continue;
                        }
                    }
                    // Other `.wh.` names (the opaque marker) are markers too, never entries.
                    if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
                        continue;
                    }
                    names.insert(name);
                }
            }
            if is_opaque(&dir) {
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
    fn oci_form_markers_hide_like_overlay_ones() {
        let low = layer(&[
            ("etc/a", "low"),
            ("etc/b", "low"),
            ("var/x", "low"),
            ("d/e/f", "low"),
        ]);
        let high = layer(&[
            ("var/y", "high"),
            ("etc/.wh.a", ""),
            ("var/.wh..wh..opq", ""),
        ]);
        fs::write(high.path().join(".wh.d"), "").unwrap();
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        assert!(view.lstat(Path::new("etc/a")).is_none());
        assert!(view.lstat(Path::new("etc/.wh.a")).is_none());
        assert_eq!(view.list(Path::new("etc")), ["b"]);
        assert!(view.lstat(Path::new("var/x")).is_none());
        assert_eq!(view.list(Path::new("var")), ["y"]);
        assert!(view.lstat(Path::new("d")).is_none());
        assert!(view.lstat(Path::new("d/e/f")).is_none());
        assert_eq!(view.list(Path::new("")), ["etc", "var"]);
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
        make_opaque(&high.path().join("var"));
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        assert!(view.lstat(Path::new("etc/a")).is_none());
        assert_eq!(view.list(Path::new("etc")), ["b"]);
        assert!(view.lstat(Path::new("var/x")).is_none());
        assert_eq!(view.list(Path::new("var")), ["y"]);
    }

    #[test]
    fn a_listing_and_a_lookup_agree_below_opaque_and_missing_directories() {
        let low = layer(&[
            ("a/b/c/file", "low"),
            ("a/b/d", "low"),
            ("a/e", "low"),
            ("k/l/m", "low"),
            ("k/n", "low"),
        ]);
        // `a` is opaque two levels above `a/b/c/file`, and `a/b` is not in the high layer at
        // all; `k/l` is whited out, `k` itself is not opaque.
        let high = layer(&[("a/f", "high"), ("k/o", "high")]);
        make_opaque(&high.path().join("a"));
        whiteout(&high.path().join("k"), "l");
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        for path in ["a/b/c/file", "a/b/d", "a/b", "a/e", "k/l/m", "k/l"] {
            assert!(view.lstat(Path::new(path)).is_none(), "{path} is hidden");
        }
        for path in ["a/f", "k/n", "k/o"] {
            assert!(view.lstat(Path::new(path)).is_some(), "{path} is there");
        }
        // Every name of every directory of either layer: found exactly when listed.
        for dir in ["", "a", "a/b", "a/b/c", "k", "k/l"] {
            let listed = view.list(Path::new(dir));
            for name in [
                "a", "b", "c", "d", "e", "f", "file", "k", "l", "m", "n", "o",
            ] {
                let path = Path::new(dir).join(name);
                assert_eq!(
                    view.lstat(&path).is_some(),
                    listed.iter().any(|n| n == name),
                    "{}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn a_symlink_in_one_layer_never_leads_to_the_host() {
        // Reviewer's case: a lower layer has `x -> /host-dir`, an upper one a real `x/` dir.
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("secret"), "HOST").unwrap();
        let low = tempfile::tempdir().unwrap();
        symlink(host.path(), low.path().join("x")).unwrap();
        let high = layer(&[("x/own", "mine")]);
        let view = Rootfs::new(vec![low.path().into(), high.path().into()]);
        assert!(view.lstat(Path::new("x/secret")).is_none());
        assert_eq!(view.list(Path::new("x")), ["own"]);
        assert_eq!(view.read_file("x/own").as_deref(), Some("mine"));
        // And a link to a directory of the view resolves inside the view only.
        let alone = Rootfs::new(vec![low.path().into()]);
        assert!(alone.read_file("x/secret").is_none());
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

    /// Marks `dir` opaque the way overlayfs does as root.
    fn make_opaque(dir: &Path) {
        rustix::fs::setxattr(
            dir,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
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
