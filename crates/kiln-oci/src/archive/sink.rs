//! Where an archive's bytes go: any writer (streamed), or a file, which can also take a file's
//! bytes from the kernel (`copy_file_range`: no user-space copy; on a filesystem that shares
//! extents, no copy at all).

use std::fs::File;
use std::io::{self, Read, Write};

/// An archive's output.
pub(crate) trait Sink: Write {
    /// Whether [`Sink::copy_file`] can do better than streaming.
    fn takes_files(&self) -> bool;

    /// Appends `len` bytes of `from` (from its current position); how many were appended.
    fn copy_file(&mut self, from: &mut File, len: u64) -> io::Result<u64> {
        io::copy(&mut from.take(len), self)
    }
}

/// Any writer: everything streams through it.
pub(crate) struct Stream<W>(pub W);

impl<W: Write> Write for Stream<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Sink for Stream<W> {
    fn takes_files(&self) -> bool {
        false
    }
}

/// A file, written at its current position.
pub(crate) struct FileSink<'a>(pub &'a File);

impl Write for FileSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&mut &*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&mut &*self.0).flush()
    }
}

/// The most one `copy_file_range` call is asked for (the kernel takes less at a time anyway).
const MAX_CHUNK: u64 = 1 << 30;

impl Sink for FileSink<'_> {
    fn takes_files(&self) -> bool {
        true
    }

    fn copy_file(&mut self, from: &mut File, len: u64) -> io::Result<u64> {
        // Read ahead further, as `cp` asks: a blob no longer in the page cache comes off the
        // disk in bigger reads. Only advice; the copy is the same without it.
        let _ = rustix::fs::fadvise(&*from, 0, None, rustix::fs::Advice::Sequential);
        let mut copied: u64 = 0;
        while copied < len {
            let want =
                usize::try_from(len.saturating_sub(copied).min(MAX_CHUNK)).unwrap_or(1 << 20);
            match rustix::fs::copy_file_range(&*from, None, self.0, None, want) {
                Ok(0) => break,
                Ok(n) => copied = copied.saturating_add(n as u64),
                // Files the kernel will not copy between (another filesystem on an old kernel,
                // an append-only output, a special file): the rest streams, from where both
                // files' positions are.
                Err(_) => {
                    let rest = io::copy(&mut (&mut *from).take(len.saturating_sub(copied)), self)?;
                    copied = copied.saturating_add(rest);
                    break;
                }
            }
        }
        Ok(copied)
    }
}
