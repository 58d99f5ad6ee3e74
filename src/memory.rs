//! The memory accountant: every tensor a model keeps for backward is registered here, by
//! name, when it is saved and released when backward consumes it. It reports the bytes held
//! for backward now and at the peak, and it can prove that no linear layer's input is among
//! them: the models report every buffer they feed to a linear layer, and a feed of a buffer
//! that is held for backward is recorded. (Models save a tensor as soon as it is computed,
//! before any use, so checking at feed time sees every overlap.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SavedTensor {
    pub bytes: usize,
    pub buf_id: usize,
}

#[derive(Debug, Default)]
pub struct MemoryAccountant {
    live: BTreeMap<String, SavedTensor>,
    held: usize,
    peak: usize,
    /// names of saved tensors that were also fed to a linear layer
    violations: BTreeSet<String>,
    /// bytes held when the forward pass ended: what a framework reports as saved for backward
    after_forward: usize,
}

impl MemoryAccountant {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a tensor kept for backward.
    pub fn hold(&mut self, name: impl Into<String>, bytes: usize, buf_id: usize) {
        let name = name.into();
        if let Some(old) = self.live.insert(name, SavedTensor { bytes, buf_id }) {
            self.held -= old.bytes;
        }
        self.held += bytes;
        self.peak = self.peak.max(self.held);
    }

    /// Backward consumed the tensor.
    pub fn release(&mut self, name: &str) {
        if let Some(t) = self.live.remove(name) {
            self.held -= t.bytes;
        }
    }

    /// Records that a buffer was the input of a linear layer.
    pub fn linear_input(&mut self, buf_id: usize) {
        for (name, t) in &self.live {
            if t.buf_id == buf_id {
                self.violations.insert(name.clone());
            }
        }
    }

    /// Marks the end of the forward pass (the models call this).
    pub fn end_forward(&mut self) {
        self.after_forward = self.held;
    }

    /// Bytes held for backward when the forward pass ended. Under `Recompute::Layer` the
    /// peak is higher: one layer's state is rebuilt at a time during backward.
    pub fn held_after_forward(&self) -> usize {
        self.after_forward
    }

    pub fn held_bytes(&self) -> usize {
        self.held
    }

    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    pub fn live(&self) -> impl Iterator<Item = (&str, &SavedTensor)> {
        self.live.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Saved tensors that were also the input of a linear layer (empty when linear inputs are
    /// never kept, as with `--recompute none`).
    pub fn saved_linear_inputs(&self) -> Vec<String> {
        self.violations.iter().cloned().collect()
    }

    /// Starts a fresh step: forgets the peak and the findings, keeps nothing live.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The host memory available to a new allocation (Linux's MemAvailable, and less where the
/// process's address-space or data limit (`ulimit -v`, `ulimit -d`) or its cgroup's memory
/// limit (a container's) leaves less), or None where the system does not say.
/// `SOFTPROMPT_HOST_MEMORY` (bytes) lowers it, so that a test can reach the limit without
/// filling the machine.
pub fn host_available_bytes() -> Option<u64> {
    // a bad value is refused at start (env::check); here it counts as unset
    let cap = host_memory_cap().ok().flatten();
    match (system_available_bytes(), cap) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// `SOFTPROMPT_HOST_MEMORY`: a number of bytes, or None when unset.
pub fn host_memory_cap() -> crate::error::Result<Option<u64>> {
    crate::env::parse("SOFTPROMPT_HOST_MEMORY", "a number of bytes", |s| {
        s.trim().parse::<u64>().ok()
    })
}

/// The least of what the machine, the process's limits and its cgroup leave: a step sized to
/// MemAvailable alone died in the allocator (rc 134, "memory allocation of N bytes failed";
/// the Python interpreter with it) under `ulimit -v` (hostile pass 33, F10).
fn system_available_bytes() -> Option<u64> {
    rooms().into_iter().map(|(room, _)| room).min()
}

/// Each bound on what this process may still allocate that the system states, with what sets
/// it, for messages: the machine's MemAvailable, the process's limits, its cgroup's.
fn rooms() -> Vec<(u64, &'static str)> {
    let (address, data) = rlimit_rooms();
    [
        (machine_available(), "the machine"),
        (address, "its ulimit -v"),
        (data, "its ulimit -d"),
        (cgroup_room(), "its cgroup's memory limit"),
    ]
    .into_iter()
    .filter_map(|(room, what)| Some((room?, what)))
    .collect()
}

/// Refuses `need` bytes (`what` they hold, for the message) that this process may not
/// allocate, the error naming `path`: a model folder's weights, read and converted on the
/// host, died in the allocator under `ulimit -v` (rc 134; the Python interpreter with it;
/// verification 30). The system's bounds only: `SOFTPROMPT_HOST_MEMORY` stands in for the
/// machine in the checks of steps, which run on models it would refuse.
pub fn check_host_room(path: &std::path::Path, what: &str, need: u128) -> crate::error::Result<()> {
    match host_room_refusal(what, need) {
        Some(msg) => Err(crate::error::Error::HostMemory {
            path: path.to_path_buf(),
            msg,
        }),
        None => Ok(()),
    }
}

/// The words of a refusal of `need` bytes (`what` they hold) past what this process may
/// allocate by the system's bounds, or None where they fit.
pub fn host_room_refusal(what: &str, need: u128) -> Option<String> {
    room_words(what, need, system_available_bytes()?)
}

/// `host_room_refusal` against `available`.
fn room_words(what: &str, need: u128, available: u64) -> Option<String> {
    (need > u128::from(available)).then(|| {
        let (need, room) = refusal_words(need, available);
        format!("{what} take about {need}, but {room}: free memory, or raise the limit")
    })
}

/// A refusal of `need` bytes by the `available` bytes of host memory, in a message's words:
/// the size needed, and what the machine has, or, where a process limit or the cgroup's is
/// what bounds it, what this process may still allocate and why (a user told "the machine
/// has 1.9 GB" by a machine with 22 GB free raised nothing; it is the ulimit; verification
/// 30). Each size in its unit, both finer where they would read alike ("2.0 GB, but ... 2.0
/// GB more"; verification 32).
pub fn refusal_words(need: u128, available: u64) -> (String, String) {
    let room = u128::from(available);
    let mb = |b: u128| format!("{:.0} MB", b as f64 / 1e6);
    let (need, room) = match (size_words(need), size_words(room)) {
        (a, b) if a != b => (a, b),
        _ if mb(need) != mb(room) => (mb(need), mb(room)),
        _ => (format!("{need} bytes"), format!("{room} bytes")),
    };
    (need, bound_words(available, room))
}

/// The words of a refusal of a trainable module of `params` parameters (a prompt encoder,
/// a prefix projection) whose weights, gradients, two Adam moments, best copy and
/// checkpoint copy (six float32 copies) pass the host's memory, or None where they fit.
pub fn trainable_room_refusal(params: u128) -> Option<String> {
    const COPIES: u128 = 6;
    let need = params.saturating_mul(COPIES * 4);
    let available = host_available_bytes()?;
    (need > u128::from(available)).then(|| {
        let (need, room) = refusal_words(need, available);
        format!("{params} parameters: {need} with its gradients and optimizer state, but {room}")
    })
}

/// What bounds `available` bytes, with the amount written as `size`.
fn bound_words(available: u64, size: String) -> String {
    let tightest = rooms().into_iter().min_by_key(|&(room, _)| room);
    match tightest {
        Some((_, what)) if what != "the machine" && cap_above(available) => {
            format!("this process may allocate {size} more ({what})")
        }
        _ => format!("the machine has {size} available"),
    }
}

/// `bytes` for a message: GB to a tenth, or MB, or bytes below that (a refusal of 91 MB
/// against "0.1 GB" read as a contradiction; verification 31).
pub fn size_words(bytes: u128) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.0} MB", b as f64 / 1e6),
        b => format!("{b} bytes"),
    }
}

/// Whether `available` is not `SOFTPROMPT_HOST_MEMORY`'s cap, which a test sets in the
/// machine's place.
fn cap_above(available: u64) -> bool {
    host_memory_cap()
        .ok()
        .flatten()
        .is_none_or(|cap| cap > available)
}

/// `key:` of /proc/meminfo or /proc/self/status, in bytes (the files give kB).
fn proc_kb(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line
        .get(key.len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

fn machine_available() -> Option<u64> {
    proc_kb("/proc/meminfo", "MemAvailable:")
}

/// What the address-space limit (RLIMIT_AS, against VmSize) and the data limit (RLIMIT_DATA,
/// against VmData) leave this process, where each is set.
#[cfg(target_os = "linux")]
fn rlimit_rooms() -> (Option<u64>, Option<u64>) {
    let limit = |resource| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given and reads nothing else
        let ok = unsafe { libc::getrlimit(resource, &mut lim) } == 0;
        (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
    };
    let room = |resource, used: &str| {
        let used = proc_kb("/proc/self/status", used)?;
        Some(limit(resource)?.saturating_sub(used))
    };
    (
        room(libc::RLIMIT_AS, "VmSize:"),
        room(libc::RLIMIT_DATA, "VmData:"),
    )
}

#[cfg(not(target_os = "linux"))]
fn rlimit_rooms() -> (Option<u64>, Option<u64>) {
    (None, None)
}

/// What the memory limits of this process's cgroup leave (v2 `memory.max` less
/// `memory.current`; v1 `memory.limit_in_bytes` less `memory.usage_in_bytes`), where one is
/// set: a container's MemAvailable is the host's.
fn cgroup_room() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let room = |line: &str| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        // v2: "0::/path"
        let files = match controllers {
            "" => &CGROUP_V2,
            c if c.split(',').any(|c| c == "memory") => &CGROUP_V1,
            _ => return None,
        };
        hierarchy_room(Path::new(files.mount), path, files)
    };
    cgroups.lines().filter_map(room).min()
}

/// A cgroup version's mount and the files of its memory controller.
struct CgroupFiles {
    mount: &'static str,
    max: &'static str,
    current: &'static str,
    /// `memory.stat`'s keys of the file pages `current` counts
    file_keys: [&'static str; 2],
}

const CGROUP_V2: CgroupFiles = CgroupFiles {
    mount: "/sys/fs/cgroup",
    max: "memory.max",
    current: "memory.current",
    file_keys: ["active_file", "inactive_file"],
};

const CGROUP_V1: CgroupFiles = CgroupFiles {
    mount: "/sys/fs/cgroup/memory",
    max: "memory.limit_in_bytes",
    current: "memory.usage_in_bytes",
    file_keys: ["total_active_file", "total_inactive_file"],
};

/// The least room a level of the cgroup at `path` (as /proc/self/cgroup names it) leaves,
/// from its own folder under `mount` up to the mount's root: a limit on an ancestor (a
/// systemd slice's, a batch job's above its steps) bounds every cgroup below it, and only
/// the cgroup's own was read (verification 32, R2-a). Inside a container's namespace the
/// mount's root is its own cgroup.
fn hierarchy_room(mount: &Path, path: &str, files: &CgroupFiles) -> Option<u64> {
    let own = mount.join(path.trim_start_matches('/'));
    (own.ancestors())
        .take_while(|dir| dir.starts_with(mount))
        .filter_map(|dir| level_room(dir, files))
        .min()
}

/// The room one cgroup folder's limit leaves, where it has one (v2's "max" does not parse:
/// no limit).
fn level_room(dir: &Path, files: &CgroupFiles) -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let (max, current) = (read(files.max)?, read(files.current)?);
    // the usage counts the page cache (the model's files just read), which the kernel
    // reclaims before it kills: not spent (verification 30, R2)
    let cache = file_pages(&dir.join("memory.stat"), &files.file_keys);
    Some(max.saturating_sub(current.saturating_sub(cache)))
}

/// The bytes of file pages a cgroup's `memory.stat` counts under `keys`, summed (0 where
/// the file says nothing).
fn file_pages(stat: &Path, keys: &[&str]) -> u64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    (text.lines())
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| keys.contains(k))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights past what the process may allocate are refused naming the folder and both
    /// sizes; those within it pass.
    #[test]
    fn weights_past_the_room_are_refused() {
        let words = room_words("its weight files", 2_500_000_000, 1_000_000_000);
        let msg = words.unwrap_or_default();
        assert!(
            msg.starts_with("its weight files take about 2.5 GB, but "),
            "{msg}"
        );
        assert!(
            msg.ends_with("1.0 GB available: free memory, or raise the limit")
                || msg.contains("1.0 GB more (its "),
            "{msg}"
        );
        assert!(room_words("its weight files", 1_000, 1_000).is_none());
        // both sizes in one unit below a GB (91 MB against "0.1 GB" read as fitting)
        let small = room_words("its weights", 91_000_000, 60_000_000).unwrap_or_default();
        assert!(
            small.contains("about 91 MB, but ") && small.contains(" 60 MB "),
            "{small}"
        );
        assert_eq!(size_words(25_000_000), "25 MB");
        // sizes that would read alike are written finer (verification 32, U-1)
        let close = room_words("its weights", 2_040_000_000, 1_990_000_000).unwrap_or_default();
        assert!(
            close.contains("about 2040 MB, but ") && close.contains(" 1990 MB "),
            "{close}"
        );
        let closer = room_words("its weights", 2_000_000_001, 2_000_000_000).unwrap_or_default();
        assert!(
            closer.contains("about 2000000001 bytes, but ")
                && closer.contains(" 2000000000 bytes "),
            "{closer}"
        );
        // a cgroup's page cache, which its usage counts, is not spent (verification 30, R2)
        let stat = std::env::temp_dir().join(format!("softprompt_stat_{}", std::process::id()));
        std::fs::write(
            &stat,
            "cache 9\nactive_file 300\ninactive_file 4000\nrss 7\n",
        )
        .unwrap();
        let keys = ["active_file", "inactive_file"];
        assert_eq!(file_pages(&stat, &keys), 4300);
        std::fs::remove_file(&stat).unwrap();
        assert_eq!(file_pages(Path::new("/nonexistent/memory.stat"), &keys), 0);
        assert_eq!(size_words(999), "999 bytes");
    }

    /// A limit on an ancestor of the process's cgroup bounds it (only the cgroup's own was
    /// read; verification 32, R2-a): the least room of any level up to the mount's root,
    /// each level's page cache not spent; "max" is no limit.
    #[test]
    fn an_ancestor_s_limit_bounds_the_room() {
        let mount = std::env::temp_dir().join(format!("softprompt_cg_{}", std::process::id()));
        let job = mount.join("job");
        let step = job.join("step_0");
        std::fs::create_dir_all(&step).unwrap();
        let level = |dir: &Path, max: &str, current: &str, stat: &str| {
            std::fs::write(dir.join("memory.max"), max).unwrap();
            std::fs::write(dir.join("memory.current"), current).unwrap();
            std::fs::write(dir.join("memory.stat"), stat).unwrap();
        };
        level(&mount, "max\n", "9000000\n", "");
        level(
            &job,
            "5000\n",
            "4500\n",
            "active_file 100\ninactive_file 50\n",
        );
        level(&step, "max\n", "4000\n", "");
        // the job's 5000 less its 4500 of which 150 are page cache
        assert_eq!(hierarchy_room(&mount, "/job/step_0", &CGROUP_V2), Some(650));
        // a tighter own limit wins; a namespaced path ("/") reads the mount's root alone
        level(&step, "4100\n", "4000\n", "");
        assert_eq!(hierarchy_room(&mount, "/job/step_0", &CGROUP_V2), Some(100));
        assert_eq!(hierarchy_room(&mount, "/", &CGROUP_V2), None);
        // a path the mount does not hold (another namespace's) reaches the root still
        level(&mount, "7000\n", "1000\n", "");
        assert_eq!(
            hierarchy_room(&mount, "/elsewhere/x", &CGROUP_V2),
            Some(6000)
        );
        std::fs::remove_dir_all(&mount).unwrap();
    }
}
