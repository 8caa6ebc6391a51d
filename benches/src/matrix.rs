//! What the end-to-end bench runs: cells of transport × codec × frame × network × setting.
//!
//! The full matrix is issue 7's: {TCP, UDP} × {PCM, Opus} × {2.5, 5, 10, 20 ms} × {clean, LAN,
//! Wi-Fi, Internet}, at the player's default settings, plus the low-latency cells the targets
//! name. The quick mode is a cross-section that finishes in under two minutes.

use std::fmt;

use audiowire_netsim::Profile;

/// How the stream travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `--transport tcp`.
    Tcp,
    /// `--transport udp`.
    Udp,
}

impl Transport {
    /// As the command line spells it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// The codec on the wire (`send --codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Uncompressed PCM in the file's format.
    Pcm,
    /// Opus at the sender's defaults (64 kbit/s per channel, complexity 10, FEC over UDP).
    Opus,
}

impl Codec {
    /// Its name in the reports, as `send --codec` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcm => "pcm",
            Codec::Opus => "opus",
        }
    }
}

/// The player's latency settings for a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    /// `audiowire play` as shipped: adaptive target from 50 ms, within 20 ms–1 s.
    Default,
    /// `--latency N ms`: the target pinned low, for the lowest-latency cells.
    Pinned(f64),
}

impl Setting {
    /// The player's options for it.
    pub fn args(self) -> Vec<String> {
        match self {
            Setting::Default => Vec::new(),
            Setting::Pinned(ms) => vec!["--latency".into(), format!("{ms}ms")],
        }
    }

    /// Its name in the reports.
    pub fn name(self) -> String {
        match self {
            Setting::Default => "default".into(),
            Setting::Pinned(ms) => format!("pinned {ms} ms"),
        }
    }
}

/// One run of the end-to-end bench.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// TCP or UDP.
    pub transport: Transport,
    /// The codec.
    pub codec: Codec,
    /// `send --frame-ms`.
    pub frame_ms: f64,
    /// The network simulator's profile between them.
    pub network: Profile,
    /// The player's settings.
    pub setting: Setting,
    /// Seconds of audio streamed.
    pub seconds: f64,
}

impl Cell {
    /// A short, unique, file-name-safe label: `udp-pcm-10ms-wifi-default`.
    pub fn label(&self) -> String {
        let setting = match self.setting {
            Setting::Default => "default".to_string(),
            Setting::Pinned(ms) => format!("pinned{ms}ms"),
        };
        format!(
            "{}-{}-{}ms-{}-{setting}",
            self.transport.name(),
            self.codec.name(),
            self.frame_ms,
            self.network.name()
        )
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} ms {} ({}), {} s",
            self.transport.name(),
            self.codec.name(),
            self.frame_ms,
            self.network.name(),
            self.setting.name(),
            self.seconds
        )
    }
}

/// How much to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A cross-section, under two minutes on 2 cores.
    Quick,
    /// The whole matrix (about 20 minutes).
    Full,
}

impl Mode {
    /// Its name in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }

    /// Seconds of audio per cell, unless overridden.
    pub fn default_seconds(self) -> f64 {
        match self {
            Mode::Quick => 8.0,
            Mode::Full => 20.0,
        }
    }

    /// The cells, each `seconds` long except the loopback target cell (1 ms frames, lowest
    /// setting), which runs 60 s in the full matrix as the target asks.
    pub fn cells(self, seconds: Option<f64>) -> Vec<Cell> {
        let secs = seconds.unwrap_or(self.default_seconds());
        let cell = |transport, codec, frame_ms, network, setting| Cell {
            transport,
            codec,
            frame_ms,
            network,
            setting,
            seconds: secs,
        };
        let mut cells = Vec::new();
        match self {
            Mode::Quick => {
                for network in Profile::ALL {
                    cells.push(cell(
                        Transport::Udp,
                        Codec::Pcm,
                        10.0,
                        network,
                        Setting::Default,
                    ));
                }
                for network in [Profile::Clean, Profile::Wifi] {
                    cells.push(cell(
                        Transport::Tcp,
                        Codec::Pcm,
                        10.0,
                        network,
                        Setting::Default,
                    ));
                    cells.push(cell(
                        Transport::Udp,
                        Codec::Opus,
                        10.0,
                        network,
                        Setting::Default,
                    ));
                }
            }
            Mode::Full => {
                for transport in [Transport::Tcp, Transport::Udp] {
                    for codec in [Codec::Pcm, Codec::Opus] {
                        for frame_ms in [2.5, 5.0, 10.0, 20.0] {
                            for network in Profile::ALL {
                                cells.push(cell(
                                    transport,
                                    codec,
                                    frame_ms,
                                    network,
                                    Setting::Default,
                                ));
                            }
                        }
                    }
                }
                for codec in [Codec::Pcm, Codec::Opus] {
                    for network in [Profile::Clean, Profile::Lan] {
                        cells.push(cell(
                            Transport::Udp,
                            codec,
                            2.5,
                            network,
                            Setting::Pinned(1.0),
                        ));
                    }
                }
            }
        }
        // The loopback target's cell: 1 ms frames with the player's defaults (its adaptive
        // target goes as low as the output allows; pinning below that only makes it stall).
        let mut target = cell(
            Transport::Udp,
            Codec::Pcm,
            1.0,
            Profile::Clean,
            Setting::Default,
        );
        if self == Mode::Full && seconds.is_none() {
            target.seconds = 60.0;
        }
        cells.push(target);
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_matrix_is_the_issues() {
        let cells = Mode::Full.cells(None);
        let defaults: Vec<_> = cells
            .iter()
            .filter(|c| c.setting == Setting::Default)
            .collect();
        // The matrix, and the 1 ms loopback cell.
        assert_eq!(defaults.len(), 2 * 2 * 4 * 4 + 1);
        let labels: std::collections::HashSet<_> = cells.iter().map(Cell::label).collect();
        assert_eq!(labels.len(), cells.len(), "labels are unique");
        let target = cells.iter().find(|c| c.frame_ms == 1.0).map(|c| c.seconds);
        assert_eq!(target, Some(60.0));
    }

    #[test]
    fn quick_fits_in_two_minutes_of_audio() {
        let cells = Mode::Quick.cells(None);
        let audio: f64 = cells.iter().map(|c| c.seconds).sum();
        // About 1.5 s of start and stop per cell on top of the audio.
        assert!(audio + 1.5 * cells.len() as f64 <= 100.0, "{audio}");
        assert!(cells.iter().all(|c| c.seconds == 8.0));
        assert!(cells.iter().any(|c| c.codec == Codec::Opus));
    }

    #[test]
    fn labels_and_settings() {
        let c = Cell {
            transport: Transport::Udp,
            codec: Codec::Pcm,
            frame_ms: 2.5,
            network: Profile::Wifi,
            setting: Setting::Pinned(1.0),
            seconds: 5.0,
        };
        assert_eq!(c.label(), "udp-pcm-2.5ms-wifi-pinned1ms");
        assert_eq!(Setting::Pinned(1.0).args(), ["--latency", "1ms"]);
        assert!(Setting::Default.args().is_empty());
    }
}
