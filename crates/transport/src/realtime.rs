//! Real-time scheduling for the threads that keep audio on time: the sender's pacing threads,
//! the player's receive loop and its null output's clock.
//!
//! An ordinary thread can be woken milliseconds late on a busy machine, and a stream with a few
//! milliseconds of buffer then runs dry. Like JACK and its clients, audiowire asks the system to
//! run those threads under `SCHED_FIFO` at a modest priority ([`DEFAULT_PRIORITY`], below an
//! audio server's own threads). Where the system refuses (no `rtprio` limit), the threads run as
//! before and the first refusal is returned once so that the caller can say so; `--rt-priority 0`
//! ([`set_priority`]) stops asking. The threads block between their deadlines; none of them
//! spins, so they cannot starve the machine.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::{Error, Result};

/// The `SCHED_FIFO` priority asked for unless [`set_priority`] says otherwise: above every
/// ordinary thread, below JACK's and PipeWire's own (70 and 88 by default).
pub const DEFAULT_PRIORITY: u8 = 20;

static PRIORITY: AtomicU8 = AtomicU8::new(DEFAULT_PRIORITY);
static REFUSAL_REPORTED: AtomicBool = AtomicBool::new(false);
static GRANTED: AtomicBool = AtomicBool::new(false);

/// Sets the priority (1–99, clamped) that [`promote_current_thread`] asks for; 0: never ask.
/// Call it once at start-up, before the audio threads start.
pub fn set_priority(priority: u8) {
    PRIORITY.store(priority.min(99), Ordering::Relaxed);
}

/// The priority [`promote_current_thread`] asks for (0: it does not ask).
pub fn priority() -> u8 {
    PRIORITY.load(Ordering::Relaxed)
}

/// Whether any thread of this process was granted real-time scheduling.
pub fn granted() -> bool {
    GRANTED.load(Ordering::Relaxed)
}

/// Asks for `SCHED_FIFO` at [`priority`] for the calling thread. `Ok(true)`: granted;
/// `Ok(false)`: not asked (priority 0, or not a Unix), or refused again after a refusal that was
/// already returned; `Err`: the first refusal in this process, to be shown to the user once.
pub fn promote_current_thread() -> Result<bool> {
    let priority = priority();
    if priority == 0 {
        return Ok(false);
    }
    match set_fifo(priority) {
        Ok(()) => {
            GRANTED.store(true, Ordering::Relaxed);
            Ok(true)
        }
        Err(reason) if !REFUSAL_REPORTED.swap(true, Ordering::Relaxed) => {
            Err(Error::Realtime { priority, reason })
        }
        Err(_) => Ok(false),
    }
}

#[cfg(unix)]
fn set_fifo(priority: u8) -> std::result::Result<(), String> {
    use thread_priority::{
        RealtimeThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let value = ThreadPriorityValue::try_from(priority).map_err(|e| e.to_string())?;
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .map_err(|e| match e {
        thread_priority::Error::OS(code) => std::io::Error::from_raw_os_error(code).to_string(),
        other => other.to_string(),
    })
}

#[cfg(not(unix))]
fn set_fifo(_priority: u8) -> std::result::Result<(), String> {
    Err("real-time scheduling is only asked for on Unix".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the calling thread's policy and priority back from the kernel.
    #[cfg(target_os = "linux")]
    fn policy_of_this_thread() -> (String, u8) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("own stat");
        // Fields after the command's closing parenthesis: state is field 3; rt_priority is 40
        // and policy 41.
        let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let rt_priority: u8 = fields[40 - 3].parse().expect("rt_priority");
        let policy = match fields[41 - 3] {
            "0" => "other",
            "1" => "fifo",
            "2" => "rr",
            _ => "something else",
        };
        (policy.to_string(), rt_priority)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_promoted_thread_runs_fifo_at_the_priority_or_the_refusal_says_how_to_allow_it() {
        // Each test thread is fresh; the process-wide setting is the default here.
        std::thread::spawn(|| {
            let before = policy_of_this_thread();
            assert_eq!(before, ("other".to_string(), 0));
            match promote_current_thread() {
                Ok(true) => {
                    assert_eq!(
                        policy_of_this_thread(),
                        ("fifo".to_string(), DEFAULT_PRIORITY)
                    );
                    assert!(granted());
                }
                Ok(false) => panic!("the first refusal is returned, not swallowed"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains("real-time priority 20"), "{text}");
                    assert!(text.contains("rtprio"), "{text}");
                    assert_eq!(policy_of_this_thread(), before);
                }
            }
        })
        .join()
        .expect("test thread");
    }
}
