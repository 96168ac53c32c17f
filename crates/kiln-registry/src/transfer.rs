//! Progress reporting and running blob transfers side by side.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{RegistryError, Result};
use crate::{Progress, TransferEvent};

/// Progress events are sent at most this often per blob.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Reports one blob's progress, throttled.
pub(crate) struct Meter<'a> {
    pub id: String,
    pub total: u64,
    progress: Progress<'a>,
    last: Mutex<Option<Instant>>,
}

impl<'a> Meter<'a> {
    pub fn new(id: String, total: u64, progress: Progress<'a>) -> Meter<'a> {
        Meter {
            id,
            total,
            progress,
            last: Mutex::new(None),
        }
    }

    pub fn event(&self, event: TransferEvent) {
        (self.progress)(event);
    }

    pub fn update(&self, done: u64) {
        let now = Instant::now();
        let due = match self.last.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| now.duration_since(t) >= PROGRESS_EVERY);
                if due {
                    *last = Some(now);
                }
                due
            }
            Err(_) => false,
        };
        if due {
            self.event(TransferEvent::Progress {
                id: self.id.clone(),
                done,
                total: self.total,
            });
        }
    }

    /// The last progress event (always sent, whatever the throttle says).
    pub fn complete(&self) {
        self.event(TransferEvent::Progress {
            id: self.id.clone(),
            done: self.total,
            total: self.total,
        });
    }

    pub fn retry(&self, attempt: u32, error: &str) {
        self.event(TransferEvent::Retry {
            id: self.id.clone(),
            attempt,
            error: error.to_string(),
        });
    }
}

/// Runs `f` on every item, `parallel` at a time; after the first error no new item starts,
/// and that error is returned once the running ones end.
pub(crate) fn for_each_parallel<T: Sync>(
    items: &[T],
    parallel: usize,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let workers = parallel.max(1).min(items.len());
    if workers <= 1 {
        return items.iter().try_for_each(f);
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn parallel_runs_everything_at_most_n_at_once() {
        let running = AtomicU32::new(0);
        let peak = AtomicU32::new(0);
        let done = AtomicU32::new(0);
        let items: Vec<u32> = (0..20).collect();
        for_each_parallel(&items, 3, |_| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            running.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn parallel_stops_on_error() {
        let items: Vec<u32> = (0..100).collect();
        let started = AtomicU32::new(0);
        let err = for_each_parallel(&items, 4, |i| {
            started.fetch_add(1, Ordering::SeqCst);
            if *i == 2 {
                return Err(RegistryError::Invalid("boom".into()));
            }
            std::thread::sleep(Duration::from_millis(2));
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert!(started.load(Ordering::SeqCst) < 100);
        assert!(for_each_parallel::<u32>(&[], 4, |_| Ok(())).is_ok());
    }

    #[test]
    fn meter_throttles() {
        let events = Mutex::new(Vec::new());
        let progress = |e: TransferEvent| events.lock().unwrap().push(e);
        let meter = Meter::new("sha256:x".into(), 100, &progress);
        for done in 0..1000 {
            meter.update(done % 100);
        }
        meter.complete();
        let events = events.into_inner().unwrap();
        // One at the start, maybe one more if the loop was slow, then the final one.
        assert!(events.len() <= 3, "{events:?}");
        assert!(matches!(
            events.last(),
            Some(TransferEvent::Progress {
                done: 100,
                total: 100,
                ..
            })
        ));
    }
}
