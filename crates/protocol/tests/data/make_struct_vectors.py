#!/usr/bin/env python3
"""Writes struct_vectors.json: what CPython's `struct` module packs and unpacks, so that
audiowire's pystruct module can be checked against it byte for byte (crates/protocol/tests/
pystruct_vectors.rs). Deterministic: run it again and the file does not change.

    python3 crates/protocol/tests/data/make_struct_vectors.py > crates/protocol/tests/data/struct_vectors.json

Values are typed so nothing is lost in JSON: ["int", "123"] (decimal text, any size),
["float", "<16 hex digits: the IEEE double's bits, big-endian>"], ["bytes", "<hex>"],
["bool", true]. Made on x86-64 Linux, where native sizes and alignment are those of LP64.
"""
import json
import random
import struct
import sys

rng = random.Random(5)

INT_RANGES = {
    "b": (-(1 << 7), (1 << 7) - 1), "B": (0, (1 << 8) - 1),
    "h": (-(1 << 15), (1 << 15) - 1), "H": (0, (1 << 16) - 1),
    "i": (-(1 << 31), (1 << 31) - 1), "I": (0, (1 << 32) - 1),
    "q": (-(1 << 63), (1 << 63) - 1), "Q": (0, (1 << 64) - 1),
    "n": (-(1 << 63), (1 << 63) - 1), "N": (0, (1 << 64) - 1),
    "P": (0, (1 << 64) - 1),
}

FLOATS = [0.0, -0.0, 0.5, -1.5, 1.0 / 3.0, 1e-7, 6.1e-5, 5.96e-8, 2.98e-8, 3e-8, 65504.0,
          65519.99, 1e30, -3.4028234663852886e38, 1e-300, float("inf"), float("-inf"),
          float("nan"), 0.1, 123456.789, 2049.0, 2051.0, 1.00048828125, 1.000732421875]


def int_range(code, order):
    if code in "lL":
        bits = 64 if order == "@" else 32
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if code == "l" else (0, (1 << bits) - 1)
    return INT_RANGES[code]


def typed(v):
    if isinstance(v, bool):
        return ["bool", v]
    if isinstance(v, int):
        return ["int", str(v)]
    if isinstance(v, float):
        return ["float", struct.pack(">d", v).hex()]
    return ["bytes", bytes(v).hex()]


def items(fmt):
    """(code, count) pairs of a valid format, and its byte order."""
    order = "@"
    s = fmt.lstrip()
    if s[:1] in "@=<>!" and s:
        order, s = s[0], s[1:]
    out, num = [], ""
    for ch in s:
        if ch.isspace():
            continue
        if ch.isdigit():
            num += ch
            continue
        out.append((ch, int(num) if num else 1))
        num = ""
    return order, out


def random_value(code, count, order):
    if code in "sp":
        n = rng.choice([0, 1, count // 2, count, count + 3])
        return bytes(rng.randrange(256) for _ in range(n))
    if code == "c":
        return bytes([rng.randrange(256)])
    if code == "?":
        return rng.choice([True, False, 0, 1, 7])
    if code in "efd":
        limit = {"e": 65520.0, "f": 3.4e38, "d": float("inf")}[code]
        pool = [f for f in FLOATS if f != f or abs(f) < limit or abs(f) == float("inf")]
        return rng.choice(pool + [rng.uniform(-65000, 65000), rng.uniform(-1, 1)])
    lo, hi = int_range(code, order)
    return rng.choice([lo, hi, 0, 1, rng.randint(lo, hi), rng.randint(lo, hi)])


def values_for(fmt):
    order, its = items(fmt)
    vals = []
    for code, count in its:
        if code == "x":
            continue
        if code in "sp":
            vals.append(random_value(code, count, order))
        else:
            vals.extend(random_value(code, count, order) for _ in range(count))
    return vals


FORMATS = [
    "!I30sd", "@bhiq", "@cid", "@llh0l", "@iH?dQ", "<hHiIlLqQ", ">bB?", "=eefd", "!3i",
    "@?xP", "@nN", "@5s2p", "<10p", "@xxh", "@d c", "q b", "", "3x", "0s", "@0i",
    "<e", ">e", "!f", "<d", "@e", "@f", "@q", "@h", "@l", "@L", "=l", "=L", "!2h3H", "@c3s",
    "@b5I", "@hq", "@chd", "@?", "!I ", "i i", "@P", "@2P", "<1p", "<255p", "<300p",
    "@256s", "4c", "@10?", "<Q", ">q",
]

BAD_FORMATS = ["z", "3", "!x3", "<n", "<N", "<P", "=n", "!P", "<i<", "2 i", "i 3", "@i!",
               "99999999999999999999999i", "i$", "ii-", "!!i", "I30", "\t!I", " <h", " !I"]

# Hand-picked cases: P takes negative numbers too (as a signed pointer), '?' takes any truth value.
EXTRA_PACK = [("@P", [-1]), ("@P", [-(1 << 63)]), ("@?", [0.5]), ("@?", [b""]), ("@?", [b"x"]),
              ("!d", [3]), ("!e", [-(1 << 11) - 1]), ("!i", [True]), ("!2p", [b"abc"]),
              ("!I30sd", [3, b"hello", 0.5])]

# Formats and values Python refuses to pack (wrong count, out of range, wrong type).
PACK_ERRORS = [
    ("!B", [256]), ("!B", [-1]), ("!b", [128]), ("<h", [1 << 15]), ("<H", [-1]),
    ("!I", [1 << 32]), ("!i", [-(1 << 31) - 1]), ("!q", [1 << 63]), ("!Q", [-1]),
    ("@l", [1 << 63]), ("=l", [1 << 31]), ("@N", [-1]), ("@n", [1 << 63]),
    ("!e", [65520.0]), ("!e", [1e10]), ("!f", [1e39]), ("!I", [0.5]), ("!s", [3]),
    ("!c", [b"ab"]), ("!c", [b""]), ("!c", [7]), ("!d", [b"x"]), ("!I30sd", [3, b"hello"]),
    ("!I30sd", [3, b"hello", 0.5, 1]), ("!2i", [1]), ("@P", [1 << 64]), ("!i", [True, 1]),
]


def main():
    pack = []
    cases = [(fmt, values_for(fmt)) for fmt in FORMATS for _ in range(6)] + EXTRA_PACK
    for fmt, vals in cases:
        packed = struct.pack(fmt, *vals)
        pack.append({
            "format": fmt,
            "size": struct.calcsize(fmt),
            "values": [typed(v) for v in vals],
            "packed": packed.hex(),
            "unpacked": [typed(v) for v in struct.unpack(fmt, packed)],
        })
    unpack = []
    for fmt in FORMATS:
        for _ in range(4):
            data = bytes(rng.randrange(256) for _ in range(struct.calcsize(fmt)))
            unpack.append({
                "format": fmt,
                "bytes": data.hex(),
                "values": [typed(v) for v in struct.unpack(fmt, data)],
            })
    bad = []
    for fmt in BAD_FORMATS:
        try:
            struct.calcsize(fmt)
        except struct.error as e:
            bad.append({"format": fmt, "python_error": str(e)})
        else:
            sys.exit(f"{fmt!r} was expected to be refused by Python")
    pack_errors = []
    for fmt, vals in PACK_ERRORS:
        try:
            struct.pack(fmt, *vals)
        except (struct.error, OverflowError, TypeError) as e:
            pack_errors.append({"format": fmt, "values": [typed(v) for v in vals],
                                "python_error": f"{type(e).__name__}: {e}"})
        else:
            sys.exit(f"struct.pack({fmt!r}, *{vals!r}) was expected to fail")
    json.dump({"python": sys.version.split()[0], "pack": pack, "unpack": unpack,
               "bad_formats": bad, "pack_errors": pack_errors}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
