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
//! that joined. So jobs must share their work by claiming pieces (every caller here does, through
//! [`Pool::for_each_range`]), not by thread index. Why: when another process takes a core, a descheduled worker would otherwise
//! stall every one of the ~200 jobs of a step by a scheduler time slice (measured: a fused step 8× slower
//! beside one busy process); now the caller just does the whole job itself. Waits yield after a short
//! spin for the same reason.
//!
//! On wasm32 (no threads) and with one thread, `run` calls the job inline.

use std::sync::Arc;
#[cfg(not(target_family = "wasm"))]
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// [`Pool::for_each_range`]'s claims: thread i's unclaimed share as `lo | hi << 32`, one cache line
    /// each so the owners' claims do not contend.
    shares: Vec<Share>,
}

/// One thread's share of a [`Pool::for_each_range`] job, alone on its cache line.
#[cfg(not(target_family = "wasm"))]
#[repr(align(64))]
struct Share(AtomicU64);

#[cfg(not(target_family = "wasm"))]
impl Share {
    /// Claims up to `chunk` items from the front (`back` = false, the owner's end) or the back of the
    /// share; `None` once it is empty.
    fn take(&self, chunk: usize, back: bool) -> Option<(usize, usize)> {
        let mut v = self.0.load(Ordering::Acquire);
        loop {
            let (lo, hi) = ((v & 0xffff_ffff) as usize, (v >> 32) as usize);
            if lo >= hi {
                return None;
            }
            let (nlo, nhi, got) = if back {
                let cut = hi.saturating_sub(chunk).max(lo);
                (lo, cut, (cut, hi))
            } else {
                let cut = (lo + chunk).min(hi);
                (cut, hi, (lo, cut))
            };
            match self.0.compare_exchange_weak(v, pack(nlo, nhi), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(got),
                Err(now) => v = now,
            }
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn pack(lo: usize, hi: usize) -> u64 {
    lo as u64 | (hi as u64) << 32
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
                shares: (0..threads).map(|_| Share(AtomicU64::new(0))).collect(),
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
            let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
            self.run_locked(job);
        }
    }

    /// `run` for a caller that holds the turn.
    #[cfg(not(target_family = "wasm"))]
    fn run_locked(&self, job: Job<'_>) {
        {
            let Some(s) = &self.shared else {
                job(0, 1);
                return;
            };
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
    /// Runs `f(thread, lo, hi)` over disjoint ranges that cover `0..total` exactly once, each at most
    /// `chunk` long, on the caller and the workers that join.
    ///
    /// Thread i owns the i-th contiguous share of `0..total` (whole chunks) and claims it front to back;
    /// a thread whose share is done steals chunks from the back of the others'. Why not one shared
    /// counter: with it the threads took alternate chunks, so each one's weight reads jumped every chunk
    /// and the hardware prefetcher (and the kernels' software prefetch, which runs ahead past the chunk
    /// it was given) lost the stream at every jump; contiguous shares streamed Qwen2.5 1.5B's decode at
    /// 25.4 tok/s against 21–24 with shared-counter chunks of 128 KB–1 MB and 15.6 with 32 rows (2 threads,
    /// this machine). Stealing keeps the pool's contract: a worker that never joins leaves its share to
    /// the others, so the job still finishes.
    pub fn for_each_range(&self, total: usize, chunk: usize, f: &(dyn Fn(usize, usize, usize) + Sync)) {
        let chunk = chunk.max(1);
        #[cfg(not(target_family = "wasm"))]
        if let Some(s) = &self.shared
            && total > chunk
            && u32::try_from(total).is_ok()
        {
            let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
            let n = self.threads;
            let per = total.div_ceil(n).div_ceil(chunk) * chunk;
            for (i, sh) in s.shares.iter().enumerate() {
                sh.0.store(pack((i * per).min(total), ((i + 1) * per).min(total)), Ordering::Release);
            }
            self.run_locked(&|ti, n| {
                for k in 0..n {
                    let share = &s.shares[(ti + k) % n];
                    while let Some((lo, hi)) = share.take(chunk, k > 0) {
                        f(ti, lo, hi);
                    }
                }
            });
            return;
        }
        let mut lo = 0;
        while lo < total {
            let hi = (lo + chunk).min(total);
            f(0, lo, hi);
            lo = hi;
        }
    }

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
    fn ranges_cover_the_total_once_whoever_joins() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads);
            for (total, chunk) in [(0, 8), (1, 8), (7, 8), (8, 8), (1003, 32), (4096, 1), (100, 7)] {
                let seen: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
                let used = AtomicUsize::new(0);
                pool.for_each_range(total, chunk, &|ti, lo, hi| {
                    assert!(ti < pool.threads() && lo < hi && hi - lo <= chunk, "range {lo}..{hi} on {ti}");
                    used.fetch_or(1 << ti, Ordering::Relaxed);
                    for x in &seen[lo..hi] {
                        x.fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(seen.iter().all(|x| x.load(Ordering::Relaxed) == 1), "{threads} threads, {total}/{chunk}");
            }
        }
    }

    #[test]
    fn a_slow_or_absent_workers_share_is_stolen() {
        // The worker, if it joins at all, takes 2 ms a chunk; the caller steals the rest of its share
        // from the back, so it does more than its own half and the job still covers every item once.
        let pool = Pool::new(2);
        let (sum, by_caller) = (AtomicUsize::new(0), AtomicUsize::new(0));
        pool.for_each_range(1000, 10, &|ti, lo, hi| {
            if ti > 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            } else {
                by_caller.fetch_add(hi - lo, Ordering::Relaxed);
            }
            sum.fetch_add(hi - lo, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 1000);
        assert!(by_caller.load(Ordering::Relaxed) > 500, "the caller did not steal: {by_caller:?}");
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
