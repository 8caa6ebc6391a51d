#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/TARGET/seed-*.

Seeds are small valid (and a few almost valid) inputs, written from docs/protocol.md by hand so
they do not depend on the code under test. Run it again after changing the protocol; the fuzzer
adds what it finds to a temporary corpus (see docs/fuzzing.md), not to this one.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def s(text):
    b = text.encode()
    return struct.pack(">H", len(b)) + b


def env(tag, body=b""):
    return bytes([1, tag]) + body


def frame(payload):
    return struct.pack(">Q", len(payload)) + payload


HELLO = env(0x01, struct.pack(">H", 1) + s("audiowire-play/0.1.0") + struct.pack(">H", 1) + s("preroll-ms") + s("50"))
HELLO_COOKIE = env(0x01, struct.pack(">H", 1) + s("p") + struct.pack(">H", 2) + s("preroll-ms") + s("20") + s("cookie") + s("00112233aabbccdd"))
INFO = env(0x02, struct.pack(">IHBBIBQ", 48000, 2, 2, 0, 480, 1, 48000))
INFO_LIVE = env(0x02, struct.pack(">IHBBIBQ", 44100, 1, 3, 0, 441, 0, 0))
AUDIO = env(0x03, struct.pack(">QQQ", 7, 3360, 1763712000070000) + bytes.fromhex("1000f0ff2000e0ff"))
END = env(0x04, struct.pack(">Q", 3360))
ERROR = env(0x05, struct.pack(">H", 2) + s("bad message"))
ECHO = env(0x10, b"hello")
PING = env(0x11, struct.pack(">QQ", 1, 2))
PONG = env(0x12, struct.pack(">QQQQ", 1, 2, 3, 4))
STRUCT = env(0x13, s("!H") + b"\x12\x34")
LINES_HELLO = env(0x14, struct.pack(">QQ", 0xABC, 3))
LINES_RESUME = env(0x15, struct.pack(">Q", 5))
LINE = env(0x16, struct.pack(">QB", 4, 0) + b"a line")
LINES_ACK = env(0x17, struct.pack(">Q", 5))
COOKIE = env(0x20, struct.pack(">Q", 0x1122334455667788))
REPORT = env(0x21, struct.pack(">QQQQIII", 100, 2, 1, 3, 1500, 40000, 50000))
BYE = env(0x22)

MESSAGES = {
    "hello": HELLO, "hello-cookie": HELLO_COOKIE, "info": INFO, "info-live": INFO_LIVE,
    "audio": AUDIO, "end": END, "error": ERROR, "echo": ECHO, "ping": PING, "pong": PONG,
    "struct": STRUCT, "lines-hello": LINES_HELLO, "lines-resume": LINES_RESUME, "line": LINE,
    "lines-ack": LINES_ACK, "cookie": COOKIE, "report": REPORT, "bye": BYE,
}


def wav(tag, channels, rate, bits, data, extensible_sub=None, extra_chunk=b""):
    block = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    if extensible_sub is not None:
        guid = struct.pack("<H", extensible_sub) + bytes.fromhex("000000001000800000aa00389b71")
        fmt += struct.pack("<HHI", 22, bits, (1 << channels) - 1) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra_chunk
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    for name, m in MESSAGES.items():
        write("message_decode", name, m)
    for name in ["hello", "hello-cookie", "report", "bye", "ping", "echo", "audio", "info"]:
        write("udp_datagram", name, frame(MESSAGES[name]))
    write("udp_datagram", "short-header", struct.pack(">Q", 40) + PING)
    # frame_decoder: [max u16][split seed][stream]
    fd = lambda mx, seed, stream: struct.pack(">HB", mx, seed) + stream
    write("frame_decoder", "hello-audio", fd(1024, 3, frame(HELLO) + frame(AUDIO)))
    write("frame_decoder", "empty-frames", fd(0, 0, frame(b"") + frame(b"")))
    write("frame_decoder", "at-max", fd(4, 1, frame(b"abcd") + frame(b"abcde")))
    write("frame_decoder", "huge-header", fd(65535, 9, struct.pack(">Q", 2**64 - 1) + b"x"))
    write("frame_decoder", "cut-header", fd(100, 5, frame(PING)[:5]))
    # pystruct: [format length][format][record]
    ps = lambda f, rec: bytes([len(f)]) + f.encode() + rec
    write("pystruct", "net", ps("!I30sd", struct.pack("!I30sd", 3, b"hello", 0.5)))
    write("pystruct", "native", ps("@bhilqnNP?e", struct.pack("@bhilqnNP?e", -1, 2, -3, 4, -5, 6, 7, 8, True, 1.5)))
    write("pystruct", "pascal", ps("<5p3s", struct.pack("<5p3s", b"abc", b"xyz")))
    write("pystruct", "pad", ps("=cxxH 2e f d", struct.pack("=cxxH2efd", b"z", 513, 0.25, -2.0, 3.5, 1e300)))
    write("pystruct", "count-space", ps("!3 H", b""))
    write("pystruct", "big-count", ps(">70000s", b""))
    # wav_source: small files of every sample format the sender reads, and near misses.
    write("wav_source", "u8-mono", wav(1, 1, 8000, 8, bytes(range(128, 160))))
    write("wav_source", "s16-stereo", wav(1, 2, 48000, 16, struct.pack("<8h", 16, -16, 32, -32, 1, 2, 3, 4)))
    write("wav_source", "s24-stereo", wav(1, 2, 44100, 24, bytes(range(24))))
    write("wav_source", "s32-mono", wav(1, 1, 96000, 32, struct.pack("<4i", 1, -1, 2**31 - 1, -2**31)))
    write("wav_source", "f32-stereo", wav(3, 2, 32000, 32, struct.pack("<4f", 0.5, -0.5, 1.0, -1.0)))
    write("wav_source", "ext-s16-4ch", wav(0xFFFE, 4, 48000, 16, bytes(32), extensible_sub=1))
    write("wav_source", "list-chunk", wav(1, 1, 22050, 16, bytes(10), extra_chunk=b"LIST" + struct.pack("<I", 4) + b"INFO"))
    write("wav_source", "truncated", wav(1, 1, 8000, 16, bytes(20))[:-7])
    write("wav_source", "zero-channels", wav(1, 0, 8000, 16, b""))


if __name__ == "__main__":
    main()
