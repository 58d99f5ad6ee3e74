//! Ctrl-C (SIGINT) and SIGTERM during `train`: the first asks the run to stop after the step
//! under way, with its checkpoint written (the engine's stop flag, as Python's Ctrl-C does);
//! a second one of either ends the process at once, as the signal would have.
//! Without this the CLI died on the signal and lost every step since the last --save-every,
//! where systemd, docker, Kubernetes and `timeout` all stop a job with SIGTERM.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
/// the signal that set STOP (0: none yet)
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // only async-signal-safe calls here: atomics, signal(2) and raise(3)
    if STOP.swap(true, Ordering::SeqCst) {
        // SAFETY: restoring the default disposition and raising the signal again are
        // async-signal-safe; the process then ends as the signal ends it
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    SIGNAL.store(sig, Ordering::SeqCst);
}

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

/// The exit code of a run the signal stopped: 128 + its number (130 for Ctrl-C, 143 for
/// SIGTERM), as a shell reports a process the signal ended.
pub fn exit_code() -> i32 {
    128 + SIGNAL.load(Ordering::SeqCst).max(0)
}
