//! Lazy layers: a step commits its snapshot (named by its cache key) and its cache record, and
//! the layer blob — tar, compression, digests, diff_id — is made only when something needs it:
//! the image the build ships (outputs, push, names), `--cache-to`, `kiln save`. Layers of a
//! stage that ships are handed to a [`BlobMaker`] as soon as they are committed, which makes
//! their blobs on a thread of its own while later steps run; layers of stages that never ship
//! are never compressed.
//!
//! A blob made later is the one an eager build would have made: the snapshot is not changed
//! once committed and the layer writer's bytes depend only on the tree and the options, which
//! the step's key already holds. Crash safety comes from the store's order: the blob is written
//! to a temp file, synced and renamed into `blobs/`, and only then is the record told of it; a
//! kill before that leaves a record that is still lazy (and a temp file the next open removes).

use crate::BuildError;
use kiln_context::MemoryMemo;
use kiln_layer::LayerOptions;
use kiln_oci::Digest;
use kiln_plan::{Base, Plan};
use kiln_store::{CacheRecord, LayerRecord, Store};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The stages whose layers the build's images hold: the targets and every stage they are built
/// `FROM`, transitively. Stages used only through `COPY --from` or `RUN --mount=from` are read
/// as filesystems and need no blob.
pub(crate) fn shipping_stages(plan: &Plan, targets: &[usize]) -> BTreeSet<usize> {
    let mut shipping = BTreeSet::new();
    for &target in targets {
        let mut next = Some(target);
        while let Some(index) = next {
            if !shipping.insert(index) {
                break;
            }
            next = match plan.stages.get(index).map(|s| &s.base) {
                Some(Base::Stage(parent)) => Some(*parent),
                _ => None,
            };
        }
    }
    shipping
}

/// Writes the layer blob of a committed snapshot into the store and returns its record.
/// Unchanged chunks of earlier layers come from the store's chunk cache (see `chunk_reuse`).
pub fn make_blob(
    store: &Store,
    memo: &MemoryMemo,
    snapshot: &Path,
    options: &LayerOptions,
) -> Result<LayerRecord, BuildError> {
    let blob = store.blob_writer().map_err(BuildError::Store)?;
    // Written out on the way, so the sync before the blob is named waits only for its tail.
    let (written, written_back) = kiln_store::writing_back(blob, |blob| {
        crate::chunk_reuse::write_layer(store, memo, snapshot, options, blob)
    });
    let (layer, blob, chunks) = written.map_err(crate::ExecError::layer(format!(
        "writing the layer of {}",
        snapshot.display()
    )))?;
    let digest = Digest::parse(&layer.digest).map_err(crate::ExecError::oci(&layer.digest))?;
    store
        .commit_written_back(blob, &digest, written_back)
        .map_err(BuildError::Store)?;
    chunks.record(&digest);
    Ok(LayerRecord {
        digest: layer.digest,
        diff_id: layer.diff_id,
        size: layer.size,
        media_type: layer.media_type.to_string(),
    })
}

/// Makes the blob of the lazy layer recorded under `key` and tells the store.
pub fn make_lazy_blob(
    store: &Store,
    memo: &MemoryMemo,
    key: &str,
    snapshot: &Path,
    options: &LayerOptions,
) -> Result<LayerRecord, BuildError> {
    let layer = make_blob(store, memo, snapshot, options)?;
    note_blob(store, key, &layer)?;
    Ok(layer)
}

/// Tells the store a lazy layer's blob is made: its record, and its snapshot's diff_id name
/// (so an image of this layer, run or built upon, finds it unpacked).
fn note_blob(store: &Store, key: &str, layer: &LayerRecord) -> Result<(), BuildError> {
    store
        .cache_set_layer(key, layer)
        .and_then(|()| store.link_snapshot(&layer.diff_id, key))
        .map_err(BuildError::Store)
}

/// A build's hash memo, shared by its builder, its blob maker and what is done with the image
/// after the build: it holds the digests of the files the build's steps wrote, which are never
/// saved (snapshots come and go), so a memo read from disk again would not know them.
#[derive(Clone, Default)]
pub struct SharedMemo(Arc<MemoryMemo>);

impl SharedMemo {
    /// The store's saved memo.
    pub(crate) fn load(store: &Store) -> Self {
        SharedMemo(Arc::new(MemoryMemo::load(&store.hash_memo_path())))
    }
}

impl std::ops::Deref for SharedMemo {
    type Target = MemoryMemo;

    fn deref(&self) -> &MemoryMemo {
        &self.0
    }
}

impl std::fmt::Debug for SharedMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedMemo")
    }
}

/// Makes the blob of every lazy record in `records` that has none (for `--cache-to`, which
/// exports every step's layer), noting each in the store's record too. `memo` is the build's
/// ([`crate::Built::memo`]): files its COPY steps wrote are not read again.
pub fn make_record_blobs(
    store: &Store,
    memo: &MemoryMemo,
    records: &mut [CacheRecord],
    options: &LayerOptions,
) -> Result<(), BuildError> {
    let mut made: BTreeMap<String, LayerRecord> = BTreeMap::new();
    for record in records.iter_mut() {
        let Some(snapshot) = &record.snapshot else {
            continue;
        };
        if record.layer.is_some() {
            continue;
        }
        let layer = match made.get(&record.key) {
            Some(layer) => layer.clone(),
            None => {
                let layer = make_lazy_blob(
                    store,
                    memo,
                    &record.key,
                    &store.snapshot_path(snapshot),
                    options,
                )?;
                made.insert(record.key.clone(), layer.clone());
                layer
            }
        };
        record.layer = Some(layer);
    }
    Ok(())
}

/// Where a layer's blob is in the making.
enum Job {
    /// Waiting for the maker's thread.
    Queued,
    /// Being written (by the maker's thread or by whoever asked first).
    Running,
    /// Written, or failed (the message; the build fails when it needs that blob).
    Done(Result<LayerRecord, Arc<BuildError>>),
}

#[derive(Default)]
struct State {
    queue: VecDeque<(String, PathBuf)>,
    jobs: BTreeMap<String, Job>,
    closed: bool,
}

/// Makes the blobs of shipping layers in the background, one at a time, and hands each to
/// whoever needs it (waiting if it is being written, writing it at once if it is still queued).
pub(crate) struct BlobMaker<'a> {
    store: &'a Store,
    memo: &'a MemoryMemo,
    options: LayerOptions,
    state: Mutex<State>,
    changed: Condvar,
}

impl<'a> BlobMaker<'a> {
    pub(crate) fn new(store: &'a Store, memo: &'a MemoryMemo, options: LayerOptions) -> Self {
        BlobMaker {
            store,
            memo,
            options,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, BuildError> {
        self.state
            .lock()
            .map_err(|_| BuildError::Internal("lazy layer state poisoned"))
    }

    /// Asks for the blob of the layer committed under `key` at `snapshot`, in the background.
    pub(crate) fn submit(&self, key: &str, snapshot: &Path) {
        let Ok(mut state) = self.lock() else {
            return;
        };
        if state.closed || state.jobs.contains_key(key) {
            return;
        }
        state.jobs.insert(key.to_string(), Job::Queued);
        state
            .queue
            .push_back((key.to_string(), snapshot.to_path_buf()));
        self.changed.notify_all();
    }

    /// The maker's thread: writes queued blobs until [`BlobMaker::close`].
    pub(crate) fn run(&self) {
        loop {
            let (key, snapshot) = {
                let Ok(mut state) = self.lock() else {
                    return;
                };
                loop {
                    if state.closed {
                        return;
                    }
                    if let Some(next) = state.queue.pop_front() {
                        state.jobs.insert(next.0.clone(), Job::Running);
                        break next;
                    }
                    state = match self.changed.wait(state) {
                        Ok(state) => state,
                        Err(_) => return,
                    };
                }
            };
            // A panic must still settle the job, or whoever waits for it would wait forever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.make(&key, &snapshot)
            }))
            .unwrap_or_else(|_| {
                Err(Arc::new(BuildError::Internal(
                    "the layer blob thread panicked",
                )))
            });
            if let Ok(mut state) = self.lock() {
                state.jobs.insert(key, Job::Done(result));
                self.changed.notify_all();
            }
        }
    }

    /// Stops the maker's thread; what is still queued is not made.
    pub(crate) fn close(&self) {
        if let Ok(mut state) = self.lock() {
            state.closed = true;
            state.queue.clear();
            self.changed.notify_all();
        }
    }

    /// The blob of the layer committed under `key` at `snapshot`: made already, being made
    /// (waited for), or made now.
    pub(crate) fn layer(&self, key: &str, snapshot: &Path) -> Result<LayerRecord, BuildError> {
        let mut state = self.lock()?;
        loop {
            match state.jobs.get(key) {
                Some(Job::Done(result)) => return result.clone().map_err(BuildError::Failed),
                Some(Job::Running) => {
                    state = self
                        .changed
                        .wait(state)
                        .map_err(|_| BuildError::Internal("lazy layer state poisoned"))?;
                }
                Some(Job::Queued) | None => {
                    state.queue.retain(|(k, _)| k != key);
                    state.jobs.insert(key.to_string(), Job::Running);
                    drop(state);
                    let result = self.make(key, snapshot);
                    let mut state = self.lock()?;
                    state
                        .jobs
                        .insert(key.to_string(), Job::Done(result.clone()));
                    self.changed.notify_all();
                    return result.map_err(BuildError::Failed);
                }
            }
        }
    }

    fn make(&self, key: &str, snapshot: &Path) -> Result<LayerRecord, Arc<BuildError>> {
        make_lazy_blob(self.store, self.memo, key, snapshot, &self.options).map_err(Arc::new)
    }
}
