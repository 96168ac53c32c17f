//! Unpacking a base image's layer into a snapshot directory, in overlayfs form, treating the
//! layer as hostile: no entry may land outside the snapshot or be written through a symlink,
//! `.wh.` names become whiteouts (char 0/0) and `.wh..wh..opq` an opaque directory, overlay
//! xattrs the layer itself carries are dropped, and the result must hash to the diff_id the
//! image config names.
// A layer is untrusted: no arithmetic here that can overflow or panic.
#![cfg_attr(not(test), warn(clippy::arithmetic_side_effects))]

use crate::fsmeta::{
    find_whiteout, io_at, make_opaque, make_whiteout, set_stamp, Stamp, OPAQUE_MARKER as OPAQUE,
    WHITEOUT_PREFIX,
};
use crate::ExecError;
use kiln_layer::{visit_layer_limited, EntrySummary, EntryTypeSummary, ReadLimits, UnpackCaps};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn refuse(path: &[u8], why: &str) -> ExecError {
    ExecError::LayerEntry {
        entry: String::from_utf8_lossy(path).into_owned(),
        reason: why.to_string(),
    }
}

/// The entry's path as components inside the root; `..` is refused, `/` and `.` dropped.
fn components(path: &[u8]) -> Result<Vec<&OsStr>, ExecError> {
    let mut parts = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(refuse(path, "leaves the root (`..`)")),
            other if other.contains(&0) => return Err(refuse(path, "has a NUL byte")),
            other => parts.push(OsStr::from_bytes(other)),
        }
    }
    Ok(parts)
}

struct Unpacker<'a> {
    root: &'a Path,
    is_root: bool,
    /// Whether device nodes are made (a base image's `/dev` may hold some; a cache mount,
    /// bound into RUN steps, never does).
    devices: bool,
    dirs: BTreeMap<PathBuf, Stamp>,
}

impl Unpacker<'_> {
    /// Makes every component of `parents` a real directory of the snapshot; one that is
    /// anything else (a symlink above all) is refused, never followed.
    fn ensure_parents(&mut self, path: &[u8], parents: &[&OsStr]) -> Result<PathBuf, ExecError> {
        let mut dir = self.root.to_path_buf();
        for part in parents {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(refuse(
                        path,
                        "goes through something that is not a directory",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(|e| io_at(&dir, e))?;
                }
                Err(e) => return Err(io_at(&dir, e)),
            }
        }
        Ok(dir)
    }

    fn remove(&mut self, path: &Path) -> Result<(), ExecError> {
        // A directory that goes (a later entry replaces it, say with a symlink) takes its
        // pending stamps along: they must never be applied through what replaced it.
        self.dirs.retain(|dir, _| !dir.starts_with(path));
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(|e| io_at(path, e)),
            Ok(_) => fs::remove_file(path).map_err(|e| io_at(path, e)),
            Err(_) => Ok(()),
        }
    }

    fn entry(&mut self, entry: EntrySummary, content: &mut dyn Read) -> Result<(), ExecError> {
        let parts = components(&entry.path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Ok(()); // the root itself
        };
        let parent = self.ensure_parents(&entry.path, parents)?;
        let name_bytes = name.as_bytes();
        if name_bytes == OPAQUE {
            // Where the store refuses overlay's marker, the OCI form (`.wh..wh..opq`) stays.
            make_opaque(&parent, "trusted.overlay.opaque")?;
            return Ok(());
        }
        let target = parent.join(name);
        if let Some(hidden) = name_bytes.strip_prefix(WHITEOUT_PREFIX) {
            if matches!(hidden, b"" | b"." | b"..") {
                return Err(refuse(&entry.path, "is a whiteout of no name"));
            }
            let hidden = parent.join(OsStr::from_bytes(hidden));
            self.remove(&hidden)?;
            if find_whiteout(&hidden).is_some() {
                return Ok(());
            }
            // A char device 0/0, or `.wh.NAME` itself where the store refuses that.
            return make_whiteout(&hidden).map(drop);
        }
        let stamp = Stamp {
            mode: entry.mode & 0o7777,
            uid: u32::try_from(entry.uid)
                .map_err(|_| refuse(&entry.path, "has an owner beyond 32 bits"))?,
            gid: u32::try_from(entry.gid)
                .map_err(|_| refuse(&entry.path, "has a group beyond 32 bits"))?,
            mtime: (entry.mtime, 0),
        };
        let existing = fs::symlink_metadata(&target).ok();
        if let (Some(meta), EntryTypeSummary::Dir) = (&existing, &entry.kind) {
            if meta.is_dir() {
                self.dirs.insert(target.clone(), stamp);
                return self.xattrs(&target, &entry.xattrs);
            }
        }
        if existing.is_some() {
            self.remove(&target)?;
        }
        match &entry.kind {
            EntryTypeSummary::Dir => {
                fs::create_dir(&target).map_err(|e| io_at(&target, e))?;
                self.dirs.insert(target.clone(), stamp);
            }
            EntryTypeSummary::File => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&target)
                    .map_err(|e| io_at(&target, e))?;
                io::copy(content, &mut file).map_err(|e| io_at(&target, e))?;
                drop(file);
                set_stamp(&target, stamp, false, self.is_root)?;
            }
            EntryTypeSummary::Symlink => {
                let link = entry.link_target.clone().unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                    .map_err(|e| io_at(&target, e))?;
                set_stamp(&target, stamp, true, self.is_root)?;
                return Ok(());
            }
            EntryTypeSummary::Hardlink => {
                let link = entry.link_target.clone().unwrap_or_default();
                let link_parts = components(&link)?;
                let mut source = self.root.to_path_buf();
                for (i, part) in link_parts.iter().enumerate() {
                    source.push(part);
                    // Every step of the link's path must be a real directory, its end a file.
                    let meta = fs::symlink_metadata(&source).map_err(|_| {
                        refuse(&entry.path, "links to a file that is not in the layer")
                    })?;
                    let last = i.saturating_add(1) == link_parts.len();
                    if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
                        return Err(refuse(
                            &entry.path,
                            "links to something that is not a regular file of the layer",
                        ));
                    }
                }
                fs::hard_link(&source, &target).map_err(|e| io_at(&target, e))?;
                return Ok(());
            }
            EntryTypeSummary::CharDevice
            | EntryTypeSummary::BlockDevice
            | EntryTypeSummary::Fifo => {
                let kind = match entry.kind {
                    EntryTypeSummary::CharDevice => rustix::fs::FileType::CharacterDevice,
                    EntryTypeSummary::BlockDevice => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                if kind != rustix::fs::FileType::Fifo && !self.devices {
                    return Err(refuse(&entry.path, "is a device file, refused here"));
                }
                if kind != rustix::fs::FileType::Fifo && !self.is_root {
                    return Err(refuse(
                        &entry.path,
                        "is a device file, which only root can unpack",
                    ));
                }
                let (major, minor) = entry.device.unwrap_or((0, 0));
                let device = rustix::fs::makedev(major, minor);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    kind,
                    rustix::fs::Mode::from_raw_mode(stamp.mode),
                    device,
                )
                .map_err(|e| io_at(&target, e.into()))?;
                set_stamp(&target, stamp, false, self.is_root)?;
            }
            EntryTypeSummary::Other(_) => return Ok(()),
        }
        self.xattrs(&target, &entry.xattrs)
    }

    /// The layer's xattrs, except overlay's own: a layer says "opaque" with `.wh..wh..opq`,
    /// never by carrying the marker itself.
    fn xattrs(&self, target: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<(), ExecError> {
        for (name, value) in xattrs {
            if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                continue;
            }
            match rustix::fs::lsetxattr(
                target,
                name.as_str(),
                value,
                rustix::fs::XattrFlags::empty(),
            ) {
                Ok(()) => {}
                // Not every filesystem or user may set every namespace; the layer still unpacks.
                Err(
                    rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP | rustix::io::Errno::ACCESS,
                ) => {}
                Err(e) => return Err(io_at(target, e.into())),
            }
        }
        Ok(())
    }
}

/// Unpacks a layer blob into the empty directory `dest` and checks it against `diff_id`,
/// within the default [`ReadLimits`].
pub fn unpack_layer(
    blob: impl Read,
    media_type: &str,
    dest: &Path,
    diff_id: &str,
) -> Result<(), ExecError> {
    unpack(
        blob,
        media_type,
        dest,
        diff_id,
        true,
        &ReadLimits::default(),
    )
    .map(drop)
}

/// [`unpack_layer`] for a cache mount's contents from a shared cache: no device files.
pub fn unpack_cache_mount(
    blob: impl Read,
    media_type: &str,
    dest: &Path,
    diff_id: &str,
) -> Result<(), ExecError> {
    unpack(
        blob,
        media_type,
        dest,
        diff_id,
        false,
        &ReadLimits::default(),
    )
    .map(drop)
}

/// How much the layers of one image may still expand to when unpacked (see docs/limits.md):
/// each layer within `max(10 × its compressed size, KILN_MAX_LAYER_SIZE)`, all of them within
/// `max(10 × their compressed sizes, KILN_MAX_IMAGE_SIZE)`.
pub struct ImageBudget {
    caps: UnpackCaps,
    remaining: u64,
}

impl ImageBudget {
    /// The budget of an image whose layers have these compressed sizes, caps from the
    /// environment.
    pub fn new(compressed_sizes: impl IntoIterator<Item = u64>) -> Result<Self, ExecError> {
        let caps = UnpackCaps::from_env().map_err(ExecError::layer("unpack limits"))?;
        Ok(Self::with_caps(caps, compressed_sizes))
    }

    /// [`ImageBudget::new`] with the caps given.
    pub fn with_caps(caps: UnpackCaps, compressed_sizes: impl IntoIterator<Item = u64>) -> Self {
        let total = compressed_sizes
            .into_iter()
            .fold(0u64, |sum, size| sum.saturating_add(size));
        ImageBudget {
            remaining: caps.image_limit(total),
            caps,
        }
    }

    /// Unpacks one layer of `compressed` bytes as [`unpack_layer`] does, within the budget,
    /// which it then spends. A layer over its bound is refused before more than the bound is
    /// written, and the error says which bound and how to raise it.
    pub fn unpack_layer(
        &mut self,
        blob: impl Read,
        compressed: u64,
        media_type: &str,
        dest: &Path,
        diff_id: &str,
    ) -> Result<(), ExecError> {
        let limits = self.caps.read_limits(compressed, self.remaining);
        let size = unpack(blob, media_type, dest, diff_id, true, &limits)?;
        self.remaining = self.remaining.saturating_sub(size);
        Ok(())
    }
}

/// Unpacks and checks; returns the uncompressed size.
fn unpack(
    blob: impl Read,
    media_type: &str,
    dest: &Path,
    diff_id: &str,
    devices: bool,
    limits: &ReadLimits,
) -> Result<u64, ExecError> {
    let mut unpacker = Unpacker {
        root: dest,
        is_root: rustix::process::geteuid().is_root(),
        devices,
        dirs: BTreeMap::new(),
    };
    let mut failure: Option<ExecError> = None;
    let visited = visit_layer_limited(blob, media_type, limits, |entry, content| {
        unpacker.entry(entry, content).map_err(|e| {
            let message = e.to_string();
            failure = Some(e);
            // The real error is kept in `failure`; this only stops the walk.
            kiln_layer::LayerError::Read(io::Error::other(message))
        })
    });
    // Going over a bound fails the write that was under way too; the bound is what to tell.
    if let Err(error @ kiln_layer::LayerError::OverLimit { .. }) = visited {
        return Err(ExecError::Layer {
            what: "base image layer".into(),
            source: error,
        });
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let visited = visited.map_err(ExecError::layer("base image layer"))?;
    if visited.diff_id != diff_id {
        return Err(ExecError::DiffIdMismatch {
            expected: diff_id.to_string(),
            actual: visited.diff_id,
        });
    }
    let mut dirs: Vec<_> = unpacker.dirs.into_iter().collect();
    dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, stamp) in dirs {
        // Only a real directory is stamped (chmod follows symlinks).
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            set_stamp(&path, stamp, false, unpacker.is_root)?;
        }
    }
    Ok(visited.uncompressed_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// A tar with raw headers (the tar crate's builder refuses the hostile names we need).
    fn tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            if !link.is_empty() {
                header.as_gnu_mut().unwrap().linkname[..link.len()]
                    .copy_from_slice(link.as_bytes());
            }
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn diff_id(bytes: &[u8]) -> String {
        kiln_oci::sha256_digest(bytes).to_string()
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<(), ExecError>) {
        let dest = tempfile::tempdir().unwrap();
        let result = unpack_layer(
            bytes,
            "application/vnd.oci.image.layer.v1.tar",
            dest.path(),
            &diff_id(bytes),
        );
        (dest, result)
    }

    use tar::EntryType as T;

    #[test]
    fn files_dirs_links_and_whiteouts_unpack_in_overlay_form() {
        let bytes = tar(&[
            ("etc/", T::Directory, "", b""),
            ("etc/conf", T::Regular, "", b"C"),
            ("etc/alias", T::Symlink, "conf", b""),
            ("etc/hard", T::Link, "etc/conf", b""),
            ("etc/.wh.gone", T::Regular, "", b""),
            ("var/.wh..wh..opq", T::Regular, "", b""),
        ]);
        let (dest, result) = unpack(&bytes);
        result.unwrap();
        assert_eq!(
            fs::read_to_string(dest.path().join("etc/conf")).unwrap(),
            "C"
        );
        assert_eq!(
            fs::read_link(dest.path().join("etc/alias")).unwrap(),
            Path::new("conf")
        );
        let conf = fs::metadata(dest.path().join("etc/conf")).unwrap();
        assert_eq!(
            conf.ino(),
            fs::metadata(dest.path().join("etc/hard")).unwrap().ino()
        );
        let gone = fs::symlink_metadata(dest.path().join("etc/gone")).unwrap();
        assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
        let mut value = [0u8; 4];
        assert!(matches!(
            rustix::fs::lgetxattr(
                dest.path().join("var"),
                "trusted.overlay.opaque",
                &mut value
            ),
            Ok(1)
        ));
    }

    #[test]
    fn entries_that_leave_the_root_are_refused() {
        for bytes in [
            tar(&[("../escape", T::Regular, "", b"X")]),
            tar(&[("a/../../escape", T::Regular, "", b"X")]),
            tar(&[
                ("ok", T::Regular, "", b"X"),
                ("hard", T::Link, "../../etc/passwd", b""),
            ]),
        ] {
            let (_dest, result) = unpack(&bytes);
            assert!(result.is_err());
        }
    }

    #[test]
    fn nothing_is_written_through_a_symlink_the_layer_made() {
        let host = tempfile::tempdir().unwrap();
        let link = host.path().to_string_lossy().into_owned();
        let bytes = tar(&[
            ("a", T::Symlink, &link, b""),
            ("a/planted", T::Regular, "", b"X"),
        ]);
        let (_dest, result) = unpack(&bytes);
        assert!(result.is_err());
        assert!(!host.path().join("planted").exists());
        let bytes = tar(&[
            ("s", T::Symlink, "/etc/passwd", b""),
            ("h", T::Link, "s", b""),
        ]);
        let (_dest, result) = unpack(&bytes);
        assert!(result.is_err(), "a hardlink to a symlink is refused");
    }

    #[test]
    fn a_wrong_diff_id_is_refused() {
        let bytes = tar(&[("f", T::Regular, "", b"X")]);
        let dest = tempfile::tempdir().unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let error = unpack_layer(
            &bytes[..],
            "application/vnd.oci.image.layer.v1.tar",
            dest.path(),
            &wrong,
        )
        .unwrap_err();
        assert!(error.to_string().contains("diff_id"), "{error}");
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_never_stamps_what_the_link_points_at() {
        use std::os::unix::fs::PermissionsExt;
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("victim");
        fs::write(&victim, "host file").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        let link = victim.to_string_lossy().into_owned();
        // `a/` and `a/b/` are directories (stamped at the end), then `a` becomes a symlink.
        let bytes = tar(&[
            ("a/", T::Directory, "", b""),
            ("a/b/", T::Directory, "", b""),
            ("a", T::Symlink, &link, b""),
        ]);
        let (dest, result) = unpack(&bytes);
        result.unwrap();
        assert!(fs::symlink_metadata(dest.path().join("a"))
            .unwrap()
            .file_type()
            .is_symlink());
        let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "the host file's mode is untouched");
    }

    #[test]
    fn whiteouts_of_no_name_are_refused() {
        for name in ["d/.wh.", "d/.wh..", "d/.wh..."] {
            let bytes = tar(&[("d/", T::Directory, "", b""), (name, T::Regular, "", b"")]);
            let (dest, result) = unpack(&bytes);
            assert!(result.is_err(), "{name}");
            assert!(dest.path().exists(), "{name}: the root is still there");
        }
    }

    /// Each layer (4608 tar bytes) fits its own bound (8192), but together they go over the
    /// image's (8000): the second is refused, naming the image setting.
    #[test]
    fn the_image_bound_spans_its_layers() {
        let data = vec![7u8; 3000];
        let bytes = tar(&[("f", T::Regular, "", &data)]);
        let caps = UnpackCaps {
            layer_ceiling: 8192,
            image_ceiling: 8000,
            max_entries: 10,
        };
        let mut budget = ImageBudget::with_caps(caps, [100, 100]);
        let media_type = "application/vnd.oci.image.layer.v1.tar";
        let first = tempfile::tempdir().unwrap();
        budget
            .unpack_layer(&bytes[..], 100, media_type, first.path(), &diff_id(&bytes))
            .unwrap();
        let second = tempfile::tempdir().unwrap();
        let error = budget
            .unpack_layer(&bytes[..], 100, media_type, second.path(), &diff_id(&bytes))
            .unwrap_err()
            .to_string();
        assert!(error.contains("KILN_MAX_IMAGE_SIZE"), "{error}");
    }
}
