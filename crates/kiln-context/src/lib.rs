//! kiln-context: the build context, read safely.
//!
//! COPY and ADD read from the context directory. Everything here keeps them inside it: paths
//! are cleaned so `..` stops at the root, symlinks are followed *within* the root (an absolute
//! link target means the context root, as BuildKit scopes it), and `.dockerignore` excludes
//! what the user asked to keep out. Content digests (for cache keys) are computed here, with
//! each file's hash memoised by its (dev, inode, size, mtime, ctime) so an unchanged file is
//! never read twice.

#![warn(missing_docs)]

pub mod hash;
pub mod ignore;
pub mod scope;

pub use hash::{
    content_digest, content_digest_detailed, DetailedDigest, HashMemo, MemoryMemo, StatKey,
};
pub use ignore::{clean, IgnoreRules};
pub use scope::{resolve_scoped, DirTree, Node, ScopeError, ScopedTree};

use globset::GlobMatcher;
use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, StatxFlags};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What can go wrong reading the build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A file of the context could not be read (no permission, vanished, ...).
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A `.dockerignore` or `--exclude` pattern is not valid.
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A source names nothing in the context.
    #[error("{path:?}: not found in the build context")]
    NotFound {
        /// The source as written.
        path: String,
    },
    /// A source names something `.dockerignore` leaves out.
    #[error("{path:?}: excluded by .dockerignore")]
    Excluded {
        /// The source as written.
        path: String,
    },
    /// A wildcard source matches nothing.
    #[error("{path:?}: no file in the build context matches")]
    NoMatch {
        /// The pattern as written.
        path: String,
    },
    /// Resolving a path followed more symbolic links than the kernel would.
    #[error("{path:?}: too many levels of symbolic links")]
    TooManyLinks {
        /// The path being resolved.
        path: String,
    },
    /// A path goes through something that is not a directory.
    #[error("{path:?}: not a directory")]
    NotADirectory {
        /// The path concerned.
        path: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What kind of thing an entry is; other file types (sockets, devices) are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, with its target as stored.
    Symlink(PathBuf),
}

/// One file, directory or link found by a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the walked source (empty for the source itself).
    pub relative: PathBuf,
    /// Where it is on disk.
    pub absolute: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    /// Size in bytes (files).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// The nanoseconds of the modification time.
    pub mtime_nsec: i64,
    /// What identifies its content without reading it (for the hash memo).
    pub stat: StatKey,
    /// How many names the file has (hard links), as walked.
    pub nlink: u64,
}

/// An open build context: its root directory and its `.dockerignore` rules.
pub struct Context {
    root: PathBuf,
    /// The root, held open: files are opened beneath it, never through a symlink.
    root_fd: std::os::fd::OwnedFd,
    ignore: IgnoreRules,
}

fn has_wildcard(segment: &str) -> bool {
    segment.contains(['*', '?', '['])
}

impl Context {
    /// Opens `root` with explicit ignore rules.
    pub fn new(root: &Path, ignore: IgnoreRules) -> Result<Self, ContextError> {
        let root = fs::canonicalize(root).map_err(io_error(root))?;
        if !root.is_dir() {
            return Err(ContextError::NotADirectory {
                path: root.display().to_string(),
            });
        }
        let root_fd = rustix::fs::open(
            &root,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| io_error(&root)(e.into()))?;
        Ok(Context {
            root,
            root_fd,
            ignore,
        })
    }

    /// Opens `root`, reading `<recipe>.dockerignore` beside the recipe if it exists, else
    /// `.dockerignore` at the root, as BuildKit does.
    pub fn open(root: &Path, recipe: Option<&Path>) -> Result<Self, ContextError> {
        let mut candidates = Vec::new();
        if let Some(recipe) = recipe {
            let mut name = recipe.as_os_str().to_owned();
            name.push(".dockerignore");
            candidates.push(PathBuf::from(name));
        }
        candidates.push(root.join(".dockerignore"));
        for candidate in candidates {
            match fs::read_to_string(&candidate) {
                Ok(text) => return Context::new(root, IgnoreRules::parse(&text)?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&candidate)(e)),
            }
        }
        Context::new(root, IgnoreRules::default())
    }

    /// The context's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Opens a file a walk found, for reading. The kernel resolves the path beneath the root
    /// and refuses any symlink on the way, so a link swapped in after the walk cannot lead
    /// out of the context.
    pub fn open_file(&self, absolute: &Path) -> std::io::Result<std::fs::File> {
        use rustix::fs::OFlags;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        self.open_beneath(absolute, flags).map(std::fs::File::from)
    }

    /// Opens a directory a walk found, for listing, as [`Context::open_file`] opens a file.
    fn open_dir(&self, absolute: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
        use rustix::fs::OFlags;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        self.open_beneath(absolute, flags)
    }

    fn open_beneath(
        &self,
        absolute: &Path,
        flags: rustix::fs::OFlags,
    ) -> std::io::Result<std::os::fd::OwnedFd> {
        use rustix::fs::{Mode, ResolveFlags};
        let relative = absolute.strip_prefix(&self.root).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is outside the build context", absolute.display()),
            )
        })?;
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(&self.root_fd, relative, flags, Mode::empty(), resolve) {
            Ok(fd) => Ok(fd),
            // Kernels before 5.6 lack openat2, and some container seccomp profiles refuse it
            // with EPERM: the last component is still not followed.
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                Ok(rustix::fs::open(absolute, flags, Mode::empty())?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The `.dockerignore` rules in force.
    pub fn ignore(&self) -> &IgnoreRules {
        &self.ignore
    }

    /// The real location of context-relative `path`. `..` stops at the root and symlinks are
    /// followed inside the root; the last component is followed only with `follow_last`.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<PathBuf, ContextError> {
        Ok(self.resolve_with_metadata(path, follow_last)?.0)
    }

    /// [`Context::resolve`], with the metadata of what the path names when the resolution
    /// ended by looking at it (so a caller needs no second stat of it).
    fn resolve_with_metadata(
        &self,
        path: &str,
        follow_last: bool,
    ) -> Result<(PathBuf, Option<fs::Metadata>), ContextError> {
        let cleaned = clean(path);
        let tree = RecordingTree {
            root: &self.root,
            last: std::cell::RefCell::new(None),
        };
        match resolve_scoped(&tree, Path::new(&cleaned), follow_last) {
            Ok((relative, true)) => {
                let meta = tree
                    .last
                    .into_inner()
                    .filter(|(seen, _)| *seen == relative)
                    .map(|(_, meta)| meta);
                Ok((self.root.join(relative), meta))
            }
            Ok((_, false)) => Err(ContextError::NotFound {
                path: path.to_string(),
            }),
            Err(ScopeError::TooManyLinks(_)) => Err(ContextError::TooManyLinks {
                path: path.to_string(),
            }),
            Err(ScopeError::Io {
                path: relative,
                source,
            }) => Err(ContextError::Io {
                path: self.root.join(relative),
                source,
            }),
        }
    }

    /// Context-relative form of a resolved absolute path.
    fn relative_of(&self, absolute: &Path) -> String {
        absolute
            .strip_prefix(&self.root)
            .unwrap_or(absolute)
            .to_string_lossy()
            .into_owned()
    }

    /// The context paths a COPY/ADD source names: the path itself, or every match of a
    /// wildcard pattern (Go `filepath.Match` per path segment), sorted. Excluded paths do
    /// not match; nothing matching is an error.
    pub fn sources(&self, pattern: &str) -> Result<Vec<String>, ContextError> {
        let cleaned = clean(pattern);
        let segments: Vec<&str> = cleaned.split('/').filter(|s| !s.is_empty()).collect();
        let Some(first_wild) = segments.iter().position(|s| has_wildcard(s)) else {
            self.plain_source(pattern)?;
            return Ok(vec![cleaned]);
        };
        let prefix = segments[..first_wild].join("/");
        let start = self.resolve(&prefix, true)?;
        let mut matchers = Vec::new();
        for segment in &segments[first_wild..] {
            matchers.push(ignore::compile_glob(segment)?);
        }
        let mut found = Vec::new();
        self.match_segments(&start, &prefix, &matchers, &mut found)?;
        found.sort();
        if found.is_empty() {
            return Err(ContextError::NoMatch {
                path: pattern.to_string(),
            });
        }
        Ok(found)
    }

    /// A source without wildcards: where it really is and, when resolving it looked at it,
    /// its metadata. Excluded sources are an error.
    fn plain_source(&self, pattern: &str) -> Result<(PathBuf, Option<fs::Metadata>), ContextError> {
        let cleaned = clean(pattern);
        let (absolute, meta) = self.resolve_with_metadata(&cleaned, true)?;
        let relative = self.relative_of(&absolute);
        if self.ignore.is_excluded(&cleaned) || self.ignore.is_excluded(&relative) {
            return Err(ContextError::Excluded {
                path: pattern.to_string(),
            });
        }
        Ok((absolute, meta))
    }

    /// [`Context::sources`] then [`Context::walk`] of each match, for a source with no
    /// wildcard: the path is resolved once and what it names is stat'ed once (a file named in
    /// a COPY costs one stat). `None` for a wildcard pattern (walk each of its sources).
    pub fn walk_plain_source(
        &self,
        pattern: &str,
        excludes: &IgnoreRules,
    ) -> Result<Option<(String, Vec<Entry>)>, ContextError> {
        let cleaned = clean(pattern);
        if cleaned.split('/').any(has_wildcard) {
            return Ok(None);
        }
        let (absolute, meta) = self.plain_source(pattern)?;
        let entries = self.walk_resolved(absolute, meta, excludes)?;
        Ok(Some((cleaned, entries)))
    }

    fn match_segments(
        &self,
        dir: &Path,
        relative: &str,
        matchers: &[GlobMatcher],
        found: &mut Vec<String>,
    ) -> Result<(), ContextError> {
        let Some((matcher, rest)) = matchers.split_first() else {
            return Ok(());
        };
        let reader = match fs::read_dir(dir) {
            Ok(reader) => reader,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(()),
            Err(e) => return Err(io_error(dir)(e)),
        };
        for item in reader {
            let item = item.map_err(io_error(dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if !matcher.is_match(name.as_ref()) {
                continue;
            }
            let child = if relative.is_empty() {
                name.to_string()
            } else {
                format!("{relative}/{name}")
            };
            if self.ignore.is_excluded(&child) && !self.ignore.has_exceptions() {
                continue;
            }
            if rest.is_empty() {
                // Judge what the match really is, so a link into an ignored file is ignored too.
                let resolved = self.resolve(&child, true).map(|p| self.relative_of(&p));
                let excluded_target = resolved
                    .as_deref()
                    .map_or(true, |r| self.ignore.is_excluded(r));
                if !self.ignore.is_excluded(&child) && !excluded_target {
                    found.push(child);
                }
            } else if let Ok(next) = self.resolve(&child, true) {
                if next.is_dir() {
                    self.match_segments(&next, &child, rest, found)?;
                }
            }
        }
        Ok(())
    }

    /// Every entry at and below the context path `source` (the source first, then its
    /// contents sorted by name), leaving out what `.dockerignore` or `excludes` (patterns
    /// relative to the source, as `COPY --exclude` takes them) exclude. The source itself is
    /// followed if it is a symlink; links inside it are kept as links.
    ///
    /// Each entry is stat'ed once, by its name in its open directory (no lookup of the whole
    /// path), and directories are walked on all cores; the order is the same whatever runs
    /// first.
    pub fn walk(&self, source: &str, excludes: &IgnoreRules) -> Result<Vec<Entry>, ContextError> {
        let (absolute, meta) = self.resolve_with_metadata(source, true)?;
        self.walk_resolved(absolute, meta, excludes)
    }

    /// [`Context::walk`] of a resolved source, with its metadata if known already.
    fn walk_resolved(
        &self,
        absolute: PathBuf,
        meta: Option<fs::Metadata>,
        excludes: &IgnoreRules,
    ) -> Result<Vec<Entry>, ContextError> {
        let context_relative = self.relative_of(&absolute);
        let meta = match meta {
            Some(meta) => meta,
            None => fs::symlink_metadata(&absolute).map_err(io_error(&absolute))?,
        };
        let Some(entry) = entry_of(PathBuf::new(), &absolute, &meta)? else {
            return Ok(Vec::new());
        };
        if entry.kind != EntryKind::Dir {
            return Ok(vec![entry]);
        }
        let walk = Walk {
            context: self,
            context_relative: &context_relative,
            excludes,
            descend_excluded: self.ignore.has_exceptions() || excludes.has_exceptions(),
        };
        walk.below(&absolute, entry)
    }
}

/// The context directory as a tree to resolve in, remembering the metadata of the last
/// thing (not a link) it looked at: when that is what a path resolved to, it need not be
/// stat'ed again.
struct RecordingTree<'a> {
    root: &'a Path,
    last: std::cell::RefCell<Option<(PathBuf, fs::Metadata)>>,
}

impl ScopedTree for RecordingTree<'_> {
    fn node(&self, relative: &Path) -> std::io::Result<Node> {
        let path = self.root.join(relative);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => Ok(Node::Symlink(fs::read_link(&path)?)),
            Ok(meta) => {
                *self.last.borrow_mut() = Some((relative.to_path_buf(), meta));
                Ok(Node::Other)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.kind() == std::io::ErrorKind::NotADirectory =>
            {
                Ok(Node::Missing)
            }
            Err(e) => Err(e),
        }
    }
}

/// One walk below a source directory (see [`Context::walk`]).
struct Walk<'a> {
    context: &'a Context,
    /// The source's path relative to the context root (empty for the root).
    context_relative: &'a str,
    excludes: &'a IgnoreRules,
    /// Whether excluded directories are still walked: a `!` rule may re-include inside.
    descend_excluded: bool,
}

/// An entry of a directory, as its listing and one stat found it.
struct Child {
    entry: Entry,
    excluded: bool,
    /// For a directory: which listing holds what is inside it.
    inside: Option<usize>,
}

impl Walk<'_> {
    /// `first` (the directory's own entry), then the entries below the directory at
    /// `absolute`, in walk order: sorted by name, each directory followed by what is inside
    /// it. Directories are listed a level at a time, the level's directories on all cores,
    /// and then put in order without recursion, so a deep tree costs neither stack nor open
    /// files.
    fn below(&self, absolute: &Path, first: Entry) -> Result<Vec<Entry>, ContextError> {
        let mut listings: Vec<Vec<Child>> = Vec::new();
        let mut level = vec![(absolute.to_path_buf(), PathBuf::new())];
        while !level.is_empty() {
            let listed = level
                .par_iter()
                .map(|(absolute, relative)| self.list(absolute, relative))
                .collect::<Result<Vec<_>, ContextError>>()?;
            // The next level's listings come after this level's, in this order.
            let first_next = listings.len() + listed.len();
            let mut next = Vec::new();
            for mut children in listed {
                for child in &mut children {
                    if child.entry.kind == EntryKind::Dir {
                        child.inside = Some(first_next + next.len());
                        next.push((child.entry.absolute.clone(), child.entry.relative.clone()));
                    }
                }
                listings.push(children);
            }
            level = next;
        }
        // Inner listings come after outer ones: counting from the last, each directory knows
        // how many entries it keeps (an excluded one is kept only for what is inside it)
        // before its parent needs to.
        let mut kept = vec![0usize; listings.len()];
        for (id, children) in listings.iter().enumerate().rev() {
            let mut count = 0usize;
            for child in children {
                count += match child.inside {
                    Some(inner) => {
                        let inside = kept.get(inner).copied().unwrap_or(0);
                        usize::from(!child.excluded || inside > 0) + inside
                    }
                    None => 1,
                };
            }
            if let Some(slot) = kept.get_mut(id) {
                *slot = count;
            }
        }
        // Then each entry moves once, in walk order: a directory, then what is inside it.
        let mut entries = Vec::with_capacity(kept.first().copied().unwrap_or(0) + 1);
        entries.push(first);
        let mut pending: Vec<std::vec::IntoIter<Child>> =
            listings.into_iter().map(Vec::into_iter).collect();
        let mut open = vec![0usize];
        while let Some(&id) = open.last() {
            let Some(child) = pending.get_mut(id).and_then(Iterator::next) else {
                open.pop();
                continue;
            };
            match child.inside {
                Some(inner) => {
                    let inside = kept.get(inner).copied().unwrap_or(0);
                    if !child.excluded || inside > 0 {
                        entries.push(child.entry);
                    }
                    open.push(inner);
                }
                None => entries.push(child.entry),
            }
        }
        Ok(entries)
    }

    /// What the walk keeps of the directory at `absolute` (`relative` to the source), sorted
    /// by name, each entry stat'ed by its name in the open directory.
    fn list(&self, absolute: &Path, relative: &Path) -> Result<Vec<Child>, ContextError> {
        let fd = self
            .context
            .open_dir(absolute)
            .map_err(io_error(absolute))?;
        let mut listing = rustix::fs::Dir::new(fd).map_err(|e| io_error(absolute)(e.into()))?;
        let mut names: Vec<OsString> = Vec::new();
        while let Some(item) = listing.read() {
            let item = item.map_err(|e| io_error(absolute)(e.into()))?;
            let name = item.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        let dir_fd = listing.fd().map_err(|e| io_error(absolute)(e.into()))?;
        let children = names
            .par_iter()
            .map(|name| self.child(dir_fd, absolute, relative, name))
            .collect::<Result<Vec<_>, ContextError>>()?;
        Ok(children.into_iter().flatten().collect())
    }

    /// The entry `name` of the directory open as `dir_fd`, if the walk keeps it (or, for an
    /// excluded directory, may keep what is inside it).
    fn child(
        &self,
        dir_fd: BorrowedFd<'_>,
        dir_absolute: &Path,
        dir_relative: &Path,
        name: &OsStr,
    ) -> Result<Option<Child>, ContextError> {
        let relative = dir_relative.join(name);
        let excluded = self.is_excluded(&relative);
        if excluded && !self.descend_excluded {
            return Ok(None);
        }
        let absolute = dir_absolute.join(name);
        let meta = match rustix::fs::statx(
            dir_fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        ) {
            Ok(stat) => EntryMeta::of_statx(&stat),
            // Kernels before 4.11 lack statx, and old container seccomp profiles refuse it
            // with EPERM.
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                EntryMeta::of(&fs::symlink_metadata(&absolute).map_err(io_error(&absolute))?)
            }
            Err(e) => return Err(io_error(&absolute)(e.into())),
        };
        let kind = match meta.file_type {
            FileType::Directory => EntryKind::Dir,
            FileType::RegularFile if !excluded => EntryKind::File,
            FileType::Symlink if !excluded => {
                let target = rustix::fs::readlinkat(dir_fd, name, Vec::new())
                    .map_err(|e| io_error(&absolute)(e.into()))?;
                EntryKind::Symlink(PathBuf::from(OsString::from_vec(target.into_bytes())))
            }
            _ => return Ok(None),
        };
        Ok(Some(Child {
            entry: meta.entry(relative, absolute, kind),
            excluded,
            inside: None,
        }))
    }

    fn is_excluded(&self, relative: &Path) -> bool {
        let ignore = &self.context.ignore;
        if ignore.is_empty() && self.excludes.is_empty() {
            return false;
        }
        let relative = relative.to_string_lossy();
        let context_path = if self.context_relative.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.context_relative)
        };
        ignore.is_excluded(&context_path) || self.excludes.is_excluded(&relative)
    }
}

/// What a stat says of a walked entry.
struct EntryMeta {
    file_type: FileType,
    mode: u32,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    stat: StatKey,
    nlink: u64,
}

impl EntryMeta {
    fn of(meta: &fs::Metadata) -> Self {
        EntryMeta {
            file_type: FileType::from_raw_mode(meta.mode()),
            mode: meta.mode(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            stat: StatKey::of(meta),
            nlink: meta.nlink(),
        }
    }

    fn of_statx(stat: &rustix::fs::Statx) -> Self {
        let mode = u32::from(stat.stx_mode);
        EntryMeta {
            file_type: FileType::from_raw_mode(mode),
            mode,
            size: stat.stx_size,
            mtime: stat.stx_mtime.tv_sec,
            mtime_nsec: i64::from(stat.stx_mtime.tv_nsec),
            stat: StatKey::of_statx(stat),
            nlink: u64::from(stat.stx_nlink),
        }
    }

    fn entry(&self, relative: PathBuf, absolute: PathBuf, kind: EntryKind) -> Entry {
        Entry {
            size: if kind == EntryKind::File {
                self.size
            } else {
                0
            },
            relative,
            absolute,
            kind,
            mode: self.mode & 0o7777,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            stat: self.stat,
            nlink: self.nlink,
        }
    }
}

fn entry_of(
    relative: PathBuf,
    absolute: &Path,
    meta: &fs::Metadata,
) -> Result<Option<Entry>, ContextError> {
    let meta = EntryMeta::of(meta);
    let kind = match meta.file_type {
        FileType::Directory => EntryKind::Dir,
        FileType::RegularFile => EntryKind::File,
        FileType::Symlink => {
            EntryKind::Symlink(fs::read_link(absolute).map_err(io_error(absolute))?)
        }
        _ => return Ok(None),
    };
    Ok(Some(meta.entry(relative, absolute.to_path_buf(), kind)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn context(files: &[(&str, &str)], ignore: &str) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            if path.ends_with('/') {
                fs::create_dir_all(&full).unwrap();
            } else {
                fs::write(&full, content).unwrap();
            }
        }
        let ctx = Context::new(dir.path(), IgnoreRules::parse(ignore).unwrap()).unwrap();
        (dir, ctx)
    }

    fn rels(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| e.relative.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dotdot_and_absolute_sources_stay_inside() {
        let (_dir, ctx) = context(&[("x", "1")], "");
        assert_eq!(ctx.sources("../x").unwrap(), ["x"]);
        assert_eq!(ctx.sources("/x").unwrap(), ["x"]);
        assert_eq!(ctx.sources("../../../x").unwrap(), ["x"]);
        assert!(matches!(
            ctx.sources("../etc/passwd"),
            Err(ContextError::NotFound { .. })
        ));
    }

    #[test]
    fn symlinks_pointing_out_resolve_inside_the_root() {
        let (dir, ctx) = context(&[("etc/passwd", "inside")], "");
        symlink("/etc/passwd", dir.path().join("abs")).unwrap();
        symlink("../../../../etc/passwd", dir.path().join("rel")).unwrap();
        for link in ["abs", "rel"] {
            let resolved = ctx.resolve(link, true).unwrap();
            assert!(
                resolved.starts_with(ctx.root()),
                "{link} escaped to {}",
                resolved.display()
            );
            assert_eq!(fs::read_to_string(resolved).unwrap(), "inside");
        }
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let (dir, ctx) = context(&[], "");
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(matches!(
            ctx.resolve("a", true),
            Err(ContextError::TooManyLinks { .. })
        ));
    }

    #[test]
    fn wildcards_follow_go_match_rules() {
        let (_dir, ctx) = context(
            &[
                ("a.txt", ""),
                ("b.txt", ""),
                ("c.md", ""),
                ("sub/d.txt", ""),
                ("sub/e/f.txt", ""),
            ],
            "",
        );
        assert_eq!(ctx.sources("*.txt").unwrap(), ["a.txt", "b.txt"]);
        assert_eq!(ctx.sources("sub/*.txt").unwrap(), ["sub/d.txt"]);
        assert_eq!(ctx.sources("*/*.txt").unwrap(), ["sub/d.txt"]);
        assert_eq!(ctx.sources("?.md").unwrap(), ["c.md"]);
        assert_eq!(ctx.sources("[ab].txt").unwrap(), ["a.txt", "b.txt"]);
        assert!(matches!(
            ctx.sources("*.rs"),
            Err(ContextError::NoMatch { .. })
        ));
    }

    #[test]
    fn dockerignore_hides_sources_and_walk_entries() {
        let (_dir, ctx) = context(
            &[
                ("app/main.rs", ""),
                ("app/target/big", ""),
                ("app/notes.md", ""),
                ("app/README.md", ""),
                ("secret.key", ""),
            ],
            "**/target\n*.key\napp/*.md\n!app/README.md\n",
        );
        assert!(matches!(
            ctx.sources("secret.key"),
            Err(ContextError::Excluded { .. })
        ));
        assert!(matches!(
            ctx.sources("*.key"),
            Err(ContextError::NoMatch { .. })
        ));
        let walked = ctx.walk("app", &IgnoreRules::default()).unwrap();
        assert_eq!(rels(&walked), ["", "README.md", "main.rs"]);
    }

    #[test]
    fn a_link_does_not_smuggle_an_ignored_file_past_a_wildcard() {
        let (dir, ctx) = context(&[("secret.key", "s"), ("ok.key", "o")], "secret.key\n");
        symlink(".", dir.path().join("alias")).unwrap();
        assert_eq!(ctx.sources("alias/*.key").unwrap(), ["alias/ok.key"]);
    }

    #[test]
    fn excluded_directory_appears_when_an_exception_reincludes_inside() {
        let (_dir, ctx) = context(
            &[("docs/a.txt", ""), ("docs/keep/b.txt", "")],
            "docs\n!docs/keep\n",
        );
        let walked = ctx.walk("", &IgnoreRules::default()).unwrap();
        assert_eq!(rels(&walked), ["", "docs", "docs/keep", "docs/keep/b.txt"]);
    }

    #[test]
    fn copy_excludes_are_relative_to_the_source() {
        let (_dir, ctx) = context(
            &[("src/a.rs", ""), ("src/a.txt", ""), ("src/deep/b.txt", "")],
            "",
        );
        let excludes = IgnoreRules::parse("**/*.txt").unwrap();
        assert_eq!(
            rels(&ctx.walk("src", &excludes).unwrap()),
            ["", "a.rs", "deep"]
        );
    }

    #[test]
    fn walk_keeps_inner_links_and_follows_the_source_link() {
        let (dir, ctx) = context(&[("real/file", "x")], "");
        symlink("file", dir.path().join("real/inner")).unwrap();
        symlink("real", dir.path().join("alias")).unwrap();
        let walked = ctx.walk("alias", &IgnoreRules::default()).unwrap();
        assert_eq!(walked[0].kind, EntryKind::Dir);
        assert_eq!(rels(&walked), ["", "file", "inner"]);
        assert_eq!(walked[2].kind, EntryKind::Symlink(PathBuf::from("file")));
    }

    #[test]
    fn open_file_refuses_a_link_swapped_in_after_the_walk() {
        let (dir, ctx) = context(&[("sub/file", "inside")], "");
        let entries = ctx.walk("sub", &IgnoreRules::default()).unwrap();
        let file = entries.iter().find(|e| e.kind == EntryKind::File).unwrap();
        assert!(ctx.open_file(&file.absolute).is_ok());
        // Replace the directory with a link to the host after the walk.
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("file"), "HOST").unwrap();
        fs::remove_dir_all(dir.path().join("sub")).unwrap();
        symlink(host.path(), dir.path().join("sub")).unwrap();
        assert!(
            ctx.open_file(&file.absolute).is_err(),
            "the swapped-in link is refused"
        );
    }

    #[test]
    fn recipe_specific_dockerignore_wins() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".dockerignore"), "a\n").unwrap();
        fs::write(dir.path().join("build.Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(dir.path().join("build.Dockerfile.dockerignore"), "b\n").unwrap();
        let ctx = Context::open(dir.path(), Some(&dir.path().join("build.Dockerfile"))).unwrap();
        assert!(ctx.ignore().is_excluded("b"));
        assert!(!ctx.ignore().is_excluded("a"));
        let ctx = Context::open(dir.path(), Some(&dir.path().join("Dockerfile"))).unwrap();
        assert!(ctx.ignore().is_excluded("a"));
    }
    /// The walk as it was written before the directory-relative one: a path lookup per entry,
    /// one directory at a time. The walk must give exactly what this gives.
    fn reference_walk(ctx: &Context, source: &str, excludes: &IgnoreRules) -> Vec<Entry> {
        fn walk_dir(
            ctx: &Context,
            dir: &Path,
            context_relative: &str,
            relative: &Path,
            excludes: &IgnoreRules,
            entries: &mut Vec<Entry>,
        ) {
            let mut names: Vec<OsString> = fs::read_dir(dir)
                .unwrap()
                .map(|item| item.unwrap().file_name())
                .collect();
            names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
            let descend_excluded = ctx.ignore.has_exceptions() || excludes.has_exceptions();
            for name in names {
                let child_relative = relative.join(&name);
                let child_absolute = dir.join(&name);
                let context_path = if context_relative.is_empty() {
                    child_relative.to_string_lossy().into_owned()
                } else {
                    format!("{context_relative}/{}", child_relative.to_string_lossy())
                };
                let excluded = ctx.ignore.is_excluded(&context_path)
                    || excludes.is_excluded(&child_relative.to_string_lossy());
                let meta = fs::symlink_metadata(&child_absolute).unwrap();
                let Some(entry) = entry_of(child_relative.clone(), &child_absolute, &meta).unwrap()
                else {
                    continue;
                };
                if entry.kind == EntryKind::Dir {
                    if excluded && !descend_excluded {
                        continue;
                    }
                    let position = entries.len();
                    walk_dir(
                        ctx,
                        &child_absolute,
                        context_relative,
                        &child_relative,
                        excludes,
                        entries,
                    );
                    if !excluded || entries.len() > position {
                        entries.insert(position, entry);
                    }
                } else if !excluded {
                    entries.push(entry);
                }
            }
        }
        let absolute = ctx.resolve(source, true).unwrap();
        let context_relative = ctx.relative_of(&absolute);
        let meta = fs::symlink_metadata(&absolute).unwrap();
        let entry = entry_of(PathBuf::new(), &absolute, &meta).unwrap().unwrap();
        let is_dir = entry.kind == EntryKind::Dir;
        let mut entries = vec![entry];
        if is_dir {
            walk_dir(
                ctx,
                &absolute,
                &context_relative,
                Path::new(""),
                excludes,
                &mut entries,
            );
        }
        entries
    }

    #[test]
    fn the_walk_gives_exactly_what_a_path_by_path_walk_gives() {
        let files: Vec<(String, String)> = [
            "a",
            "a.b",
            "a-b/c",
            "b/c/d/e.txt",
            "b/c/d/f.md",
            "b/c/keep/g.txt",
            "b/z",
            "docs/a.txt",
            "docs/keep/b.txt",
            "docs/keep/deep/c.txt",
            "empty/",
            "node_modules/x/y.js",
            "src/main.rs",
            "src/target/big",
            "src/\u{e9}t\u{e9}.txt",
            "src/sp ace",
            "Z",
            "_",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| (p.to_string(), format!("content {i}")))
        .collect();
        let file_refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let ignores = [
            "",
            "docs\n!docs/keep\n",
            "**/target\n*.md\nb/c/*\n!b/c/keep\n",
            "node_modules\nb\n!b/c/d/e.txt\n",
            "*\n!src\n",
        ];
        let excludes = ["", "**/*.txt", "*\n!keep", "d\n!d/e.txt"];
        for ignore in ignores {
            let (dir, ctx) = context(&file_refs, ignore);
            symlink("b/c", dir.path().join("link-to-dir")).unwrap();
            symlink("/etc/passwd", dir.path().join("src/abs-link")).unwrap();
            symlink("missing", dir.path().join("b/c/dangling")).unwrap();
            fs::set_permissions(
                dir.path().join("src/main.rs"),
                std::os::unix::fs::PermissionsExt::from_mode(0o4755),
            )
            .unwrap();
            let socket_path = dir.path().join("b/socket");
            let _socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
            for exclude in excludes {
                let exclude = IgnoreRules::parse(exclude).unwrap();
                for source in ["", "b", "b/c", "docs", "link-to-dir", "src", "a", "empty"] {
                    if ctx.sources(source).is_err() {
                        continue;
                    }
                    let expected = reference_walk(&ctx, source, &exclude);
                    let walked = ctx.walk(source, &exclude).unwrap();
                    assert_eq!(
                        walked,
                        expected,
                        "source {source:?}, ignore {ignore:?}, excludes {:?}",
                        exclude.patterns().collect::<Vec<_>>()
                    );
                }
            }
        }
    }

    #[test]
    fn a_deep_tree_is_walked_without_running_out_of_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        // Deeper than the usual 1024 open files, in short names so the path stays valid.
        let mut path = dir.path().to_path_buf();
        let mut expected = vec![String::new()];
        let mut relative = PathBuf::new();
        for _ in 0..1100 {
            path.push("d");
            relative.push("d");
            expected.push(relative.to_string_lossy().into_owned());
        }
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("f"), "x").unwrap();
        expected.push(relative.join("f").to_string_lossy().into_owned());
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let walked = ctx.walk("", &IgnoreRules::default()).unwrap();
        assert_eq!(rels(&walked), expected);
    }

    #[test]
    fn the_walk_refuses_a_directory_swapped_for_a_link() {
        let (dir, ctx) = context(&[("sub/inner/file", "x")], "");
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("secret"), "HOST").unwrap();
        // What a swap between the stat and the open would leave: the walk opens directories
        // beneath the root and never through a link.
        fs::remove_dir_all(dir.path().join("sub/inner")).unwrap();
        symlink(host.path(), dir.path().join("sub/inner")).unwrap();
        let walk = Walk {
            context: &ctx,
            context_relative: "sub",
            excludes: &IgnoreRules::default(),
            descend_excluded: false,
        };
        assert!(walk
            .list(&ctx.root().join("sub/inner"), Path::new("inner"))
            .is_err());
        // Walked afresh, the link is an entry, not a way in.
        let walked = ctx.walk("sub", &IgnoreRules::default()).unwrap();
        assert_eq!(rels(&walked), ["", "inner"]);
        assert!(matches!(walked[1].kind, EntryKind::Symlink(_)));
    }
    #[test]
    fn a_plain_source_walks_as_sources_then_walk_and_is_looked_at_once() {
        let (dir, ctx) = context(
            &[
                ("dir/a", "1"),
                ("dir/sub/b", "2"),
                ("file", "3"),
                ("secret", "4"),
            ],
            "secret\n",
        );
        symlink("dir", dir.path().join("alias")).unwrap();
        symlink("file", dir.path().join("file-link")).unwrap();
        let none = IgnoreRules::default();
        for source in [
            "dir",
            "dir/",
            "./dir/sub",
            "alias",
            "file",
            "file-link",
            "/file",
            ".",
        ] {
            let (matched, walked) = ctx.walk_plain_source(source, &none).unwrap().unwrap();
            assert_eq!(
                vec![matched.clone()],
                ctx.sources(source).unwrap(),
                "{source}"
            );
            assert_eq!(walked, ctx.walk(&matched, &none).unwrap(), "{source}");
        }
        // What resolving looked at last is what the source is: its stat is not taken again.
        let (absolute, meta) = ctx.resolve_with_metadata("file-link", true).unwrap();
        assert_eq!(absolute, ctx.root().join("file"));
        let meta = meta.expect("the resolution saw the file");
        assert_eq!(
            StatKey::of(&meta),
            StatKey::of(&fs::symlink_metadata(&absolute).unwrap())
        );
        assert!(matches!(
            ctx.walk_plain_source("secret", &none),
            Err(ContextError::Excluded { .. })
        ));
        assert!(matches!(
            ctx.walk_plain_source("missing", &none),
            Err(ContextError::NotFound { .. })
        ));
        assert!(ctx.walk_plain_source("dir/*", &none).unwrap().is_none());
    }
}
