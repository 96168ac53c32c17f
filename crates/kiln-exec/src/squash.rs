//! Merging layer snapshots into one, as overlayfs stacks them, for `--squash`.
//!
//! The merged directory is itself a snapshot in overlay form: a path a later layer deleted is
//! gone, and stays a whiteout only if the base image (below the squashed layers) has it, so the
//! deletion still shows. Files are hardlinked from the snapshots, which are never modified.

use crate::fsmeta::{
    find_whiteout, io_at, is_opaque, is_opaque_marker, make_opaque, make_whiteout, set_stamp,
    whiteout_of, Stamp,
};
use crate::rootfs::Rootfs;
use crate::ExecError;
use std::fs;
use std::path::{Path, PathBuf};

fn remove(path: &Path) -> Result<(), ExecError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(|e| io_at(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| io_at(path, e)),
        Err(_) => Ok(()),
    }
}

/// Removes `path` and any whiteout of it (in either form).
fn remove_all(path: &Path) -> Result<(), ExecError> {
    remove(path)?;
    if let Some((marker, _)) = find_whiteout(path) {
        remove(&marker)?;
    }
    Ok(())
}

#[cfg(test)]
fn whiteout(path: &Path) -> Result<(), ExecError> {
    make_whiteout(path).map(drop)
}

/// Applies one layer snapshot on top of `merged`. `base` is the image below all squashed
/// layers: whiteouts are kept only for paths it has.
pub fn apply_layer(snapshot: &Path, merged: &Path, base: &Rootfs) -> Result<(), ExecError> {
    let mut stack = vec![PathBuf::new()];
    // Directory times are set once their contents are in place.
    let mut directories: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    while let Some(relative) = stack.pop() {
        let dir = snapshot.join(&relative);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| io_at(&dir, e))?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| io_at(&dir, e))?;
        names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
        let mut children = Vec::new();
        for name in names {
            let child = relative.join(&name);
            let source = snapshot.join(&child);
            let target = merged.join(&child);
            let meta = fs::symlink_metadata(&source).map_err(|e| io_at(&source, e))?;
            if is_opaque_marker(&name, &meta) {
                continue; // read through `is_opaque` of its directory
            }
            if let Some(gone) = whiteout_of(&name, &meta) {
                let child = relative.join(gone);
                let target = merged.join(&child);
                remove_all(&target)?;
                if base.lstat(&child).is_some() {
                    make_whiteout(&target)?;
                }
                continue;
            }
            if meta.is_dir() {
                let existing_dir = fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
                let opaque = is_opaque(&source);
                if !existing_dir || opaque {
                    remove_all(&target)?;
                    fs::create_dir(&target).map_err(|e| io_at(&target, e))?;
                }
                if opaque && base.lstat(&child).is_some() {
                    make_opaque(&target, "trusted.overlay.opaque")?;
                }
                directories.push((target, meta));
                children.push(child);
                continue;
            }
            remove_all(&target)?;
            fs::hard_link(&source, &target)
                .or_else(|_| {
                    // Symlinks and special files may not be hardlinkable everywhere: recreate them.
                    if meta.file_type().is_symlink() {
                        let link = fs::read_link(&source)?;
                        std::os::unix::fs::symlink(link, &target)
                    } else {
                        fs::copy(&source, &target).map(|_| ())
                    }
                })
                .map_err(|e| io_at(&target, e))?;
        }
        stack.extend(children.into_iter().rev());
    }
    for (target, meta) in directories.iter().rev() {
        set_stamp(target, Stamp::of(meta), false, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsmeta::is_whiteout;

    #[test]
    fn later_layers_win_and_deletions_of_base_paths_stay_whiteouts() {
        let base = tempfile::tempdir().unwrap();
        fs::write(base.path().join("from-base"), "b").unwrap();
        let one = tempfile::tempdir().unwrap();
        fs::write(one.path().join("a"), "1").unwrap();
        fs::write(one.path().join("temp"), "t").unwrap();
        fs::create_dir(one.path().join("d")).unwrap();
        fs::write(one.path().join("d/x"), "x").unwrap();
        let two = tempfile::tempdir().unwrap();
        fs::write(two.path().join("a"), "2").unwrap();
        whiteout(&two.path().join("temp")).unwrap();
        whiteout(&two.path().join("from-base")).unwrap();
        fs::create_dir(two.path().join("d")).unwrap();
        fs::write(two.path().join("d/y"), "y").unwrap();
        let merged = tempfile::tempdir().unwrap();
        let view = Rootfs::new(vec![base.path().into()]);
        apply_layer(one.path(), merged.path(), &view).unwrap();
        apply_layer(two.path(), merged.path(), &view).unwrap();
        assert_eq!(fs::read_to_string(merged.path().join("a")).unwrap(), "2");
        assert!(
            !merged.path().join("temp").exists(),
            "made and deleted within the squash: gone"
        );
        let gone = fs::symlink_metadata(merged.path().join("from-base")).unwrap();
        assert!(is_whiteout(&gone), "a base path deleted stays deleted");
        let mut names: Vec<_> = fs::read_dir(merged.path().join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["x", "y"]);
    }
}
