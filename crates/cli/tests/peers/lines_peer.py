"""The acknowledged line stream with only socket, struct and sys (docs/protocol.md, 0x14-0x17).

    lines_peer.py receive NEXT COUNT
        prints "PORT <port>", accepts one sender, prints "hello SESSION FIRST", answers
        LinesResume(NEXT), then prints "line SEQ TEXT" for COUNT lines, acknowledging each
    lines_peer.py send HOST PORT
        streams the lines py-0 .. py-9 over two connections: the first is dropped abruptly after
        lines 5 to 7 were sent without waiting for their acknowledgement; on the second, it prints
        "resume NEXT", sends again from line 5 (some of them already written: the receiver must
        skip those) and prints "acked 10" once everything is acknowledged
"""
import socket
import struct
import sys

HELLO, RESUME, LINE, ACK = 0x14, 0x15, 0x16, 0x17


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            sys.exit("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def read_msg(s):
    (length,) = struct.unpack("!Q", recv_exact(s, 8))
    body = recv_exact(s, length)
    if body[0] != 1:
        sys.exit("envelope version %d" % body[0])
    return body[1], body[2:]


def send_msg(s, kind, body):
    s.sendall(struct.pack("!QBB", len(body) + 2, 1, kind) + body)


def line(s, seq):
    send_msg(s, LINE, struct.pack("!QB", seq, 0) + b"py-%d" % seq)


def receive(next_seq, count):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(20)
    print("PORT %d" % lsock.getsockname()[1], flush=True)
    conn, _ = lsock.accept()
    conn.settimeout(20)
    kind, body = read_msg(conn)
    if kind != HELLO:
        sys.exit("expected LinesHello, got type %#x" % kind)
    session, first = struct.unpack("!QQ", body)
    print("hello %016x %d" % (session, first), flush=True)
    send_msg(conn, RESUME, struct.pack("!Q", next_seq))
    for _ in range(count):
        kind, body = read_msg(conn)
        if kind != LINE:
            sys.exit("expected Line, got type %#x" % kind)
        seq, flags = struct.unpack("!QB", body[:9])
        print("line %d %s" % (seq, body[9:].decode()), flush=True)
        send_msg(conn, ACK, struct.pack("!Q", seq + 1))
    conn.close()


def wait_ack(s, want):
    while True:
        kind, body = read_msg(s)
        if kind == ACK and struct.unpack("!Q", body)[0] >= want:
            return


def send(host, port):
    session = 0x5EED
    s = socket.create_connection((host, port), timeout=10)
    send_msg(s, HELLO, struct.pack("!QQ", session, 0))
    kind, body = read_msg(s)
    if kind != RESUME:
        sys.exit("expected LinesResume, got type %#x" % kind)
    start = struct.unpack("!Q", body)[0]
    for seq in range(start, 5):
        line(s, seq)
    wait_ack(s, 5)
    for seq in range(5, 8):
        line(s, seq)
    s.close()  # dropped: the acknowledgements of 5 to 7 are never read

    s = socket.create_connection((host, port), timeout=10)
    send_msg(s, HELLO, struct.pack("!QQ", session, 5))
    kind, body = read_msg(s)
    resume = struct.unpack("!Q", body)[0]
    print("resume %d" % resume, flush=True)
    for seq in range(5, 10):
        line(s, seq)
    wait_ack(s, 10)
    print("acked 10", flush=True)
    s.close()


if __name__ == "__main__":
    if sys.argv[1] == "receive":
        receive(int(sys.argv[2]), int(sys.argv[3]))
    else:
        send(sys.argv[2], int(sys.argv[3]))
