#!/bin/bash
# fake-speaker.sh: a headless, real-time clocked "speaker" for machines without a sound card
# (dev boxes, CI), so tests can drive a real cpal/ALSA output stream and record what it played.
#
# A private PulseAudio daemon (a plain process, no D-Bus/udev) with one null sink `spk` runs in
# DIR; ALSA's default PCM is routed to it by a per-process ALSA config, so cpal's ALSA host sees
# `default` as that sink. `parec` records the sink's monitor. Everything (socket, cookie, config,
# logs) lives in DIR, so parallel runs with different DIRs never collide.
#
# norewinds=1 on the null sink is essential: without it PulseAudio rewinds the sink when a client
# (the ALSA pulse plugin) writes, re-rendering audio the monitor has already recorded, so the
# recording gets chunks twice or with holes. Measured: the 48 kHz sweep comes back bit-exact with
# it, and at 45 dB SNR with errors of ~2000 LSB (of 16384) without it.
#
#   eval "$(scripts/fake-speaker.sh start DIR)"   # start the daemon, print the client's env
#   scripts/fake-speaker.sh record DIR OUT.wav     # record the speaker (48 kHz, 2 ch, s16)
#   scripts/fake-speaker.sh stop DIR               # finalize the recording, stop the daemon
#
# Needs (Debian): apt-get install -y --no-install-recommends \
#   pulseaudio pulseaudio-utils libasound2-plugins alsa-utils
set -euo pipefail

die() { echo "fake-speaker: $*" >&2; exit 1; }
usage() { die "usage: $0 start DIR | record DIR OUT.wav | stop DIR"; }

[ $# -ge 2 ] || usage
CMD=$1
mkdir -p "$2"
D=$(cd "$2" && pwd)
case $D in *"'"*) die "DIR must not contain a single quote: $D" ;; esac

# The client environment, all inside $D.
ENV_NAMES="ALSA_CONFIG_PATH PULSE_SERVER PULSE_CLIENTCONFIG XDG_RUNTIME_DIR XDG_CONFIG_HOME"
export XDG_RUNTIME_DIR=$D/run XDG_CONFIG_HOME=$D/cfg
export PULSE_SERVER=unix:$D/run/pulse/native PULSE_CLIENTCONFIG=$D/client.conf
export ALSA_CONFIG_PATH=/usr/share/alsa/alsa.conf:$D/asound.conf

# True while PID runs (a zombie, left when nobody reaps the orphan, counts as ended) and is the
# program NAME (so a stale pid file never makes us signal an unrelated process).
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && grep -q "$2" "/proc/$1/comm" 2>/dev/null
}

# Sends SIG to the pid in FILE (if NAME still runs there) and waits up to 5 s, then SIGKILL.
end() {
  local file=$1 name=$2 sig=$3 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if alive "$pid" "$name"; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" "$name" || break; sleep 0.05; done
    if alive "$pid" "$name"; then
      echo "fake-speaker: $name ($pid) ignored SIG$sig for 5 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

case $CMD in
start)
  [ $# -eq 2 ] || usage
  for t in pulseaudio parec pactl; do
    command -v "$t" >/dev/null || die "$t not found; install: apt-get install -y" \
      "--no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins alsa-utils"
  done
  compgen -G "/usr/lib*/alsa-lib/libasound_module_pcm_pulse.so" >/dev/null ||
    compgen -G "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so" >/dev/null ||
    die "ALSA's pulse plugin not found; install: apt-get install -y libasound2-plugins"
  [ ${#PULSE_SERVER} -lt 100 ] || die "DIR path too long for a unix socket: $D"
  if [ -f "$D/pa.pid" ] && alive "$(cat "$D/pa.pid")" pulseaudio; then
    die "already running in $D (pid $(cat "$D/pa.pid"))"
  fi
  mkdir -p "$XDG_RUNTIME_DIR" "$XDG_CONFIG_HOME"
  chmod 700 "$D" "$XDG_RUNTIME_DIR" "$XDG_CONFIG_HOME"
  printf 'autospawn = no\n' >"$PULSE_CLIENTCONFIG"
  printf 'pcm.!default { type pulse }\nctl.!default { type pulse }\n' >"$D/asound.conf"
  cat >"$D/fake.pa" <<'PA'
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=spk rate=48000 channels=2 norewinds=1
set-default-sink spk
set-default-source spk.monitor
PA
  # -n: no default.pa. As root PulseAudio only warns. No std streams kept, so a caller reading
  # our stdout to EOF is not held up by the daemon.
  pulseaudio --daemonize=no -n -F "$D/fake.pa" --exit-idle-time=-1 --disallow-exit \
    --use-pid-file=no --log-target=file:"$D/pa.log" </dev/null >"$D/pa.out" 2>&1 &
  echo $! >"$D/pa.pid"
  for _ in $(seq 100); do # up to 5 s
    if timeout 2 pactl info >/dev/null 2>&1; then
      sinks=$(timeout 2 pactl list short sinks 2>/dev/null || true)
      grep -q '^[0-9]*[[:space:]]spk[[:space:]]' <<<"$sinks" || break
      for n in $ENV_NAMES; do printf "export %s='%s'\n" "$n" "${!n}"; done
      exit 0
    fi
    alive "$(cat "$D/pa.pid")" pulseaudio || break
    sleep 0.05
  done
  why=$(tail -q -n 3 "$D/pa.log" "$D/pa.out" 2>/dev/null | tr '\n' ' ' || true)
  end "$D/pa.pid" pulseaudio TERM
  die "PulseAudio did not come up in $D (it exited, or gave no sink spk within 5 s): ${why:-no log}"
  ;;
record)
  [ $# -eq 3 ] || usage
  if ! { [ -f "$D/pa.pid" ] && alive "$(cat "$D/pa.pid")" pulseaudio; }; then
    die "not running in $D; start it first"
  fi
  rm -f "$3"
  parec -d spk.monitor --rate=48000 --channels=2 --format=s16le --latency-msec=10 \
    --file-format=wav "$3" </dev/null >"$D/rec.log" 2>&1 &
  echo $! >"$D/rec.pid"
  ;;
stop)
  [ $# -eq 2 ] || usage
  end "$D/rec.pid" parec INT # SIGINT: parec finalizes the WAV header
  end "$D/pa.pid" pulseaudio TERM
  ;;
*) usage ;;
esac
