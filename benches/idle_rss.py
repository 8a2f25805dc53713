#!/usr/bin/env python3
"""RSS of a server process holding N idle connections (benches/appliance.sh, "rss" row).

usage: idle_rss.py PORT PID [N] [REQUEST_PATH]

Opens N (default 10 000, at most 20 000) connections to 127.0.0.1:PORT. With REQUEST_PATH,
each connection first makes one keep-alive GET of its first 64 KiB (`Range: bytes=0-65535`)
and reads the whole response (an idle connection between two requests of a player); without it, connections send nothing (idle
right after accept). Then waits 2 s and prints the server's VmRSS in MB and the VmRSS before
the connections were opened. Needs RLIMIT_NOFILE above N for both sides. Bounded: every
socket has a 30 s timeout; the script exits when done.
"""
import resource
import socket
import sys
import time

port, pid = int(sys.argv[1]), int(sys.argv[2])
n = min(int(sys.argv[3]) if len(sys.argv) > 3 else 10_000, 20_000)
path = sys.argv[4] if len(sys.argv) > 4 else None
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_mb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for pid {pid}")


def get(c):
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-65535\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            raise SystemExit("closed before the response head")
        buf += d
    head, body = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 2"):
        raise SystemExit(f"unexpected response: {head[:80]!r}")
    length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
    left = length - len(body)
    while left > 0:
        d = c.recv(min(left, 1 << 20))
        if not d:
            raise SystemExit("closed mid-body")
        left -= len(d)


before = rss_mb()
conns = []
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    if path:
        get(c)
    conns.append(c)
time.sleep(2)
after = rss_mb()
print(f"connections={n} request={'yes' if path else 'no'} rss_before_mb={before:.1f} rss_mb={after:.1f} per_conn_kb={(after - before) * 1024 / n:.2f}")
for c in conns:
    c.close()
