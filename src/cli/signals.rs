//! Ctrl-C (SIGINT) and SIGTERM during `train`: the first asks the run to stop after the step
//! under way, with its checkpoint written (the engine's stop flag, as Python's Ctrl-C does);
//! a second one of either ends the process at once, as the signal would have. Once the run
//! has stopped (or ended, for a signal during its last step or final scoring), the process
//! ends by the signal itself, so that a shell loop over runs stops at Ctrl-C as it would
//! for any other command, and a service manager sees a stop, not a failure.
//! Without this the CLI died on the signal and lost every step since the last --save-every,
//! where systemd, docker, Kubernetes and `timeout` all stop a job with SIGTERM.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
/// the signal that set STOP (0: none yet)
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // only async-signal-safe calls here: atomics, signal(2) and raise(3); the signal is
    // recorded before the flag that the run reads
    if SIGNAL.load(Ordering::SeqCst) == 0 {
        SIGNAL.store(sig, Ordering::SeqCst);
    }
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: restoring the default disposition and raising the signal again are
        // async-signal-safe; the process then ends as the signal ends it
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    } else {
        // said at once: a long dev evaluation said nothing, and a second signal, sent to
        // see something happen, lost the steps since the last checkpoint (review 27, F6)
        // SAFETY: write(2) of a static buffer is async-signal-safe
        unsafe {
            libc::write(2, STOPPING.as_ptr().cast(), STOPPING.len());
        }
    }
}

/// What the first signal says on stderr.
const STOPPING: &str = "\nstopping after the step under way (and its evaluation), which writes \
                        the checkpoint; a second Ctrl-C or SIGTERM stops at once, losing the \
                        steps since the last checkpoint\n";

/// Installs the handler for SIGINT and SIGTERM (a signal the parent set to be ignored, as a
/// shell does for a job started with `&`, stays ignored) and returns the flag it sets.
pub fn stop_flag() -> &'static AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction with a zeroed struct reads the current disposition only; the
        // handler installed touches atomics alone
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
    &STOP
}

/// Whether a signal came.
pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ends the process by the signal that came (its default action: the shell reports 130 for
/// Ctrl-C, 143 for SIGTERM); returns 128 + its number should the process live on.
pub fn end_by_signal() -> i32 {
    let sig = SIGNAL.load(Ordering::SeqCst);
    if sig > 0 {
        // SAFETY: restoring the default disposition and raising the signal; nothing of the
        // run is left to write (its files are renamed into place, stderr is unbuffered)
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    128 + sig.max(0)
}
