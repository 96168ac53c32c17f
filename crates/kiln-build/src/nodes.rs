//! Step-level scheduling: the finished stage images that steps wait for, and the job slots
//! that bound how many stages do work at once.
//!
//! A stage starts as soon as its base is built; a step that reads another stage (`COPY
//! --from`, `RUN --mount=from`) waits for that stage only when it gets there. A stage that
//! waits gives its job slot back while it waits, so `--jobs 1` never deadlocks: the stage it
//! waits for takes the slot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a waiter sleeps before it looks at the stop flag again, should a wake-up be lost.
const RECHECK: Duration = Duration::from_millis(500);

/// Takes a lock even if a thread panicked while holding it: the data here (counters, finished
/// results) stays consistent whatever a panicking stage was doing.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// At most `jobs` holders at a time.
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    /// `jobs` slots (at least one).
    pub(crate) fn new(jobs: usize) -> Slots {
        Slots {
            free: Mutex::new(jobs.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot and takes it.
    pub(crate) fn acquire(&self) {
        let mut free = lock(&self.free);
        while *free == 0 {
            free = self
                .freed
                .wait_timeout(free, RECHECK)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        *free -= 1;
    }

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        let mut free = lock(&self.free);
        *free = free.saturating_add(1);
        self.freed.notify_one();
    }
}

/// Why a wait ended without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// The build stopped (another stage failed).
    Stopped,
    /// The node is not built and nothing will build it (a dry run, which goes in order).
    Missing,
}

/// Finished nodes by index; waiters sleep until theirs is in.
pub(crate) struct Results<T> {
    done: Mutex<BTreeMap<usize, T>>,
    changed: Condvar,
    /// Whether a missing node may still come (a scheduled build), or never will (a dry run).
    may_wait: bool,
}

impl<T: Clone> Results<T> {
    /// Results that missing nodes are waited for (a build that runs stages in parallel).
    pub(crate) fn scheduled() -> Results<T> {
        Results {
            done: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
            may_wait: true,
        }
    }

    /// Results filled in order: a missing node is an error at once.
    pub(crate) fn in_order() -> Results<T> {
        Results {
            may_wait: false,
            ..Results::scheduled()
        }
    }

    /// Records a finished node and wakes whoever waits for it.
    pub(crate) fn insert(&self, node: usize, value: T) {
        lock(&self.done).insert(node, value);
        self.changed.notify_all();
    }

    /// Whether the node is finished.
    pub(crate) fn contains(&self, node: usize) -> bool {
        lock(&self.done).contains_key(&node)
    }

    /// Wakes every waiter (after `stop` was set), so they can give up.
    pub(crate) fn wake_all(&self) {
        let _done = lock(&self.done);
        self.changed.notify_all();
    }

    /// The node's result, waiting for it if it is not finished. The caller holds one of
    /// `slots`; it is given back for the wait and taken again before returning, so a waiting
    /// stage never keeps another from running.
    pub(crate) fn wait(
        &self,
        node: usize,
        slots: &Slots,
        stop: &AtomicBool,
    ) -> Result<T, WaitError> {
        let mut done = lock(&self.done);
        if let Some(value) = done.get(&node) {
            return Ok(value.clone());
        }
        if !self.may_wait {
            return Err(WaitError::Missing);
        }
        drop(done);
        slots.release();
        done = lock(&self.done);
        let found = loop {
            if let Some(value) = done.get(&node) {
                break Ok(value.clone());
            }
            if stop.load(Ordering::Relaxed) {
                break Err(WaitError::Stopped);
            }
            done = self
                .changed
                .wait_timeout(done, RECHECK)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        };
        drop(done);
        slots.acquire();
        found
    }
}

/// What the scheduler builds: a plan whose stages are the nodes of the build graph (for one
/// platform, the recipe's stages; for several, see the `platforms` module), and what each node
/// is built for.
pub struct NodePlan<'p> {
    /// The nodes, as stages; `order` lists the ones to build, each after what it needs.
    pub plan: std::borrow::Cow<'p, kiln_plan::Plan>,
    /// Per node (by position): the platform it is built for (`TARGETPLATFORM`), which images
    /// it reads without a `--platform` of their own come for.
    pub targets: Vec<kiln_plan::Platform>,
    /// Per node: what progress shows after the stage's name (the platform, when there are
    /// several).
    pub labels: Vec<String>,
}

impl<'p> NodePlan<'p> {
    /// One platform: every stage of the plan is a node, built for `target`.
    pub fn single(plan: &'p kiln_plan::Plan, target: &kiln_plan::Platform) -> NodePlan<'p> {
        NodePlan {
            targets: vec![target.clone(); plan.stages.len()],
            labels: vec![String::new(); plan.stages.len()],
            plan: std::borrow::Cow::Borrowed(plan),
        }
    }

    /// The platform node `index` is built for.
    pub fn target(&self, index: usize) -> Option<&kiln_plan::Platform> {
        self.targets.get(index)
    }

    /// The label suffix of node `index`.
    pub fn label(&self, index: usize) -> &str {
        self.labels.get(index).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiter_gives_its_slot_to_the_node_it_waits_for() {
        // One slot: the waiter holds it, the producer can only run once the waiter lets go.
        let slots = Arc::new(Slots::new(1));
        let results: Arc<Results<u32>> = Arc::new(Results::scheduled());
        let stop = Arc::new(AtomicBool::new(false));
        slots.acquire();
        let producer = {
            let (slots, results) = (Arc::clone(&slots), Arc::clone(&results));
            std::thread::spawn(move || {
                slots.acquire();
                results.insert(7, 42);
                slots.release();
            })
        };
        assert_eq!(results.wait(7, &slots, &stop), Ok(42));
        slots.release();
        assert!(producer.join().is_ok());
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let slots = Slots::new(1);
        let results: Results<u32> = Results::scheduled();
        let stop = AtomicBool::new(true);
        slots.acquire();
        assert_eq!(results.wait(1, &slots, &stop), Err(WaitError::Stopped));
        let in_order: Results<u32> = Results::in_order();
        assert_eq!(in_order.wait(1, &slots, &stop), Err(WaitError::Missing));
    }
}
