//! The CPU's setup for a process: the environment checked, the thread pool sized, then the
//! GEMM path chosen. Asking rayon for its count builds the pool at its default size, so
//! nothing asks before the pool is sized: MKL takes rayon's count at its first product, not
//! when it loads (cpu/cblas.rs; a load that asked made every later `--threads` or
//! `Model(threads=N)` fail, "the global thread pool has already been initialized"). The
//! count shapes float32 sums, so runs match only with the same count.

use super::gemm_path;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// More threads than this is a typo, and spawning them would hang the machine.
pub const MAX_THREADS: usize = 1024;

/// What a thread count may be, for errors.
const RANGE: &str = "0 (all cores) to 1024";

/// The variables rayon sizes its pool from when `--threads` is 0 (`RAYON_RS_NUM_CPUS` is its
/// older name): a count `--threads` would refuse is refused naming the variable, and so is a
/// value rayon would silently ignore.
const RAYON_VARS: [&str; 2] = ["RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"];

/// The thread count the environment asks rayon for, or None when neither variable is set.
pub fn from_env() -> Result<Option<usize>> {
    let mut asked = None;
    for var in RAYON_VARS {
        let n = crate::env::parse(var, &format!("a thread count, {RANGE}"), |s| {
            s.parse::<usize>().ok().filter(|&n| n <= MAX_THREADS)
        })?;
        asked = asked.or(n);
    }
    Ok(asked)
}

/// Sizes the process's one pool at `threads` (0: as `RAYON_NUM_THREADS` says, else all
/// cores, when first used). A pool already running that count is fine; another is refused.
pub fn size_pool(threads: usize) -> Result<()> {
    if threads > MAX_THREADS {
        return Err(Error::arg(
            "--threads",
            format!("{threads} is out of range: expected {RANGE}"),
        ));
    }
    from_env()?;
    if threads == 0 {
        return Ok(());
    }
    STARTED.store(true, Ordering::SeqCst);
    // built first, asked after: `rayon::current_num_threads` builds the pool at its default
    // size, so asking first made every count but that one fail
    match rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if rayon::current_num_threads() == threads => Ok(()),
        Err(_) => Err(Error::arg(
            "--threads",
            format!(
                "{threads}: this process's thread pool already runs {} threads (a process \
                 has one pool, sized by the first Model that gives a count, or before one by \
                 the first computation at all cores; give that count, or 0)",
                rayon::current_num_threads()
            ),
        )),
    }
}

/// The CPU's setup (`--threads`, `--gemm`): every environment variable checked
/// (env::check), the pool sized, then the GEMM path chosen.
pub fn setup(threads: usize, gemm: Option<&str>) -> Result<()> {
    watch_fork();
    crate::env::check()?;
    size_pool(threads)?;
    gemm_path::choose(gemm)
}

/// What every engine call that computes checks first when the process's setup (`setup`,
/// which the command line and the Python package run) may not have run, as for a Rust
/// program that only calls `Model::open` or `parity`: every environment variable checked,
/// and the GEMM path chosen as `SOFTPROMPT_GEMM` asks, once per process (a `--gemm` chosen
/// before stands; a `SOFTPROMPT_GEMM` whose library does not load is an error naming it,
/// where it silently ran the gemm crate). The pool is left as the program sized it.
pub fn check_process() -> Result<()> {
    watch_fork();
    enter_compute()?;
    crate::env::check()?;
    if gemm_path::is_chosen() {
        return Ok(());
    }
    gemm_path::choose(None)
}

// fork(): the child of a process whose pool had started holds rayon's global pool without
// its threads (only the forking thread survives), so the first parallel op waited for ever
// (Python's multiprocessing forked by default on Linux before 3.14). The child runs its work
// in a pool of its own, of the parent's size (the count shapes float32 sums); the parent is
// untouched.

/// Set in a child of fork() whose parent had run the engine, by the handler `watch_fork`
/// registers: a parent that only imported the package leaves a child whose pool starts as
/// any process's does, and whose calls run on the calling thread.
static FORKED: AtomicBool = AtomicBool::new(false);
/// Set once this process may have started its pool: at its first call through `fork_safe`
/// or a sized pool.
static STARTED: AtomicBool = AtomicBool::new(false);
/// A forked process's own pool, with the pid that built it (a grandchild builds its own).
static CHILD_POOL: AtomicPtr<(u32, rayon::ThreadPool)> = AtomicPtr::new(std::ptr::null_mut());
/// The main thread's stack, not rayon's 2 MiB: the whole call, Python callbacks included,
/// runs on one of the child pool's threads.
const CHILD_STACK: usize = 8 << 20;

extern "C" fn on_fork_child() {
    FORKED.store(STARTED.load(Ordering::SeqCst), Ordering::SeqCst);
}

/// Registers `on_fork_child` with pthread_atfork, once per process: `setup` does, and the
/// Python package when it loads (a call that makes no Model, `parity`, runs the pool too).
pub fn watch_fork() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(on_fork_child));
    });
}

/// Runs `f` on the process's pool: rayon's global one, or in a child of fork() (whose global
/// pool lost its threads), a pool the child builds at the parent's size, on one of whose
/// threads `f` then runs. Every call from Python goes through it.
pub fn fork_safe<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    if !FORKED.load(Ordering::SeqCst) {
        STARTED.store(true, Ordering::SeqCst);
        return Ok(f());
    }
    match child_pool() {
        Some(pool) => Ok(pool.install(f)),
        // `f` on this thread would wait for the parent's threads for ever
        None => Err(Error::Unsupported(
            "this process is a child of fork() and could not start a thread pool of its own \
             (the parent's does not survive fork): start it with multiprocessing's 'spawn' \
             or 'forkserver'"
                .into(),
        )),
    }
}

/// What every Rust API call that computes checks first: in a child of fork() whose parent
/// had computed, a call from outside any thread pool of this process would wait for ever on
/// the parent's pool, whose threads did not survive fork (hostile pass 30, F1); it is refused
/// saying what to do. A call on a pool's thread (the Python package runs each call on
/// `fork_safe`'s pool; a program may `install` one of its own) computes there. Elsewhere the
/// process is marked as one whose pool may have started.
pub fn enter_compute() -> Result<()> {
    if !FORKED.load(Ordering::SeqCst) {
        STARTED.store(true, Ordering::SeqCst);
        return Ok(());
    }
    if rayon::current_thread_index().is_some() {
        return Ok(());
    }
    Err(Error::Unsupported(
        "this process is a child of fork() whose parent had computed with softprompt: the \
         parent's thread pool does not survive fork, and the call would wait for ever. Run \
         the child's calls on a pool of its own, `rayon::ThreadPoolBuilder::new() \
         .num_threads(N).build()?.install(|| ...)` (N the parent's count, for its numbers), \
         fork before the first computation, or start the child with exec \
         (std::process::Command)"
            .into(),
    ))
}

/// This process's own pool (built on first use; None when its threads cannot start).
fn child_pool() -> Option<&'static rayon::ThreadPool> {
    let pid = std::process::id();
    let held = CHILD_POOL.load(Ordering::SeqCst);
    // SAFETY: a pointer stored here comes from Box::into_raw and is never freed (a parent's
    // pool, inherited by a grandchild, is left as it is: its threads are gone)
    if let Some((owner, pool)) = unsafe { held.as_ref() } {
        if *owner == pid {
            return Some(pool);
        }
    }
    // the global pool's count, the parent's (read without starting a thread where the parent
    // had started it; else the child's global pool starts, and its count is the default's)
    // (a global pool that must start and cannot panics in rayon: no pool, not a crash)
    let count = std::panic::catch_unwind(rayon::current_num_threads).ok()?;
    let builder = rayon::ThreadPoolBuilder::new()
        .num_threads(count)
        .stack_size(CHILD_STACK);
    let fresh = Box::into_raw(Box::new((pid, builder.build().ok()?)));
    match CHILD_POOL.compare_exchange(held, fresh, Ordering::SeqCst, Ordering::SeqCst) {
        // SAFETY: just stored, never freed
        Ok(_) => unsafe { fresh.as_ref() }.map(|(_, pool)| pool),
        Err(_) => {
            // another thread of this process stored its pool first: use that one
            // SAFETY: `fresh` was not shared
            drop(unsafe { Box::from_raw(fresh) });
            child_pool()
        }
    }
}
