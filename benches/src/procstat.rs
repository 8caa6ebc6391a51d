//! CPU time of a process from `/proc/PID/stat`: user + system time of all its threads, in
//! clock ticks (`USER_HZ`, 100 per second on Linux). A zombie (exited, not yet reaped) still
//! reports its totals, so the runner reads a finished player before it waits for it.

/// Clock ticks per second in `/proc` (`USER_HZ`, fixed at 100 by the Linux ABI).
pub const TICKS_PER_SEC: f64 = 100.0;

/// What the runner needs from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter: `R`, `S`, `D`, `Z` (exited, not reaped), ...
    pub state: char,
    /// utime + stime, in ticks, of every thread.
    pub ticks: u64,
}

impl ProcStat {
    /// CPU seconds.
    pub fn seconds(&self) -> f64 {
        self.ticks as f64 / TICKS_PER_SEC
    }

    /// True once the process has exited.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ... utime (14), stime (15).
    let state = fields.first()?.chars().next()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat {
        state,
        ticks: utime + stime,
    })
}

/// Reads process `pid`'s stat, `None` when it is gone (or this is not Linux).
pub fn read(pid: u32) -> Option<ProcStat> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn parses_a_real_line_with_a_tricky_name() {
        let line = "4242 (audio wire) (x)) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    17 5 0 0 20 0 3 0 123456 1000000 500 18446744073709551615";
        let s = parse(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ticks, 22);
        assert!((s.seconds() - 0.22).abs() < 1e-12);
        assert!(!s.exited());
        assert!(
            parse("12 (zombie) Z 1 0 0 0 0 0 0 0 0 0 40 2")
                .unwrap()
                .exited()
        );
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("1 (x) S 1 2"), None);
        assert_eq!(parse("1 (x) S 1 2 3 4 5 6 7 8 9 u s"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id()).unwrap();
        assert!(!me.exited());
    }
}
