//! Resolving a path inside a root, never outside it: `..` stops at the root and a symlink's
//! target is read as if the root were `/`. The build context and an image's layered
//! filesystem both use this one resolver, so the rule that untrusted paths stay inside lives
//! in one place.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed at most, as the kernel's limit.
pub const MAX_LINK_HOPS: usize = 40;

/// What a tree has at a relative path, without following a symlink there.
pub enum Node {
    /// Nothing is there.
    Missing,
    /// A symbolic link, with its target.
    Symlink(PathBuf),
    /// Anything else (file, directory, ...).
    Other,
}

/// A tree paths are resolved in: a directory, or a union of layers.
pub trait ScopedTree {
    /// What is at `relative` (relative to the tree's root), links not followed.
    fn node(&self, relative: &Path) -> io::Result<Node>;
}

/// What can go wrong resolving a path inside a tree.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// More than [`MAX_LINK_HOPS`] symbolic links on the way.
    #[error("{0}: too many levels of symbolic links")]
    TooManyLinks(String),
    /// The tree could not be read at `path`.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// Splits a path into normal components; `..` is kept for the resolver to clamp.
pub fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Resolves `path` inside `tree`. Returns the resolved relative path and whether something is
/// there; when a component is missing, the rest of the path is appended unresolved. The last
/// component is followed only with `follow_last`.
pub fn resolve_scoped(
    tree: &dyn ScopedTree,
    path: &Path,
    follow_last: bool,
) -> Result<(PathBuf, bool), ScopeError> {
    let mut pending = components(path);
    pending.reverse();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate: PathBuf = resolved.iter().collect();
        candidate.push(&part);
        let is_last = pending.is_empty();
        let node = tree.node(&candidate).map_err(|source| ScopeError::Io {
            path: candidate.clone(),
            source,
        })?;
        match node {
            Node::Symlink(target) if !is_last || follow_last => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(ScopeError::TooManyLinks(path.display().to_string()));
                }
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut parts = components(&target);
                parts.reverse();
                pending.extend(parts);
            }
            Node::Missing => {
                resolved.push(part);
                resolved.extend(pending.into_iter().rev());
                return Ok((resolved.iter().collect(), false));
            }
            _ => resolved.push(part),
        }
    }
    Ok((resolved.iter().collect(), true))
}

/// A plain directory as a tree.
pub struct DirTree<'a>(pub &'a Path);

impl ScopedTree for DirTree<'_> {
    fn node(&self, relative: &Path) -> io::Result<Node> {
        let path = self.0.join(relative);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                Ok(Node::Symlink(std::fs::read_link(&path)?))
            }
            Ok(_) => Ok(Node::Other),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                Ok(Node::Missing)
            }
            Err(e) => Err(e),
        }
    }
}
