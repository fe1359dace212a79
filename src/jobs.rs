//! Analyses as background jobs keyed by file identity and arguments.
//!
//! MCP clients give a tool call 60-120 s. A large capture can take longer, so an
//! analysis runs as a job: the call waits up to `PCAP_CALL_DEADLINE`, then answers
//! "still running, N% done"; the job keeps going and the next identical call gets
//! the finished result from the cache. Identical concurrent calls share one job.
//!
//! Only results someone will come back for, or that cost time, are cached: see
//! [`KEEP_AFTER`].

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lru::Lru;
use crate::tshark::Control;

type Shared = Arc<dyn Any + Send + Sync>;
type JobResult = Option<Result<Shared, String>>;

struct Running {
    ctl: Control,
    done: watch::Receiver<JobResult>,
    waiters: AtomicUsize,
    /// A caller stopped waiting and answered "still running": it will call again for
    /// the result, so the result is cached whatever it cost. The job reads it under
    /// this lock after sending the result, and a caller giving up sets it under the
    /// lock and then looks for the result: it either finds the result or is seen by
    /// the job, which caches it.
    abandoned: Mutex<bool>,
}

/// A finished result is cached when computing it took at least this long (or a caller
/// gave up waiting for it). One computed from the capture's index in less is computed
/// again when asked again: a cached report is many small allocations that outlive the
/// call, and they pin the pages the call's own short-lived data was freed from (on the
/// 200 MB bench mix, caching every answer of a 37-call investigation left the server
/// 19 MB larger, for results that take milliseconds to remake).
const KEEP_AFTER: Duration = Duration::from_secs(1);

pub struct Jobs {
    cache: Arc<Mutex<Lru<Shared>>>,
    running: Arc<Mutex<HashMap<String, Arc<Running>>>>,
}

pub enum Outcome<T> {
    Done(T),
    /// Still running after the deadline; percent of the capture read.
    Running(f64),
}

/// Sends MCP progress notifications when the client asked for them.
#[derive(Clone)]
pub struct ProgressReporter {
    pub peer: Peer<RoleServer>,
    pub token: ProgressToken,
    /// What the percentage counts, after "N% " ("of the capture read").
    pub of_what: &'static str,
}

impl ProgressReporter {
    async fn report(&self, percent: f64) {
        let _ = self
            .peer
            .notify_progress(
                ProgressNotificationParam::new(self.token.clone(), percent)
                    .with_total(100.0)
                    .with_message(format!("{percent:.0}% {}", self.of_what)),
            )
            .await;
    }
}

/// Removes `key` from the running map only if it still names `job`: a cancelled job
/// finishing late must not remove a newer job started under the same key.
fn forget(running: &Mutex<HashMap<String, Arc<Running>>>, key: &str, job: &Arc<Running>) {
    let mut map = running.lock().unwrap();
    if map.get(key).is_some_and(|j| Arc::ptr_eq(j, job)) {
        map.remove(key);
    }
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            cache: Arc::new(Mutex::new(Lru::new(256))),
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl Jobs {
    /// Returns the cached result for `key`, or joins / starts the job that computes it.
    pub async fn run<T, F, Fut>(
        &self,
        key: String,
        deadline: Duration,
        request_cancel: CancellationToken,
        progress: Option<ProgressReporter>,
        make: F,
    ) -> Result<Outcome<T>, String>
    where
        T: Clone + Send + Sync + 'static,
        F: FnOnce(Control) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        if let Some(hit) = self.cached::<T>(&key) {
            return Ok(Outcome::Done(hit));
        }
        let job = self.join_or_start(&key, make);
        job.waiters.fetch_add(1, Ordering::SeqCst);
        let outcome = self.wait(&job, deadline, &request_cancel, progress).await;
        let remaining = job.waiters.fetch_sub(1, Ordering::SeqCst) - 1;
        if request_cancel.is_cancelled() && remaining == 0 {
            // Nobody else wants it and the caller gave up before the deadline: stop tshark.
            job.ctl.cancel.cancel();
            forget(&self.running, &key, &job);
        }
        match outcome? {
            Some(Ok(v)) => v
                .downcast_ref::<T>()
                .cloned()
                .map(Outcome::Done)
                .ok_or_else(|| "internal error: cached result of another type".to_string()),
            Some(Err(e)) => Err(e),
            None => Ok(Outcome::Running(job.ctl.percent())),
        }
    }

    fn cached<T: Clone + 'static>(&self, key: &str) -> Option<T> {
        let hit = self.cache.lock().unwrap().get(key)?;
        hit.downcast_ref::<T>().cloned()
    }

    fn join_or_start<T, F, Fut>(&self, key: &str, make: F) -> Arc<Running>
    where
        T: Send + Sync + 'static,
        F: FnOnce(Control) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap();
        if let Some(job) = running.get(key) {
            return job.clone();
        }
        let ctl = Control::default();
        let (tx, rx) = watch::channel(None);
        let job = Arc::new(Running {
            ctl: ctl.clone(),
            done: rx,
            waiters: AtomicUsize::new(0),
            abandoned: Mutex::new(false),
        });
        running.insert(key.to_string(), job.clone());
        let fut = make(ctl);
        let key = key.to_string();
        // The job outlives the call that started it; its result lands in the cache.
        let (cache, all_running, this_job) =
            (self.cache.clone(), self.running.clone(), job.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            let res: Result<Shared, String> = fut.await.map(|v| Arc::new(v) as Shared);
            // what the analysis built and dropped (copies, sorted lists) is returned, so
            // that a long investigation does not keep every call's high-water mark
            release_freed_memory();
            let kept = res.as_ref().ok().cloned();
            // the waiters get it first, then the cache if a caller gave up on it; the
            // job is forgotten last, so a call arriving meanwhile joins the finished
            // job or finds the cache
            let _ = tx.send(Some(res));
            let abandoned = *this_job.abandoned.lock().unwrap();
            if let Some(v) = kept
                && (abandoned || started.elapsed() >= KEEP_AFTER)
            {
                cache.lock().unwrap().put(key.clone(), v);
            }
            forget(&all_running, &key, &this_job);
        });
        job
    }

    async fn wait(
        &self,
        job: &Running,
        deadline: Duration,
        cancel: &CancellationToken,
        progress: Option<ProgressReporter>,
    ) -> Result<JobResult, String> {
        let mut rx = job.done.clone();
        let until = tokio::time::sleep(deadline);
        tokio::pin!(until);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_reported = -1.0;
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return Ok(Some(r));
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Err("the analysis stopped unexpectedly; call again".into());
                    }
                }
                _ = cancel.cancelled() => return Err("cancelled by the client".into()),
                _ = &mut until => {
                    let mut abandoned = job.abandoned.lock().unwrap();
                    *abandoned = true;
                    // it may have come as the deadline fired
                    return Ok(rx.borrow().clone());
                }
                _ = tick.tick() => {
                    if let Some(p) = &progress {
                        let pct = job.ctl.percent();
                        if pct > last_reported {
                            last_reported = pct;
                            p.report(pct).await;
                        }
                    }
                }
            }
        }
    }
}

/// Hands freed memory back to the system: glibc keeps freed heap for reuse otherwise
/// (per thread arena, where another thread cannot reuse it), and a server that indexed
/// one big capture, or answered many calls over it, would stay at its high-water mark.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(jobs: &Jobs, deadline: Duration, made: &Arc<AtomicUsize>) -> Option<u32> {
        let made = made.clone();
        let out = jobs
            .run(
                "k".into(),
                deadline,
                CancellationToken::new(),
                None,
                |_| async move {
                    made.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(7u32)
                },
            )
            .await
            .unwrap();
        match out {
            Outcome::Done(v) => Some(v),
            Outcome::Running(_) => None,
        }
    }

    #[tokio::test]
    async fn a_quick_answer_is_made_again_and_an_awaited_one_is_kept() {
        let (jobs, made) = (Jobs::default(), Arc::new(AtomicUsize::new(0)));
        // answered within the deadline, in well under KEEP_AFTER: not cached
        assert_eq!(run(&jobs, Duration::from_secs(10), &made).await, Some(7));
        assert_eq!(run(&jobs, Duration::from_secs(10), &made).await, Some(7));
        assert_eq!(made.load(Ordering::SeqCst), 2);

        // the caller gave up before it finished: kept for its next call
        let (jobs, made) = (Jobs::default(), Arc::new(AtomicUsize::new(0)));
        assert_eq!(run(&jobs, Duration::ZERO, &made).await, None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(run(&jobs, Duration::ZERO, &made).await, Some(7));
        assert_eq!(made.load(Ordering::SeqCst), 1);
    }
}
