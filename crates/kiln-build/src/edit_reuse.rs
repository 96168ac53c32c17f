//! Edit rebuilds of a COPY: the snapshot the same step made last time (same slot, same
//! identity apart from what it reads) lends its unchanged files to the new one
//! (`kiln_exec::reuse`). The hint naming that snapshot is only an optimisation, never part of
//! a key: whatever it says, the new snapshot holds what a copy from scratch would.

use kiln_exec::reuse::SnapshotReuse;
use kiln_store::{ReuseHint, Store};

/// A COPY's reuse: its identity and what it may take from its previous snapshot.
pub(crate) struct CopyReuse {
    identity: String,
    pub(crate) files: SnapshotReuse,
}

/// What the step `slot` with this `identity` may take from the snapshot it made last time
/// (nothing when there is none, or it was made by a step with another identity).
pub(crate) fn previous(store: &Store, slot: &str, identity: String) -> CopyReuse {
    let files = match store.reuse_hint(slot) {
        Some((hint, dir)) if hint.identity == identity => {
            SnapshotReuse::from_previous(dir, hint.files)
        }
        _ => SnapshotReuse::recording(),
    };
    CopyReuse { identity, files }
}

/// Remembers the snapshot a COPY just committed under `key` for the step's next edit. A
/// failure to write the hint only costs that edit its reuse.
pub(crate) fn remember(store: &Store, slot: &str, key: &str, reuse: CopyReuse) {
    let files = reuse.files.into_written();
    if files.is_empty() {
        return;
    }
    let hint = ReuseHint {
        identity: reuse.identity,
        snapshot: key.to_string(),
        files,
    };
    let _ = store.put_reuse_hint(slot, &hint);
}
