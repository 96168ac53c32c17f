//! What to do about a failure whose kind the user can fix, said after the error itself.

use kiln_build::{BuildError, Cause};

/// The build error, then a line on what to do when its cause is a full disk, a refused
/// permission or damaged data in the store.
pub fn explain(error: &BuildError) -> String {
    let hint = match error.cause() {
        Cause::DiskFull => {
            "the disk is full: free space there, or remove what no image uses with `kiln prune`"
        }
        Cause::PermissionDenied => {
            "permission denied: check the owner and mode of the file named above"
        }
        Cause::Corrupt => "damaged data: `kiln verify` checks the store's blobs and snapshots",
        Cause::NotFound | Cause::Other => return error.to_string(),
    };
    format!("{error}\n  hint: {hint}")
}
