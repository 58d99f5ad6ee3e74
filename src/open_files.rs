//! The open-file limit a process of many descriptors needs: a server of `--max-connections`
//! (a descriptor a connection: a soft limit below them, `ulimit -n` often 1024, made accepts
//! fail with "too many open files" while the server looked healthy; hostile pass 19), and a
//! multi-task run (two a task folder, its lock file and the folder, held for the whole run:
//! past ~500 tasks it failed with the OS's bare words; hostile pass 35, F7). The soft limit is
//! raised as far as the hard one allows.

/// Descriptors a process holds besides those counted: stdio, a listener, a runtime's event
/// queue and wakers, the model's and prompts' files while they load, the run's own files.
pub const RESERVE: u64 = 64;

/// Raises this process's soft RLIMIT_NOFILE toward `need`, as far as its hard limit allows:
/// the soft limit now, and the error of a raise that failed. None where it cannot be read.
#[cfg(not(unix))]
pub fn raise_to(_need: u64) -> Option<(u64, Option<std::io::Error>)> {
    None
}

/// Raises this process's soft RLIMIT_NOFILE toward `need`, as far as its hard limit allows:
/// the soft limit now, and the error of a raise that failed. None where it cannot be read.
#[cfg(unix)]
pub fn raise_to(need: u64) -> Option<(u64, Option<std::io::Error>)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills the struct we own
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    let Some(want) = target(soft, hard, need) else {
        return Some((soft, None));
    };
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit(2) with a soft limit at most the hard one, from a struct we own
    Some(
        match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
            0 => (want, None),
            // a system cap below the hard limit (macOS), a sandbox
            _ => (soft, Some(std::io::Error::last_os_error())),
        },
    )
}

/// Raises the soft limit for a server of `connections`; the warning to print when even the
/// hard limit is too low.
#[cfg_attr(not(feature = "serve"), allow(dead_code))]
pub fn raise_for(connections: usize) -> Option<String> {
    let need = (connections as u64).saturating_add(RESERVE);
    let (now, refused) = raise_to(need)?;
    let said = warning(now, need, connections)?;
    Some(match refused {
        Some(e) => format!("{said} (raising it failed: {e})"),
        None => said,
    })
}

/// The soft limit to set for `need` descriptors: None when `soft` is enough already.
fn target(soft: u64, hard: u64, need: u64) -> Option<u64> {
    (soft < need).then_some(need.min(hard.max(soft)))
}
/// The warning when a soft limit of `now` descriptors is below `need`.
#[cfg_attr(not(feature = "serve"), allow(dead_code))]
fn warning(now: u64, need: u64, connections: usize) -> Option<String> {
    (now < need).then(|| {
        format!(
            "warning: the open-file limit (ulimit -n) is {now}, below the {need} that \
             --max-connections {connections} needs (a file a connection, and the server's \
             own): past the limit, accepts fail and are tried again. Raise the hard limit \
             (ulimit -Hn, limits.conf, LimitNOFILE=) or lower --max-connections"
        )
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_what_the_connections_need_within_the_hard_one() {
        assert_eq!(target(1024, 1_048_576, 256 + RESERVE), None);
        assert_eq!(target(1024, 1_048_576, 10_000 + RESERVE), Some(10_064));
        assert_eq!(target(1024, 4096, 10_000 + RESERVE), Some(4096));
        let said = warning(4096, 10_064, 10_000).unwrap();
        assert!(said.contains("is 4096, below the 10064"), "{said}");
        assert!(said.contains("--max-connections 10000"), "{said}");
        assert_eq!(warning(10_064, 10_064, 10_000), None);
    }

    /// This process's own limit, raised for a few connections: nothing to say.
    #[test]
    fn a_few_connections_need_no_warning() {
        assert_eq!(raise_for(16), None);
    }
}
