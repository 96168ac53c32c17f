//! A RUN step's result as a snapshot diff in overlayfs upper-dir form, made canonical so the
//! two ways of running a step give the same layer bytes.
//!
//! * With overlayfs the diff is the upper directory left after the command; [`canonicalize`]
//!   rewrites it in place.
//! * Without it, the whole root filesystem was copied to a private tree and the command ran
//!   there; [`walk_diff`] compares that tree with the lower [`Rootfs`] and writes the diff, then
//!   [`canonicalize`] runs on it as well.
//!
//! Canonical form: no entry equal to what the lower view already shows (no touched-but-identical
//! file, no copied-up directory with nothing changed below it), no whiteout of a name the lower
//! view does not have, a directory is opaque exactly when none of the lower view's names in it
//! survive (the root never is), one opaque marker name, and whiteouts owned by 0:0, mode 0, with
//! their directory's mtime. Overlayfs' own xattrs (`*.overlay.*`) never count as content.
//!
//! Nothing here follows a symlink on the host: entries are examined with lstat and `*at`
//! calls with `AT_SYMLINK_NOFOLLOW`, files are opened with `O_NOFOLLOW`, and every lower lookup
//! goes through [`Rootfs`].

use crate::fsmeta::{
    copy_xattrs, io_at, is_opaque, is_opaque_marker, make_opaque, make_whiteout, overlay_xattr_key,
    remove_opaque_marker, set_stamp, whiteout_of, xattr_error, xattr_names, xattr_value, Stamp,
    WHITEOUT_PREFIX,
};
use crate::rootfs::{Found, Rootfs};
use crate::ExecError;
use rustix::io::Errno;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a diff holds once written or canonicalized.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiffStats {
    /// Entries of the diff (directories, files, links, devices, whiteouts), its root not counted.
    pub entries: u64,
    /// Entries equal to the lower view: left out by [`walk_diff`], removed by [`canonicalize`].
    pub removed_unchanged: u64,
    /// Whiteouts among `entries`.
    pub whiteouts: u64,
    /// Whiteouts of names the lower view does not have, removed by [`canonicalize`].
    pub stale_whiteouts: u64,
}

/// The two names overlayfs reads an opaque marker from.
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// Extended attributes sorted by name, overlayfs' own left out.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The xattrs of `path` (never following a symlink) that are content, sorted by name. With
/// `strict`, an overlayfs redirect or metacopy xattr is an error: such an entry's data or
/// lower counterpart lives elsewhere, and a diff holding one cannot be made a layer.
fn read_xattrs(path: &Path, strict: bool) -> Result<Xattrs, ExecError> {
    let mut out = Vec::new();
    for name in xattr_names(path)? {
        if let Some(key) = overlay_xattr_key(&name) {
            if strict && (key == b"redirect" || key == b"metacopy") {
                return Err(ExecError::Unsupported(format!(
                    "{}: overlayfs left a {} xattr; RUN needs overlayfs mounted with redirect_dir=off and metacopy=off",
                    path.display(),
                    String::from_utf8_lossy(&name)
                )));
            }
            continue;
        }
        if let Some(value) = xattr_value(path, OsStr::from_bytes(&name))? {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

fn file_kind(meta: &fs::Metadata) -> u32 {
    meta.mode() & 0o170000
}

/// Same type, permission bits (setuid/setgid/sticky included), owner, mtime (to the
/// nanosecond), size of files and symlinks, and device number of devices. A directory's size
/// says nothing about its content and differs between filesystems, so it is not compared.
fn same_meta(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    if file_kind(a) != file_kind(b) || Stamp::of(a) != Stamp::of(b) {
        return false;
    }
    let ft = a.file_type();
    if (ft.is_file() || ft.is_symlink()) && a.len() != b.len() {
        return false;
    }
    if (ft.is_char_device() || ft.is_block_device()) && a.rdev() != b.rdev() {
        return false;
    }
    true
}

/// Reads as much of `buf` as the file still has.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn open_nofollow(path: &Path) -> Result<File, ExecError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| io_at(path, e))
}

fn same_content(a: &Path, b: &Path) -> Result<bool, ExecError> {
    let mut fa = open_nofollow(a)?;
    let mut fb = open_nofollow(b)?;
    let mut ba = vec![0u8; 64 << 10];
    let mut bb = vec![0u8; 64 << 10];
    loop {
        let na = fill(&mut fa, &mut ba).map_err(|e| io_at(a, e))?;
        let nb = fill(&mut fb, &mut bb).map_err(|e| io_at(b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

/// Whether the entry at `path` (with `meta`) says nothing the lower entry does not: same
/// metadata, xattrs, link target and, for files, content (read only when all else is equal).
fn identical(lower: &Found, path: &Path, meta: &fs::Metadata) -> Result<bool, ExecError> {
    if !same_meta(&lower.meta, meta) {
        return Ok(false);
    }
    let ft = meta.file_type();
    if ft.is_symlink() {
        let a = fs::read_link(&lower.path).map_err(|e| io_at(&lower.path, e))?;
        let b = fs::read_link(path).map_err(|e| io_at(path, e))?;
        if a != b {
            return Ok(false);
        }
    }
    if read_xattrs(&lower.path, false)? != read_xattrs(path, false)? {
        return Ok(false);
    }
    if ft.is_file() && (lower.meta.dev(), lower.meta.ino()) != (meta.dev(), meta.ino()) {
        return same_content(&lower.path, path);
    }
    Ok(true)
}

/// Names of hard-link groups under `root` (regular files with more than one name there) that
/// must all be in the diff because one of them is: a name that is new or changed keeps its
/// unchanged partners, so the link survives in the layer. Both paths use it, so both agree.
fn linked_names_to_keep(lower: &Rootfs, root: &Path) -> Result<HashSet<PathBuf>, ExecError> {
    let mut groups: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for (name, meta) in children(&root.join(&rel))? {
            let child = rel.join(&name);
            if meta.is_dir() {
                stack.push(child);
            } else if meta.is_file() && meta.nlink() > 1 {
                groups
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .push(child);
            }
        }
    }
    let mut keep = HashSet::new();
    for names in groups.into_values().filter(|names| names.len() > 1) {
        let mut changed = false;
        for name in &names {
            let path = root.join(name);
            let meta = fs::symlink_metadata(&path).map_err(|e| io_at(&path, e))?;
            changed |= match lower.lstat(name) {
                Some(found) => !identical(&found, &path, &meta)?,
                None => true,
            };
        }
        if changed {
            keep.extend(names);
        }
    }
    Ok(keep)
}

/// The entries of the directory `dir`, lstat'ed, sorted by name (bytes).
fn children(dir: &Path) -> Result<BTreeMap<OsString, fs::Metadata>, ExecError> {
    let mut out = BTreeMap::new();
    for item in fs::read_dir(dir).map_err(|e| io_at(dir, e))? {
        let item = item.map_err(|e| io_at(dir, e))?;
        // Stat'ed by name in the open directory (symlinks not followed), not by a path the
        // kernel walks again from the root for every entry.
        let meta = item.metadata().map_err(|e| io_at(&item.path(), e))?;
        out.insert(item.file_name(), meta);
    }
    Ok(out)
}

/// Gives a whiteout its canonical metadata: 0:0 (when root), mode 0, its directory's mtime.
/// Overlayfs may share one whiteout inode between many names; such a link is replaced first,
/// so each whiteout can carry its own directory's time.
/// `marker` is the whiteout itself (`hidden`, or `.wh.NAME` beside it in OCI form).
fn normalize_whiteout(
    hidden: &Path,
    marker: &Path,
    meta: &fs::Metadata,
    mtime: (i64, i64),
    is_root: bool,
) -> Result<(), ExecError> {
    let mut path = marker.to_path_buf();
    if meta.nlink() > 1 {
        fs::remove_file(marker).map_err(|e| io_at(marker, e))?;
        path = make_whiteout(hidden)?;
    }
    let path = path.as_path();
    let stamp = Stamp {
        mode: 0,
        uid: 0,
        gid: 0,
        mtime,
    };
    set_stamp(path, stamp, false, is_root)
}

/// Recreates a symlink, fifo, socket or device node `from` (with `meta`) at `to`.
fn recreate(from: &Path, meta: &fs::Metadata, to: &Path, is_root: bool) -> Result<(), ExecError> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(from).map_err(|e| io_at(from, e))?;
        std::os::unix::fs::symlink(&target, to).map_err(|e| io_at(to, e))?;
        set_stamp(to, Stamp::of(meta), true, is_root)?;
    } else {
        let kind = if ft.is_char_device() {
            rustix::fs::FileType::CharacterDevice
        } else if ft.is_block_device() {
            rustix::fs::FileType::BlockDevice
        } else if ft.is_fifo() {
            rustix::fs::FileType::Fifo
        } else if ft.is_socket() {
            rustix::fs::FileType::Socket
        } else {
            return Err(ExecError::Unsupported(format!(
                "{}: unknown file type",
                from.display()
            )));
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            to,
            kind,
            rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(|e| io_at(to, e.into()))?;
        set_stamp(to, Stamp::of(meta), false, is_root)?;
    }
    // After the owner: chown drops security.capability. `is_root` is `true` here whoever
    // runs: a diff keeps every xattr, so a refused one is an error, never skipped.
    copy_xattrs(from, to, true)
}

/// Compares the finished `tree` (a private copy of the root filesystem the command ran in;
/// consumed: its changed files are moved out of it) with `lower`, and writes into the empty
/// directory `out` the entries that are new or differ, directories leading to them, and a
/// whiteout for every name of `lower` that `tree` no longer has. Files keep their inode (so
/// hardlink groups stay groups); other entries are recreated with `tree`'s metadata and
/// xattrs, directories' metadata going on after their contents. `out` itself gets the
/// metadata of `tree`'s root. Run [`canonicalize`] on `out` afterwards to decide opacity.
pub fn walk_diff(lower: &Rootfs, tree: &Path, out: &Path) -> Result<DiffStats, ExecError> {
    let meta = fs::symlink_metadata(tree).map_err(|e| io_at(tree, e))?;
    if !meta.is_dir() {
        return Err(io_at(
            tree,
            io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
        ));
    }
    let mut walk = Walk {
        lower,
        tree,
        out,
        is_root: rustix::process::geteuid().is_root(),
        stats: DiffStats::default(),
        keep_links: linked_names_to_keep(lower, tree)?,
    };
    let root = lower.lstat(Path::new(""));
    walk.dir(Path::new(""), &meta, root.as_ref())?;
    Ok(walk.stats)
}

struct Walk<'a> {
    lower: &'a Rootfs,
    tree: &'a Path,
    out: &'a Path,
    is_root: bool,
    stats: DiffStats,
    keep_links: HashSet<PathBuf>,
}

impl Walk<'_> {
    /// Writes the diff of the tree directory `rel` (with `meta`, read before anything in it
    /// moved) against `lower_here`, what the lower view has at `rel` (`None` when nothing or
    /// when hidden). Returns whether `out/rel` was kept.
    fn dir(
        &mut self,
        rel: &Path,
        meta: &fs::Metadata,
        lower_here: Option<&Found>,
    ) -> Result<bool, ExecError> {
        let top = rel.as_os_str().is_empty();
        let source = self.tree.join(rel);
        let target = self.out.join(rel);
        if !top {
            fs::create_dir(&target).map_err(|e| io_at(&target, e))?;
        }
        let lower_dir = lower_here.filter(|found| found.meta.is_dir());
        let entries = children(&source)?;
        let mut emitted = false;
        for (name, child_meta) in &entries {
            if name.as_bytes().starts_with(WHITEOUT_PREFIX) {
                return Err(ExecError::Unsupported(format!(
                    "{}: `.wh.` names are reserved for layer whiteouts",
                    source.join(name).display()
                )));
            }
            let child = rel.join(name);
            let lower_child = match lower_dir {
                Some(_) => self.lower.lstat(&child),
                None => None,
            };
            if child_meta.is_dir() {
                emitted |= self.dir(&child, child_meta, lower_child.as_ref())?;
                continue;
            }
            let from = source.join(name);
            if let Some(found) = lower_child
                .as_ref()
                .filter(|_| !self.keep_links.contains(&child))
            {
                if identical(found, &from, child_meta)? {
                    self.stats.removed_unchanged += 1;
                    continue;
                }
            }
            let to = target.join(name);
            if child_meta.is_file() {
                fs::rename(&from, &to).map_err(|e| io_at(&to, e))?;
            } else {
                recreate(&from, child_meta, &to, self.is_root)?;
            }
            self.stats.entries += 1;
            emitted = true;
        }
        if lower_dir.is_some() {
            for name in self.lower.list(rel) {
                if entries.contains_key(&name) {
                    continue;
                }
                let path = target.join(&name);
                let marker = make_whiteout(&path)?;
                let whiteout = fs::symlink_metadata(&marker).map_err(|e| io_at(&marker, e))?;
                normalize_whiteout(
                    &path,
                    &marker,
                    &whiteout,
                    Stamp::of(meta).mtime,
                    self.is_root,
                )?;
                self.stats.entries += 1;
                self.stats.whiteouts += 1;
                emitted = true;
            }
        }
        if !top && !emitted {
            let unchanged = match lower_dir {
                Some(found) => {
                    same_meta(&found.meta, meta)
                        && read_xattrs(&found.path, false)? == read_xattrs(&source, false)?
                }
                None => false,
            };
            if unchanged {
                fs::remove_dir(&target).map_err(|e| io_at(&target, e))?;
                self.stats.removed_unchanged += 1;
                return Ok(false);
            }
        }
        set_stamp(&target, Stamp::of(meta), false, self.is_root)?;
        // Never skipping a refused xattr (see `recreate`).
        copy_xattrs(&source, &target, true)?;
        if !top {
            self.stats.entries += 1;
        }
        Ok(true)
    }
}

/// Rewrites the overlay-form diff `upper` in place into canonical form (see the module
/// documentation), against the lower view `lower` it applies to. Opaque directories end up
/// marked with `opaque_xattr` (`trusted.overlay.opaque` or `user.overlay.opaque`) = `y` only.
/// Fails on overlayfs redirect and metacopy xattrs, which this form cannot express.
pub fn canonicalize(
    lower: &Rootfs,
    upper: &Path,
    opaque_xattr: &str,
) -> Result<DiffStats, ExecError> {
    if !OPAQUE_XATTRS.contains(&opaque_xattr) {
        return Err(ExecError::Unsupported(format!(
            "{opaque_xattr} is not an overlayfs opaque xattr"
        )));
    }
    let meta = fs::symlink_metadata(upper).map_err(|e| io_at(upper, e))?;
    if !meta.is_dir() {
        return Err(io_at(
            upper,
            io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
        ));
    }
    let mut canon = Canon {
        lower,
        upper,
        opaque_xattr,
        is_root: rustix::process::geteuid().is_root(),
        stats: DiffStats::default(),
        keep_links: linked_names_to_keep(lower, upper)?,
    };
    read_xattrs(upper, true)?;
    canon.dir(Path::new(""), &meta, true)?;
    Ok(canon.stats)
}

struct Canon<'a> {
    lower: &'a Rootfs,
    upper: &'a Path,
    opaque_xattr: &'a str,
    is_root: bool,
    stats: DiffStats,
    keep_links: HashSet<PathBuf>,
}

impl Canon<'_> {
    /// Sets (`true`) or clears the opaque marker of `dir`, leaving only `opaque_xattr`, or
    /// only the `.wh..wh..opq` file where setting that xattr is refused. Returns whether
    /// `dir`'s entries changed (the marker file made or removed).
    fn mark(&self, dir: &Path, opaque: bool) -> Result<bool, ExecError> {
        let mut file = false;
        for name in OPAQUE_XATTRS {
            if opaque && name == self.opaque_xattr {
                file = make_opaque(dir, name)?;
                continue;
            }
            match rustix::fs::lremovexattr(dir, name) {
                Ok(()) | Err(Errno::NODATA | Errno::NOTSUP) => {}
                // In a user namespace trusted.* is out of reach: never set, never seen.
                Err(Errno::PERM) if name.starts_with("trusted.") => {}
                Err(e) => return Err(xattr_error(dir, e)),
            }
        }
        Ok(if file {
            true
        } else {
            remove_opaque_marker(dir)?
        })
    }

    /// Canonicalizes the upper directory `rel` (with `meta`, as found before any change), top
    /// down; `visible` says whether the lower view at `rel` counts (false below an opaque
    /// directory or below one that replaced a non-directory). Prunes its unchanged children
    /// bottom-up, but never `rel` itself: the caller decides that.
    fn dir(&mut self, rel: &Path, meta: &fs::Metadata, visible: bool) -> Result<(), ExecError> {
        let top = rel.as_os_str().is_empty();
        let path = self.upper.join(rel);
        let lower_dir = if visible {
            self.lower.lstat(rel).filter(|found| found.meta.is_dir())
        } else {
            None
        };
        let lower_names: BTreeSet<OsString> = match lower_dir {
            Some(_) => self.lower.list(rel).into_iter().collect(),
            None => BTreeSet::new(),
        };
        // Whiteouts by the name they delete, with the marker's own path (either form).
        let mut whiteouts: BTreeMap<OsString, (std::path::PathBuf, fs::Metadata)> = BTreeMap::new();
        let mut others = BTreeMap::new();
        // A marker file, made by a parent's `mark` or an earlier pass, changed the mtime.
        let mut touched = false;
        for (name, child_meta) in children(&path)? {
            if is_opaque_marker(&name, &child_meta) {
                touched = true;
            } else if let Some(gone) = whiteout_of(&name, &child_meta) {
                let gone = gone.to_os_string();
                whiteouts.insert(gone, (path.join(&name), child_meta));
            } else {
                others.insert(name, child_meta);
            }
        }
        let was_opaque = is_opaque(&path);

        // Whiteouts of names the lower view does not show (all of them, in an opaque dir).
        let stale: Vec<OsString> = whiteouts
            .keys()
            .filter(|name| was_opaque || !lower_names.contains(*name))
            .cloned()
            .collect();
        for name in stale {
            if let Some((child, _)) = whiteouts.remove(&name) {
                fs::remove_file(&child).map_err(|e| io_at(&child, e))?;
            }
            self.stats.stale_whiteouts += 1;
            touched = true;
        }

        // Opacity: exactly when no lower name survives, and never at the root.
        let mut opaque = was_opaque;
        let mut make_opaque = Vec::new();
        if lower_names.is_empty() {
            opaque = false;
        } else if was_opaque {
            if top || lower_names.iter().any(|name| others.contains_key(name)) {
                opaque = false;
                for name in &lower_names {
                    match others.get(name) {
                        None => {
                            let child = path.join(name);
                            let marker = make_whiteout(&child)?;
                            let made =
                                fs::symlink_metadata(&marker).map_err(|e| io_at(&marker, e))?;
                            whiteouts.insert(name.clone(), (marker, made));
                            touched = true;
                        }
                        Some(child_meta) if child_meta.is_dir() => {
                            let below = self.lower.lstat(&rel.join(name));
                            if below.is_some_and(|found| found.meta.is_dir()) {
                                make_opaque.push(name.clone());
                            }
                        }
                        Some(_) => {}
                    }
                }
            }
        } else if !top && lower_names.iter().all(|name| whiteouts.contains_key(name)) {
            opaque = true;
            for (child, _) in std::mem::take(&mut whiteouts).into_values() {
                fs::remove_file(&child).map_err(|e| io_at(&child, e))?;
                touched = true;
            }
        }
        if opaque || was_opaque {
            touched |= self.mark(&path, opaque)?;
        }
        for name in &make_opaque {
            // The child's own pass puts its mtime back if a marker file went in.
            self.mark(&path.join(name), true)?;
        }

        // Children, top-down into directories, then pruned bottom-up.
        let child_visible = lower_dir.is_some() && !opaque;
        for (name, child_meta) in &others {
            let child = rel.join(name);
            let child_path = path.join(name);
            read_xattrs(&child_path, true)?;
            // A name the lower listing lacks is not below (no lookup through the layers).
            let lower_child = if child_visible && lower_names.contains(name) {
                self.lower.lstat(&child)
            } else {
                None
            };
            let unchanged = if child_meta.is_dir() {
                self.dir(&child, child_meta, child_visible)?;
                match &lower_child {
                    Some(found) if found.meta.is_dir() => {
                        !is_opaque(&child_path)
                            && is_empty_dir(&child_path)?
                            && same_meta(&found.meta, child_meta)
                            && read_xattrs(&found.path, false)? == read_xattrs(&child_path, false)?
                    }
                    _ => false,
                }
            } else {
                match &lower_child {
                    Some(_) if self.keep_links.contains(&child) => false,
                    Some(found) => identical(found, &child_path, child_meta)?,
                    None => false,
                }
            };
            if unchanged {
                if child_meta.is_dir() {
                    fs::remove_dir(&child_path).map_err(|e| io_at(&child_path, e))?;
                } else {
                    fs::remove_file(&child_path).map_err(|e| io_at(&child_path, e))?;
                }
                self.stats.removed_unchanged += 1;
                touched = true;
            } else {
                self.stats.entries += 1;
            }
        }
        let mtime = Stamp::of(meta).mtime;
        for (name, (marker, whiteout)) in &whiteouts {
            let child = path.join(name);
            if whiteout.nlink() > 1 {
                touched = true;
            }
            normalize_whiteout(&child, marker, whiteout, mtime, self.is_root)?;
            self.stats.entries += 1;
            self.stats.whiteouts += 1;
        }
        if touched {
            // Adding and removing names changed the directory's mtime; put it back.
            set_stamp(&path, Stamp::of(meta), false, false)?;
        }
        Ok(())
    }
}

fn is_empty_dir(path: &Path) -> Result<bool, ExecError> {
    let mut reader = fs::read_dir(path).map_err(|e| io_at(path, e))?;
    Ok(reader.next().is_none())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::fsmeta::is_whiteout;
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    const T0: (i64, i64) = (1_600_000_000, 123);
    const T1: (i64, i64) = (1_700_000_000, 456_789);
    const OPQ: &str = "trusted.overlay.opaque";

    fn root_or_skip() -> bool {
        if rustix::process::geteuid().is_root() {
            return true;
        }
        crate::test_skip::skip_or_fail("needs root (chown, mknod, trusted.* xattrs)");
        false
    }

    fn stamp(path: &Path, mode: u32, uid: u32, gid: u32, mtime: (i64, i64)) {
        let is_link = fs::symlink_metadata(path).unwrap().file_type().is_symlink();
        set_stamp(
            path,
            Stamp {
                mode,
                uid,
                gid,
                mtime,
            },
            is_link,
            true,
        )
        .unwrap();
    }

    /// Sets only the mtime, keeping mode and owner.
    fn touch(root: &Path, rel: &str, mtime: (i64, i64)) {
        let path = root.join(rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        let s = Stamp::of(&meta);
        stamp(&path, s.mode, s.uid, s.gid, mtime);
    }

    fn mkdir(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir(&path).unwrap();
        stamp(&path, 0o755, 0, 0, T0);
    }

    fn file(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::write(&path, content).unwrap();
        stamp(&path, 0o644, 0, 0, T0);
    }

    fn link(root: &Path, rel: &str, target: &str) {
        let path = root.join(rel);
        symlink(target, &path).unwrap();
        stamp(&path, 0o777, 0, 0, T0);
    }

    fn node(root: &Path, rel: &str, kind: rustix::fs::FileType, dev: u64) {
        let path = root.join(rel);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            kind,
            rustix::fs::Mode::from_raw_mode(0o644),
            dev,
        )
        .unwrap();
        stamp(&path, 0o644, 0, 0, T0);
    }

    fn whiteout(root: &Path, rel: &str) {
        make_whiteout(&root.join(rel)).unwrap();
    }

    fn setx(root: &Path, rel: &str, name: &str, value: &[u8]) {
        rustix::fs::lsetxattr(root.join(rel), name, value, rustix::fs::XattrFlags::empty())
            .unwrap();
    }

    fn rm(root: &Path, rel: &str) {
        let path = root.join(rel);
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            fs::remove_dir_all(&path).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }

    /// Copies the entry `from` to `to` with metadata and all xattrs (a snapshot copy).
    fn copy_entry(from: &Path, to: &Path) {
        let meta = fs::symlink_metadata(from).unwrap();
        if meta.is_dir() {
            fs::create_dir(to).unwrap();
            set_stamp(to, Stamp::of(&meta), false, true).unwrap();
            copy_xattrs(from, to, true).unwrap();
        } else if meta.is_file() {
            fs::copy(from, to).unwrap();
            set_stamp(to, Stamp::of(&meta), false, true).unwrap();
            copy_xattrs(from, to, true).unwrap();
        } else {
            recreate(from, &meta, to, true).unwrap();
        }
    }

    /// The merged view copied to `dest` (like flatten, but keeping xattrs and the root's
    /// metadata), the private tree the fallback runs the command in.
    fn copy_view(view: &Rootfs, dest: &Path) {
        let mut dirs = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for name in view.list(&rel) {
                let child = rel.join(&name);
                let found = view.lstat(&child).unwrap();
                copy_entry(&found.path, &dest.join(&child));
                if found.meta.is_dir() {
                    dirs.push((dest.join(&child), found.meta.clone()));
                    stack.push(child);
                }
            }
        }
        let root = view.lstat(Path::new("")).unwrap();
        dirs.push((dest.to_path_buf(), root.meta));
        for (path, meta) in dirs.iter().rev() {
            set_stamp(path, Stamp::of(meta), false, true).unwrap();
        }
    }

    /// What overlayfs does before changing `rel`: copies it and its missing ancestors up
    /// (keeping metadata, adding an origin xattr), putting each parent's times back.
    fn copy_up(view: &Rootfs, upper: &Path, rel: &str) {
        let mut sofar = PathBuf::new();
        for part in Path::new(rel).components() {
            let parent = upper.join(&sofar);
            sofar.push(part);
            let to = upper.join(&sofar);
            if fs::symlink_metadata(&to).is_ok() {
                continue;
            }
            let parent_meta = fs::symlink_metadata(&parent).unwrap();
            let found = view.lstat(&sofar).unwrap();
            copy_entry(&found.path, &to);
            if !found.meta.file_type().is_symlink() {
                setx(
                    upper,
                    sofar.to_str().unwrap(),
                    "trusted.overlay.origin",
                    b"\x00\xfb\x21",
                );
            }
            set_stamp(&parent, Stamp::of(&parent_meta), false, true).unwrap();
        }
    }

    /// A sorted description of a snapshot: every entry's path, type, mode, owner, mtime,
    /// size, link target, device, content hash, xattrs (overlay's own left out, opaque markers
    /// named), and hardlinks within it.
    fn listing(root: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let name = rel.to_string_lossy().into_owned();
            let s = Stamp::of(&meta);
            let mut line = format!(
                "{name:?} mode={:o} {}:{} mtime={}.{}",
                s.mode, s.uid, s.gid, s.mtime.0, s.mtime.1
            );
            if is_whiteout(&meta) {
                line.push_str(" whiteout");
            } else if ft.is_dir() {
                line.push_str(" dir");
                for marker in OPAQUE_XATTRS {
                    let mut value = [0u8; 4];
                    if let Ok(n) = rustix::fs::lgetxattr(&path, marker, &mut value) {
                        line.push_str(&format!(" {marker}={:?}", &value[..n]));
                    }
                }
                let mut names: Vec<_> = fs::read_dir(&path)
                    .unwrap()
                    .map(|e| rel.join(e.unwrap().file_name()))
                    .collect();
                names.sort();
                stack.extend(names.into_iter().rev());
            } else if ft.is_symlink() {
                line.push_str(&format!(" link->{:?}", fs::read_link(&path).unwrap()));
            } else if ft.is_file() {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = inodes.get(&key) {
                    line.push_str(&format!(" hardlink={first}"));
                } else {
                    inodes.insert(key, name.clone());
                }
                let hash = Sha256::digest(fs::read(&path).unwrap());
                line.push_str(&format!(" file size={} sha256={:x}", meta.len(), hash));
            } else {
                line.push_str(&format!(
                    " node={:o} rdev={}",
                    file_kind(&meta),
                    meta.rdev()
                ));
            }
            for (k, v) in read_xattrs(&path, false).unwrap() {
                line.push_str(&format!(" {}={:?}", String::from_utf8_lossy(&k), v));
            }
            lines.push(line);
        }
        lines.sort();
        lines
    }

    struct Scenario {
        _dirs: Vec<tempfile::TempDir>,
        view: Rootfs,
        scratch: PathBuf,
    }

    /// Two lower layers: a base, and one that whites out etc/ghost and makes opt/ opaque.
    fn lower() -> Scenario {
        let base_dir = tempfile::tempdir().unwrap();
        let top_dir = tempfile::tempdir().unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let b = base_dir.path();
        for d in [
            "etc",
            "usr",
            "usr/bin",
            "srv",
            "srv/data",
            "olddir",
            "olddir/sub",
            "opq",
            "opq2",
            "d2f",
            "allgone",
            "cfg",
            "cfg/sub",
            "cfg/sub2",
            "opt",
            "empty",
            "dev",
            "run",
        ] {
            mkdir(b, d);
        }
        for (f, c) in [
            ("etc/keep", "keep"),
            ("etc/content", "old content"),
            ("etc/sneaky", "aaaa"),
            ("etc/mode", "m"),
            ("etc/owner", "o"),
            ("etc/gone", "g"),
            ("etc/touched", "t"),
            ("etc/ghost", "ghost"),
            ("etc/xattr", "x"),
            ("usr/bin/tool", "tool"),
            ("srv/data/file", "data"),
            ("olddir/a", "a"),
            ("olddir/sub/b", "b"),
            ("opq/x", "x"),
            ("opq/y", "y"),
            ("opq2/x", "x2"),
            ("opq2/y", "y2"),
            ("f2d", "file"),
            ("d2f/z", "z"),
            ("allgone/p", "p"),
            ("allgone/q", "q"),
            ("cfg/top", "top"),
            ("cfg/sub/a", "a"),
            ("cfg/sub/b", "b"),
            ("cfg/sub2/m", "m"),
            ("opt/old", "old"),
        ] {
            file(b, f, c);
        }
        stamp(&b.join("usr/bin/tool"), 0o755, 0, 0, T0);
        setx(b, "etc/xattr", "trusted.kiln.test", b"1");
        link(b, "etc/link", "keep");
        node(
            b,
            "dev/null",
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::makedev(1, 3),
        );
        node(b, "run/fifo", rustix::fs::FileType::Fifo, 0);
        // Directories last: writing into them changed their times.
        for d in [
            "etc",
            "usr/bin",
            "usr",
            "srv/data",
            "srv",
            "olddir/sub",
            "olddir",
            "opq",
            "opq2",
            "d2f",
            "allgone",
            "cfg/sub",
            "cfg/sub2",
            "cfg",
            "opt",
            "empty",
            "dev",
            "run",
            "",
        ] {
            touch(b, d, T0);
        }
        let t = top_dir.path();
        mkdir(t, "etc");
        whiteout(t, "etc/ghost");
        mkdir(t, "opt");
        file(t, "opt/cur", "cur");
        setx(t, "opt", OPQ, b"y");
        touch(t, "etc", T0);
        touch(t, "opt", T0);
        touch(t, "", T0);
        let view = Rootfs::new(vec![b.to_path_buf(), t.to_path_buf()]);
        let scratch_path = scratch.path().to_path_buf();
        Scenario {
            _dirs: vec![base_dir, top_dir, scratch],
            view,
            scratch: scratch_path,
        }
    }

    /// The times every changed entry ends with, the same on both paths.
    const CHANGED: [&str; 25] = [
        "",
        "etc",
        "etc/content",
        "etc/link",
        "opq",
        "opq/new",
        "opq2",
        "f2d",
        "f2d/inner",
        "d2f",
        "allgone",
        "cfg",
        "cfg/sub",
        "cfg/sub2",
        "cfg/sub/a",
        "cfg/sub2/n",
        "opt",
        "opt/added",
        "empty",
        "empty/n",
        "new",
        "new/a",
        "new/sym",
        "dev",
        "dev/zero",
    ];

    /// The command, run in a full copy of the root filesystem.
    fn run_in_tree(s: &Scenario, tree: &Path) {
        copy_view(&s.view, tree);
        let r = tree;
        fs::write(r.join("etc/content"), "new content").unwrap();
        fs::write(r.join("etc/sneaky"), "bbbb").unwrap();
        touch(r, "etc/sneaky", T0);
        stamp(&r.join("etc/mode"), 0o4755, 0, 0, T0);
        stamp(&r.join("etc/owner"), 0o644, 1000, 1000, T0);
        rm(r, "etc/gone");
        fs::write(r.join("etc/touched"), "t").unwrap();
        touch(r, "etc/touched", T0);
        fs::hard_link(r.join("etc/keep"), r.join("etc/keep-link")).unwrap();
        setx(r, "etc/xattr", "trusted.kiln.test", b"2");
        rm(r, "etc/link");
        link(r, "etc/link", "content");
        fs::write(r.join("usr/bin/tool"), "tool").unwrap();
        touch(r, "usr/bin/tool", T0);
        stamp(&r.join("srv/data/file"), 0o600, 0, 0, T0);
        rm(r, "olddir");
        rm(r, "opq");
        mkdir(r, "opq");
        file(r, "opq/new", "new");
        rm(r, "opq2");
        mkdir(r, "opq2");
        file(r, "opq2/x", "x2");
        rm(r, "f2d");
        mkdir(r, "f2d");
        file(r, "f2d/inner", "inner");
        rm(r, "d2f");
        file(r, "d2f", "now a file");
        rm(r, "allgone/p");
        rm(r, "allgone/q");
        rm(r, "cfg");
        mkdir(r, "cfg");
        mkdir(r, "cfg/sub");
        mkdir(r, "cfg/sub2");
        file(r, "cfg/sub/a", "A");
        file(r, "cfg/sub2/n", "n");
        file(r, "opt/added", "added");
        rm(r, "empty");
        mkdir(r, "empty");
        file(r, "empty/n", "");
        mkdir(r, "new");
        file(r, "new/a", "hello");
        fs::hard_link(r.join("new/a"), r.join("new/b")).unwrap();
        link(r, "new/sym", "../etc/keep");
        node(
            r,
            "dev/zero",
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::makedev(1, 5),
        );
        stamp(&r.join("run/fifo"), 0o600, 0, 0, T0);
        for rel in CHANGED.iter().rev() {
            touch(r, rel, T1);
        }
    }

    /// The same command as overlayfs would have recorded it in an upper directory.
    fn run_in_upper(s: &Scenario, u: &Path) {
        let view = &s.view;
        // The upper root: kiln creates it; the merged root shows its metadata.
        let root = view.lstat(Path::new("")).unwrap();
        set_stamp(u, Stamp::of(&root.meta), false, true).unwrap();
        copy_up(view, u, "etc/content");
        fs::write(u.join("etc/content"), "new content").unwrap();
        copy_up(view, u, "etc/sneaky");
        fs::write(u.join("etc/sneaky"), "bbbb").unwrap();
        touch(u, "etc/sneaky", T0);
        // chmod and chown alone copy the whole file up (metacopy=off).
        copy_up(view, u, "etc/mode");
        stamp(&u.join("etc/mode"), 0o4755, 0, 0, T0);
        copy_up(view, u, "etc/owner");
        stamp(&u.join("etc/owner"), 0o644, 1000, 1000, T0);
        whiteout(u, "etc/gone");
        copy_up(view, u, "etc/touched");
        touch(u, "etc/touched", T0);
        copy_up(view, u, "etc/keep");
        fs::hard_link(u.join("etc/keep"), u.join("etc/keep-link")).unwrap();
        copy_up(view, u, "etc/xattr");
        setx(u, "etc/xattr", "trusted.kiln.test", b"2");
        link(u, "etc/link", "content");
        setx(u, "etc", "trusted.overlay.impure", b"y");
        // A copied-up file nothing changed: its directories were copied up too.
        copy_up(view, u, "usr/bin/tool");
        copy_up(view, u, "srv/data/file");
        stamp(&u.join("srv/data/file"), 0o600, 0, 0, T0);
        whiteout(u, "olddir");
        // rm -rf opq; mkdir opq: a directory created over a whiteout is opaque.
        mkdir(u, "opq");
        setx(u, "opq", "user.overlay.opaque", b"y");
        file(u, "opq/new", "new");
        mkdir(u, "opq2");
        setx(u, "opq2", OPQ, b"y");
        file(u, "opq2/x", "x2");
        mkdir(u, "f2d");
        setx(u, "f2d", OPQ, b"y");
        file(u, "f2d/inner", "inner");
        file(u, "d2f", "now a file");
        copy_up(view, u, "allgone");
        whiteout(u, "allgone/p");
        whiteout(u, "allgone/q");
        mkdir(u, "cfg");
        setx(u, "cfg", OPQ, b"y");
        mkdir(u, "cfg/sub");
        mkdir(u, "cfg/sub2");
        file(u, "cfg/sub/a", "A");
        file(u, "cfg/sub2/n", "n");
        copy_up(view, u, "opt");
        file(u, "opt/added", "added");
        // Not something overlayfs writes, but canonical form has no use for it.
        whiteout(u, "opt/old");
        mkdir(u, "empty");
        setx(u, "empty", OPQ, b"y");
        file(u, "empty/n", "");
        mkdir(u, "new");
        file(u, "new/a", "hello");
        fs::hard_link(u.join("new/a"), u.join("new/b")).unwrap();
        link(u, "new/sym", "../etc/keep");
        copy_up(view, u, "dev");
        node(
            u,
            "dev/zero",
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::makedev(1, 5),
        );
        copy_up(view, u, "run/fifo");
        stamp(&u.join("run/fifo"), 0o600, 0, 0, T0);
        for rel in CHANGED.iter().rev() {
            touch(u, rel, T1);
        }
    }

    #[test]
    fn overlay_upper_and_tree_walk_give_the_same_canonical_diff() {
        if !root_or_skip() {
            return;
        }
        let s = lower();
        let tree = s.scratch.join("tree");
        let out = s.scratch.join("out");
        let upper = s.scratch.join("upper");
        for d in [&tree, &out, &upper] {
            fs::create_dir(d).unwrap();
        }

        run_in_tree(&s, &tree);
        let walked = walk_diff(&s.view, &tree, &out).unwrap();
        assert!(walked.removed_unchanged > 0);
        let fallback = canonicalize(&s.view, &out, OPQ).unwrap();

        run_in_upper(&s, &upper);
        let overlay = canonicalize(&s.view, &upper, OPQ).unwrap();

        let a = listing(&out);
        let b = listing(&upper);
        assert_eq!(
            a,
            b,
            "fallback:\n{}\n\noverlay:\n{}",
            a.join("\n"),
            b.join("\n")
        );
        assert_eq!(fallback.entries, overlay.entries);
        assert_eq!(fallback.whiteouts, overlay.whiteouts);

        // Canonicalizing again changes nothing.
        let again = canonicalize(&s.view, &upper, OPQ).unwrap();
        assert_eq!(listing(&upper), b);
        assert_eq!(again.removed_unchanged, 0);
        assert_eq!(again.stale_whiteouts, 0);

        let has = |rel: &str| fs::symlink_metadata(out.join(rel)).ok();
        let wh = |rel: &str| has(rel).is_some_and(|m| is_whiteout(&m));
        let opaque = |rel: &str| is_opaque(&out.join(rel));
        // Created, changed, chmod (setuid kept), chown, xattr, symlink, hardlinks, devices.
        for rel in [
            "etc/content",
            "etc/sneaky",
            "etc/keep-link",
            "etc/xattr",
            "etc/link",
            "new/a",
            "new/b",
            "new/sym",
            "dev/zero",
            "run/fifo",
        ] {
            assert!(has(rel).is_some_and(|m| !is_whiteout(&m)), "{rel} kept");
        }
        assert_eq!(has("etc/mode").unwrap().mode() & 0o7777, 0o4755);
        assert_eq!(has("etc/owner").unwrap().uid(), 1000);
        assert_eq!(has("srv/data/file").unwrap().mode() & 0o7777, 0o600);
        assert_eq!(has("new/a").unwrap().ino(), has("new/b").unwrap().ino());
        // Identical entries, and directories with nothing changed below, are left out.
        // A new name for an unchanged file keeps both names, linked.
        assert_eq!(
            has("etc/keep").unwrap().ino(),
            has("etc/keep-link").unwrap().ino()
        );
        for rel in ["etc/touched", "etc/ghost", "usr", "dev/null", "opq2/x"] {
            assert!(has(rel).is_none(), "{rel} left out");
        }
        // Unchanged directories with changed descendants stay, with their own metadata.
        assert_eq!(Stamp::of(&has("srv/data").unwrap()).mtime, T0);
        // Deletions.
        for rel in ["etc/gone", "olddir", "opq2/y", "cfg/top", "cfg/sub/b"] {
            assert!(wh(rel), "{rel} whited out");
        }
        assert!(!wh("opt/old"), "a whiteout of nothing visible goes");
        assert!(has("d2f").unwrap().is_file());
        // Opacity: exactly where no lower name survives.
        for rel in ["opq", "allgone", "cfg/sub2"] {
            assert!(opaque(rel), "{rel} opaque");
        }
        for rel in ["", "etc", "opq2", "f2d", "cfg", "cfg/sub", "opt", "empty"] {
            assert!(!opaque(rel), "{rel} not opaque");
        }
        assert_eq!(fs::read_dir(out.join("allgone")).unwrap().count(), 0);
        let mut value = [0u8; 4];
        assert!(
            rustix::fs::lgetxattr(upper.join("opq"), "user.overlay.opaque", &mut value).is_err()
        );
        assert_eq!(
            rustix::fs::lgetxattr(upper.join("opq"), OPQ, &mut value).unwrap(),
            1
        );
    }

    #[test]
    fn a_diff_of_nothing_is_empty() {
        if !root_or_skip() {
            return;
        }
        let s = lower();
        let tree = s.scratch.join("tree");
        let out = s.scratch.join("out");
        fs::create_dir(&tree).unwrap();
        fs::create_dir(&out).unwrap();
        copy_view(&s.view, &tree);
        let stats = walk_diff(&s.view, &tree, &out).unwrap();
        assert_eq!(stats.entries, 0);
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
        // An upper dir where everything was copied up untouched canonicalizes to nothing too.
        let upper = s.scratch.join("upper");
        fs::create_dir(&upper).unwrap();
        copy_view(&s.view, &upper);
        let stats = canonicalize(&s.view, &upper, OPQ).unwrap();
        assert_eq!(stats.entries, 0);
        assert_eq!(fs::read_dir(&upper).unwrap().count(), 0);
    }

    #[test]
    fn shared_whiteouts_are_split_and_the_root_is_never_opaque() {
        if !root_or_skip() {
            return;
        }
        let s = lower();
        let upper = s.scratch.join("upper");
        fs::create_dir(&upper).unwrap();
        // Overlayfs may hardlink one whiteout inode under many names.
        copy_up(&s.view, &upper, "opq2");
        whiteout(&upper, "opq2/y");
        fs::hard_link(upper.join("opq2/y"), upper.join("olddir")).unwrap();
        touch(&upper, "opq2", T1);
        touch(&upper, "", T0);
        canonicalize(&s.view, &upper, OPQ).unwrap();
        let y = fs::symlink_metadata(upper.join("opq2/y")).unwrap();
        let olddir = fs::symlink_metadata(upper.join("olddir")).unwrap();
        assert!(is_whiteout(&y) && is_whiteout(&olddir));
        assert_ne!(y.ino(), olddir.ino());
        assert_eq!(Stamp::of(&y).mtime, T1);
        assert_eq!(Stamp::of(&olddir).mtime, T0);
        assert_eq!(Stamp::of(&fs::symlink_metadata(&upper).unwrap()).mtime, T0);

        // An opaque root would be ignored by the kernel: the lower names it does not have
        // become whiteouts instead, and a directory it has in common with the lower view is
        // opaque in its place.
        let upper = s.scratch.join("upper2");
        fs::create_dir(&upper).unwrap();
        mkdir(&upper, "etc");
        file(&upper, "etc/only", "only");
        setx(&upper, "", OPQ, b"y");
        canonicalize(&s.view, &upper, OPQ).unwrap();
        assert!(!is_opaque(&upper));
        assert!(is_opaque(&upper.join("etc")));
        for name in s.view.list(Path::new("")) {
            let meta = fs::symlink_metadata(upper.join(&name)).unwrap();
            assert_eq!(is_whiteout(&meta), name != "etc", "{name:?}");
        }
    }

    #[test]
    fn redirects_and_unknown_markers_are_refused() {
        if !root_or_skip() {
            return;
        }
        let s = lower();
        let upper = s.scratch.join("upper");
        fs::create_dir(&upper).unwrap();
        mkdir(&upper, "moved");
        setx(&upper, "moved", "trusted.overlay.redirect", b"/cfg");
        assert!(matches!(
            canonicalize(&s.view, &upper, OPQ),
            Err(ExecError::Unsupported(_))
        ));
        assert!(matches!(
            canonicalize(&s.view, &upper, "user.opaque"),
            Err(ExecError::Unsupported(_))
        ));
    }
}
