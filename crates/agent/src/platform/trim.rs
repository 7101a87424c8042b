//! Giving memory back when the agent goes quiet (Linux; elsewhere these
//! are no-ops).
//!
//! A till's agent idles most of the day between short busy spells (its
//! start, a sale, a catch-up after an outage, a QuickBooks cache load).
//! After such a spell two kinds of memory stay with the process although
//! an idle agent does not need them:
//!
//! - the allocator's free memory: glibc keeps freed blocks in its arenas
//!   for reuse and returns little to the system on its own (a 5,000
//!   customer cache load leaves some 20 MiB free in them);
//! - the pages of the binary that ran: the kernel keeps every page of code
//!   and constant data that was touched mapped (with large read-ahead and
//!   large folios, nearly the whole binary after the start), although an
//!   idle agent runs a sliver of it.
//!
//! So [`run`] watches the process's CPU time: once a busy spell is
//! followed by a quiet interval, it calls [`trim`] once: `malloc_trim`
//! hands the free memory back, and `MADV_PAGEOUT` on the binary's own
//! read-only mappings lets the kernel drop its clean code pages (they are
//! read back from the file if that code runs again, as at any program's
//! start; pages other processes also map are left alone). Nothing is
//! trimmed while the agent works, and an idle agent checks its CPU clock
//! once every [`CHECK_EVERY`], nothing more.

use std::future::Future;
use std::time::Duration;

/// How often the CPU clock is read.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(15);
/// CPU time within one check interval below which the agent is quiet.
const QUIET_CPU: Duration = Duration::from_millis(20);

/// Trims after every busy spell, once the agent is quiet, until
/// `shutdown` completes. The start counts as a busy spell.
pub(crate) async fn run(shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut last = cpu_time();
    if last.is_none() {
        return; // no CPU clock here (Windows): nothing to go by, nothing to trim
    }
    let mut busy = true;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let (Some(now), Some(before)) = (cpu_time(), last) else {
            return;
        };
        if now.saturating_sub(before) >= QUIET_CPU {
            busy = true;
        } else if busy {
            let freed = trim();
            tracing::debug!(
                heap_trimmed = freed.heap,
                code_paged_out_kib = freed.code_bytes / 1024,
                "quiet after work: memory given back"
            );
            busy = false;
        }
        // The trim's own CPU does not count as work.
        last = cpu_time();
    }
}

/// What one [`trim`] gave back.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Trimmed {
    /// The allocator returned memory to the system.
    pub(crate) heap: bool,
    /// Bytes of the binary's mappings advised out.
    pub(crate) code_bytes: usize,
}

/// Returns the allocator's free memory and advises the kernel to drop the
/// binary's code pages now. Safe at any time; costs a few milliseconds.
pub(crate) fn trim() -> Trimmed {
    Trimmed {
        heap: trim_heap(),
        code_bytes: page_out_binary(),
    }
}

/// The process's user + system CPU time.
fn cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a whole rusage into the pointer it gets.
        let usage = unsafe {
            if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
                return None;
            }
            usage.assume_init()
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        Some(tv(usage.ru_utime) + tv(usage.ru_stime))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Fewer malloc arenas (glibc makes up to 8 per core, one per thread that
/// meets contention): the agent's few threads share two, so memory freed
/// by one is reused by the others instead of sitting in an arena of its
/// own. Call before any thread starts.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim walks glibc's own arenas under their locks.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// `MADV_PAGEOUT` on the read-only mappings of our own executable (code,
/// constants); returns their size. Linux 5.4 and later; earlier kernels
/// refuse the advice, which changes nothing.
fn page_out_binary() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
            return 0;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let mut bytes = 0;
        for (start, end) in readonly_mappings_of(&maps, &exe.to_string_lossy()) {
            // SAFETY: advice on whole mappings of our own file: the pages
            // stay valid and are read back on the next access.
            let r = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT)
            };
            if r == 0 {
                bytes += end - start;
            }
        }
        bytes
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The (start, end) of the mappings of `path` in /proc/self/maps that are
/// not writable.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn readonly_mappings_of(maps: &str, path: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            // offset, device, inode, then the path (which may hold spaces).
            let rest: Vec<&str> = f.skip(3).collect();
            if rest.join(" ") != path || perms.contains('w') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_binarys_read_only_mappings_are_chosen() {
        let maps = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:00 42 /opt/pos connector/bin
55d0c0100000-55d0c0900000 r-xp 00100000 fe:00 42 /opt/pos connector/bin
55d0c0900000-55d0c0950000 rw-p 00900000 fe:00 42 /opt/pos connector/bin
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 r-xp 00000000 fe:00 7 /usr/lib/libc.so.6
7f0000200000-7f0000300000 r-xp 00000000 fe:00 43 /opt/pos connector/bin.old
";
        assert_eq!(
            readonly_mappings_of(maps, "/opt/pos connector/bin"),
            vec![
                (0x55d0c0000000, 0x55d0c0100000),
                (0x55d0c0100000, 0x55d0c0900000)
            ]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn trimming_is_safe_and_the_code_still_runs() {
        let t = trim();
        assert!(t.code_bytes > 0, "{t:?}");
        // The code paged out is read back when it runs again.
        assert_eq!(readonly_mappings_of("", "x"), vec![]);
        assert!(cpu_time().is_some());
    }
}
