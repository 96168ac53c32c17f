//! Listing a snapshot directory in layer order, with overlayfs whiteouts already converted.

use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::error::LayerError;

/// Prefix that marks a whiteout in an OCI layer.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker in an OCI layer.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Permission bits of the whiteout and opaque marker files we write.
const MARKER_MODE: u32 = 0o600;

/// One extended attribute, as it goes into the layer (`SCHILY.xattr.<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Full name, namespace included (`user.foo`, `security.capability`).
    pub name: String,
    /// Raw value.
    pub value: Vec<u8>,
}

/// What an entry is in the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file; its `size` bytes are read from `source`.
    File,
    /// A directory.
    Dir,
    /// A symbolic link with its target, verbatim.
    Symlink {
        /// Link target bytes.
        target: Vec<u8>,
    },
    /// A second or later name of an inode already in the layer.
    Hardlink {
        /// The layer path of the first name.
        target: Vec<u8>,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// An overlayfs whiteout (char device 0/0), written as the empty regular file `.wh.<name>`.
    Whiteout,
    /// The `.wh..wh..opq` marker of an opaque directory, right after that directory.
    OpaqueMarker,
}

/// One entry of a layer, in the order and with the name it has in the tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Name in the tar: relative, `/`-separated, no leading `./` or `/`; directories end in `/`;
    /// whiteouts already carry their `.wh.` name.
    pub path: Vec<u8>,
    /// Type (and type-specific data).
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner as on disk.
    pub uid: u32,
    /// Numeric group as on disk.
    pub gid: u32,
    /// Modification time in seconds, as on disk (clamping is done when writing).
    pub mtime: i64,
    /// Content size of regular files; 0 for everything else.
    pub size: u64,
    /// Extended attributes sorted by name, overlayfs' own removed.
    pub xattrs: Vec<Xattr>,
    /// The file on disk (for markers: the whiteout device, or the opaque directory).
    pub source: PathBuf,
    /// (st_dev, st_ino) as listed, to check the file read is the file listed.
    pub(crate) ident: (u64, u64),
    /// Modification and status-change times in nanoseconds, as listed: with `ident` and the
    /// size, what identifies the content without reading it (see `FileIdentity`).
    pub(crate) times_ns: (i128, i128),
    nlink: u64,
    opaque: bool,
}

impl Entry {
    /// The layer path, lossily decoded (for messages and tests).
    pub fn path_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.path)
    }
}

/// Lists `root` in layer order, eagerly. See [`Entries`] for the order.
pub fn list_entries(root: &Path) -> Result<Vec<Entry>, LayerError> {
    Entries::new(root)?.collect()
}

/// The entries of a snapshot directory in layer order, produced lazily (memory grows with the
/// width of the directories on the current path, not with the size of the tree).
///
/// Order: depth first; within a directory, the directory's own entry, then its
/// `.wh..wh..opq` marker if it is opaque, then its whiteouts, then its other children, each
/// group sorted by name bytes. Putting whiteouts before their siblings follows the OCI layer
/// spec's advice (a whiteout must never be applied after the same layer's sibling entries);
/// everything else is plain byte order, so `a/` and all of its contents come before `a-b`.
///
/// The root itself is not an entry. Sockets are skipped. Nothing is followed: symlinks are
/// entries, never walked through.
pub struct Entries {
    /// Pending entries, the next one last.
    stack: Vec<Entry>,
    /// First layer path of each multiply-linked inode seen so far.
    links: HashMap<(u64, u64), Vec<u8>>,
    done: bool,
}

impl Entries {
    /// Starts listing `root` (which must be a directory).
    pub fn new(root: &Path) -> Result<Self, LayerError> {
        let md = fs::metadata(root).map_err(|e| LayerError::fs("stat", root, e))?;
        if !md.is_dir() {
            return Err(LayerError::NotADirectory { path: root.into() });
        }
        let mut stack = Vec::new();
        push_children(&mut stack, root, b"")?;
        Ok(Entries {
            stack,
            links: HashMap::new(),
            done: false,
        })
    }

    fn visit(&mut self, e: &mut Entry) -> Result<(), LayerError> {
        match e.kind {
            EntryKind::Dir => {
                push_children(&mut self.stack, &e.source, &e.path)?;
                if e.opaque {
                    let mut marker = e.path.clone();
                    marker.extend_from_slice(OPAQUE_MARKER);
                    self.stack.push(Entry {
                        path: marker,
                        kind: EntryKind::OpaqueMarker,
                        mode: MARKER_MODE,
                        uid: e.uid,
                        gid: e.gid,
                        mtime: e.mtime,
                        size: 0,
                        xattrs: Vec::new(),
                        source: e.source.clone(),
                        ident: e.ident,
                        times_ns: e.times_ns,
                        nlink: 1,
                        opaque: false,
                    });
                }
            }
            EntryKind::Whiteout | EntryKind::OpaqueMarker | EntryKind::Hardlink { .. } => {}
            // Overlayfs may share one inode between whiteouts, which is why they are excluded.
            _ if e.nlink > 1 => match self.links.entry(e.ident) {
                MapEntry::Occupied(first) => {
                    e.kind = EntryKind::Hardlink {
                        target: first.get().clone(),
                    };
                    e.size = 0;
                    e.xattrs.clear();
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(e.path.clone());
                }
            },
            _ => {}
        }
        Ok(())
    }
}

impl Iterator for Entries {
    type Item = Result<Entry, LayerError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut e = self.stack.pop()?;
        match self.visit(&mut e) {
            Ok(()) => Some(Ok(e)),
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

/// Reads `dir`, describes each child and pushes them so that the first in order pops first.
fn push_children(stack: &mut Vec<Entry>, dir: &Path, prefix: &[u8]) -> Result<(), LayerError> {
    let read = fs::read_dir(dir).map_err(|e| LayerError::fs("read directory", dir, e))?;
    let mut children: Vec<(bool, OsString, Entry)> = Vec::new();
    for item in read {
        let item = item.map_err(|e| LayerError::fs("read directory", dir, e))?;
        let name = item.file_name();
        if let Some(entry) = describe(dir, prefix, &name)? {
            let not_whiteout = entry.kind != EntryKind::Whiteout;
            // Whiteouts sort by the name they delete, whichever form they have on disk.
            let key = match name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
                Some(hidden) if !not_whiteout => OsStr::from_bytes(hidden).to_os_string(),
                _ => name,
            };
            children.push((not_whiteout, key, entry));
        }
    }
    children.sort_unstable_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
    stack.extend(children.into_iter().rev().map(|(_, _, e)| e));
    Ok(())
}

/// lstat + xattrs of one directory child, as a layer entry (None for sockets).
fn describe(dir: &Path, prefix: &[u8], name: &OsStr) -> Result<Option<Entry>, LayerError> {
    let source = dir.join(name);
    let md = fs::symlink_metadata(&source).map_err(|e| LayerError::fs("lstat", &source, e))?;
    let ft = md.file_type();
    if ft.is_socket() {
        return Ok(None);
    }
    if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
        // The OCI forms a snapshot may hold where overlay's are refused: the empty file
        // `.wh..wh..opq` (read with its directory, see `oci_opaque`) and the empty file
        // `.wh.NAME`, the same entry as a char device 0/0 `NAME`. Any other `.wh.` name is
        // reserved.
        let empty_file = ft.is_file() && md.len() == 0;
        if empty_file && name.as_bytes() == OPAQUE_MARKER {
            return Ok(None);
        }
        if !empty_file || hidden.is_empty() {
            return Err(LayerError::ReservedName { path: source });
        }
        let mut path = prefix.to_vec();
        path.extend_from_slice(name.as_bytes());
        return Ok(Some(marker_entry(path, &md, source)));
    }
    let device_whiteout = ft.is_char_device() && md.rdev() == 0;
    let attrs = if device_whiteout {
        Attrs::default()
    } else {
        read_attrs(&source)?
    };

    let mut path = prefix.to_vec();
    let kind = if device_whiteout || (ft.is_file() && attrs.whiteout) {
        path.extend_from_slice(WHITEOUT_PREFIX);
        path.extend_from_slice(name.as_bytes());
        return Ok(Some(marker_entry(path, &md, source)));
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        let target = fs::read_link(&source).map_err(|e| LayerError::fs("readlink", &source, e))?;
        EntryKind::Symlink {
            target: target.into_os_string().into_vec(),
        }
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_char_device() {
        let rdev = md.rdev();
        EntryKind::CharDevice {
            major: rustix::fs::major(rdev),
            minor: rustix::fs::minor(rdev),
        }
    } else if ft.is_block_device() {
        let rdev = md.rdev();
        EntryKind::BlockDevice {
            major: rustix::fs::major(rdev),
            minor: rustix::fs::minor(rdev),
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        return Ok(None);
    };
    path.extend_from_slice(name.as_bytes());
    if kind == EntryKind::Dir {
        path.push(b'/');
    }
    let opaque = ft.is_dir() && (attrs.opaque || oci_opaque(&source));
    Ok(Some(Entry {
        path,
        size: if kind == EntryKind::File { md.len() } else { 0 },
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        xattrs: attrs.kept,
        source,
        ident: (md.dev(), md.ino()),
        times_ns: times_ns(&md),
        nlink: md.nlink(),
        opaque,
    }))
}

/// (mtime, ctime) in nanoseconds since the epoch.
fn times_ns(md: &Metadata) -> (i128, i128) {
    let ns = |secs: i64, nsecs: i64| {
        i128::from(secs)
            .saturating_mul(1_000_000_000)
            .saturating_add(i128::from(nsecs))
    };
    (
        ns(md.mtime(), md.mtime_nsec()),
        ns(md.ctime(), md.ctime_nsec()),
    )
}

/// Whether the directory `dir` holds the OCI-form opaque marker, an empty `.wh..wh..opq`.
fn oci_opaque(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(OsStr::from_bytes(OPAQUE_MARKER)))
        .is_ok_and(|md| md.is_file() && md.len() == 0)
}

fn marker_entry(path: Vec<u8>, md: &Metadata, source: PathBuf) -> Entry {
    Entry {
        path,
        kind: EntryKind::Whiteout,
        mode: MARKER_MODE,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        size: 0,
        xattrs: Vec::new(),
        source,
        ident: (md.dev(), md.ino()),
        times_ns: times_ns(md),
        nlink: 1,
        opaque: false,
    }
}

/// The extended attributes of one file, overlayfs' own taken out and interpreted.
#[derive(Default)]
struct Attrs {
    kept: Vec<Xattr>,
    opaque: bool,
    whiteout: bool,
}

fn read_attrs(path: &Path) -> Result<Attrs, LayerError> {
    let mut attrs = Attrs::default();
    for (name, value) in read_xattrs(path)? {
        let overlay = name
            .strip_prefix(b"trusted.overlay.")
            .or_else(|| name.strip_prefix(b"user.overlay."));
        if let Some(key) = overlay {
            match key {
                // "y" is opaque; "x" (Linux 6.7+) only says the directory holds xattr whiteouts.
                b"opaque" => attrs.opaque |= value == b"y",
                b"whiteout" => attrs.whiteout = true,
                b"redirect" | b"metacopy" => {
                    return Err(LayerError::OverlayIndirection {
                        path: path.into(),
                        xattr: String::from_utf8_lossy(&name).into_owned(),
                    })
                }
                // origin, impure, nlink, upper, uuid, ...: bookkeeping, never layer content.
                _ => {}
            }
            continue;
        }
        let name = String::from_utf8(name).map_err(|e| LayerError::XattrName {
            path: path.into(),
            name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })?;
        attrs.kept.push(Xattr { name, value });
    }
    Ok(attrs)
}

/// A name and value as the kernel gives them.
type RawXattr = (Vec<u8>, Vec<u8>);

/// All extended attributes of `path` (not following a symlink), sorted by name.
fn read_xattrs(path: &Path) -> Result<Vec<RawXattr>, LayerError> {
    let err = |op, e: Errno| LayerError::fs(op, path, e.into());
    let mut list = Vec::new();
    loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(Errno::NOTSUP | Errno::NOSYS) => return Ok(Vec::new()),
            Err(e) => return Err(err("list xattrs of", e)),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        list.resize(size, 0);
        match rustix::fs::llistxattr(path, &mut list[..]) {
            Ok(n) => {
                list.truncate(n);
                break;
            }
            Err(Errno::RANGE) => continue, // grew in between
            Err(e) => return Err(err("list xattrs of", e)),
        }
    }
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let mut value = Vec::new();
        let found = loop {
            let size = match rustix::fs::lgetxattr_query(path, name_os) {
                Ok(n) => n,
                Err(Errno::NODATA) => break false, // removed in between
                Err(e) => return Err(err("read xattr of", e)),
            };
            value.resize(size, 0);
            match rustix::fs::lgetxattr(path, name_os, &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    break true;
                }
                Err(Errno::RANGE) => continue,
                Err(Errno::NODATA) => break false,
                Err(e) => return Err(err("read xattr of", e)),
            }
        };
        if found {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}
