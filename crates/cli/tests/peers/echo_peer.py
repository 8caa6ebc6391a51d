"""A plain-socket echo peer, written the way people learn sockets (only socket, struct, sys).

    echo_peer.py client tcp|udp HOST PORT N [zero-first]
        sends N messages, checks that each comes back exactly, prints "ok N"
    echo_peer.py server tcp|udp
        prints "PORT <port>", then echoes one TCP client until it closes, or UDP datagrams until
        one says "bye"
"""
import socket
import struct
import sys


def message(i):
    # Text, binary with NULs, and a packed struct: an echo must not care.
    return [b"hello %d\n" % i, bytes(range(i % 7, 200)), struct.pack("!Id", i, i / 3)][i % 3]


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            sys.exit("server closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def client(kind, host, port, n, zero_first):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if kind == "tcp":
        s = socket.create_connection((host, port), timeout=10)
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(10)
        s.connect((host, port))
    for i in range(n):
        msg = b"\0\0\0" if (i == 0 and zero_first) else message(i)
        if kind == "tcp":
            s.sendall(msg)
            got = recv_exact(s, len(msg))
        else:
            s.send(msg)
            got = s.recv(65536)
        if got != msg:
            sys.exit("message %d came back as %r" % (i, got))
    s.close()
    print("ok %d" % n)


def server(kind):
    if kind == "tcp":
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(20)
        print("PORT %d" % lsock.getsockname()[1], flush=True)
        conn, _ = lsock.accept()
        conn.settimeout(20)
        while True:
            data = conn.recv(4096)
            if not data:
                break
            conn.sendall(data)
        conn.close()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(20)
        print("PORT %d" % s.getsockname()[1], flush=True)
        while True:
            data, addr = s.recvfrom(65536)
            s.sendto(data, addr)
            if data.strip() == b"bye":
                break


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), "zero-first" in sys.argv)
    else:
        server(sys.argv[2])
