//! The governance thread's CPU priority: below the request workers while it keeps up, normal
//! when it falls behind.
//!
//! The writer's work is small (a few hundred microseconds of SQLite every flush), but on a
//! core shared with a request worker every request in flight waited behind it: at the same
//! priority the scheduler lets the writer finish before a woken worker runs. As `SCHED_IDLE`
//! a waking worker preempts it at once (the kernel always prefers a normal task over an idle
//! one), which took the governed load bench's p99 from +15–20 % to within 5 % of the ungoverned
//! gateway's (docs/BENCHMARKS.md). An idle-class thread only gets ~0.3 % of a core that is kept
//! busy, though: under the saturating load bench its flush tick fires up to a second late and
//! the writer catches up whenever the worker waits for the network. That is harmless (the
//! records wait in memory, budgets count them at once), but not without bound: a writer more
//! than [`MAX_LATENESS`] late, or with more than a quarter of the record bound waiting, returns
//! to `SCHED_OTHER` until it has been on time for a while. Bounded lateness also keeps the key
//! refresh (the same thread) and so revocation within seconds, and bounds what a crash (not a
//! clean stop, which flushes everything) can lose.
//! That return needs the right to raise a priority (`RLIMIT_NICE`, systemd `LimitNICE=+0`, or
//! `CAP_SYS_NICE`); it is tried once on a throwaway thread at start, and without it the writer
//! stays at normal priority all along, never risking starvation. Linux only.

use std::time::Duration;

/// Flushes on time in a row before the writer goes back below the workers.
const ON_TIME_TO_IDLE: u32 = 20;
/// How late a flush may be before the writer returns to normal priority.
pub const MAX_LATENESS: Duration = Duration::from_secs(2);

pub struct WriterPriority {
    /// Whether this thread may switch between the two classes.
    enabled: bool,
    idle: bool,
    on_time: u32,
}

#[cfg(target_os = "linux")]
fn set_policy(policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter block.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

#[cfg(target_os = "linux")]
const IDLE: libc::c_int = libc::SCHED_IDLE;
#[cfg(target_os = "linux")]
const NORMAL: libc::c_int = libc::SCHED_OTHER;

#[cfg(not(target_os = "linux"))]
fn set_policy(_: i32) -> bool {
    false
}
#[cfg(not(target_os = "linux"))]
const IDLE: i32 = 0;
#[cfg(not(target_os = "linux"))]
const NORMAL: i32 = 0;

/// Whether a thread of this process can go idle-class and come back (probed on a thread of
/// its own, so that a failure to come back strands nothing).
pub fn can_switch() -> bool {
    std::thread::Builder::new()
        .name("priority-probe".into())
        .spawn(|| set_policy(IDLE) && set_policy(NORMAL))
        .ok()
        .and_then(|t| t.join().ok())
        .unwrap_or(false)
}

impl WriterPriority {
    /// Call on the writer's thread: goes below the workers when it may come back.
    pub fn start(may_switch: bool) -> WriterPriority {
        let idle = may_switch && set_policy(IDLE);
        if idle {
            log::info!(
                "governance writer runs below the request workers (SCHED_IDLE) while it keeps up"
            );
        } else {
            log::info!(
                "governance writer at normal priority: this process may not raise a thread's priority again \
                 (RLIMIT_NICE / systemd LimitNICE=+0), so it does not lower it"
            );
        }
        WriterPriority {
            enabled: idle,
            idle,
            on_time: 0,
        }
    }

    /// After each flush tick: `lateness` is how long after its due time the tick fired,
    /// `behind` whether too many records wait.
    pub fn after_tick(&mut self, lateness: Duration, behind: bool) {
        if !self.enabled {
            return;
        }
        if lateness > MAX_LATENESS || behind {
            self.on_time = 0;
            if self.idle && set_policy(NORMAL) {
                self.idle = false;
                log::warn!(
                    "governance writer {} ms late: back at normal priority until it keeps up",
                    lateness.as_millis()
                );
            }
        } else if !self.idle {
            self.on_time += 1;
            if self.on_time >= ON_TIME_TO_IDLE && set_policy(IDLE) {
                self.idle = true;
            }
        }
    }

    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.idle
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy() -> libc::c_int {
        // SAFETY: query of the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Where the process may switch back (root, or RLIMIT_NICE), a late tick returns the
    /// writer to normal priority and enough on-time ticks take it below the workers again.
    #[test]
    fn late_ticks_raise_and_on_time_ticks_lower() {
        std::thread::spawn(|| {
            let may = can_switch();
            let mut p = WriterPriority::start(may);
            if !may {
                assert_eq!(
                    policy(),
                    libc::SCHED_OTHER,
                    "never lowered without a way back"
                );
                eprintln!("priority switching not permitted here: only the fallback was tested");
                return;
            }
            assert_eq!(policy(), libc::SCHED_IDLE);
            p.after_tick(Duration::from_millis(900), false);
            assert_eq!(policy(), libc::SCHED_IDLE, "late, within bounds");
            p.after_tick(MAX_LATENESS * 2, false);
            assert_eq!(policy(), libc::SCHED_OTHER);
            for _ in 0..ON_TIME_TO_IDLE {
                p.after_tick(Duration::ZERO, false);
            }
            assert_eq!(policy(), libc::SCHED_IDLE);
            p.after_tick(Duration::ZERO, true);
            assert_eq!(policy(), libc::SCHED_OTHER, "too many records waiting");
            assert!(!p.is_idle());
            for _ in 0..ON_TIME_TO_IDLE - 1 {
                p.after_tick(Duration::ZERO, false);
            }
            assert_eq!(policy(), libc::SCHED_OTHER, "hysteresis");
            p.after_tick(Duration::ZERO, false);
            assert_eq!(policy(), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }
}
