"""Ping peers with only socket, struct, sys, json and time.

    ping_peer.py listen
        prints "PORT <port>", accepts one TCP connection, closes it (a host that is up)
    ping_peer.py pong-server OFFSET_US
        prints "PORT <port>", answers framed Ping messages with Pong, its clock read as
        time.time() + OFFSET_US (a machine whose clock is off by that much)
    ping_peer.py ping HOST PORT N
        sends N framed Pings to an audiowire server, checks each Pong, prints JSON:
        {"rtt_us": [...], "offset_us": [...]}

Frames: u64 big-endian length, then version 1, type, body (docs/protocol.md).
Ping (0x11): id u64, t1 u64. Pong (0x12): id, t1, t2, t3, u64 each; times in µs since 1970.
"""
import json
import socket
import struct
import sys
import time

PING, PONG = 0x11, 0x12


def now_us(offset=0):
    return int(time.time() * 1e6) + offset


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_frame(s):
    head = recv_exact(s, 8)
    if head is None:
        return None
    (length,) = struct.unpack("!Q", head)
    if length > 1 << 20:
        sys.exit("frame of %d bytes" % length)
    return recv_exact(s, length)


def frame(body):
    return struct.pack("!Q", len(body)) + body


def listener():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    lsock.settimeout(20)
    print("PORT %d" % lsock.getsockname()[1], flush=True)
    return lsock


def pong_server(offset):
    lsock = listener()
    conn, _ = lsock.accept()
    conn.settimeout(20)
    while True:
        body = read_frame(conn)
        if body is None:
            break
        t2 = now_us(offset)
        version, kind = body[0], body[1]
        if version != 1 or kind != PING or len(body) != 18:
            sys.exit("not a Ping: %r" % body)
        ping_id, t1 = struct.unpack("!QQ", body[2:])
        conn.sendall(frame(struct.pack("!BBQQQQ", 1, PONG, ping_id, t1, t2, now_us(offset))))


def ping(host, port, n):
    s = socket.create_connection((host, port), timeout=10)
    rtts, offsets = [], []
    for i in range(n):
        t1 = now_us()
        s.sendall(frame(struct.pack("!BBQQ", 1, PING, i, t1)))
        body = read_frame(s)
        t4 = now_us()
        if body is None:
            sys.exit("closed before Pong %d" % i)
        version, kind, ping_id, t1_back, t2, t3 = struct.unpack("!BBQQQQ", body)
        if (version, kind, ping_id, t1_back) != (1, PONG, i, t1) or not t2 <= t3:
            sys.exit("bad Pong: %r" % body)
        rtts.append((t4 - t1) - (t3 - t2))
        offsets.append(((t2 - t1) + (t3 - t4)) / 2)
    print(json.dumps({"rtt_us": rtts, "offset_us": offsets}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "listen":
        conn, _ = listener().accept()
        conn.close()
    elif cmd == "pong-server":
        pong_server(int(sys.argv[2]))
    else:
        ping(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
