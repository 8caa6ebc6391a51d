"""Struct records with only socket, struct, sys and json.

    struct_peer.py send HOST PORT raw|framed FORMAT JSON
        JSON is a list of records, each a list of values (strings are sent as UTF-8 bytes);
        raw: sock.sendall(struct.pack(FORMAT, *values)) for each record;
        framed: each record in a Struct message (docs/protocol.md), then wait for the close
    struct_peer.py recv raw|framed FORMAT N
        prints "PORT <port>", receives N records from one connection, prints each as a JSON list
        (bytes decoded, NUL padding of s strings stripped)

Struct message (type 0x13): u64 frame length, 0x01 0x13, u16 format length, format, packed data.
"""
import json
import socket
import struct
import sys


def recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            sys.exit("closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def send(host, port, mode, fmt, records):
    s = socket.create_connection((host, port), timeout=10)
    for values in records:
        values = [v.encode() if isinstance(v, str) else v for v in values]
        data = struct.pack(fmt, *values)
        if mode == "raw":
            s.sendall(data)
        else:
            f = fmt.encode()
            body = struct.pack("!BBH", 1, 0x13, len(f)) + f + data
            s.sendall(struct.pack("!Q", len(body)) + body)
    s.shutdown(socket.SHUT_WR)
    while s.recv(4096):  # the listener closes once it has read everything
        pass
    s.close()
    print("sent %d" % len(records))


def show(v):
    return v.rstrip(b"\0").decode() if isinstance(v, bytes) else v


def recv(mode, fmt, n):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    lsock.settimeout(20)
    print("PORT %d" % lsock.getsockname()[1], flush=True)
    conn, _ = lsock.accept()
    conn.settimeout(20)
    for _ in range(n):
        if mode == "raw":
            data = recv_exact(conn, struct.calcsize(fmt))
            got_fmt = fmt
        else:
            (length,) = struct.unpack("!Q", recv_exact(conn, 8))
            body = recv_exact(conn, length)
            version, kind, flen = struct.unpack("!BBH", body[:4])
            if (version, kind) != (1, 0x13):
                sys.exit("not a Struct message: %r" % body)
            got_fmt = body[4:4 + flen].decode()
            data = body[4 + flen:]
        print(json.dumps({"format": got_fmt, "values": [show(v) for v in struct.unpack(got_fmt, data)]}),
              flush=True)
    conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], json.loads(sys.argv[6]))
    else:
        recv(sys.argv[2], sys.argv[3], int(sys.argv[4]))
