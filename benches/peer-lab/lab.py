#!/usr/bin/python3
"""audiowire's peer lab: black-box, sample-synchronous mouth-to-ear latency on one JACK server.

One JACK client, "awlab", is both the microphone and the speaker of the tool under test:
its output port awlab:mic plays a test signal (a quiet 1 kHz tone for 20 s, and 40 clicks of
1 ms, one every 500 ms), and its input ports awlab:spk and awlab:spk2 take the receiver's
output. Both are handled in the same process callback, so the two channels share one sample
clock: the delay of each click, speaker minus microphone, is exact to the sample, whatever the
tool does inside. Glitches are 10 ms blocks of the tone that are missing or distorted against
the microphone shifted by the measured delay. CPU is utime + stime of each side's processes per
second of audio, from /proc/PID/stat.

    lab.py measure NAME --proc S:'sender command' --proc R:'receiver command' \
        --src 'regex of the sender's JACK input ports' --spk 'regex of the receiver's output ports'
    lab.py table results.jsonl            # a Markdown table of every run

Needs Debian's python3-jack-client and python3-numpy, and a running JACK server
(JACK_DEFAULT_SERVER names it). run.sh starts one and measures every tool.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import jack

RATE = 48000
TONE_START, TONE_END = 0.5, 20.5          # seconds of the signal holding the tone
CLICKS = [0.75 + 0.5 * k for k in range(40)]
CLICK_LEN = 48                             # 1 ms
TICKS = os.sysconf('SC_CLK_TCK')


def test_signal():
    """The microphone's signal: tone + clicks, and the clicks' sample indices."""
    n = int(21.0 * RATE)
    t = np.arange(n) / RATE
    x = np.zeros(n, np.float32)
    s0, s1 = int(TONE_START * RATE), int(TONE_END * RATE)
    x[s0:s1] = 0.1 * np.sin(2 * np.pi * 1000 * t[s0:s1])
    clicks = [int(c * RATE) for c in CLICKS]
    for c in clicks:
        x[c:c + CLICK_LEN] += 0.8
    return x, clicks, s0, s1


def cpu_ticks(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            s = f.read()
        fields = s[s.rindex(')') + 2:].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


def descendants(pid):
    """pid and every process below it."""
    parents = {}
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                with open(f'/proc/{p}/stat') as f:
                    s = f.read()
                parents.setdefault(int(s[s.rindex(')') + 2:].split()[1]), []).append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo += parents.get(q, [])
    return out


def loadavg():
    """The 1-minute load average: how busy the machine was (others' work makes xruns)."""
    try:
        with open('/proc/loadavg') as f:
            return float(f.read().split()[0])
    except (OSError, ValueError):
        return None


def connected(client, port):
    """Names of the ports connected to `port`."""
    return [p.name for p in client.get_all_connections(port)]


def analyze(rec, clicks, s0, s1):
    """Click delays and glitches from the recording (columns: mic, spk, spk2)."""
    mic, spk = rec[:, 0].astype(np.float64), rec[:, 1].astype(np.float64)
    above = np.nonzero(np.abs(spk) > 0.05)[0]
    if len(above) == 0:
        return {'error': 'nothing reached the speaker'}
    res = {'coarse_ms': round((above[0] - s0) / RATE * 1000, 2)}
    expect = above[0] - s0
    delays, missing = [], []
    for k, c in enumerate(clicks):
        lo = max(0, c + expect - int(0.12 * RATE))
        hi = min(len(spk), c + expect + int(0.25 * RATE))
        seg = np.abs(spk[lo:hi])
        if len(seg) == 0 or seg.max() < 0.3:
            missing.append(k)
            continue
        onset = lo + int(np.argmax(seg >= 0.5 * seg.max()))
        delays.append((k, onset - c))
        expect = onset - c
    res['clicks_found'] = len(delays)
    res['missing'] = missing
    if not delays:
        return res
    d_ms = np.array([d for _, d in delays]) / RATE * 1000
    res.update(median_ms=round(float(np.median(d_ms)), 2),
               p95_ms=round(float(np.percentile(d_ms, 95)), 2),
               min_ms=round(float(d_ms.min()), 2), max_ms=round(float(d_ms.max()), 2))
    # Glitches: 10 ms blocks of tone (away from the clicks), compared with the microphone
    # shifted by the delay interpolated between clicks, at the best lag within ±1 ms.
    block = RATE // 100
    at = np.array([clicks[k] for k, _ in delays])
    dk = np.array([d for _, d in delays], np.float64)
    cl = np.array(clicks)
    gain_blocks, bad, gaps = [], [], []
    starts = list(range(s0 + 2400, s1 - 2400, block))
    for st in starts:
        if np.min(np.abs(cl - st)) < 1200 or np.min(np.abs(cl - (st + block))) < 1200:
            continue
        d = int(np.interp(st, at, dk))
        ref = mic[st:st + block]
        y0 = st + d
        if y0 - 48 < 0 or y0 + block + 48 > len(spk):
            bad.append(st)
            continue
        ys = spk[y0 - 48:y0 + block + 48]
        cc = np.correlate(ys, ref, 'valid')
        j = int(np.argmax(cc))
        y = ys[j:j + block]
        rr = np.sqrt(np.mean(ref ** 2))
        g = float(np.dot(y, ref) / (np.dot(ref, ref) + 1e-12))
        gain_blocks.append(g)
        if np.sqrt(np.mean(spk[y0:y0 + block] ** 2)) < 0.4 * rr:
            gaps.append(st)
        resid = np.sqrt(np.mean((y - g * ref) ** 2)) / (abs(g) * rr + 1e-12)
        if resid > 0.5 or g < 0.3:
            bad.append(st)
    res['gain'] = round(float(np.median(gain_blocks)), 3) if gain_blocks else None
    res['blocks_checked'] = len(gain_blocks)
    res['gap_blocks'] = len(gaps)
    res['bad_blocks'] = len(set(bad) | set(gaps))
    res['bad_block_times_s'] = [round(b / RATE, 2) for b in sorted(set(bad) | set(gaps))[:10]]
    res['clean'] = not missing and res['bad_blocks'] == 0
    return res


def measure(a):
    x, clicks, s0, s1 = test_signal()
    n = len(x) + int(a.tail * RATE)
    sig = np.zeros(n, np.float32)
    sig[:len(x)] = x
    rec = np.zeros((n, 3), np.float32)
    st = {'run': False, 'done': False, 'pos': 0, 'xruns': 0}

    client = jack.Client('awlab', no_start_server=True)
    mic = client.outports.register('mic')
    spk = client.inports.register('spk')
    spk2 = client.inports.register('spk2')

    @client.set_process_callback
    def process(frames):
        o = mic.get_array()
        if not st['run']:
            o[:] = 0
            return
        p = st['pos']
        k = min(frames, n - p)
        o[:k] = sig[p:p + k]
        o[k:] = 0
        rec[p:p + k, 0] = o[:k]
        rec[p:p + k, 1] = spk.get_array()[:k]
        rec[p:p + k, 2] = spk2.get_array()[:k]
        st['pos'] = p + k
        if st['pos'] >= n:
            st['run'] = False
            st['done'] = True

    @client.set_xrun_callback
    def xrun(delay):
        st['xruns'] += 1

    client.activate()
    logdir = os.path.join(a.dir, 'logs', a.name)
    os.makedirs(logdir, exist_ok=True)
    procs = []
    try:
        for i, spec in enumerate(a.proc):
            role, cmd = spec.split(':', 1)
            log = open(os.path.join(logdir, f'{i}-{role}.log'), 'w')
            p = subprocess.Popen(['bash', '-c', 'exec ' + cmd], stdout=log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, cwd=a.dir)
            procs.append((role, p, cmd))
            time.sleep(a.gap)
        time.sleep(a.warmup)

        def connect(src, dst):
            try:
                client.connect(src, dst)
            except jack.JackError as e:
                print(f'cannot connect {src} -> {dst}: {e}', file=sys.stderr)

        # Tools that connect themselves (ALSA's jack plugin) are already connected.
        for p in client.get_ports(is_input=True, is_audio=True):
            if re.search(a.src, p.name) and p.name not in connected(client, 'awlab:mic'):
                connect('awlab:mic', p.name)
        if not connected(client, 'awlab:spk'):
            outs = [p.name for p in client.get_ports(is_output=True, is_audio=True)
                    if re.search(a.spk, p.name)]
            for src, dst in zip(outs, ['awlab:spk', 'awlab:spk2']):
                connect(src, dst)
        time.sleep(0.5)
        fed = connected(client, 'awlab:mic')
        outs = connected(client, 'awlab:spk') + connected(client, 'awlab:spk2')
        if not fed or not outs:
            ports = [p.name for p in client.get_ports(is_audio=True)]
            raise RuntimeError(f'ports not found (fed {fed}, speaker {outs}); JACK has {ports}')
        pids = {r: [q for rr, p, _ in procs if rr == r for q in descendants(p.pid)] for r in 'SR'}
        c0 = {r: sum(cpu_ticks(q) for q in pids[r]) for r in 'SR'}
        x0 = st['xruns']
        t0 = time.monotonic()
        st['run'] = True
        c1, t1 = None, None
        deadline = t0 + n / RATE + 10
        while not st['done'] and time.monotonic() < deadline:
            time.sleep(0.05)
            if c1 is None and st['pos'] >= s1:
                t1 = time.monotonic()
                c1 = {r: sum(cpu_ticks(q) for q in pids[r]) for r in 'SR'}
        if c1 is None:
            raise RuntimeError('the JACK server stopped running the lab client')
        alive = {f'{r}{i}': p.poll() is None for i, (r, p, _) in enumerate(procs)}
        wall = t1 - t0
        res = {'name': a.name, 'cmds': [c for _, _, c in procs], 'loadavg': loadavg(),
               'cpu_per_s_audio': {r: round((c1[r] - c0[r]) / TICKS / wall, 4) for r in 'SR'},
               'wall_s': round(wall, 2), 'xruns': st['xruns'] - x0, 'alive_at_end': alive,
               'fed': fed, 'speaker': outs[:2]}
    except Exception as e:  # a tool that failed to start is a result too
        res = {'name': a.name, 'cmds': [c for _, _, c in procs], 'loadavg': loadavg(), 'error': str(e)}
    finally:
        for _, p, _ in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for _, p, _ in reversed(procs):
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        client.deactivate()
        client.close()
    if 'error' not in res:
        res.update(analyze(rec, clicks, s0, s1))
        np.save(os.path.join(logdir, 'recording.npy'), rec)
    res['label'] = a.label or a.name
    res['group'] = a.group
    print(json.dumps(res))
    with open(os.path.join(a.dir, 'results.jsonl'), 'a') as f:
        f.write(json.dumps(res) + '\n')


def table(a):
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    print('| tool / setting | median ms | p95 ms | min–max ms | clicks | glitches | JACK xruns | load | CPU send / receive (cores) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        if 'error' in r or 'median_ms' not in r:
            print(f"| {r['label']} | — | — | — | {r.get('clicks_found', 0)}/40 | "
                  f"{r.get('error', 'nothing played')} | {r.get('xruns', '—')} | {r.get('loadavg', '—')} | — |")
            continue
        bad = r.get('bad_blocks', 0)
        miss = len(r.get('missing', []))
        glitch = 'clean' if r.get('clean') else f'{bad} bad 10 ms blocks' + (f', {miss} clicks missing' if miss else '')
        cpu = r['cpu_per_s_audio']
        print(f"| {r['label']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['min_ms']:.1f}–{r['max_ms']:.1f} | "
              f"{r['clicks_found']}/40 | {glitch} | {r['xruns']} | {r.get('loadavg', '—')} | {cpu['S']:.3f} / {cpu['R']:.3f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    m = sub.add_parser('measure')
    m.add_argument('name')
    m.add_argument('--label', default='')
    m.add_argument('--group', default='')
    m.add_argument('--proc', action='append', default=[], help='ROLE:command, ROLE S (sender) or R (receiver)')
    m.add_argument('--src', required=True, help="regex of the sender's JACK input ports (fed from awlab:mic)")
    m.add_argument('--spk', required=True, help="regex of the receiver's JACK output ports")
    m.add_argument('--gap', type=float, default=1.0, help='seconds between starting the processes')
    m.add_argument('--warmup', type=float, default=3.0, help='seconds before the ports are connected')
    m.add_argument('--tail', type=float, default=2.0, help='seconds recorded after the signal')
    m.add_argument('--dir', default=os.environ.get('PEERLAB_DIR', 'peer-lab-run'))
    t = sub.add_parser('table')
    t.add_argument('results')
    a = ap.parse_args()
    if a.cmd == 'measure':
        os.makedirs(a.dir, exist_ok=True)
        measure(a)
    else:
        table(a)


if __name__ == '__main__':
    main()
