//! COPY and ADD: writes what a step copies into a fresh snapshot directory, which then becomes
//! the step's layer.
//!
//! Nothing written here ever goes through a symlink: every parent directory is checked to be
//! a real directory of the snapshot, and files are created new. Sources come from the build
//! context (scoped by kiln-context) or another stage's union view (scoped by [`Rootfs`]).

use crate::fsmeta::{io_at, set_stamp, Stamp};
use crate::rootfs::Rootfs;
use crate::ExecError;
use kiln_context::{Context, EntryKind, IgnoreRules, StatKey};
use kiln_plan::{Chmod, CopySource, CopyStep};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Numeric owner of copied files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// `--chown`: `uid[:gid]` or names looked up in the image's /etc/passwd and /etc/group. A user
/// named without a group takes the primary group of its passwd entry; only a numeric user
/// without a group uses the same number for the group (BuildKit's rules).
pub fn resolve_chown(spec: &str, image: &Rootfs) -> Result<Owner, String> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str, what: &str| -> Result<(u32, Option<u32>), String> {
        if let Ok(id) = name.parse::<u32>() {
            return Ok((id, None));
        }
        let content = image
            .read_file(file)
            .ok_or_else(|| format!("unable to find {what} {name:?}: the image has no {file}"))?;
        content
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split(':').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(&name))
            .and_then(|fields| {
                let id = fields.get(2)?.parse().ok()?;
                Some((id, fields.get(3).and_then(|g| g.parse().ok())))
            })
            .ok_or_else(|| format!("unable to find {what} {name:?}: no matching entry in {file}"))
    };
    let (uid, primary_group) = lookup("/etc/passwd", user, "user")?;
    let gid = match group {
        Some(group) => lookup("/etc/group", group, "group")?.0,
        // A name was looked up: its entry's group (0 when the entry's field is unreadable).
        None if user.parse::<u32>().is_err() => primary_group.unwrap_or(0),
        None => uid,
    };
    Ok(Owner { uid, gid })
}

/// Everything one COPY/ADD needs besides its sources.
pub struct CopyJob<'a> {
    /// The COPY/ADD as planned.
    pub step: &'a CopyStep,
    /// The stage's WORKDIR, which a relative destination is under.
    pub workdir: &'a str,
    /// The image before this step: decides whether the destination is a directory and
    /// resolves symlinks in it. Empty for `--link`.
    pub image: &'a Rootfs,
    /// Where --chown names are looked up (/etc/passwd, /etc/group): the image before this
    /// step, even for `--link`.
    pub users: &'a Rootfs,
    /// A fresh, empty directory: the new layer.
    pub snapshot: &'a Path,
    /// The time given to directories and heredoc files the step creates.
    pub now: i64,
    /// ADD's URL sources, already downloaded (by the builder, never here), in source order.
    pub fetched: &'a [crate::fetch::Fetched],
    /// The git sources, checked out (in source order): the directory to copy of each.
    pub git_trees: &'a [PathBuf],
    /// When given, context files are hashed as they are copied and their hashes memoised.
    pub memo: Option<&'a dyn kiln_context::HashMemo>,
    /// When given (with `memo`), unchanged context files are linked from the previous snapshot
    /// of the same step, and what the copy wrote is recorded for the next one.
    pub reuse: Option<&'a crate::reuse::SnapshotReuse>,
    /// Context sources the builder already walked for the key (matched source, its
    /// entries): copied as walked, so each file is looked at once and the copy is what was
    /// keyed. A source not among them is walked here.
    pub walked: &'a [(String, Vec<kiln_context::Entry>)],
}

/// Where a COPY's sources come from.
pub enum CopyFrom<'a> {
    /// The build context (or a named local context).
    Context(&'a Context),
    /// Another stage's or an image's filesystem (`--from`).
    Stage(&'a Rootfs),
}

/// What a copy wrote, for progress and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files written (hard links to one already written included).
    pub files: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// One thing to place: a source entry's data and metadata, at a destination path.
struct Placement {
    destination: PathBuf,
    kind: PlacementKind,
    mode: u32,
    mtime: (i64, i64),
    /// The source's owner, kept when copying from a stage or image (as BuildKit does);
    /// context files and generated ones have none and become root's, unless --chown.
    owner: Option<Owner>,
    /// For context files: what identifies their content, so their hash can be taken while
    /// they are copied (one read instead of two on a cold build).
    stat: Option<kiln_context::StatKey>,
    /// Names the source file had when walked (context files; 1 for everything else).
    nlink: u64,
}

enum PlacementKind {
    Dir,
    File(PathBuf),
    Content(String),
    Symlink(PathBuf),
}

fn join_view(base: &str, path: &str) -> PathBuf {
    let combined = if path.starts_with('/') {
        PathBuf::from(path)
    } else {
        Path::new(base).join(path)
    };
    let mut out = PathBuf::new();
    for component in combined.components() {
        match component {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Runs one COPY/ADD into `job.snapshot`.
pub fn run_copy(job: &CopyJob<'_>, from: &CopyFrom<'_>) -> Result<CopyStats, ExecError> {
    let step = job.step;
    let owner = match &step.chown {
        Some(spec) => resolve_chown(spec, job.users).map_err(ExecError::Copy)?,
        None => Owner::default(),
    };
    let chmod = step
        .chmod
        .as_deref()
        .map(Chmod::parse)
        .transpose()
        .map_err(ExecError::Copy)?;
    let excludes = IgnoreRules::parse(&step.excludes.join("\n"))?;

    // The destination, with symlinks in the image resolved inside the image.
    let wanted = join_view(job.workdir, &step.destination);
    let (destination, existing) = job.image.resolve(&wanted, true).map_err(ExecError::Copy)?;
    let existing_dir = existing.as_ref().is_some_and(|f| f.meta.is_dir());

    // Expand the sources first: how many there are decides what the destination means.
    let mut expanded: Vec<(String, Option<String>)> = Vec::new(); // (source path, heredoc content)
    let mut fetched = job.fetched.iter();
    let mut remote: Vec<&crate::fetch::Fetched> = Vec::new();
    let mut git_trees = job.git_trees.iter();
    let mut gits: Vec<&PathBuf> = Vec::new();
    for source in &step.sources {
        match source {
            CopySource::Path(pattern) => {
                let matches = match from {
                    CopyFrom::Context(context) => context_sources(context, pattern, &excludes)?,
                    CopyFrom::Stage(rootfs) => {
                        without_excluded(stage_sources(rootfs, pattern)?, pattern, &excludes)
                    }
                };
                expanded.extend(matches.into_iter().map(|m| (m, None)));
            }
            CopySource::Heredoc { name, content } => {
                expanded.push((name.clone(), Some(content.clone())))
            }
            CopySource::Url(url) => remote.push(fetched.next().ok_or_else(|| {
                ExecError::Copy(format!(
                    "ADD {url}: the URL was not downloaded before the copy"
                ))
            })?),
            CopySource::Git(url) => gits.push(git_trees.next().ok_or_else(|| {
                ExecError::Copy(format!(
                    "ADD {}: the repository was not checked out before the copy",
                    crate::git::redact(url)
                ))
            })?),
        }
    }
    let into_dir = step.destination.ends_with('/')
        || step.destination == "."
        || step.destination.ends_with("/.")
        || existing_dir
        || !gits.is_empty()
        || expanded.len() + remote.len() > 1;

    let mut placements = Vec::new();
    // ADD extracts local archives into the destination directory instead of copying them.
    let mut archives: Vec<(PathBuf, ArchiveKind)> = Vec::new();
    for (source, heredoc) in &expanded {
        if let Some(content) = heredoc {
            let target = if into_dir {
                destination.join(source)
            } else {
                destination.clone()
            };
            placements.push(Placement {
                destination: target,
                kind: PlacementKind::Content(content.clone()),
                mode: 0o644,
                mtime: (job.now, 0),
                owner: None,
                stat: None,
                nlink: 1,
            });
            continue;
        }
        if step.is_add && step.unpack != Some(false) {
            if let CopyFrom::Context(context) = from {
                let path = context.resolve(source, true)?;
                if let Some(kind) = archive_kind(&path)? {
                    archives.push((path, kind));
                    continue;
                }
            }
        }
        let entries = match from {
            CopyFrom::Context(context) => match job.walked.iter().find(|(m, _)| m == source) {
                Some((_, walked)) => placements_of(walked.clone()),
                None => context_entries(context, source, &excludes)?,
            },
            CopyFrom::Stage(rootfs) => stage_entries(rootfs, source, &excludes)?,
        };
        let Some(first) = entries.first() else {
            continue;
        };
        let source_is_dir = matches!(first.kind, PlacementKind::Dir);
        // --parents keeps the source's path under the destination.
        let base = if step.parents {
            destination.join(kiln_context::clean(source))
        } else if source_is_dir {
            destination.clone()
        } else if into_dir {
            destination.join(Path::new(source).file_name().unwrap_or_default())
        } else {
            destination.clone()
        };
        // Copying into a directory the image already has keeps that directory as it is (owner,
        // mode, time); only a directory the copy creates takes the source's metadata.
        let keep_existing = source_is_dir
            && !step.parents
            && job
                .image
                .lstat(&base)
                .is_some_and(|found| found.meta.is_dir());
        for entry in entries {
            let is_root = entry.destination.as_os_str().is_empty();
            if keep_existing && is_root {
                continue;
            }
            if source_is_dir && is_root {
                // A directory's contents are copied into the destination, which BuildKit makes
                // first as 0755, owned by the --chown owner (root without one): the source
                // directory's own mode and owner stay behind.
                placements.push(Placement {
                    destination: base.clone(),
                    kind: PlacementKind::Dir,
                    mode: 0o755,
                    mtime: (job.now, 0),
                    owner: None,
                    stat: None,
                    nlink: 1,
                });
                continue;
            }
            placements.push(Placement {
                destination: if entry.destination.as_os_str().is_empty() {
                    base.clone()
                } else {
                    base.join(&entry.destination)
                },
                ..entry
            });
        }
    }

    // A repository's files go into the destination directory, owned by root unless --chown
    // (as BuildKit copies its git source), the checkout's own root directory left out.
    for tree in &gits {
        let checkout = Rootfs::new(vec![tree.to_path_buf()]);
        for entry in stage_entries(&checkout, "/", &excludes)? {
            if entry.destination.as_os_str().is_empty() {
                continue;
            }
            placements.push(Placement {
                destination: destination.join(&entry.destination),
                owner: None,
                ..entry
            });
        }
    }

    // Downloaded files: plain files named from their URL, 0600 unless --chmod (as Docker),
    // with the server's Last-Modified or the epoch (never the build time: same inputs, same
    // bytes). Never unpacked.
    for file in &remote {
        placements.push(Placement {
            destination: if into_dir {
                destination.join(&file.file_name)
            } else {
                destination.clone()
            },
            kind: PlacementKind::File(file.path.clone()),
            mode: 0o600,
            mtime: (file.mtime.unwrap_or(0), 0),
            owner: None,
            stat: None,
            nlink: 1,
        });
    }

    let mut writer = SnapshotWriter {
        root: job.snapshot,
        image: job.image,
        owner,
        chown: step.chown.is_some(),
        now: job.now,
        memo: job.memo,
        reuse: job.reuse,
        context: match from {
            CopyFrom::Context(context) => Some(*context),
            CopyFrom::Stage(_) => None,
        },
        dirs: std::collections::BTreeMap::new(),
        links: std::collections::HashMap::new(),
        resolved: std::collections::HashMap::new(),
        made: std::collections::HashSet::new(),
        fresh: std::collections::HashSet::new(),
        placed: std::collections::HashSet::new(),
        absent: std::collections::HashSet::new(),
    };
    let mut stats = CopyStats::default();
    if into_dir || !archives.is_empty() {
        writer.ensure_dir(&destination)?;
    }
    for (path, kind) in &archives {
        extract_archive(
            path,
            *kind,
            &job.snapshot.join(&destination),
            step.chown.as_ref().map(|_| owner),
            &mut stats,
        )?;
    }
    // An archive may have put anything under the destination: check directories afresh.
    writer.made.clear();
    // Unchanged files linked from the previous snapshot are linked many at a time, on all
    // cores: creating the names is most of an edit's copy. Only files whose place nothing
    // else can take meanwhile wait in the batch (see `pending_link`); anything else first
    // lets the batch finish, so the snapshot is what placing one by one makes.
    let mut batch = Vec::new();
    for (index, placement) in placements.iter().enumerate() {
        let mode = match &chmod {
            Some(chmod) if !matches!(placement.kind, PlacementKind::Symlink(_)) => {
                chmod.apply(placement.mode, matches!(placement.kind, PlacementKind::Dir))
            }
            _ => placement.mode,
        };
        let placed = match writer.pending_link(index, placement, mode) {
            Ok(Some(pending)) => {
                batch.push(pending);
                continue;
            }
            Ok(None) => writer.target_of(placement),
            Err(e) => Err(e),
        };
        // What goes wrong is told in the order of the placements.
        let resolved = match placed {
            Ok(resolved) => resolved,
            Err(e) => {
                writer.link_batch(&placements, batch, &mut stats)?;
                return Err(e);
            }
        };
        if !batch.is_empty() && !writer.places_apart(placement, &resolved) {
            writer.link_batch(&placements, std::mem::take(&mut batch), &mut stats)?;
        }
        writer.place_at(placement, resolved, mode, &mut stats)?;
    }
    writer.link_batch(&placements, batch, &mut stats)?;
    writer.finish()?;
    Ok(stats)
}

/// The owner of the directories `WORKDIR` makes: the stage's USER read as BuildKit's file
/// operations read a user (names through /etc/passwd and /etc/group; a number is uid and gid),
/// where a name the image does not know counts as root instead of failing.
pub fn workdir_owner(user: &str, image: &Rootfs) -> Owner {
    if user.is_empty() {
        return Owner::default();
    }
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let mut owner = resolve_chown(name, image).unwrap_or_default();
    if let Some(group) = group {
        let as_group = format!("0:{group}");
        if let Ok(found) = resolve_chown(&as_group, image) {
            owner.gid = found.gid;
        }
    }
    owner
}

/// `WORKDIR`'s directory, made as BuildKit's `mkdir -p` file operation makes it: the missing
/// directories of `workdir` (symbolic links of the image followed inside the image) are
/// created in `snapshot` with mode 0755, owned by `owner` (the stage's USER), at `now`;
/// directories the image has are left as they are. Returns whether anything was created (an
/// existing directory makes an empty layer).
pub fn make_workdir(
    snapshot: &Path,
    image: &Rootfs,
    workdir: &str,
    owner: Owner,
    now: i64,
) -> Result<bool, ExecError> {
    let (resolved, found) = image
        .resolve(Path::new(workdir), true)
        .map_err(|e| ExecError::Copy(format!("WORKDIR {workdir}: {e}")))?;
    match found {
        Some(found) if found.meta.is_dir() => return Ok(false),
        Some(_) => {
            return Err(ExecError::Copy(format!(
                "WORKDIR {workdir}: /{} is a file in the image, not a directory",
                resolved.display()
            )))
        }
        None => {}
    }
    // mkdir -p fails on a file in the way; it never replaces one.
    for ancestor in resolved.ancestors().skip(1) {
        if image.lstat(ancestor).is_some_and(|f| !f.meta.is_dir()) {
            return Err(ExecError::Copy(format!(
                "WORKDIR {workdir}: /{} is not a directory in the image",
                ancestor.display()
            )));
        }
    }
    let mut writer = SnapshotWriter {
        root: snapshot,
        image,
        owner,
        chown: true,
        context: None,
        memo: None,
        reuse: None,
        now,
        dirs: std::collections::BTreeMap::new(),
        links: std::collections::HashMap::new(),
        resolved: std::collections::HashMap::new(),
        made: std::collections::HashSet::new(),
        fresh: std::collections::HashSet::new(),
        placed: std::collections::HashSet::new(),
        absent: std::collections::HashSet::new(),
    };
    writer.ensure_dir(&resolved)?;
    writer.finish()?;
    Ok(true)
}

/// How a local archive for ADD is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A plain tar.
    Tar,
    /// A gzip-compressed tar.
    Gzip,
    /// A zstd-compressed tar.
    Zstd,
    /// A bzip2-compressed tar.
    Bzip2,
    /// An xz-compressed tar.
    Xz,
}

/// Recognises a tar archive, plain or compressed, by its first bytes (never by its name).
pub fn archive_kind(path: &Path) -> Result<Option<ArchiveKind>, ExecError> {
    let meta = fs::metadata(path).map_err(|e| io_at(path, e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut head = [0u8; 512];
    let mut file = File::open(path).map_err(|e| io_at(path, e))?;
    let mut read = 0;
    while read < head.len() {
        match io::Read::read(&mut file, &mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_at(path, e)),
        }
    }
    let head = &head[..read];
    let compressed = if head.starts_with(&[0x1f, 0x8b]) {
        ArchiveKind::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveKind::Zstd
    } else if head.starts_with(b"BZh") {
        ArchiveKind::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ArchiveKind::Xz
    } else {
        return Ok(looks_like_tar(head).then_some(ArchiveKind::Tar));
    };
    // A compressed file is unpacked only if what it holds is a tar (`data.json.gz` is copied
    // as it is, as Docker does).
    let mut block = [0u8; 512];
    let mut reader = decompressor(path, compressed)?;
    let mut filled = 0;
    while filled < block.len() {
        match reader.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Not decompressible (or truncated): a plain file.
            Err(_) => return Ok(None),
        }
    }
    Ok(looks_like_tar(&block[..filled]).then_some(compressed))
}

/// A tar header block: a name, and a checksum that adds up (ustar magic is optional: old
/// archives lack it).
fn looks_like_tar(block: &[u8]) -> bool {
    if block.len() < 512 || block[0] == 0 {
        return false;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(expected) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == expected
}

/// A reader that decompresses `path` as `kind`.
fn decompressor(path: &Path, kind: ArchiveKind) -> Result<Box<dyn io::Read>, ExecError> {
    let file = File::open(path).map_err(|e| io_at(path, e))?;
    Ok(match kind {
        ArchiveKind::Tar => Box::new(file),
        ArchiveKind::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file))),
        ArchiveKind::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| io_at(path, e))?)
        }
        ArchiveKind::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(io::BufReader::new(file))),
        ArchiveKind::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            io::BufReader::new(file),
        )),
    })
}

/// Unpacks a local archive into `destination` (inside the snapshot). Entries that would land
/// outside it — `..`, absolute names, or through a symlink the archive made — are refused by
/// the tar crate's `unpack_in`, which checks each entry's real parent directory.
fn extract_archive(
    path: &Path,
    kind: ArchiveKind,
    destination: &Path,
    owner: Option<Owner>,
    stats: &mut CopyStats,
) -> Result<(), ExecError> {
    let reader = decompressor(path, kind)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let bad = |source: io::Error| ExecError::Archive {
        path: path.to_path_buf(),
        source,
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = entry.path().map_err(bad)?.into_owned();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(bad)? & 0o7777;
        if kind.is_character_special() || kind.is_block_special() {
            return Err(ExecError::Copy(format!(
                "ADD {}: {} is a device file; archives for ADD may not contain devices",
                path.display(),
                name.display()
            )));
        }
        if !entry.unpack_in(destination).map_err(bad)? {
            return Err(ExecError::Copy(format!(
                "ADD {}: entry {} would be written outside the destination",
                path.display(),
                name.display()
            )));
        }
        stats.files += 1;
        stats.bytes += entry.size();
        if let Some(owner) = owner {
            // The tar crate strips `/` and refuses `..`; build the same relative path, so the
            // chown lands on what was written and never on an absolute path of the host.
            let relative: PathBuf = name
                .components()
                .filter(|c| matches!(c, std::path::Component::Normal(_)))
                .collect();
            let written = destination.join(relative);
            rustix::fs::chownat(
                rustix::fs::CWD,
                &written,
                Some(rustix::fs::Uid::from_raw(owner.uid)),
                Some(rustix::fs::Gid::from_raw(owner.gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_at(&written, e.into()))?;
            // chown clears setuid and setgid: the entry's mode goes back on after it (a link
            // has no mode of its own, and chmod would follow it).
            if !kind.is_symlink() && !kind.is_hard_link() {
                rustix::fs::chmodat(
                    rustix::fs::CWD,
                    &written,
                    rustix::fs::Mode::from_raw_mode(mode),
                    rustix::fs::AtFlags::empty(),
                )
                .map_err(|e| io_at(&written, e.into()))?;
            }
        }
    }
    Ok(())
}

/// What a COPY/ADD source pattern names in the context, less what `--exclude` leaves out.
/// The builder keys the step on exactly this list, so it must be the copy's list too.
pub fn context_sources(
    context: &Context,
    pattern: &str,
    excludes: &IgnoreRules,
) -> Result<Vec<String>, ExecError> {
    let matches = context.sources(pattern)?;
    Ok(without_excluded(matches, pattern, excludes))
}

/// Each context path a COPY/ADD source pattern names (as [`context_sources`]) with its walk.
/// A plain path is resolved once and a file it names is stat'ed once.
pub fn context_walks(
    context: &Context,
    pattern: &str,
    excludes: &IgnoreRules,
) -> Result<Vec<(String, Vec<kiln_context::Entry>)>, ExecError> {
    if let Some(walked) = context.walk_plain_source(pattern, excludes)? {
        return Ok(vec![walked]);
    }
    let mut walks = Vec::new();
    for matched in context_sources(context, pattern, excludes)? {
        let entries = context.walk(&matched, excludes)?;
        walks.push((matched, entries));
    }
    Ok(walks)
}

/// Wildcard matches minus the excluded ones; `--exclude` patterns are relative to the
/// directory the wildcard starts in (`COPY --exclude=*.txt hom* /dst/` skips homework.txt).
fn without_excluded(matches: Vec<String>, pattern: &str, excludes: &IgnoreRules) -> Vec<String> {
    let cleaned = kiln_context::clean(pattern);
    let segments: Vec<&str> = cleaned.split('/').collect();
    let Some(first_wild) = segments.iter().position(|s| s.contains(['*', '?', '['])) else {
        return matches;
    };
    let prefix = segments[..first_wild].join("/");
    matches
        .into_iter()
        .filter(|m| {
            let relative = if prefix.is_empty() {
                m.as_str()
            } else {
                m.strip_prefix(&prefix)
                    .map_or(m.as_str(), |r| r.trim_start_matches('/'))
            };
            !excludes.is_excluded(relative)
        })
        .collect()
}

/// A context source as placements relative to the source (the source itself first).
fn context_entries(
    context: &Context,
    source: &str,
    excludes: &IgnoreRules,
) -> Result<Vec<Placement>, ExecError> {
    Ok(placements_of(context.walk(source, excludes)?))
}

/// Walked context entries as placements relative to their source.
fn placements_of(entries: Vec<kiln_context::Entry>) -> Vec<Placement> {
    entries
        .into_iter()
        .map(|entry| Placement {
            stat: matches!(entry.kind, EntryKind::File).then_some(entry.stat),
            nlink: entry.nlink,
            destination: entry.relative,
            kind: match entry.kind {
                EntryKind::Dir => PlacementKind::Dir,
                EntryKind::File => PlacementKind::File(entry.absolute),
                EntryKind::Symlink(target) => PlacementKind::Symlink(target),
            },
            mode: entry.mode,
            mtime: (entry.mtime, entry.mtime_nsec),
            owner: None,
        })
        .collect()
}

/// Matches a source pattern against a stage's filesystem (wildcards per path segment).
fn stage_sources(rootfs: &Rootfs, pattern: &str) -> Result<Vec<String>, ExecError> {
    let cleaned = kiln_context::clean(pattern);
    if !cleaned.contains(['*', '?', '[']) {
        let (_, found) = rootfs
            .resolve(Path::new(&cleaned), true)
            .map_err(ExecError::Copy)?;
        if found.is_none() {
            return Err(ExecError::Copy(format!(
                "{pattern:?}: not found in the source stage"
            )));
        }
        return Ok(vec![cleaned]);
    }
    let mut current = vec![String::new()];
    for segment in cleaned.split('/') {
        let matcher = globset::GlobBuilder::new(segment)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| ExecError::Copy(format!("invalid pattern {pattern:?}: {e}")))?
            .compile_matcher();
        let mut next = Vec::new();
        for dir in current {
            let names = match rootfs.resolve(Path::new(&dir), true) {
                Ok((resolved, Some(found))) if found.meta.is_dir() => rootfs.list(&resolved),
                _ => continue,
            };
            for name in names {
                let name = name.to_string_lossy().into_owned();
                if matcher.is_match(&name) {
                    next.push(if dir.is_empty() {
                        name
                    } else {
                        format!("{dir}/{name}")
                    });
                }
            }
        }
        current = next;
    }
    if current.is_empty() {
        return Err(ExecError::Copy(format!(
            "{pattern:?}: no file in the source stage matches"
        )));
    }
    Ok(current)
}

/// A stage source as placements (the source itself first, then its tree in name order).
fn stage_entries(
    rootfs: &Rootfs,
    source: &str,
    excludes: &IgnoreRules,
) -> Result<Vec<Placement>, ExecError> {
    let (resolved, found) = rootfs
        .resolve(Path::new(source), true)
        .map_err(ExecError::Copy)?;
    let Some(found) = found else {
        return Err(ExecError::Copy(format!(
            "{source:?}: not found in the source stage"
        )));
    };
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, PathBuf, source_meta::Meta)> =
        vec![(resolved, PathBuf::new(), source_meta::Meta::of(&found))];
    while let Some((view_path, relative, meta)) = stack.pop() {
        let kind = if meta.is_dir {
            PlacementKind::Dir
        } else if meta.is_symlink {
            PlacementKind::Symlink(fs::read_link(&meta.path).map_err(|e| io_at(&meta.path, e))?)
        } else if meta.is_file {
            PlacementKind::File(meta.path.clone())
        } else {
            continue;
        };
        out.push(Placement {
            destination: relative.clone(),
            kind,
            mode: meta.mode,
            mtime: meta.mtime,
            owner: Some(meta.owner),
            stat: None,
            nlink: 1,
        });
        if meta.is_dir {
            let mut children: Vec<(PathBuf, PathBuf, source_meta::Meta)> = Vec::new();
            for name in rootfs.list(&view_path) {
                let child_relative = relative.join(&name);
                if excludes.is_excluded(&child_relative.to_string_lossy()) {
                    continue;
                }
                let child_view = view_path.join(&name);
                if let Some(child) = rootfs.lstat(&child_view) {
                    children.push((child_view, child_relative, source_meta::Meta::of(&child)));
                }
            }
            // Reverse so the stack pops them in name order.
            stack.extend(children.into_iter().rev());
        }
    }
    Ok(out)
}

/// The metadata a placement needs from a union-view entry.
mod source_meta {
    use crate::rootfs::Found;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    pub struct Meta {
        pub path: PathBuf,
        pub is_dir: bool,
        pub is_file: bool,
        pub is_symlink: bool,
        pub mode: u32,
        pub mtime: (i64, i64),
        pub owner: super::Owner,
    }

    impl Meta {
        pub fn of(found: &Found) -> Self {
            let file_type = found.meta.file_type();
            Meta {
                path: found.path.clone(),
                is_dir: file_type.is_dir(),
                is_file: file_type.is_file(),
                is_symlink: file_type.is_symlink(),
                mode: found.meta.mode() & 0o7777,
                mtime: (found.meta.mtime(), found.meta.mtime_nsec()),
                owner: super::Owner {
                    uid: found.meta.uid(),
                    gid: found.meta.gid(),
                },
            }
        }
    }
}

/// Creates entries inside the snapshot without ever following a symlink.
struct SnapshotWriter<'a> {
    root: &'a Path,
    image: &'a Rootfs,
    /// --chown, or root for new entries without an owner of their own.
    owner: Owner,
    /// Whether --chown was given (then it wins over a source's own owner).
    chown: bool,
    /// Context files are opened through it: beneath its root, never through a symlink.
    context: Option<&'a Context>,
    memo: Option<&'a dyn kiln_context::HashMemo>,
    /// Unchanged files linked from the step's previous snapshot; what was written, recorded.
    reuse: Option<&'a crate::reuse::SnapshotReuse>,
    now: i64,
    /// Directory metadata, applied by `finish` once everything inside is written (writing a
    /// child changes a directory's mtime). The last word on a directory wins.
    dirs: std::collections::BTreeMap<PathBuf, (u32, Owner, (i64, i64))>,
    /// Context files with several names: (device, inode) → the first name written for them in
    /// this step, so the other names become hard links to it, as BuildKit's transfer keeps them.
    links: std::collections::HashMap<(u64, u64), PathBuf>,
    /// Parent directories already resolved in the image (which does not change during the
    /// copy): each is looked up through the lower layers once, not once per file in it.
    resolved: std::collections::HashMap<PathBuf, PathBuf>,
    /// Snapshot directories known to be real directories (made or checked by this copy);
    /// forgotten when something at or above them is replaced.
    made: std::collections::HashSet<PathBuf>,
    /// Snapshot directories this copy created (so they held only what it put there since);
    /// forgotten when something at or above them is replaced.
    fresh: std::collections::HashSet<PathBuf>,
    /// Snapshot paths this copy placed something at (or is about to link at).
    placed: std::collections::HashSet<PathBuf>,
    /// Paths (resolved in the image) the image does not have: nothing below them needs
    /// looking up through its layers.
    absent: std::collections::HashSet<PathBuf>,
}

/// A file to link from the previous snapshot, its place settled (see
/// [`SnapshotWriter::pending_link`]).
struct PendingLink {
    /// Its position in the copy's placements.
    index: usize,
    relative: PathBuf,
    path: PathBuf,
    mode: u32,
    owner: Owner,
}

/// Pending links made on all cores at least (fewer are not worth the threads).
const PARALLEL_LINKS: usize = 64;

impl SnapshotWriter<'_> {
    /// Links a context file that did not change since the step's previous snapshot from there
    /// (see [`crate::reuse`]); false when it must be copied.
    fn link_unchanged(
        &self,
        placement: &Placement,
        relative: &Path,
        path: &Path,
        mode: u32,
        owner: Owner,
    ) -> bool {
        let (Some(memo), Some(stat)) = (self.memo, placement.stat) else {
            return false;
        };
        let Some(hash) = memo.get(&stat) else {
            return false;
        };
        match self.link_known(placement, relative, path, mode, owner, hash) {
            Some(linked) => {
                // The layer writer learns what the link holds without reading it.
                memo.put_written(linked, hash);
                true
            }
            None => false,
        }
    }

    /// [`SnapshotWriter::link_unchanged`] of a file whose content hash (from the memo) is
    /// `hash`: the new name's key when it was linked (for the memo's written files).
    fn link_known(
        &self,
        placement: &Placement,
        relative: &Path,
        path: &Path,
        mode: u32,
        owner: Owner,
        hash: [u8; 32],
    ) -> Option<StatKey> {
        let (Some(reuse), Some(_), Some(_), Some(stat)) =
            (self.reuse, self.memo, self.context, placement.stat)
        else {
            return None;
        };
        // A file with several names goes through the copy's own hard-link handling.
        if placement.nlink != 1 {
            return None;
        }
        let wanted = crate::reuse::Wanted {
            hash,
            size: stat.size,
            mode: mode & 0o7777,
            uid: owner.uid,
            gid: owner.gid,
            mtime: placement.mtime,
        };
        reuse
            .link(relative, path, &wanted)
            .map(|linked| linked.stat)
    }

    /// Where a placement goes in the snapshot (relative to it): directories the image has as
    /// symlinks are followed, inside the image; the entry itself, unless it is a directory,
    /// replaces whatever the image has at its name.
    fn target_of(&mut self, placement: &Placement) -> Result<PathBuf, ExecError> {
        let (Some(parent), Some(name)) = (
            placement.destination.parent(),
            placement.destination.file_name(),
        ) else {
            return self.resolve_in_image(&placement.destination);
        };
        let parent = match self.resolved.get(parent) {
            Some(resolved) => resolved.clone(),
            None => {
                let resolved = self.resolve_in_image(parent)?;
                self.resolved.insert(parent.to_path_buf(), resolved.clone());
                resolved
            }
        };
        let joined = parent.join(name);
        if !matches!(placement.kind, PlacementKind::Dir) {
            return Ok(joined);
        }
        // A directory is followed if the image has a symlink at its name; below a path the
        // image does not have, it has nothing.
        if self.absent.contains(&parent) {
            self.absent.insert(joined.clone());
            return Ok(joined);
        }
        self.resolve_in_image(&placement.destination)
    }

    /// `path` resolved in the image (symlinks followed inside it), remembering when the image
    /// does not have it.
    fn resolve_in_image(&mut self, path: &Path) -> Result<PathBuf, ExecError> {
        let (resolved, found) = self.image.resolve(path, true).map_err(ExecError::Copy)?;
        if found.is_none() {
            self.absent.insert(resolved.clone());
        }
        Ok(resolved)
    }

    /// What the image has at `relative` (resolved), looked up only when its parent is there.
    fn image_entry(&mut self, relative: &Path) -> Option<crate::rootfs::Found> {
        if relative
            .parent()
            .is_some_and(|parent| self.absent.contains(parent))
        {
            self.absent.insert(relative.to_path_buf());
            return None;
        }
        let found = self.image.lstat(relative);
        if found.is_none() {
            self.absent.insert(relative.to_path_buf());
        }
        found
    }

    /// Whether files may be linked from a previous snapshot, in batches (then what is placed
    /// where is tracked).
    fn links_in_batches(&self) -> bool {
        self.reuse.is_some_and(|reuse| reuse.has_previous())
    }

    /// A context file that may be linked from the previous snapshot, when its link can wait
    /// in a batch: its directory was created by this copy and nothing was placed at its name,
    /// so nothing is there and nothing else in the batch goes there. Its directories are made
    /// now, in order; `None` when it must be placed in order instead.
    fn pending_link(
        &mut self,
        index: usize,
        placement: &Placement,
        mode: u32,
    ) -> Result<Option<PendingLink>, ExecError> {
        let linkable = self.links_in_batches()
            && self.memo.is_some()
            && self.context.is_some()
            && placement.stat.is_some()
            && placement.nlink == 1
            && matches!(placement.kind, PlacementKind::File(_));
        if !linkable {
            return Ok(None);
        }
        let relative = self.target_of(placement)?;
        let Some(parent) = relative.parent() else {
            return Ok(None);
        };
        self.ensure_dir(parent)?;
        if !self.fresh.contains(parent) || !self.placed.insert(relative.clone()) {
            return Ok(None);
        }
        let owner = match placement.owner {
            Some(own) if !self.chown => own,
            _ => self.owner,
        };
        Ok(Some(PendingLink {
            index,
            path: self.root.join(&relative),
            relative,
            mode,
            owner,
        }))
    }

    /// Whether placing this now cannot touch what a pending link goes to: a directory made
    /// at a new name inside a directory this copy created (a pending link's directory only
    /// ever gains names).
    fn places_apart(&self, placement: &Placement, relative: &Path) -> bool {
        matches!(placement.kind, PlacementKind::Dir)
            && relative
                .parent()
                .is_some_and(|parent| self.fresh.contains(parent))
            && !self.placed.contains(relative)
    }

    /// Links the batch's files from the previous snapshot (on all cores when there are many);
    /// those that cannot be linked are then placed one by one, in order.
    fn link_batch(
        &mut self,
        placements: &[Placement],
        batch: Vec<PendingLink>,
        stats: &mut CopyStats,
    ) -> Result<(), ExecError> {
        let placement_of = |pending: &PendingLink| placements.get(pending.index);
        // The memo is asked once for the whole batch and told what was linked from this
        // thread, rather than locked by every link on every core.
        let known = match self.memo {
            Some(memo) => memo.get_many(
                &mut batch
                    .iter()
                    .filter_map(|pending| placement_of(pending).and_then(|p| p.stat.as_ref())),
            ),
            None => Vec::new(),
        };
        let mut known = known.into_iter();
        let hashes: Vec<Option<[u8; 32]>> = batch
            .iter()
            .map(|pending| match placement_of(pending).and_then(|p| p.stat) {
                Some(_) => known.next().flatten(),
                None => None,
            })
            .collect();
        let link = |(pending, hash): (&PendingLink, &Option<[u8; 32]>)| {
            let placement = placement_of(pending)?;
            let hash = (*hash)?;
            let linked = self.link_known(
                placement,
                &pending.relative,
                &pending.path,
                pending.mode,
                pending.owner,
                hash,
            )?;
            Some((linked, hash))
        };
        let linked: Vec<Option<(StatKey, [u8; 32])>> = if batch.len() >= PARALLEL_LINKS {
            use rayon::prelude::*;
            batch.par_iter().zip(&hashes).map(link).collect()
        } else {
            batch.iter().zip(&hashes).map(link).collect()
        };
        for (pending, linked) in batch.iter().zip(linked) {
            match linked {
                Some((written, hash)) => {
                    // The layer writer learns what the link holds without reading it.
                    if let Some(memo) = self.memo {
                        memo.put_written(written, hash);
                    }
                    stats.files += 1;
                }
                None => {
                    if let Some(placement) = placement_of(pending) {
                        self.place(placement, pending.mode, stats)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Stamps the directories, deepest first.
    fn finish(self) -> Result<(), ExecError> {
        let mut dirs: Vec<_> = self.dirs.into_iter().collect();
        dirs.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, (mode, owner, mtime)) in dirs {
            set_metadata(&path, mode, owner, mtime, false)?;
        }
        Ok(())
    }

    /// Makes sure every component of `relative` is a real directory in the snapshot. A
    /// directory the image already has keeps its metadata; a new one is 0755, owned by the
    /// --chown owner.
    fn ensure_dir(&mut self, relative: &Path) -> Result<(), ExecError> {
        if self.made.contains(relative) {
            return Ok(());
        }
        let mut path = self.root.to_path_buf();
        let mut view = PathBuf::new();
        for component in relative.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            path.push(name);
            view.push(name);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(_) => {
                    return Err(ExecError::Copy(format!(
                        "cannot create directory /{}: a file or symbolic link of the same name was copied earlier in this step",
                        view.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&path, e)),
            }
            fs::create_dir(&path).map_err(|e| io_at(&path, e))?;
            self.fresh.insert(view.clone());
            if self.links_in_batches() {
                self.placed.insert(view.clone());
            }
            let stamp = match self.image_entry(&view) {
                Some(found) if found.meta.is_dir() => {
                    let meta = &found.meta;
                    let owner = Owner {
                        uid: meta.uid(),
                        gid: meta.gid(),
                    };
                    (
                        meta.mode() & 0o7777,
                        owner,
                        (meta.mtime(), meta.mtime_nsec()),
                    )
                }
                _ => (0o755, self.owner, (self.now, 0)),
            };
            self.dirs.insert(path.clone(), stamp);
        }
        self.made.insert(relative.to_path_buf());
        Ok(())
    }

    fn place(
        &mut self,
        placement: &Placement,
        mode: u32,
        stats: &mut CopyStats,
    ) -> Result<(), ExecError> {
        // Directories the image has as symlinks are followed, inside the image (a tree copied
        // to `/` whose `lib/` meets a `/lib -> usr/lib` link lands in `usr/lib`).
        let resolved = self.target_of(placement)?;
        self.place_at(placement, resolved, mode, stats)
    }

    /// [`SnapshotWriter::place`] at `resolved`, the placement's [`SnapshotWriter::target_of`].
    fn place_at(
        &mut self,
        placement: &Placement,
        resolved: PathBuf,
        mode: u32,
        stats: &mut CopyStats,
    ) -> Result<(), ExecError> {
        let relative = &resolved;
        if self.links_in_batches() {
            self.placed.insert(resolved.clone());
        }
        if let Some(parent) = relative.parent() {
            self.ensure_dir(parent)?;
        }
        let owner = match placement.owner {
            Some(own) if !self.chown => own,
            _ => self.owner,
        };
        let path = self.root.join(relative);
        if path == self.root {
            // Copying a directory's contents to `/`: nothing to create for the source itself.
            return Ok(());
        }
        // An unchanged file linked from the previous snapshot; the link fails if anything is
        // at its name already (then it goes the long way below: replaced, then linked).
        if matches!(placement.kind, PlacementKind::File(_))
            && self.link_unchanged(placement, relative, &path, mode, owner)
        {
            stats.files += 1;
            return Ok(());
        }
        // A later source replaces an earlier one, as in Docker; never write through it.
        let existing = fs::symlink_metadata(&path);
        // Only a name that was in the way makes a second try at linking worth it.
        let replaced = existing.is_ok();
        match existing {
            Ok(meta) if meta.is_dir() && matches!(placement.kind, PlacementKind::Dir) => {
                self.dirs.insert(path, (mode, owner, placement.mtime));
                return Ok(());
            }
            Ok(meta) if meta.is_dir() => {
                fs::remove_dir_all(&path).map_err(|e| io_at(&path, e))?;
                if let Some(reuse) = self.reuse {
                    reuse.forget(relative);
                }
                // Names below it are gone, and it may become a symlink: never link through it.
                self.links.retain(|_, first| !first.starts_with(&path));
                self.made.retain(|dir| !dir.starts_with(relative));
                self.fresh.retain(|dir| !dir.starts_with(relative));
            }
            Ok(_) => {
                fs::remove_file(&path).map_err(|e| io_at(&path, e))?;
                if let Some(reuse) = self.reuse {
                    reuse.forget(relative);
                }
                self.links.retain(|_, first| first != &path);
                self.made.retain(|dir| !dir.starts_with(relative));
                self.fresh.retain(|dir| !dir.starts_with(relative));
            }
            Err(_) => {}
        }
        match &placement.kind {
            PlacementKind::Dir => {
                fs::create_dir(&path).map_err(|e| io_at(&path, e))?;
                self.fresh.insert(relative.clone());
                self.dirs.insert(path, (mode, owner, placement.mtime));
                Ok(())
            }
            PlacementKind::File(source) => {
                if replaced && self.link_unchanged(placement, relative, &path, mode, owner) {
                    stats.files += 1;
                    return Ok(());
                }
                // Never follow a link swapped in since the source was walked.
                let mut input = match (self.context, placement.stat) {
                    (Some(context), Some(_)) => context.open_file(source),
                    _ => OpenOptions::new()
                        .read(true)
                        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                        .open(source),
                }
                .map_err(|e| io_at(source, e))?;
                let source_meta = input.metadata().map_err(|e| io_at(source, e))?;
                let inode = (self.context.is_some() && source_meta.nlink() > 1)
                    .then(|| (source_meta.dev(), source_meta.ino()));
                if let Some(first) = inode.and_then(|inode| self.links.get(&inode)) {
                    // Another name of a file this step already wrote: the same file again.
                    if fs::symlink_metadata(first).is_ok_and(|m| m.is_file()) {
                        rustix::fs::linkat(
                            rustix::fs::CWD,
                            first,
                            rustix::fs::CWD,
                            &path,
                            rustix::fs::AtFlags::empty(),
                        )
                        .map_err(|e| io_at(&path, e.into()))?;
                        stats.files += 1;
                        return Ok(());
                    }
                }
                if let Some(inode) = inode {
                    self.links.insert(inode, path.clone());
                }
                let mut output = create_new(&path)?;
                let mut digest = None;
                stats.bytes += match (self.memo, placement.stat) {
                    // Content the memo knows is copied by the kernel (copy_file_range, a
                    // reflink where the filesystem has them): not read into kiln again.
                    (Some(memo), Some(stat))
                        if StatKey::of(&source_meta) == stat && memo.get(&stat).is_some() =>
                    {
                        let copied =
                            io::copy(&mut input, &mut output).map_err(|e| io_at(&path, e))?;
                        // Trusted only if the source did not change while it was copied.
                        let after = input.metadata().map_err(|e| io_at(source, e))?;
                        if StatKey::of(&after) == stat {
                            digest = memo.get(&stat);
                        }
                        copied
                    }
                    (Some(memo), Some(stat)) => {
                        let (copied, hash) = copy_and_hash(&mut input, &mut output, stat, memo)
                            .map_err(|e| io_at(&path, e))?;
                        digest = hash;
                        copied
                    }
                    _ => io::copy(&mut input, &mut output).map_err(|e| io_at(&path, e))?,
                };
                // A context file written to while it was copied may have given a torn copy
                // (part old, part new): the step fails, naming it, instead of keeping it.
                if let (Some(_), Some(walked)) = (self.context, placement.stat) {
                    let now = input.metadata().map_err(|e| io_at(source, e))?;
                    if kiln_context::StatKey::of(&now) != walked {
                        return Err(ExecError::Changed {
                            path: source.clone(),
                        });
                    }
                }
                stats.files += 1;
                drop(output);
                set_metadata(&path, mode, owner, placement.mtime, false)?;
                // Tell the layer writer what the copy holds, so it need not read it to know.
                if let (Some(memo), Some(digest)) = (self.memo, digest) {
                    if let Ok(meta) = fs::symlink_metadata(&path) {
                        if meta.len() == source_meta.len() {
                            memo.put_written(StatKey::of(&meta), digest);
                        }
                    }
                }
                if let (Some(reuse), Some(digest)) = (self.reuse, digest) {
                    reuse.record(relative, digest);
                }
                Ok(())
            }
            PlacementKind::Content(content) => {
                let mut output = create_new(&path)?;
                io::Write::write_all(&mut output, content.as_bytes())
                    .map_err(|e| io_at(&path, e))?;
                stats.files += 1;
                stats.bytes += content.len() as u64;
                drop(output);
                set_metadata(&path, mode, owner, placement.mtime, false)
            }
            PlacementKind::Symlink(target) => {
                std::os::unix::fs::symlink(target, &path).map_err(|e| io_at(&path, e))?;
                set_metadata(&path, 0o777, owner, placement.mtime, true)
            }
        }
    }
}

/// Copies a context file and hashes it in the same pass; the hash is memoised only if the file
/// still is what was walked (same dev, inode, size, mtime and ctime), so a file that changed
/// meanwhile is hashed again by the key computation rather than trusted.
fn copy_and_hash(
    input: &mut File,
    output: &mut File,
    stat: kiln_context::StatKey,
    memo: &dyn kiln_context::HashMemo,
) -> io::Result<(u64, Option<[u8; 32]>)> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match io::Read::read(input, &mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
        io::Write::write_all(output, &buffer[..n])?;
        total += n as u64;
    }
    memo.record_read(total);
    let hash: [u8; 32] = hasher.finalize().into();
    if kiln_context::StatKey::of(&input.metadata()?) == stat {
        memo.put(stat, hash);
    }
    // What was copied is what was hashed, whatever the source did meanwhile.
    Ok((total, Some(hash)))
}

fn create_new(path: &Path) -> Result<File, ExecError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_at(path, e))
}

/// Owner, mode and mtime of a copied entry, never following a symlink.
fn set_metadata(
    path: &Path,
    mode: u32,
    owner: Owner,
    mtime: (i64, i64),
    is_symlink: bool,
) -> Result<(), ExecError> {
    let stamp = Stamp {
        mode,
        uid: owner.uid,
        gid: owner.gid,
        mtime,
    };
    set_stamp(path, stamp, is_symlink, true)
}

/// Names of a directory as `OsString`s, for tests.
#[cfg(test)]
fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_plan::Source;

    fn step(sources: &[&str], destination: &str) -> CopyStep {
        CopyStep {
            is_add: false,
            sources: sources
                .iter()
                .map(|s| CopySource::Path(s.to_string()))
                .collect(),
            destination: destination.to_string(),
            from: Source::Context,
            chown: None,
            chmod: None,
            link: false,
            parents: false,
            excludes: vec![],
            checksum: None,
            keep_git_dir: false,
            unpack: None,
        }
    }

    fn context(files: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
        }
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        (dir, ctx)
    }

    fn copy(
        step: &CopyStep,
        ctx: &Context,
        image: &Rootfs,
        workdir: &str,
    ) -> Result<tempfile::TempDir, ExecError> {
        let snapshot = tempfile::tempdir().unwrap();
        let job = CopyJob {
            step,
            workdir,
            image,
            users: image,
            snapshot: snapshot.path(),
            now: 1_700_000_000,
            fetched: &[],
            git_trees: &[],
            memo: None,
            reuse: None,
            walked: &[],
        };
        run_copy(&job, &CopyFrom::Context(ctx))?;
        Ok(snapshot)
    }

    fn read(dir: &Path, path: &str) -> String {
        fs::read_to_string(dir.join(path)).unwrap()
    }

    #[test]
    fn file_to_path_and_to_directory() {
        let (_c, ctx) = context(&[("a.txt", "A")]);
        let out = copy(&step(&["a.txt"], "/b.txt"), &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(read(out.path(), "b.txt"), "A");
        let out = copy(&step(&["a.txt"], "dir/"), &ctx, &Rootfs::default(), "/app").unwrap();
        assert_eq!(read(out.path(), "app/dir/a.txt"), "A");
    }

    #[test]
    fn directory_copies_its_contents() {
        let (_c, ctx) = context(&[("src/x", "1"), ("src/sub/y", "2")]);
        let out = copy(&step(&["src"], "/dst"), &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(names(&out.path().join("dst")), ["sub", "x"]);
        assert_eq!(read(out.path(), "dst/sub/y"), "2");
    }

    #[test]
    fn a_directory_copied_to_a_new_destination_gets_a_fresh_0755_directory() {
        let (c, ctx) = context(&[("private/p", "p")]);
        fs::set_permissions(
            c.path().join("private"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let out = copy(
            &step(&["private"], "/private"),
            &ctx,
            &Rootfs::default(),
            "/",
        )
        .unwrap();
        let meta = fs::metadata(out.path().join("private")).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o755, 0, 0)
        );
        let mut chowned = step(&["private"], "/private");
        chowned.chown = Some("10:11".into());
        let out = copy(&chowned, &ctx, &Rootfs::default(), "/").unwrap();
        let meta = fs::metadata(out.path().join("private")).unwrap();
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (0o755, 10, 11)
        );
    }

    #[test]
    fn directory_times_survive_their_contents_being_written() {
        let (c, ctx) = context(&[("src/sub/x", "1")]);
        let old = rustix::fs::Timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: old,
            last_modification: old,
        };
        for dir in ["src", "src/sub"] {
            rustix::fs::utimensat(
                rustix::fs::CWD,
                c.path().join(dir),
                &times,
                rustix::fs::AtFlags::empty(),
            )
            .unwrap();
        }
        let out = copy(&step(&["src"], "/dst"), &ctx, &Rootfs::default(), "/").unwrap();
        // The destination is made by the step (BuildKit's mkdir before the copy): its time.
        assert_eq!(
            fs::metadata(out.path().join("dst")).unwrap().mtime(),
            1_700_000_000
        );
        assert_eq!(
            fs::metadata(out.path().join("dst/sub")).unwrap().mtime(),
            1_000_000_000
        );
    }

    #[test]
    fn an_existing_destination_directory_keeps_its_owner_and_mode() {
        let (_c, ctx) = context(&[("src/x", "1")]);
        let image_dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(image_dir.path().join("app")).unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            image_dir.path().join("app"),
            Some(rustix::fs::Uid::from_raw(1000)),
            Some(rustix::fs::Gid::from_raw(1000)),
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        fs::set_permissions(
            image_dir.path().join("app"),
            std::os::unix::fs::PermissionsExt::from_mode(0o750),
        )
        .unwrap();
        let image = Rootfs::new(vec![image_dir.path().into()]);
        let out = copy(&step(&["src"], "/app"), &ctx, &image, "/").unwrap();
        let app = fs::metadata(out.path().join("app")).unwrap();
        assert_eq!(
            (app.uid(), app.gid(), app.mode() & 0o7777),
            (1000, 1000, 0o750)
        );
        assert_eq!(read(out.path(), "app/x"), "1");
    }

    #[test]
    fn directories_that_are_links_in_the_image_are_followed() {
        let (_c, ctx) = context(&[("tree/lib/libfoo.so", "F"), ("tree/etc/conf", "C")]);
        let image_dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(image_dir.path().join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", image_dir.path().join("lib")).unwrap();
        let image = Rootfs::new(vec![image_dir.path().into()]);
        let out = copy(&step(&["tree"], "/"), &ctx, &image, "/").unwrap();
        assert_eq!(read(out.path(), "usr/lib/libfoo.so"), "F");
        assert!(
            !out.path().join("lib").exists(),
            "the image's /lib link stays a link"
        );
        assert_eq!(read(out.path(), "etc/conf"), "C");
    }

    #[test]
    fn new_directories_below_links_and_below_what_the_image_lacks_land_where_they_should() {
        let (_c, ctx) = context(&[
            ("tree/opt/link/new/deep/f", "F"),
            ("tree/opt/real/g", "G"),
            ("tree/fresh/a/b/c", "C"),
            ("tree/fresh/a/d", "D"),
        ]);
        let image_dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(image_dir.path().join("opt/real")).unwrap();
        fs::set_permissions(
            image_dir.path().join("opt/real"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::symlink("real", image_dir.path().join("opt/link")).unwrap();
        // A lower layer has a directory an upper one whites out: not there in the image.
        let lower = tempfile::tempdir().unwrap();
        fs::create_dir_all(lower.path().join("fresh/a/b")).unwrap();
        fs::set_permissions(
            lower.path().join("fresh/a"),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            image_dir.path().join("fresh"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .expect("a whiteout (char device 0/0) can be made here");
        let image = Rootfs::new(vec![lower.path().into(), image_dir.path().into()]);
        let out = copy(&step(&["tree"], "/"), &ctx, &image, "/").unwrap();
        assert_eq!(read(out.path(), "opt/real/new/deep/f"), "F");
        assert_eq!(read(out.path(), "opt/real/g"), "G");
        assert_eq!(read(out.path(), "fresh/a/b/c"), "C");
        assert_eq!(read(out.path(), "fresh/a/d"), "D");
        assert!(!out.path().join("opt/link").exists());
        // Directories a copy needs keep the image's metadata where the image has them, and
        // are new (0755) below what the image lacks, whatever a covered lower layer holds.
        let mode = |out: &Path, p: &str| fs::symlink_metadata(out.join(p)).unwrap().mode() & 0o7777;
        let out = copy(
            &step(&["tree/fresh/a/d"], "/opt/link/sub/"),
            &ctx,
            &image,
            "/",
        )
        .unwrap();
        assert_eq!(read(out.path(), "opt/real/sub/d"), "D");
        assert_eq!(mode(out.path(), "opt/real"), 0o700);
        assert_eq!(mode(out.path(), "opt/real/sub"), 0o755);
        let out = copy(&step(&["tree/fresh/a/d"], "/fresh/a/b/"), &ctx, &image, "/").unwrap();
        assert_eq!(read(out.path(), "fresh/a/b/d"), "D");
        assert_eq!(mode(out.path(), "fresh"), 0o755);
        assert_eq!(mode(out.path(), "fresh/a"), 0o755);
    }

    #[test]
    fn several_sources_need_a_directory_and_wildcards_expand() {
        let (_c, ctx) = context(&[("a.txt", "A"), ("b.txt", "B"), ("c.md", "C")]);
        let out = copy(&step(&["*.txt"], "/d/"), &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(names(&out.path().join("d")), ["a.txt", "b.txt"]);
    }

    #[test]
    fn existing_directory_in_the_image_receives_the_file() {
        let (_c, ctx) = context(&[("a.txt", "A")]);
        let image_dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(image_dir.path().join("opt/app")).unwrap();
        let image = Rootfs::new(vec![image_dir.path().into()]);
        let out = copy(&step(&["a.txt"], "/opt/app"), &ctx, &image, "/").unwrap();
        assert_eq!(read(out.path(), "opt/app/a.txt"), "A");
    }

    #[test]
    fn chown_by_number_and_by_name_and_chmod() {
        let (_c, ctx) = context(&[("a.txt", "A")]);
        let image_dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(image_dir.path().join("etc")).unwrap();
        fs::write(
            image_dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nweb:x:1001:50::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            image_dir.path().join("etc/group"),
            "root:x:0:\nstaff:x:50:\n",
        )
        .unwrap();
        let image = Rootfs::new(vec![image_dir.path().into()]);
        let mut s = step(&["a.txt"], "/x/a.txt");
        s.chown = Some("app:staff".into());
        s.chmod = Some("0640".into());
        let out = copy(&s, &ctx, &image, "/").unwrap();
        let meta = fs::metadata(out.path().join("x/a.txt")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1000, 50, 0o640)
        );
        // The directory COPY created belongs to the --chown user.
        let dir = fs::metadata(out.path().join("x")).unwrap();
        assert_eq!(
            (dir.uid(), dir.gid(), dir.mode() & 0o7777),
            (1000, 50, 0o755)
        );
        s.chown = Some("42".into());
        let out = copy(&s, &ctx, &image, "/").unwrap();
        let meta = fs::metadata(out.path().join("x/a.txt")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (42, 42));
        // A name without a group takes its passwd entry's group, not its uid.
        s.chown = Some("web".into());
        let out = copy(&s, &ctx, &image, "/").unwrap();
        let meta = fs::metadata(out.path().join("x/a.txt")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1001, 50));
        // A number stays a number for both, even when a passwd entry has it.
        s.chown = Some("1001".into());
        let out = copy(&s, &ctx, &image, "/").unwrap();
        let meta = fs::metadata(out.path().join("x/a.txt")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1001, 1001));
        s.chown = Some("nobody".into());
        let error = copy(&s, &ctx, &image, "/").unwrap_err().to_string();
        assert!(error.contains("unable to find user \"nobody\""), "{error}");
    }

    #[test]
    fn heredoc_sources_become_files() {
        let (_c, ctx) = context(&[]);
        let mut s = step(&[], "/etc/motd");
        s.sources = vec![CopySource::Heredoc {
            name: "EOF".into(),
            content: "hi\n".into(),
        }];
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(read(out.path(), "etc/motd"), "hi\n");
    }

    #[test]
    fn parents_keeps_the_source_path() {
        let (_c, ctx) = context(&[("x/y/file", "F")]);
        let mut s = step(&["x/y/file"], "/dst/");
        s.parents = true;
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(read(out.path(), "dst/x/y/file"), "F");
    }

    #[test]
    fn excludes_apply_to_wildcard_matches() {
        let (_c, ctx) = context(&[("homework.txt", "t"), ("home.md", "m")]);
        let mut s = step(&["hom*"], "/mydir/");
        s.excludes = vec!["*.txt".into()];
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(names(&out.path().join("mydir")), ["home.md"]);
    }

    #[test]
    fn excludes_leave_files_out() {
        let (_c, ctx) = context(&[("src/a.rs", ""), ("src/a.log", "")]);
        let mut s = step(&["src"], "/src");
        s.excludes = vec!["*.log".into()];
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(names(&out.path().join("src")), ["a.rs"]);
    }

    #[test]
    fn never_writes_through_a_symlink_copied_earlier() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("one")).unwrap();
        std::os::unix::fs::symlink("/tmp", dir.path().join("one/x")).unwrap();
        fs::create_dir_all(dir.path().join("two/x")).unwrap();
        fs::write(dir.path().join("two/x/escaped"), "no").unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let result = copy(&step(&["one", "two"], "/d/"), &ctx, &Rootfs::default(), "/");
        // Either refused or placed inside the snapshot, but never in the host's /tmp.
        assert!(!Path::new("/tmp/escaped").exists());
        if let Ok(out) = result {
            assert!(fs::symlink_metadata(out.path().join("d/x"))
                .unwrap()
                .is_dir());
        }
    }

    fn tar_bytes(entries: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o640);
            header.set_uid(7);
            header.set_gid(8);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        if !gzip {
            return bytes;
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut encoder, &bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn add_extracts_local_archives_and_keeps_their_owners() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.tar.gz"),
            tar_bytes(&[("x/y.txt", b"Y")], true),
        )
        .unwrap();
        fs::write(
            dir.path().join("plain.tar"),
            tar_bytes(&[("p.txt", b"P")], false),
        )
        .unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let mut s = step(&["a.tar.gz", "plain.tar"], "/opt/");
        s.is_add = true;
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(read(out.path(), "opt/x/y.txt"), "Y");
        assert_eq!(read(out.path(), "opt/p.txt"), "P");
        let meta = fs::metadata(out.path().join("opt/x/y.txt")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (7, 8, 0o640));
        // --unpack=false and COPY keep the archive as a file.
        s.unpack = Some(false);
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        assert!(out.path().join("opt/a.tar.gz").is_file());
    }

    #[test]
    fn add_extracts_bzip2_xz_and_zstd_archives() {
        let tar = tar_bytes(&[("inner.txt", b"I")], false);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        io::Write::write_all(&mut bz, &tar).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        io::Write::write_all(&mut xz, &tar).unwrap();
        let zst = zstd::stream::encode_all(&tar[..], 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.tar.bz2"), bz.finish().unwrap()).unwrap();
        fs::write(dir.path().join("b.tar.xz"), xz.finish().unwrap()).unwrap();
        fs::write(dir.path().join("c.tar.zst"), zst).unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        for (name, kind) in [
            ("a.tar.bz2", ArchiveKind::Bzip2),
            ("b.tar.xz", ArchiveKind::Xz),
            ("c.tar.zst", ArchiveKind::Zstd),
        ] {
            assert_eq!(archive_kind(&dir.path().join(name)).unwrap(), Some(kind));
            let mut s = step(&[name], "/x/");
            s.is_add = true;
            let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
            assert_eq!(read(out.path(), "x/inner.txt"), "I", "{name}");
        }
    }

    #[test]
    fn add_chown_of_an_absolute_entry_stays_in_the_snapshot() {
        let victim = tempfile::NamedTempFile::new().unwrap();
        let before = fs::metadata(victim.path()).unwrap();
        let name = victim.path().to_string_lossy().into_owned();
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        // An absolute name, written raw (the builder itself would refuse it).
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, &b"X"[..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("abs.tar"), builder.into_inner().unwrap()).unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let mut s = step(&["abs.tar"], "/opt/");
        s.is_add = true;
        s.chown = Some("4242:4242".into());
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        let after = fs::metadata(victim.path()).unwrap();
        assert_eq!(
            (after.uid(), after.gid()),
            (before.uid(), before.gid()),
            "the host file kept its owner"
        );
        let inside = out.path().join("opt").join(name.trim_start_matches('/'));
        assert_eq!(fs::metadata(inside).unwrap().uid(), 4242);
    }

    #[test]
    fn hard_links_in_the_context_stay_hard_links() {
        let (dir, ctx) = context(&[("src/a", "same"), ("other/c", "alone"), ("more/a", "new")]);
        fs::hard_link(dir.path().join("src/a"), dir.path().join("src/b")).unwrap();
        fs::hard_link(dir.path().join("src/a"), dir.path().join("other/d")).unwrap();
        let ino = |out: &Path, p: &str| fs::metadata(out.join(p)).unwrap().ino();
        // Within one source directory.
        let out = copy(&step(&["src"], "/app/"), &ctx, &Rootfs::default(), "/").unwrap();
        assert_eq!(ino(out.path(), "app/a"), ino(out.path(), "app/b"));
        assert_eq!(fs::metadata(out.path().join("app/a")).unwrap().nlink(), 2);
        assert_eq!(read(out.path(), "app/b"), "same");
        // Across the sources of one COPY; a file with one name stays on its own.
        let out = copy(
            &step(&["src/a", "other/d", "other/c"], "/x/"),
            &ctx,
            &Rootfs::default(),
            "/",
        )
        .unwrap();
        assert_eq!(ino(out.path(), "x/a"), ino(out.path(), "x/d"));
        assert_eq!(fs::metadata(out.path().join("x/c")).unwrap().nlink(), 1);
        // A name that a later source replaced is never linked to: b gets the content again.
        let out = copy(
            &step(&["src/a", "more/a", "src/b"], "/y/"),
            &ctx,
            &Rootfs::default(),
            "/",
        )
        .unwrap();
        assert_eq!(read(out.path(), "y/a"), "new");
        assert_eq!(read(out.path(), "y/b"), "same");
        assert_ne!(ino(out.path(), "y/a"), ino(out.path(), "y/b"));
    }

    #[test]
    fn add_chown_of_a_tar_keeps_setuid_setgid_and_sticky_bits() {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, mode, kind) in [
            ("bin/", 0o1777, tar::EntryType::Directory),
            ("bin/su", 0o4755, tar::EntryType::Regular),
            ("bin/wall", 0o2755, tar::EntryType::Regular),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(if kind == tar::EntryType::Regular {
                1
            } else {
                0
            });
            header.set_mode(mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            let body: &[u8] = if kind == tar::EntryType::Regular {
                b"X"
            } else {
                b""
            };
            builder.append_data(&mut header, name, body).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("suid.tar"), builder.into_inner().unwrap()).unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let mut s = step(&["suid.tar"], "/");
        s.is_add = true;
        s.chown = Some("4242:4243".into());
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        let meta = |p: &str| {
            let m = fs::symlink_metadata(out.path().join(p)).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(meta("bin/su"), (4242, 4243, 0o4755));
        assert_eq!(meta("bin/wall"), (4242, 4243, 0o2755));
        assert_eq!(meta("bin"), (4242, 4243, 0o1777));
    }

    #[test]
    fn add_copies_compressed_files_that_are_not_archives() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::Write::write_all(&mut gz, b"{\"json\": true}").unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("data.json.gz"), gz.finish().unwrap()).unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        assert_eq!(
            archive_kind(&dir.path().join("data.json.gz")).unwrap(),
            None
        );
        let mut s = step(&["data.json.gz"], "/d/");
        s.is_add = true;
        let out = copy(&s, &ctx, &Rootfs::default(), "/").unwrap();
        assert!(out.path().join("d/data.json.gz").is_file());
    }

    #[test]
    fn add_refuses_archives_that_escape() {
        let dir = tempfile::tempdir().unwrap();
        // A raw header with a `..` name (the tar crate's builder refuses to write one).
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../../escape");
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'E'; 512]);
        bytes.extend_from_slice(&[0u8; 1024]);
        fs::write(dir.path().join("evil.tar"), bytes).unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let mut s = step(&["evil.tar"], "/opt/");
        s.is_add = true;
        let result = copy(&s, &ctx, &Rootfs::default(), "/");
        assert!(result.is_err(), "an escaping entry must be refused");
    }

    #[test]
    fn a_git_source_needs_its_checkout() {
        let (_c, ctx) = context(&[]);
        let mut s = step(&[], "/x");
        s.is_add = true;
        s.sources = vec![CopySource::Git("https://me:pw@example.com/r.git".into())];
        let error = copy(&s, &ctx, &Rootfs::default(), "/")
            .unwrap_err()
            .to_string();
        assert!(error.contains("was not checked out"), "{error}");
        assert!(!error.contains("pw@"), "{error}");
    }

    /// Copies `src/` to `/app/` with a memo and `reuse`, into a fresh snapshot.
    fn copy_reusing(
        ctx: &Context,
        memo: &kiln_context::MemoryMemo,
        reuse: &crate::reuse::SnapshotReuse,
    ) -> tempfile::TempDir {
        copy_sources_reusing(ctx, &["src/"], memo, Some(reuse))
    }

    /// Copies `sources` to `/app/` with a memo and, if given, `reuse`, into a fresh snapshot.
    fn copy_sources_reusing(
        ctx: &Context,
        sources: &[&str],
        memo: &kiln_context::MemoryMemo,
        reuse: Option<&crate::reuse::SnapshotReuse>,
    ) -> tempfile::TempDir {
        let snapshot = tempfile::tempdir().unwrap();
        let step = step(sources, "/app/");
        let job = CopyJob {
            step: &step,
            workdir: "/",
            image: &Rootfs::default(),
            users: &Rootfs::default(),
            snapshot: snapshot.path(),
            now: 1_700_000_000,
            fetched: &[],
            git_trees: &[],
            memo: Some(memo),
            reuse,
            walked: &[],
        };
        run_copy(&job, &CopyFrom::Context(ctx)).unwrap();
        snapshot
    }

    #[test]
    fn unchanged_files_are_linked_from_the_previous_snapshot_and_nothing_else() {
        let (dir, ctx) = context(&[
            ("src/a", "A"),
            ("src/b", "B"),
            ("src/c", "C"),
            ("src/d", "D"),
        ]);
        let memo = kiln_context::MemoryMemo::default();
        let first = crate::reuse::SnapshotReuse::recording();
        let one = copy_reusing(&ctx, &memo, &first);
        assert_eq!(first.linked(), 0);
        let written = first.into_written();
        assert_eq!(written.len(), 4, "{written:?}");

        // b edited, c rewritten with the same bytes (a new mtime), d given another mode.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.path().join("src/b"), "B2").unwrap();
        fs::write(dir.path().join("src/c"), "C").unwrap();
        fs::set_permissions(
            dir.path().join("src/d"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let ctx = Context::new(dir.path(), IgnoreRules::default()).unwrap();
        let second = crate::reuse::SnapshotReuse::from_previous(one.path().to_path_buf(), written);
        let two = copy_reusing(&ctx, &memo, &second);
        assert_eq!(second.linked(), 1, "only a is unchanged");
        let ino = |root: &Path, name: &str| {
            fs::symlink_metadata(root.join("app").join(name))
                .unwrap()
                .ino()
        };
        assert_eq!(ino(one.path(), "a"), ino(two.path(), "a"));
        for name in ["b", "c", "d"] {
            assert_ne!(ino(one.path(), name), ino(two.path(), name), "{name}");
            let source = fs::metadata(dir.path().join("src").join(name)).unwrap();
            let copied = fs::symlink_metadata(two.path().join("app").join(name)).unwrap();
            assert_eq!(
                (copied.mtime(), copied.mtime_nsec(), copied.mode() & 0o7777),
                (source.mtime(), source.mtime_nsec(), source.mode() & 0o7777),
                "{name}"
            );
        }
        assert_eq!(read(two.path(), "app/b"), "B2");
        // The new snapshot's record names every file with its content, linked or copied.
        let mut recorded = second.into_written();
        recorded.sort();
        let names: Vec<_> = recorded.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            names,
            ["app/a", "app/b", "app/c", "app/d"]
                .map(PathBuf::from)
                .to_vec()
        );
    }
    /// Every entry of a snapshot: path, kind, mode, time, and content or link target.
    fn tree_of(root: &Path) -> Vec<(PathBuf, String, u32, i64, i64)> {
        let mut found = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let what = if meta.is_dir() {
                    stack.push(path.clone());
                    "dir".to_string()
                } else if meta.file_type().is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else {
                    fs::read_to_string(&path).unwrap()
                };
                found.push((
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    what,
                    meta.mode(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                ));
            }
        }
        found.sort();
        found
    }

    #[test]
    fn batched_links_make_the_snapshot_placing_one_by_one_makes() {
        // Enough unchanged files for links on all cores, and a second source that replaces
        // a linked file, a whole linked directory, and puts a directory where a file was.
        let mut files: Vec<(String, String)> = Vec::new();
        for d in 0..4 {
            for f in 0..40 {
                files.push((format!("src/d{d}/f{f:02}"), format!("{d}/{f}")));
            }
        }
        files.push(("src/top".into(), "top".into()));
        files.push(("over/d1/f05".into(), "replaced".into()));
        files.push(("over/d2".into(), "a file where a directory was".into()));
        files.push((
            "over/top/inner".into(),
            "a directory where a file was".into(),
        ));
        files.push(("over/d3/new".into(), "added".into()));
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        let (dir, ctx) = context(&refs);
        std::os::unix::fs::symlink("f00", dir.path().join("src/d0/link")).unwrap();
        let copy_with = |memo: &kiln_context::MemoryMemo,
                         reuse: Option<&crate::reuse::SnapshotReuse>| {
            copy_sources_reusing(&ctx, &["src/", "over/"], memo, reuse)
        };
        let memo = kiln_context::MemoryMemo::default();
        let first = crate::reuse::SnapshotReuse::recording();
        let one = copy_with(&memo, Some(&first));
        // One file edited: the rest is linked.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.path().join("src/d0/f07"), "edited").unwrap();
        let second = crate::reuse::SnapshotReuse::from_previous(
            one.path().to_path_buf(),
            first.into_written(),
        );
        let reused = copy_with(&memo, Some(&second));
        let plain = copy_with(&kiln_context::MemoryMemo::default(), None);
        assert!(second.linked() > 100, "linked {}", second.linked());
        assert_eq!(tree_of(reused.path()), tree_of(plain.path()));
        assert_eq!(read(reused.path(), "app/d0/f07"), "edited");
        assert_eq!(read(reused.path(), "app/d1/f05"), "replaced");
        assert_eq!(
            read(reused.path(), "app/d2"),
            "a file where a directory was"
        );
        // Nothing in the new snapshot shares an inode with another name in it.
        let mut inodes = std::collections::HashSet::new();
        for (path, what, ..) in tree_of(reused.path()) {
            if what != "dir" {
                let meta = fs::symlink_metadata(reused.path().join(&path)).unwrap();
                assert!(inodes.insert(meta.ino()), "{}", path.display());
            }
        }
    }
}
