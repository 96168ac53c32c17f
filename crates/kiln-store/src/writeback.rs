//! Writing out on the way: the store syncs every blob and snapshot once before naming it, and
//! with memory to spare the kernel holds everything written until then, so that one sync
//! would wait for all of it. A thread that pushes what is written so far to the disk while
//! the writer goes on leaves that sync only the last stretch.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

/// How often a blob being written is pushed to the disk. A layer is written at a few hundred
/// MB/s and this disk writes faster, so the sync at the end waits for a tenth of a second of
/// output at most.
pub const BLOB_WRITEBACK_INTERVAL: Duration = Duration::from_millis(100);

/// Runs `run` while a thread does `action` every `interval`; the thread is stopped (and
/// joined) when `run` returns. Without the thread (none could be started) `run` still runs:
/// it only loses the head start.
pub fn repeating_while<T>(
    interval: Duration,
    action: impl Fn() + Send,
    run: impl FnOnce() -> T,
) -> T {
    let (stop, stopped) = channel::<()>();
    std::thread::scope(|scope| {
        let _ = std::thread::Builder::new()
            .name("kiln-flush".into())
            .spawn_scoped(scope, move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    action();
                }
            });
        let result = run();
        drop(stop);
        result
    })
}

/// Runs `run` with `file` (a blob being written) while a thread writes out what it holds
/// every [`BLOB_WRITEBACK_INTERVAL`], so that the sync of [`crate::Store::commit_blob`]
/// waits only for the last stretch (for a 190 MB layer here: 113 ms before, a few after).
pub fn writing_back<F: AsFd, T>(file: F, run: impl FnOnce(F) -> T) -> T {
    // A second handle on the same open file; without one the blob is only synced at the end.
    let Ok(handle) = file.as_fd().try_clone_to_owned().map(File::from) else {
        return run(file);
    };
    repeating_while(
        BLOB_WRITEBACK_INTERVAL,
        move || {
            // Best effort: the sync before naming the blob reports what this one would.
            let _ = rustix::fs::fdatasync(handle.as_fd());
        },
        || run(file),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[test]
    fn the_action_repeats_while_the_work_runs_and_stops_with_it() {
        let actions = AtomicUsize::new(0);
        let interval = Duration::from_millis(5);
        let answer = repeating_while(
            interval,
            || {
                actions.fetch_add(1, Ordering::SeqCst);
            },
            || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while actions.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                42
            },
        );
        assert_eq!(answer, 42);
        let after = actions.load(Ordering::SeqCst);
        assert!(after >= 2, "the action ran {after} times during the work");
        std::thread::sleep(interval * 4);
        assert_eq!(
            actions.load(Ordering::SeqCst),
            after,
            "the action outlived the work"
        );
    }

    #[test]
    fn a_blob_written_back_on_the_way_holds_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let file = File::create(&path).unwrap();
        let block = vec![0x5au8; 1 << 20];
        let (file, written) = writing_back(file, |mut file| {
            let mut written = 0usize;
            // Long enough for the writer-back to run a few times while the file grows.
            let until = Instant::now() + BLOB_WRITEBACK_INTERVAL * 3;
            while Instant::now() < until || written < 8 {
                file.write_all(&block).unwrap();
                written += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (file, written)
        });
        file.sync_all().unwrap();
        drop(file);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), written * block.len());
        assert!(bytes.iter().all(|&b| b == 0x5a));
    }
}
