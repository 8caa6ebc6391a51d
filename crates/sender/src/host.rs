//! The audio host live input uses (`send --host`): ALSA by default on Linux, or JACK in a build
//! with the `jack` feature (cpal's JACK host, which reaches a JACK graph without ALSA's extra
//! buffer). Chosen once per process, before any input device is opened; [`crate::capture`]
//! finds its devices through [`host`].

use std::sync::OnceLock;

use crate::error::{Error, Result};

static HOST: OnceLock<cpal::HostId> = OnceLock::new();

/// The audio hosts this build knows, by name.
pub fn host_names() -> Vec<&'static str> {
    cpal::ALL_HOSTS.iter().map(|h| h.name()).collect()
}

/// Chooses the audio host by name (case-insensitive) for the rest of the process. Choosing the
/// same host again is fine; another one is refused.
pub fn select_host(name: &str) -> Result<()> {
    let want = name.trim().to_lowercase();
    let Some(id) = cpal::ALL_HOSTS
        .iter()
        .copied()
        .find(|h| h.name().to_lowercase() == want)
    else {
        let hint = if want == "jack" {
            " (this audiowire was built without JACK: build it with `--features jack`, which \
             needs libjack's headers, e.g. Debian's libjack-jackd2-dev)"
        } else {
            ""
        };
        return Err(Error::Input(format!(
            "no audio host \"{name}\"{hint}; this build has: {}",
            host_names().join(", ")
        )));
    };
    let chosen = *HOST.get_or_init(|| id);
    if chosen != id {
        return Err(Error::Input(format!(
            "the audio host is already {}, cannot switch to {}",
            chosen.name(),
            id.name()
        )));
    }
    Ok(())
}

/// The audio host: the one [`select_host`] chose, or cpal's default.
pub fn host() -> Result<cpal::Host> {
    match HOST.get() {
        None => Ok(cpal::default_host()),
        Some(&id) => cpal::host_from_id(id)
            .map_err(|e| Error::Input(format!("the {} host is unavailable: {e}", id.name()))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn unknown_hosts_are_refused_with_the_list() {
        let e = select_host("nosuchhost").unwrap_err().to_string();
        assert!(
            e.contains("nosuchhost") && e.contains("this build has"),
            "{e}"
        );
        assert!(!host_names().is_empty());
    }
}
