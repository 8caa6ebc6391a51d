//! `audiowire netsim`: the network simulator's command line. Parses the impairment options over a
//! named profile, starts a UDP or TCP relay from the `audiowire-netsim` crate, says what it
//! simulates, and prints its counters when Ctrl-C stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Result, bail};
use audiowire_netsim::{
    Config, GilbertElliott, Lateness, Loss, Profile, RateLimit, RelayConfig, TcpRelay, UdpRelay,
};
use tracing::{info, warn};

/// Relay UDP (or TCP) between two addresses through a simulated network.
#[derive(Debug, clap::Args)]
pub struct NetsimArgs {
    /// Address to listen on, HOST:PORT (port 0 picks a free one; the log says which).
    #[arg(long)]
    pub listen: String,
    /// Address to relay to, HOST:PORT.
    #[arg(long)]
    pub forward: String,
    /// Relay TCP connections instead of UDP datagrams: delay, jitter and rate apply, loss,
    /// reordering and duplication do not, and bytes are never reordered.
    #[arg(long)]
    pub tcp: bool,
    /// Start from a named network: clean, lan, wifi or internet. Options below override its
    /// values.
    #[arg(long, default_value = "clean", value_parser = parse_profile)]
    pub profile: Profile,
    /// One-way delay added each way (e.g. 20ms, 0.5ms, 1s; a bare number is milliseconds).
    #[arg(long, value_parser = parse_time)]
    pub delay: Option<Duration>,
    /// Jitter: each packet's delay is drawn uniformly from delay ± jitter (never below 0).
    #[arg(long, value_parser = parse_time)]
    pub jitter: Option<Duration>,
    /// Share of packets lost each way (e.g. 5% or 5; random unless --burst is given).
    #[arg(long, value_parser = parse_share)]
    pub loss: Option<f64>,
    /// Lose packets in bursts of this many on average (Gilbert–Elliott), at the --loss average.
    #[arg(long, value_name = "LEN", value_parser = parse_burst)]
    pub burst: Option<f64>,
    /// Share of packets held back so later ones overtake them (e.g. 1%).
    #[arg(long, value_parser = parse_share)]
    pub reorder: Option<f64>,
    /// How long a reordered packet is held back [default: 20ms].
    #[arg(long, value_parser = parse_time)]
    pub reorder_delay: Option<Duration>,
    /// Share of packets delivered twice (e.g. 0.5%).
    #[arg(long, value_parser = parse_share)]
    pub duplicate: Option<f64>,
    /// Rate limit each way (e.g. 2mbit, 500kbit, 64000 for bit/s).
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// With --rate: bytes that may wait for the link before packets are dropped (default: 100 ms
    /// at the rate).
    #[arg(long, value_name = "BYTES", requires = "rate")]
    pub queue: Option<u64>,
    /// Never let jitter reorder packets (delays bunch up instead).
    #[arg(long)]
    pub keep_order: bool,
    /// Seed of every random decision: the same seed and traffic give the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The impairments of one direction: the profile's, then each option given.
pub fn config(args: &NetsimArgs) -> Result<Config> {
    let mut c = args.profile.config();
    if let Some(d) = args.delay {
        c.delay = d;
    }
    if let Some(j) = args.jitter {
        c.jitter = j;
    }
    if args.loss.is_some() || args.burst.is_some() {
        let average = args.loss.unwrap_or_else(|| c.loss.average());
        let burst = args.burst.or(match c.loss {
            Loss::Bursty(ge) => Some(ge.mean_bad_run()),
            _ => None,
        });
        c.loss = match burst {
            Some(_) if average == 0.0 && args.burst.is_some() => {
                bail!("--burst shapes losses: give a --loss too (or a profile with loss)")
            }
            Some(b) if average > 0.0 => Loss::Bursty(GilbertElliott::from_average(average, b)?),
            _ if average > 0.0 => Loss::Random(average),
            _ => Loss::None,
        };
    }
    if let Some(r) = args.reorder {
        c.reorder = r;
    }
    if let Some(d) = args.reorder_delay {
        c.reorder_delay = d;
    }
    if let Some(d) = args.duplicate {
        c.duplicate = d;
    }
    if let Some(bps) = args.rate {
        let mut rate = RateLimit::new(bps);
        if let Some(q) = args.queue {
            rate.queue_bytes = q;
        }
        c.rate = Some(rate);
    }
    c.keep_order |= args.keep_order;
    c.seed = args.seed;
    c.validate()?;
    Ok(c)
}

/// Runs the relay until `shutdown` is set, then prints its counters on stdout.
pub fn run(args: &NetsimArgs, shutdown: &AtomicBool) -> Result<()> {
    let config = config(args)?;
    let relay_config = RelayConfig::symmetric(config.clone());
    let what = |c: &Config| format!("{c} each way (profile {}, seed {})", args.profile, c.seed);
    if args.tcp {
        let stream = config.for_stream();
        if config.loss.average() > 0.0 || config.reorder > 0.0 || config.duplicate > 0.0 {
            warn!("loss, reordering and duplication do not apply to TCP: ignored");
        }
        let relay = TcpRelay::start(&args.listen, &args.forward, relay_config)?;
        info!(
            "relaying tcp {} -> {}: {}; Ctrl-C stops",
            relay.local_addr(),
            relay.forward_addr(),
            what(&stream)
        );
        wait(shutdown);
        let late = relay.lateness();
        println!("netsim tcp: {}", relay.stop());
        print_lateness(&late);
    } else {
        let relay = UdpRelay::start(&args.listen, &args.forward, relay_config)?;
        info!(
            "relaying udp {} -> {}: {}; Ctrl-C stops",
            relay.local_addr(),
            relay.forward_addr(),
            what(&config)
        );
        wait(shutdown);
        let late = relay.lateness();
        println!("netsim udp: {}", relay.stop());
        print_lateness(&late);
    }
    Ok(())
}

/// Says how late the relay itself sent what it relayed: this machine's delays, on top of the
/// profile's, which a player's figures then include.
fn print_lateness((up, down): &(Lateness, Lateness)) {
    println!("netsim timing: upstream {up}; downstream {down}");
    if up.late + down.late > 0 {
        warn!(
            "this machine held up the relay {} times by {} ms or more (worst {:.1} ms): the network was that much worse than the profile",
            up.late + down.late,
            audiowire_netsim::relay::LATE.as_millis(),
            up.worst.max(down.worst).as_secs_f64() * 1e3
        );
    }
}

/// Waits for Ctrl-C; the relay's own threads do the work.
fn wait(shutdown: &AtomicBool) {
    while !shutdown.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50));
    }
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse()
        .map_err(|e: audiowire_netsim::Error| e.to_string())
}

/// Parses `20ms`, `0.5ms`, `500us`, `1s`, or a bare number of milliseconds, from 0 to 60 s.
fn parse_time(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t.as_str(), 1e-3)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale <= 60.0 => {
            Ok(Duration::from_secs_f64(v * scale))
        }
        _ => Err(format!(
            "\"{s}\" is not a time between 0 and 60 s (write 20ms, 500us or 0.5s)"
        )),
    }
}

/// Parses `5%`, `0.5%` or a bare `5` (percent) into a share from 0 to 1.
fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let num = t.strip_suffix('%').unwrap_or(t);
    match num.trim().parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!(
            "\"{s}\" is not a percentage between 0 and 100 (write 5% or 0.5%)"
        )),
    }
}

fn parse_burst(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!(
            "\"{s}\" is not a mean burst length (a number of packets, at least 1)"
        )),
    }
}

/// Parses `2mbit`, `500kbit`, `1gbit`, `2mbit/s`, `64000` (bit/s); decimal units, as `tc` counts.
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").unwrap_or(&t);
    let t = t.strip_suffix("bit").unwrap_or(t);
    let (num, scale) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v * scale >= 1.0 && v * scale <= 1e12 => {
            Ok((v * scale).round() as u64)
        }
        _ => Err(format!(
            "\"{s}\" is not a rate (write 2mbit, 500kbit or 64000 for bit/s)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: NetsimArgs,
    }

    fn parse(extra: &[&str]) -> Result<Config> {
        let mut argv = vec!["x", "--listen", "127.0.0.1:0", "--forward", "127.0.0.1:1"];
        argv.extend_from_slice(extra);
        let w = Wrapper::try_parse_from(argv)?;
        config(&w.args)
    }

    #[test]
    fn units_parse() {
        assert_eq!(parse_time("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_time("0.5ms"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_time("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_time("0"), Ok(Duration::ZERO));
        assert_eq!(parse_time("2"), Ok(Duration::from_millis(2)));
        assert!(parse_time("-1ms").is_err());
        assert!(parse_time("soon").is_err());
        assert_eq!(parse_share("5%"), Ok(0.05));
        assert_eq!(parse_share("0.5%"), Ok(0.005));
        assert_eq!(parse_share("100"), Ok(1.0));
        assert!(parse_share("120%").is_err());
        assert_eq!(parse_rate("2mbit"), Ok(2_000_000));
        assert_eq!(parse_rate("1.5Mbit"), Ok(1_500_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("64000"), Ok(64_000));
        assert_eq!(parse_rate("10mbit/s"), Ok(10_000_000));
        // tc reads "mbps" as megabytes per second: ambiguous, refused.
        assert!(parse_rate("10mbps").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn options_override_the_profile() {
        let c = parse(&["--profile", "wifi"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, Profile::Wifi.config());
        let c = parse(&["--profile", "wifi", "--delay", "8ms", "--seed", "9"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.delay, c.jitter, c.loss, c.seed),
            (
                Duration::from_millis(8),
                Duration::from_millis(10),
                Loss::Random(0.01),
                9
            )
        );
        // --loss on a bursty profile keeps its burst length.
        let c = parse(&["--profile", "internet", "--loss", "5%"]).unwrap_or_else(|e| panic!("{e}"));
        let Loss::Bursty(ge) = c.loss else {
            panic!("{:?}", c.loss)
        };
        assert!(
            (ge.average_loss() - 0.05).abs() < 1e-12 && (ge.mean_bad_run() - 2.0).abs() < 1e-12
        );
        // --burst on a random-loss profile makes its loss bursty.
        let c = parse(&["--profile", "wifi", "--burst", "4"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(c.loss, Loss::Bursty(ge) if (ge.mean_bad_run() - 4.0).abs() < 1e-12));
        let c = parse(&["--loss", "0"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.loss, Loss::None);
        let c = parse(&[
            "--rate",
            "2mbit",
            "--queue",
            "5000",
            "--reorder",
            "1%",
            "--duplicate",
            "0.5%",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.rate,
            Some(RateLimit {
                bits_per_sec: 2_000_000,
                queue_bytes: 5000
            })
        );
        assert_eq!((c.reorder, c.duplicate), (0.01, 0.005));
    }

    #[test]
    fn impossible_combinations_fail() {
        // Caught by the model: one line each.
        for (bad, expect) in [
            (
                &["--burst", "3"][..],
                "--burst shapes losses: give a --loss too",
            ),
            (
                &["--loss", "60%", "--burst", "1"],
                "invalid loss: 60 % cannot come in bursts of 1",
            ),
        ] {
            let e = parse(bad)
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(e.starts_with(expect) && !e.contains('\n'), "{bad:?}: {e:?}");
        }
        // Caught by clap, which explains with its usage line.
        assert!(parse(&["--queue", "100"]).is_err());
        assert!(parse(&["--profile", "dialup"]).is_err());
    }
}
