//! kiln-store: where images, layers, snapshots and cache records live.
//!
//! The store root is itself a valid OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/...`), so skopeo and umoci read it as `oci:ROOT:TAG`. Beside the layout:
//!
//! ```text
//! snapshots/<diff_id hex>/  a layer unpacked from its blob (a base image's, a shared cache's)
//! snapshots/<key hex>/       what a step's COPY wrote or its RUN changed, named by the step's key
//!                            (a lazy layer: its blob is made only when something ships it)
//! cache/<key hex>.json       a step's cache record: key → snapshot, and layer blob once made
//! cache-mounts/<id hex>/     a `RUN --mount=type=cache` directory, and <id hex>.lock beside it
//! chunks/index               where compressed chunks of layers written before are (ranges of
//!                            blobs), reused on edits (see [`ChunkStore`]; only ever a cache)
//! tmp/                       work areas; whatever a killed build left is removed on open
//! lock                       flock'd while index.json is rewritten
//! ```
//!
//! Every file is written to tmp/, fsynced and renamed into place, so a build killed at any
//! moment leaves either the old file or the new one.

#![warn(missing_docs)]

mod attestations;
mod cache_mount;
mod chunks;
mod multi;
mod reuse;
mod writeback;

pub use cache_mount::CacheMount;
pub use chunks::{Chunk, ChunkPlace, ChunkStore, DEFAULT_BUDGET};
pub use multi::{is_attestation_entry, platform_text, PlatformEntry};
pub use reuse::ReuseHint;
pub use writeback::{repeating_while, writing_back, BLOB_WRITEBACK_INTERVAL};

use kiln_oci::{
    annotations, from_json_slice, to_canonical_json, Algorithm, Descriptor, Digest, DigestHasher,
    Index, OciLayout,
};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file of the store could not be read or written (missing, no permission, disk full).
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A document of the store (index, manifest, config) is not valid.
    #[error("{path}: {source}")]
    Oci {
        /// The document's file.
        path: PathBuf,
        /// Why it could not be read.
        source: kiln_oci::Error,
    },
    /// A blob's content does not have the digest that names it: the store is damaged there.
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch {
        /// The digest the blob is stored under.
        expected: String,
        /// The digest of what it holds.
        actual: String,
    },
    /// No image of the store has this name.
    #[error("image {0:?} is not in the store")]
    UnknownImage(String),
    /// The store is in use by another process and the operation needs it alone.
    #[error("another kiln process is using the store; run prune again when it has finished")]
    Busy,
}

type Result<T> = std::result::Result<T, StoreError>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A step's cache record: what its key produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The step's cache key (`sha256:<hex>`).
    pub key: String,
    /// The layer blob (compressed) and its uncompressed diff_id; for a lazy layer (`snapshot`
    /// set) only once something needed the blob.
    pub layer: Option<LayerRecord>,
    /// A lazy layer's snapshot name (see [`Store::snapshot_path`]): the step committed its
    /// snapshot here and no blob; the blob, made later from it, is the one an eager build would
    /// have made. Records older than lazy layers have none (their snapshot is named by diff_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The instruction, for `kiln history` and miss explanations.
    pub created_by: String,
    /// Named parts of the key (parent, inputs, args), so a later miss can say what changed.
    #[serde(default)]
    pub parts: Vec<(String, String)>,
    /// When the layer was made (Unix seconds): a cached rebuild reuses it, so the image's
    /// history and creation time, and with them its digest, stay the same.
    #[serde(default)]
    pub created: i64,
    /// When the record was written (Unix nanoseconds, wall clock, whatever the epoch): the
    /// newest record of a step is the one a miss is explained against.
    #[serde(default)]
    pub recorded: u128,
}

/// A layer as a cache record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The compressed blob's digest.
    pub digest: String,
    /// The digest of the uncompressed tar: the snapshot's name.
    pub diff_id: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The blob's media type (gzip, zstd or plain tar).
    pub media_type: String,
}

/// An image the store knows by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    /// The full name (`registry/repository:tag`).
    pub name: String,
    /// The manifest (or index) it names.
    pub manifest: Descriptor,
}

/// An open store: a root directory holding an OCI layout, snapshots and cache records, used
/// by several processes at once (see the crate's documentation).
pub struct Store {
    root: PathBuf,
    /// This process's locked work area: every temp file goes in here, so another build's
    /// cleanup never takes a file that is still being written.
    session: WorkDir,
    /// A shared (or, for prune, exclusive) lock on `use.lock` for as long as the store is open.
    _in_use: File,
}

/// Held while `index.json` is read and rewritten, so concurrent builds don't lose tags.
pub struct Lock {
    _file: File,
}

impl Store {
    /// `--root`, else `$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
    pub fn default_root() -> PathBuf {
        if let Some(root) = std::env::var_os("KILN_ROOT").filter(|r| !r.is_empty()) {
            return PathBuf::from(root);
        }
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|r| !r.is_empty()) {
            return PathBuf::from(data).join("kiln");
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/share/kiln"),
            None => PathBuf::from("/var/lib/kiln"),
        }
    }

    /// Opens (creating if needed) the store at `root` and clears work areas that no running
    /// build holds.
    pub fn open(root: &Path) -> Result<Store> {
        Store::open_with(root, false)
    }

    /// Opens the store for `prune`: no build may be using it meanwhile, since prune deletes
    /// what no name or cache record holds, and a running build's layers are not named yet.
    pub fn open_exclusive(root: &Path) -> Result<Store> {
        Store::open_with(root, true)
    }

    fn open_with(root: &Path, exclusive: bool) -> Result<Store> {
        for dir in ["blobs/sha256", "snapshots", "cache", "hashes", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_at(&path))?;
        }
        // Every process holds the store shared; prune holds it alone.
        let use_path = root.join("use.lock");
        let in_use = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&use_path)
            .map_err(io_at(&use_path))?;
        let operation = if exclusive {
            rustix::fs::FlockOperation::NonBlockingLockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(in_use.as_fd(), operation).map_err(|e| match e {
            rustix::io::Errno::WOULDBLOCK => StoreError::Busy,
            other => io_at(&use_path)(other.into()),
        })?;
        clean_tmp(&root.join("tmp"));
        let store = Store {
            root: root.to_path_buf(),
            session: new_work_dir(&root.join("tmp"))?,
            _in_use: in_use,
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            let bytes =
                to_canonical_json(&OciLayout::default()).map_err(|source| StoreError::Oci {
                    path: layout.clone(),
                    source,
                })?;
            store.write_atomic(&layout, &bytes)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            let _lock = store.lock()?;
            if !index.exists() {
                store.write_index(&Index::new(Vec::new()))?;
            }
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The memo of build-context file hashes, keyed by (dev, inode, size, mtime, ctime).
    pub fn hash_memo_path(&self) -> PathBuf {
        self.root.join("hashes/memo")
    }

    /// A private work directory inside this process's work area, removed when dropped.
    pub fn work_dir(&self) -> Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(self.session.path())
            .map_err(io_at(self.session.path()))?;
        Ok(WorkDir { dir, _lock: None })
    }

    /// Takes the store's lock for changing `index.json` (waits for other holders); released
    /// when the [`Lock`] is dropped.
    pub fn lock(&self) -> Result<Lock> {
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_at(&path))?;
        rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io_at(&path)(e.into()))?;
        Ok(Lock { _file: file })
    }

    /// Writes `bytes` to `path` through a temp file in tmp/: fsync, rename, fsync the directory.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.session.path();
        let mut file = tempfile::NamedTempFile::new_in(tmp).map_err(io_at(tmp))?;
        file.write_all(bytes).map_err(io_at(file.path()))?;
        // The store is an OCI layout other tools read; temp files start private.
        file.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_at(path))?;
        file.as_file().sync_all().map_err(io_at(path))?;
        file.persist(path).map_err(|e| io_at(path)(e.error))?;
        sync_parent(path)
    }

    /// Where the blob `digest` is (or would be) in the store.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.blob_path())
    }

    /// Whether the store holds the blob `digest`.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let mut hasher = DigestHasher::new(Algorithm::Sha256);
        hasher.update(bytes);
        let digest = hasher.finish();
        if !self.has_blob(&digest) {
            self.write_atomic(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    /// A temp file in tmp/ to stream a blob into; [`Store::commit_blob`] moves it into place.
    pub fn blob_writer(&self) -> Result<tempfile::NamedTempFile> {
        let tmp = self.session.path();
        tempfile::NamedTempFile::new_in(tmp).map_err(io_at(tmp))
    }

    /// Moves a fully written temp file into blobs/ under the digest its writer computed.
    pub fn commit_blob(&self, file: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        if path.is_file() {
            return Ok(());
        }
        file.as_file().sync_all().map_err(io_at(&path))?;
        file.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(io_at(&path))?;
        file.persist(&path).map_err(|e| io_at(&path)(e.error))?;
        sync_parent(&path)
    }

    /// [`Store::commit_blob`] for a blob written under [`writing_back`]: `written_back` is what
    /// writing it out on the way met. A write error there is the blob's (the sync here would
    /// not see it again), so the blob is not named.
    pub fn commit_written_back(
        &self,
        file: tempfile::NamedTempFile,
        digest: &Digest,
        written_back: io::Result<()>,
    ) -> Result<()> {
        written_back.map_err(io_at(file.path()))?;
        self.commit_blob(file, digest)
    }

    /// Opens the blob `digest` for reading (unchecked: a reader verifies as it reads).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(io_at(&path))
    }

    /// Reads a JSON-sized blob and checks it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(kiln_oci::MAX_JSON_SIZE + 1).read_to_end(&mut bytes))
            .map_err(io_at(&path))?;
        let actual = digest.of_same_kind(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// The layout's `index.json`: every image the store names.
    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        from_json_slice(&bytes).map_err(|source| StoreError::Oci { path, source })
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.root.join("index.json");
        let bytes = to_canonical_json(index).map_err(|source| StoreError::Oci {
            path: path.clone(),
            source,
        })?;
        self.write_atomic(&path, &bytes)
    }

    /// Points `name` (a full image name such as `docker.io/library/app:1.0`) at a manifest.
    /// `ref_name` is the layout's `org.opencontainers.image.ref.name` (the tag).
    pub fn tag(&self, name: &str, ref_name: &str, manifest: &Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        let before = self.index()?;
        let mut index = before.clone();
        index.manifests.retain(|d| {
            d.annotations
                .get(annotations::CONTAINERD_IMAGE_NAME)
                .map(String::as_str)
                != Some(name)
        });
        let mut descriptor = manifest.clone();
        descriptor.annotations.insert(
            annotations::CONTAINERD_IMAGE_NAME.to_string(),
            name.to_string(),
        );
        descriptor
            .annotations
            .insert(annotations::REF_NAME.to_string(), ref_name.to_string());
        index.manifests.push(descriptor);
        index
            .manifests
            .sort_by(|a, b| a.annotations.cmp(&b.annotations));
        // A rebuild that names the same image again writes nothing: no fsync that would wait
        // for other writers' dirty data.
        if index == before {
            return Ok(());
        }
        self.write_index(&index)
    }

    /// Removes the name; the blobs stay until `prune`.
    pub fn untag(&self, name: &str) -> Result<bool> {
        let _lock = self.lock()?;
        let mut index = self.index()?;
        let before = index.manifests.len();
        index.manifests.retain(|d| {
            d.annotations
                .get(annotations::CONTAINERD_IMAGE_NAME)
                .map(String::as_str)
                != Some(name)
        });
        let removed = index.manifests.len() != before;
        if removed {
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// The images the store knows by name.
    pub fn images(&self) -> Result<Vec<Tagged>> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .filter_map(|d| {
                let name = d
                    .annotations
                    .get(annotations::CONTAINERD_IMAGE_NAME)?
                    .clone();
                Some(Tagged { name, manifest: d })
            })
            .collect())
    }

    /// The image named `name`, or [`StoreError::UnknownImage`].
    pub fn resolve(&self, name: &str) -> Result<Tagged> {
        self.images()?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| StoreError::UnknownImage(name.to_string()))
    }

    fn cache_path(&self, key: &str) -> PathBuf {
        let hex: String = key
            .trim_start_matches("sha256:")
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        self.root.join("cache").join(format!("{hex}.json"))
    }

    /// The record for `key`, if its layer is still in the store: a lazy record needs its
    /// snapshot (a blob it names but the store lost is forgotten: it is made again when needed),
    /// an older record its blob and its snapshot.
    pub fn cache_get(&self, key: &str) -> Option<CacheRecord> {
        let bytes = fs::read(self.cache_path(key)).ok()?;
        let mut record: CacheRecord = serde_json::from_slice(&bytes).ok()?;
        if record.key != key {
            return None;
        }
        match (&record.snapshot, &record.layer) {
            (Some(snapshot), layer) => {
                if !self.snapshot_path(snapshot).is_dir() {
                    return None;
                }
                let blob_there = layer
                    .as_ref()
                    .and_then(|l| Digest::parse(&l.digest).ok())
                    .is_some_and(|d| self.has_blob(&d));
                if !blob_there {
                    record.layer = None;
                }
            }
            (None, Some(layer)) => {
                let digest = Digest::parse(&layer.digest).ok()?;
                if !self.has_blob(&digest) || !self.snapshot_path(&layer.diff_id).is_dir() {
                    return None;
                }
            }
            (None, None) => {}
        }
        Some(record)
    }

    /// Notes in `key`'s lazy record that its blob is made (the blob is in the store already).
    /// A record that is gone, or not lazy, is left alone: the blob is then only an orphan that
    /// `prune` removes.
    pub fn cache_set_layer(&self, key: &str, layer: &LayerRecord) -> Result<()> {
        let Ok(bytes) = fs::read(self.cache_path(key)) else {
            return Ok(());
        };
        let Ok(mut record) = serde_json::from_slice::<CacheRecord>(&bytes) else {
            return Ok(());
        };
        if record.key != key || record.snapshot.is_none() || record.layer.as_ref() == Some(layer) {
            return Ok(());
        }
        record.layer = Some(layer.clone());
        self.cache_put(&record)
    }

    /// Writes a step's cache record under its key (atomically, replacing an older one).
    pub fn cache_put(&self, record: &CacheRecord) -> Result<()> {
        let path = self.cache_path(&record.key);
        let bytes =
            serde_json::to_vec_pretty(record).map_err(|e| io_at(&path)(io::Error::other(e)))?;
        self.write_atomic(&path, &bytes)
    }

    fn slot_path(&self, slot: &str) -> PathBuf {
        let digest = kiln_oci::sha256_digest(slot.as_bytes());
        self.root.join("cache/slots").join(digest.hex())
    }

    /// Remembers `key` as the newest record of a step (`slot` names the recipe, stage and
    /// position), so a later miss is explained without reading every record.
    pub fn slot_put(&self, slot: &str, key: &str) -> Result<()> {
        let dir = self.root.join("cache/slots");
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        self.write_atomic(&self.slot_path(slot), key.as_bytes())
    }

    /// The newest record of a step, if it is still there.
    pub fn slot_get(&self, slot: &str) -> Option<CacheRecord> {
        let key = fs::read_to_string(self.slot_path(slot)).ok()?;
        let path = self.cache_path(key.trim());
        let record: CacheRecord = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        Some(record)
    }

    /// All cache records.
    pub fn cache_records(&self) -> Vec<CacheRecord> {
        let Ok(entries) = fs::read_dir(self.root.join("cache")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    /// Where the unpacked layer with this diff_id (or, for a lazy layer, this cache key) lives.
    /// A diff_id that names a lazy snapshot (see [`Store::link_snapshot`]) gives that
    /// snapshot's own directory, never the link, as the tree walkers follow no links.
    pub fn snapshot_path(&self, diff_id: &str) -> PathBuf {
        let hex: String = diff_id
            .trim_start_matches("sha256:")
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        let snapshots = self.root.join("snapshots");
        let path = snapshots.join(&hex);
        match fs::read_link(&path) {
            Ok(target) => {
                let name: String = target
                    .to_string_lossy()
                    .chars()
                    .filter(|c| c.is_ascii_hexdigit())
                    .collect();
                if name.is_empty() {
                    path
                } else {
                    snapshots.join(name)
                }
            }
            Err(_) => path,
        }
    }

    /// Moves a finished snapshot directory into place; if another build already put the same
    /// layer there, that one is kept and `dir` is removed.
    pub fn commit_snapshot(&self, dir: &Path, diff_id: &str) -> Result<PathBuf> {
        let target = self.snapshot_path(diff_id);
        if target.is_dir() {
            let _ = fs::remove_dir_all(dir);
            return Ok(target);
        }
        // The snapshot's files reach the disk before its name does: after a crash, a snapshot
        // that exists is whole.
        let handle = File::open(dir).map_err(io_at(dir))?;
        rustix::fs::syncfs(handle.as_fd()).map_err(|e| io_at(dir)(e.into()))?;
        match fs::rename(dir, &target) {
            Ok(()) => {
                sync_parent(&target)?;
                Ok(target)
            }
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(dir);
                Ok(target)
            }
            Err(e) => Err(io_at(&target)(e)),
        }
    }

    /// Names the lazy snapshot `name` by the diff_id its blob turned out to have too (a link
    /// beside it), so an image whose layer it is finds it as it finds any unpacked layer. A
    /// snapshot already there under that diff_id is kept.
    pub fn link_snapshot(&self, diff_id: &str, name: &str) -> Result<()> {
        let link = self.snapshot_path(diff_id);
        let target = self.snapshot_path(name);
        if link == target || link.symlink_metadata().is_ok() {
            return Ok(());
        }
        let Some(target_name) = target.file_name() else {
            return Ok(());
        };
        match std::os::unix::fs::symlink(target_name, &link) {
            Ok(()) => sync_parent(&link),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_at(&link)(e)),
        }
    }

    /// Checks every blob against its digest, and that every blob a named image needs exists;
    /// returns a line per problem.
    pub fn verify(&self) -> Result<Vec<String>> {
        let mut problems: Vec<String> = self
            .verify_blobs()?
            .into_iter()
            .map(|b| format!("blob sha256:{b} does not match its digest"))
            .collect();
        for tagged in self.images()? {
            let mut needed = vec![tagged.manifest.digest.clone()];
            // A multi-platform name needs every image its index holds (a base pulled for some
            // platforms holds only those).
            for manifest in self.manifests_of(&tagged.manifest).unwrap_or_default() {
                needed.push(manifest.digest.clone());
                if let Ok(image) = self.image(&manifest) {
                    needed.push(image.manifest.config.digest.clone());
                    needed.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
                }
            }
            for digest in needed {
                if !self.has_blob(&digest) {
                    problems.push(format!(
                        "blob {digest} is missing (needed by {})",
                        tagged.name
                    ));
                }
            }
        }
        Ok(problems)
    }

    fn verify_blobs(&self) -> Result<Vec<String>> {
        let dir = self.root.join("blobs/sha256");
        let mut bad = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_at(&dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(expected) = Digest::from_sha256_hex(&name) else {
                bad.push(name);
                continue;
            };
            let mut hasher = DigestHasher::new(Algorithm::Sha256);
            let mut file = File::open(entry.path()).map_err(io_at(&entry.path()))?;
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buffer).map_err(io_at(&entry.path()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buffer[..n]);
            }
            if hasher.finish() != expected {
                bad.push(name);
            }
        }
        Ok(bad)
    }
}

/// What `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Snapshots removed.
    pub snapshots: usize,
    /// Cache records removed.
    pub cache_records: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// Disk use of the store's parts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Bytes of blobs.
    pub blobs: u64,
    /// Bytes of snapshots.
    pub snapshots: u64,
    /// Bytes of cache records.
    pub cache: u64,
    /// Number of blobs.
    pub blob_count: usize,
    /// Number of snapshots.
    pub snapshot_count: usize,
    /// Number of cache records.
    pub cache_count: usize,
}

/// An image's manifest and config, read from the store and checked against their digests.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The image's manifest.
    pub manifest: kiln_oci::Manifest,
    /// The image's config.
    pub config: kiln_oci::ImageConfig,
    /// The config's digest: the image id.
    pub config_digest: Digest,
}

fn tree_size(path: &Path) -> (u64, usize) {
    // Sums saturate: a summary must never wrap round or panic, however large the store.
    let mut total: u64 = 0;
    let mut count: usize = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                count = count.saturating_add(1);
                total = total.saturating_add(meta.len());
            }
        }
    }
    (total, count)
}

impl Store {
    /// Reads an image's manifest and config.
    pub fn image(&self, manifest: &Descriptor) -> Result<StoredImage> {
        let oci = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Oci { path, source }
        };
        let manifest_path = self.blob_path(&manifest.digest);
        let manifest: kiln_oci::Manifest =
            from_json_slice(&self.read_blob(&manifest.digest)?).map_err(oci(&manifest_path))?;
        let config_path = self.blob_path(&manifest.config.digest);
        let config = from_json_slice(&self.read_blob(&manifest.config.digest)?)
            .map_err(oci(&config_path))?;
        let config_digest = manifest.config.digest.clone();
        Ok(StoredImage {
            manifest,
            config,
            config_digest,
        })
    }

    /// How much of the disk each part of the store takes.
    pub fn disk_usage(&self) -> DiskUsage {
        let (blobs, blob_count) = tree_size(&self.root.join("blobs"));
        let (snapshots, _) = tree_size(&self.root.join("snapshots"));
        // A diff_id's link to a step's snapshot is no snapshot of its own.
        let snapshot_count = fs::read_dir(self.root.join("snapshots"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| !t.is_symlink()))
                    .count()
            })
            .unwrap_or(0);
        let (cache, cache_count) = tree_size(&self.root.join("cache"));
        DiskUsage {
            blobs,
            snapshots,
            cache,
            blob_count,
            snapshot_count,
            cache_count,
        }
    }

    /// Removes what nothing needs: blobs and snapshots no tagged image and no cache record
    /// refers to. With `drop_cache`, the cache records (and the `RUN --mount=type=cache`
    /// directories, `cache-mounts/`) go first, so only tagged images keep their data.
    pub fn prune(&self, drop_cache: bool) -> Result<PruneReport> {
        let _lock = self.lock()?;
        let mut report = PruneReport::default();
        if drop_cache {
            for entry in fs::read_dir(self.root.join("cache"))
                .map_err(io_at(&self.root.join("cache")))?
                .flatten()
            {
                if fs::remove_file(entry.path()).is_ok() {
                    report.cache_records += 1;
                }
            }
            let _ = fs::remove_dir_all(self.root.join("cache/slots"));
            // Chunks of earlier layers are cache too (prune holds the store alone).
            let _ = fs::remove_dir_all(self.root.join("chunks"));
            // `RUN --mount=type=cache` directories are cache too.
            let mounts = self.root.join(cache_mount::CACHE_MOUNTS_DIR);
            if mounts.exists() {
                report.bytes = report.bytes.saturating_add(tree_size(&mounts).0);
                let doomed = self.session.path().join("pruned-cache-mounts");
                if fs::rename(&mounts, &doomed).is_ok() {
                    let _ = fs::remove_dir_all(&doomed);
                }
            }
        }
        let mut blobs = std::collections::BTreeSet::new();
        let mut snapshots = std::collections::BTreeSet::new();
        let named = self.index()?.manifests;
        // A multi-platform name keeps its index and every platform's manifest.
        let mut manifests = Vec::new();
        for descriptor in named {
            blobs.insert(descriptor.digest.hex().to_string());
            manifests.extend(self.manifests_of(&descriptor).unwrap_or_default());
        }
        for descriptor in manifests {
            blobs.insert(descriptor.digest.hex().to_string());
            if let Ok(image) = self.image(&descriptor) {
                blobs.insert(image.config_digest.hex().to_string());
                blobs.extend(
                    image
                        .manifest
                        .layers
                        .iter()
                        .map(|l| l.digest.hex().to_string()),
                );
                snapshots.extend(
                    image
                        .config
                        .rootfs
                        .diff_ids
                        .iter()
                        .map(|d| d.hex().to_string()),
                );
            }
        }
        for record in self.cache_records() {
            if let Some(snapshot) = &record.snapshot {
                snapshots.insert(snapshot.trim_start_matches("sha256:").to_string());
            }
            if let Some(layer) = record.layer {
                blobs.insert(layer.digest.trim_start_matches("sha256:").to_string());
                snapshots.insert(layer.diff_id.trim_start_matches("sha256:").to_string());
            }
        }
        // A diff_id's link to a lazy snapshot keeps what it points at; a link whose snapshot
        // is gone goes.
        let mut linked = Vec::new();
        for entry in fs::read_dir(self.root.join("snapshots"))
            .map_err(io_at(&self.root.join("snapshots")))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(target) = fs::read_link(entry.path()) {
                if !entry.path().is_dir() {
                    snapshots.remove(&name);
                } else if snapshots.contains(&name) {
                    linked.push(target.to_string_lossy().into_owned());
                }
            }
        }
        snapshots.extend(linked);
        self.prune_reuse_hints(&snapshots);
        for entry in fs::read_dir(self.root.join("blobs/sha256"))
            .map_err(io_at(&self.root.join("blobs")))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                report.bytes = report.bytes.saturating_add(len);
                if fs::remove_file(entry.path()).is_ok() {
                    report.blobs += 1;
                }
            }
        }
        for entry in fs::read_dir(self.root.join("snapshots"))
            .map_err(io_at(&self.root.join("snapshots")))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !snapshots.contains(&name) {
                let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
                if !is_link {
                    report.bytes = report.bytes.saturating_add(tree_size(&entry.path()).0);
                }
                // Out of sight first, then deleted: a crash midway leaves no half snapshot.
                let doomed = self.session.path().join(format!("pruned-{name}"));
                if fs::rename(entry.path(), &doomed).is_ok() && fs::remove_dir_all(&doomed).is_ok()
                {
                    report.snapshots += 1;
                }
            }
        }
        Ok(report)
    }
}

impl Store {
    /// Copies an image read from an archive into the store: every blob is checked against its
    /// descriptor while it is copied, and nothing is named until all of it is in. Returns the
    /// manifest's descriptor (its layers are not unpacked: that happens when a build uses them).
    pub fn import(&self, image: &kiln_oci::ArchiveImage) -> Result<Descriptor> {
        for (i, layer) in image.layers().iter().enumerate() {
            if self.has_blob(&layer.digest) {
                continue;
            }
            let path = self.blob_path(&layer.digest);
            let oci = |source| StoreError::Oci {
                path: path.clone(),
                source,
            };
            let mut reader = image.open_layer(i).map_err(oci)?;
            let mut temp = self.blob_writer()?;
            // The verifying reader fails at its end if the bytes do not match the digest.
            io::copy(&mut reader, temp.as_file_mut()).map_err(io_at(&path))?;
            self.commit_blob(temp, &layer.digest)?;
        }
        for (bytes, expected) in [
            (&image.config_bytes, &image.manifest.config.digest),
            (&image.manifest_bytes, &image.manifest_descriptor.digest),
        ] {
            let actual = self.put_blob(bytes)?;
            if &actual != expected {
                return Err(StoreError::DigestMismatch {
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let mut descriptor = image.manifest_descriptor.clone();
        descriptor.annotations.clear();
        Ok(descriptor)
    }
}

/// The store's blobs as archive writers read them (see [`Store::blobs`]).
pub struct StoreBlobs<'a> {
    store: &'a Store,
}

impl Store {
    /// The store's blobs for an archive writer. Each was hashed as it was written into the
    /// store (or checked as it was imported), so the writer may copy it unread
    /// ([`kiln_oci::BlobSource::open_verified`]); `kiln verify` is what checks them again.
    pub fn blobs(&self) -> StoreBlobs<'_> {
        StoreBlobs { store: self }
    }
}

impl kiln_oci::BlobSource for StoreBlobs<'_> {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + '_>> {
        let file = File::open(self.store.blob_path(digest))?;
        Ok(Box::new(io::BufReader::new(file)))
    }

    fn open_verified(&self, digest: &Digest) -> Option<File> {
        File::open(self.store.blob_path(digest)).ok()
    }
}

/// A work directory; gone when dropped.
pub struct WorkDir {
    dir: tempfile::TempDir,
    /// Held by a process's top work area for as long as the process uses it.
    _lock: Option<File>,
}

/// A work area of this process under `tmp`, holding an exclusive lock on its `.lock` file.
fn new_work_dir(tmp: &Path) -> Result<WorkDir> {
    let dir = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(tmp)
        .map_err(io_at(tmp))?;
    let lock_path = dir.path().join(".lock");
    let lock = File::create(&lock_path).map_err(io_at(&lock_path))?;
    rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_at(&lock_path)(e.into()))?;
    Ok(WorkDir {
        dir,
        _lock: Some(lock),
    })
}

/// How long an unlocked entry of tmp/ is left alone: it may be a work area another process is
/// creating this instant, between making the directory and locking it.
const FRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes work areas of processes that are gone: their lock is free and they are not fresh.
fn clean_tmp(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let fresh = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < FRESH);
        if fresh {
            continue;
        }
        let removable = match File::open(path.join(".lock")) {
            Ok(lock) => rustix::fs::flock(
                lock.as_fd(),
                rustix::fs::FlockOperation::NonBlockingLockShared,
            )
            .is_ok(),
            Err(_) => true,
        };
        if removable {
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}

impl WorkDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_at(parent))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_is_an_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        assert!(store.index().unwrap().manifests.is_empty());
        assert!(dir.path().join("blobs/sha256").is_dir());
    }

    #[test]
    fn blobs_are_content_addressed_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = store.put_blob(b"hello").unwrap();
        assert_eq!(
            digest.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
        assert!(store.verify().unwrap().is_empty());
        fs::write(store.blob_path(&digest), b"tampered").unwrap();
        assert!(store.read_blob(&digest).is_err());
        assert_eq!(store.verify().unwrap().len(), 1);
    }

    #[test]
    fn tags_replace_and_untag() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let one = store.put_blob(b"{}").unwrap();
        let two = store.put_blob(b"{\"a\":1}").unwrap();
        let manifest =
            |d: &Digest| Descriptor::new(kiln_oci::media_types::OCI_MANIFEST, d.clone(), 2);
        let index_inode = || {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(dir.path().join("index.json")).unwrap().ino()
        };
        store
            .tag("docker.io/library/app:1", "1", &manifest(&one))
            .unwrap();
        // Naming the same image again writes nothing (a fully cached rebuild does that).
        let first = index_inode();
        store
            .tag("docker.io/library/app:1", "1", &manifest(&one))
            .unwrap();
        assert_eq!(index_inode(), first, "an unchanged index was rewritten");
        store
            .tag("docker.io/library/app:1", "1", &manifest(&two))
            .unwrap();
        assert_ne!(index_inode(), first, "a changed tag was not written");
        let images = store.images().unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].manifest.digest, two);
        assert_eq!(images[0].manifest.ref_name(), Some("1"));
        assert!(store.untag("docker.io/library/app:1").unwrap());
        assert!(store.images().unwrap().is_empty());
    }

    #[test]
    fn stale_work_areas_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let live = store.work_dir().unwrap();
        // A dead process's area: a lock file nobody holds.
        fs::create_dir_all(dir.path().join("tmp/build-dead")).unwrap();
        fs::write(dir.path().join("tmp/build-dead/.lock"), "").unwrap();
        let old = rustix::fs::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: old,
            last_modification: old,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            dir.path().join("tmp/build-dead"),
            &times,
            rustix::fs::AtFlags::empty(),
        )
        .unwrap();
        // An area being created right now, before its lock exists: too fresh to touch.
        fs::create_dir_all(dir.path().join("tmp/build-new")).unwrap();
        let _again = Store::open(dir.path()).unwrap();
        assert!(live.path().is_dir());
        assert!(!dir.path().join("tmp/build-dead").exists());
        assert!(dir.path().join("tmp/build-new").exists());
    }

    #[test]
    fn prune_keeps_what_tags_and_cache_need() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let orphan = store.put_blob(b"orphan").unwrap();
        let layer = store.put_blob(b"layer").unwrap();
        store
            .cache_put(&CacheRecord {
                key: "sha256:01".into(),
                layer: Some(LayerRecord {
                    digest: layer.to_string(),
                    diff_id: "sha256:cd".into(),
                    size: 5,
                    media_type: "x".into(),
                }),
                snapshot: None,
                created_by: "COPY".into(),
                parts: vec![],
                created: 0,
                recorded: 0,
            })
            .unwrap();
        fs::create_dir_all(store.snapshot_path("sha256:cd")).unwrap();
        fs::create_dir_all(store.snapshot_path("sha256:ef")).unwrap();
        let report = store.prune(false).unwrap();
        assert_eq!((report.blobs, report.snapshots), (1, 1));
        assert!(!store.has_blob(&orphan));
        assert!(store.has_blob(&layer));
        let report = store.prune(true).unwrap();
        assert_eq!(
            (report.cache_records, report.blobs, report.snapshots),
            (1, 1, 1)
        );
        assert!(store.disk_usage().blob_count == 0);
    }

    #[test]
    fn prune_waits_for_no_build() {
        let dir = tempfile::tempdir().unwrap();
        let building = Store::open(dir.path()).unwrap();
        assert!(matches!(
            Store::open_exclusive(dir.path()),
            Err(StoreError::Busy)
        ));
        drop(building);
        assert!(Store::open_exclusive(dir.path()).is_ok());
    }

    #[test]
    fn verify_names_missing_blobs_of_named_images() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = store.put_blob(b"{}").unwrap();
        let manifest = Descriptor::new(kiln_oci::media_types::OCI_MANIFEST, digest.clone(), 2);
        store
            .tag("docker.io/library/gone:1", "1", &manifest)
            .unwrap();
        fs::remove_file(store.blob_path(&digest)).unwrap();
        let problems = store.verify().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("missing") && p.contains("gone:1")),
            "{problems:?}"
        );
    }

    #[test]
    fn cache_records_need_their_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.put_blob(b"layer").unwrap();
        let record = CacheRecord {
            key: "sha256:00".into(),
            layer: Some(LayerRecord {
                digest: blob.to_string(),
                diff_id: "sha256:ab".into(),
                size: 5,
                media_type: "x".into(),
            }),
            snapshot: None,
            created_by: "COPY a b".into(),
            parts: vec![],
            created: 0,
            recorded: 0,
        };
        store.cache_put(&record).unwrap();
        assert_eq!(store.cache_get("sha256:00"), None, "no snapshot yet");
        fs::create_dir_all(store.snapshot_path("sha256:ab")).unwrap();
        assert_eq!(store.cache_get("sha256:00"), Some(record));
    }

    #[test]
    fn a_lazy_record_is_a_hit_with_its_snapshot_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = format!("sha256:{}", "a".repeat(64));
        let record = CacheRecord {
            key: key.clone(),
            layer: None,
            snapshot: Some(key.clone()),
            created_by: "RUN make".into(),
            parts: vec![],
            created: 0,
            recorded: 0,
        };
        store.cache_put(&record).unwrap();
        assert_eq!(store.cache_get(&key), None, "no snapshot yet");
        fs::create_dir_all(store.snapshot_path(&key)).unwrap();
        assert_eq!(store.cache_get(&key), Some(record.clone()));
        // Pruning keeps what a lazy record names, the cache gone it goes too.
        assert_eq!(store.prune(false).unwrap().snapshots, 0);
        assert!(store.snapshot_path(&key).is_dir());
        // The blob made later is noted in the record; a lost blob makes it lazy again.
        let blob = store.put_blob(b"layer").unwrap();
        let layer = LayerRecord {
            digest: blob.to_string(),
            diff_id: "sha256:cd".into(),
            size: 5,
            media_type: "x".into(),
        };
        store.cache_set_layer(&key, &layer).unwrap();
        assert_eq!(store.cache_get(&key).unwrap().layer, Some(layer));
        assert_eq!(
            store.prune(false).unwrap().blobs,
            0,
            "the record keeps its blob"
        );
        fs::remove_file(store.blob_path(&blob)).unwrap();
        assert_eq!(store.cache_get(&key).unwrap().layer, None);
        let report = store.prune(true).unwrap();
        assert_eq!(report.snapshots, 1);
    }

    #[test]
    fn records_written_before_lazy_layers_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let blob = store.put_blob(b"layer").unwrap();
        let key = format!("sha256:{}", "b".repeat(64));
        let old = format!(
            r#"{{"key":"{key}","layer":{{"digest":"{blob}","diff_id":"sha256:ab","size":5,"media_type":"x"}},"created_by":"COPY a b","parts":[],"created":3,"recorded":4}}"#
        );
        fs::write(store.cache_path(&key), old).unwrap();
        fs::create_dir_all(store.snapshot_path("sha256:ab")).unwrap();
        let record = store.cache_get(&key).unwrap();
        assert_eq!(record.snapshot, None);
        assert_eq!(record.layer.unwrap().digest, blob.to_string());
        // Nothing is noted in a record that is not lazy.
        let other = LayerRecord {
            digest: "sha256:00".into(),
            diff_id: "sha256:00".into(),
            size: 1,
            media_type: "x".into(),
        };
        store.cache_set_layer(&key, &other).unwrap();
        assert_eq!(
            store.cache_get(&key).unwrap().layer.unwrap().digest,
            blob.to_string()
        );
    }

    #[test]
    fn a_diff_id_names_a_lazy_snapshot_through_a_link_prune_keeps_or_drops() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = format!("sha256:{}", "c".repeat(64));
        let diff_id = format!("sha256:{}", "d".repeat(64));
        fs::create_dir_all(store.snapshot_path(&key)).unwrap();
        fs::write(store.snapshot_path(&key).join("f"), "x").unwrap();
        store.link_snapshot(&diff_id, &key).unwrap();
        store.link_snapshot(&diff_id, &key).unwrap();
        // The diff_id gives the snapshot's own directory, never the link.
        assert_eq!(store.snapshot_path(&diff_id), store.snapshot_path(&key));
        assert_eq!(store.disk_usage().snapshot_count, 1);
        // An image naming the diff_id keeps the link and what it points at.
        let config = kiln_oci::ImageConfig {
            rootfs: kiln_oci::RootFs::layers(vec![Digest::parse(&diff_id).unwrap()]),
            ..kiln_oci::ImageConfig::new("linux", "amd64")
        };
        let config_bytes = to_canonical_json(&config).unwrap();
        let config_digest = store.put_blob(&config_bytes).unwrap();
        let layer = store.put_blob(b"layer").unwrap();
        let manifest = kiln_oci::Manifest::new(
            Descriptor::new(
                kiln_oci::media_types::OCI_CONFIG,
                config_digest,
                config_bytes.len() as u64,
            ),
            vec![Descriptor::new(
                kiln_oci::media_types::OCI_LAYER_TAR_GZIP,
                layer,
                5,
            )],
        );
        let manifest_bytes = to_canonical_json(&manifest).unwrap();
        let manifest_digest = store.put_blob(&manifest_bytes).unwrap();
        let named = Descriptor::new(
            kiln_oci::media_types::OCI_MANIFEST,
            manifest_digest,
            manifest_bytes.len() as u64,
        );
        store.tag("docker.io/library/lazy:1", "1", &named).unwrap();
        assert_eq!(store.prune(true).unwrap().snapshots, 0);
        assert!(store.snapshot_path(&diff_id).join("f").is_file());
        // Untagged, both go; a link whose snapshot is gone goes too.
        store.untag("docker.io/library/lazy:1").unwrap();
        assert_eq!(store.prune(true).unwrap().snapshots, 2);
        assert!(fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .next()
            .is_none());
        fs::create_dir_all(store.snapshot_path(&key)).unwrap();
        store.link_snapshot(&diff_id, &key).unwrap();
        fs::remove_dir_all(store.snapshot_path(&key)).unwrap();
        store.prune(false).unwrap();
        assert!(fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .next()
            .is_none());
    }
}
