//! A persistent, spinning thread pool for the CPU decode step: one job at a time, shared by whichever
//! threads arrive while the caller works on it.
//!
//! Why not rayon: a decode step of a small model is ~200 parallel regions (every projection, every
//! attention pass) of 10–100 µs each. rayon parks idle workers, and waking one costs a futex round trip
//! (5–20 µs here), which is 10–15 % of SmolLM2's step. llama.cpp's ggml threadpool solves this the same
//! way: workers spin on a job counter for a while before they sleep, so a job that follows within a few
//! hundred microseconds starts in well under a microsecond. The price is a busy core between jobs, which
//! the spin limit bounds (then workers park on a condition variable).
//!
//! The caller never waits for a worker that has not started: a worker joins the current job through a
//! gate that the caller closes once its own call returns, and the caller then waits only for the workers
//! that joined. So jobs must share their work by claiming pieces from a counter (every caller here does),
//! not by thread index. Why: when another process takes a core, a descheduled worker would otherwise
//! stall every one of the ~200 jobs of a step by a scheduler time slice (measured: a fused step 8× slower
//! beside one busy process); now the caller just does the whole job itself. Waits yield after a short
//! spin for the same reason.
//!
//! On wasm32 (no threads) and with one thread, `run` calls the job inline.

use std::sync::Arc;
#[cfg(not(target_family = "wasm"))]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(target_family = "wasm"))]
use std::sync::{Condvar, Mutex};

/// The job type: called with `(thread index, thread count)` by the caller (index 0) and by each worker that
/// joins in time; work is shared by claiming, so a worker that joins late finds nothing left.
pub type Job<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// A fixed set of worker threads (plus the caller, which runs share 0).
pub struct Pool {
    threads: usize,
    #[cfg(not(target_family = "wasm"))]
    shared: Option<Arc<Shared>>,
    #[cfg(not(target_family = "wasm"))]
    handles: Vec<std::thread::JoinHandle<()>>,
    /// Held for the whole of a `run`: callers on several threads (tests, a server) take turns, since
    /// the workers serve one job at a time.
    #[cfg(not(target_family = "wasm"))]
    turn: Mutex<()>,
}

#[cfg(not(target_family = "wasm"))]
struct Shared {
    /// Bumped once per job; workers run a job when they see a new value.
    epoch: AtomicUsize,
    /// The current job's gate: its epoch in the high 32 bits, [`CLOSED`], and the count of workers that
    /// joined in the low bits.
    gate: std::sync::atomic::AtomicU64,
    /// Workers of the current job that have finished it.
    finished: AtomicUsize,
    /// The current job, valid while the gate is open or a joined worker runs (a `Job` with its lifetime
    /// erased).
    job: Mutex<Option<JobPtr>>,
    /// Workers that gave up spinning and wait on `wake`.
    sleepers: AtomicUsize,
    wake: Condvar,
    sleep_lock: Mutex<()>,
    stop: AtomicBool,
    /// Set by [`Pool::rest`]: workers park at once instead of spinning.
    resting: AtomicBool,
    /// Set when a job panicked in a worker; `run` re-raises it on the caller.
    panicked: AtomicBool,
}

/// A job pointer that may cross threads: `run` keeps the job alive until every worker is done with it.
#[cfg(not(target_family = "wasm"))]
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize, usize) + Sync + 'static));
// SAFETY: the pointee is `Sync` and outlives every use (see `Pool::run`).
#[cfg(not(target_family = "wasm"))]
unsafe impl Send for JobPtr {}

/// Spins before a worker parks: about 1–2 ms on current CPUs, longer than the gap between the jobs of one
/// decode step, shorter than a user would notice as a busy core after generation ends.
#[cfg(not(target_family = "wasm"))]
const SPINS: usize = 1 << 17;

/// Spins of a wait before it also yields the core on every turn.
#[cfg(not(target_family = "wasm"))]
const SPINS_BEFORE_YIELD: usize = 1 << 12;

/// The gate bit that says the caller finished its call: no more workers join.
#[cfg(not(target_family = "wasm"))]
const CLOSED: u64 = 1 << 31;

/// A spin-wait step: pause, and after [`SPINS_BEFORE_YIELD`] turns give the core away too.
#[cfg(not(target_family = "wasm"))]
#[inline]
fn pause(turns: &mut usize) {
    *turns += 1;
    if *turns < SPINS_BEFORE_YIELD {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Pool {
    /// A pool of `threads` threads in all (the caller included); 0 or 1 runs every job inline.
    pub fn new(threads: usize) -> Self {
        #[cfg(target_family = "wasm")]
        {
            // No threads in the browser build (yet): every job runs inline.
            let _ = threads;
            Self { threads: 1 }
        }
        #[cfg(not(target_family = "wasm"))]
        {
            let threads = threads.max(1);
            if threads == 1 {
                return Self { threads, shared: None, handles: Vec::new(), turn: Mutex::new(()) };
            }
            let shared = Arc::new(Shared {
                epoch: AtomicUsize::new(0),
                gate: std::sync::atomic::AtomicU64::new(0),
                finished: AtomicUsize::new(0),
                job: Mutex::new(None),
                sleepers: AtomicUsize::new(0),
                wake: Condvar::new(),
                sleep_lock: Mutex::new(()),
                stop: AtomicBool::new(false),
                resting: AtomicBool::new(false),
                panicked: AtomicBool::new(false),
            });
            let mut handles = Vec::with_capacity(threads - 1);
            for idx in 1..threads {
                let s = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("chorus-cpu-{idx}"))
                    .spawn(move || worker(&s, idx, threads));
                match spawned {
                    Ok(h) => handles.push(h),
                    // No more threads to be had: run with what started (work is claimed, so any count covers it).
                    Err(_) => break,
                }
            }
            let threads = handles.len() + 1;
            if threads == 1 {
                return Self { threads, shared: None, handles, turn: Mutex::new(()) };
            }
            Self { threads, shared: Some(shared), handles, turn: Mutex::new(()) }
        }
    }

    /// Threads that share each job (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(i, n)` for every thread index `i < n` and returns when all have finished. Calls from
    /// several threads are served one after another; a job must not call `run` itself (it would wait
    /// for its own turn).
    pub fn run(&self, job: Job<'_>) {
        #[cfg(target_family = "wasm")]
        {
            job(0, 1);
        }
        #[cfg(not(target_family = "wasm"))]
        {
            let Some(s) = &self.shared else {
                job(0, 1);
                return;
            };
            let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
            let n = self.threads;
            // SAFETY: only the lifetime is erased. This function returns only after closing the gate and
            // seeing every worker that joined finish, and no worker calls the job without joining first.
            let ptr: JobPtr = JobPtr(unsafe {
                std::mem::transmute::<
                    *const (dyn Fn(usize, usize) + Sync + '_),
                    *const (dyn Fn(usize, usize) + Sync + 'static),
                >(job as *const _)
            });
            s.resting.store(false, Ordering::Release);
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(ptr);
            let epoch = s.epoch.load(Ordering::Relaxed).wrapping_add(1);
            s.finished.store(0, Ordering::Release);
            s.gate.store(((epoch as u32) as u64) << 32, Ordering::Release);
            s.epoch.store(epoch, Ordering::Release);
            if s.sleepers.load(Ordering::Acquire) > 0 {
                let _guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                s.wake.notify_all();
            }
            let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(0, n)));
            let joined = (s.gate.fetch_or(CLOSED, Ordering::AcqRel) & (CLOSED - 1)) as usize;
            let mut turns = 0;
            while s.finished.load(Ordering::Acquire) != joined {
                pause(&mut turns);
            }
            *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
            if let Err(p) = mine {
                std::panic::resume_unwind(p);
            }
            if s.panicked.swap(false, Ordering::AcqRel) {
                panic!("a chorus-cpu worker panicked while running a job");
            }
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn worker(s: &Shared, idx: usize, n: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0usize;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            spins += 1;
            if spins < SPINS && !s.resting.load(Ordering::Relaxed) {
                if spins < SPINS_BEFORE_YIELD {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            // Park until the next job (or shutdown). The epoch is re-checked under the lock that `run`
            // takes to notify, so a job published in between is never missed.
            s.sleepers.fetch_add(1, Ordering::AcqRel);
            let mut guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            while s.epoch.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            drop(guard);
            s.sleepers.fetch_sub(1, Ordering::AcqRel);
            spins = 0;
        }
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        // Join the job of epoch `seen` unless the caller already finished its share (then there is
        // nothing left to claim) or a newer job replaced it (seen again at the next turn of the loop).
        let mut g = s.gate.load(Ordering::Acquire);
        let joined = loop {
            if (g >> 32) as u32 != seen as u32 || g & CLOSED != 0 {
                break false;
            }
            match s.gate.compare_exchange_weak(g, g + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break true,
                Err(now) => g = now,
            }
        };
        if !joined {
            continue;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(f)) = job {
            // SAFETY: this worker joined the open gate, so `run` waits for its `finished` below.
            let f = unsafe { &*f };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(idx, n))).is_err() {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.finished.fetch_add(1, Ordering::AcqRel);
    }
}

impl Pool {
    /// Tells the workers that no job follows soon (the end of a forward pass): they park now instead of
    /// spinning, so the cores are free for what runs between steps (fusion's α search on rayon, sampling,
    /// detokenising). The next `run` wakes them (one condition-variable round trip per step).
    pub fn rest(&self) {
        #[cfg(not(target_family = "wasm"))]
        if let Some(s) = &self.shared {
            s.resting.store(true, Ordering::Release);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        #[cfg(not(target_family = "wasm"))]
        if let Some(s) = &self.shared {
            s.stop.store(true, Ordering::Release);
            {
                let _guard = s.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
                s.wake.notify_all();
            }
            for h in self.handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

/// The process-wide pool: `CHORUS_THREADS` threads, or one per available core.
pub fn global() -> Arc<Pool> {
    static POOL: std::sync::OnceLock<Arc<Pool>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::env::var("CHORUS_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Arc::new(Pool::new(n))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn claimed_work_is_done_once_per_job() {
        let pool = Pool::new(3);
        let sum = AtomicUsize::new(0);
        for _ in 0..1000 {
            let next = AtomicUsize::new(0);
            pool.run(&|_, _| {
                loop {
                    let a = next.fetch_add(16, Ordering::Relaxed);
                    if a >= 1003 {
                        break;
                    }
                    sum.fetch_add((a + 16).min(1003) - a, Ordering::Relaxed);
                }
            });
        }
        assert_eq!(sum.load(Ordering::Relaxed), 1000 * 1003, "every piece claimed exactly once");
    }

    /// A job that claims 64 unit pieces and counts them into `sum`.
    fn claim64(pool: &Pool, sum: &AtomicUsize) {
        let next = AtomicUsize::new(0);
        pool.run(&|_, _| {
            while next.fetch_add(1, Ordering::Relaxed) < 64 {
                sum.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    #[test]
    fn callers_on_several_threads_take_turns() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..500 {
                        claim64(&pool, &sum);
                    }
                });
            }
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4 * 500 * 64);
    }

    #[test]
    fn workers_that_slept_or_rest_still_serve_jobs() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        // A worker that joins runs with its own index; count the jobs some worker joined.
        let joined = AtomicUsize::new(0);
        for round in 0..200 {
            if round % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if round % 7 == 0 {
                pool.rest();
            }
            claim64(&pool, &sum);
            let slow = AtomicUsize::new(0);
            pool.run(&|i, _| {
                if i > 0 {
                    joined.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Give the worker time to join before the caller closes the gate.
                    while slow.fetch_add(1, Ordering::Relaxed) < 200_000 {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        assert_eq!(sum.load(Ordering::Relaxed), 200 * 64);
        assert!(joined.load(Ordering::Relaxed) > 0, "the worker never joined a job");
    }
}
