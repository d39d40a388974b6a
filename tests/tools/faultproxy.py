#!/usr/bin/env python3
"""faultproxy.py - an HTTP/1.1 proxy that injects faults, for tests and
benchmarks of remote snapshots (python3 standard library only).

    faultproxy.py --listen PORT --upstream HOST:PORT [--delay-ms N]
                  [--rate-mbit N] [--fault none|reset|503|403|truncate|stall]
                  [--fault-every N] [--port-file F]

Each client connection gets its own upstream connection (kept alive);
requests are forwarded as they are, responses read whole (Content-Length)
and sent back. --delay-ms waits before each response; --rate-mbit caps each
connection's bandwidth; on every Nth request overall (--fault-every, default
1) the --fault is injected: `reset` closes the client connection with a TCP
RST and no answer, `503` answers 503 Service Unavailable, `403` answers
403 with S3's ExpiredToken error body, `truncate` sends
the headers and half the body then closes, `stall` sends the headers and
nothing more (until the client gives up). --listen 0 picks a free port;
--port-file writes the port there once listening. SIGTERM stops it.
"""
import argparse
import signal
import socket
import struct
import sys
import threading
import time

count_lock = threading.Lock()
count = 0


def read_head(sock, buf):
    """Reads up to the end of an HTTP head; returns (head, rest) or None."""
    while b"\r\n\r\n" not in buf:
        try:
            d = sock.recv(65536)
        except OSError:
            return None
        if not d:
            return None
        buf += d
    i = buf.index(b"\r\n\r\n") + 4
    return buf[:i], buf[i:]


def content_length(head):
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v.strip())
    return 0


def read_body(sock, rest, n):
    while len(rest) < n:
        d = sock.recv(min(1 << 20, n - len(rest)))
        if not d:
            raise OSError("upstream closed mid-body")
        rest += d
    return rest[:n], rest[n:]


def send_rate(sock, data, rate_bps):
    if not rate_bps:
        sock.sendall(data)
        return
    step = max(1024, int(rate_bps / 50))
    start = time.monotonic()
    sent = 0
    while sent < len(data):
        sock.sendall(data[sent:sent + step])
        sent += min(step, len(data) - sent)
        ahead = sent / rate_bps - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)


def reset(sock):
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def serve(client, args):
    global count
    up = None
    buf = b""
    ubuf = b""
    try:
        while True:
            r = read_head(client, buf)
            if r is None:
                return
            head, buf = r
            n = content_length(head)
            body, buf = read_body(client, buf, n) if n else (b"", buf)
            with count_lock:
                count += 1
                k = count
            fault = args.fault if args.fault != "none" and k % args.fault_every == 0 else "none"
            if fault == "reset":
                reset(client)
                return
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000.0)
            if fault == "503":
                client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                continue
            if fault == "403":
                b403 = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
                        b'<Message>The provided token has expired.</Message></Error>')
                client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(b403) + b403)
                continue
            for attempt in range(2):
                try:
                    if up is None:
                        up = socket.create_connection(args.upstream)
                        ubuf = b""
                    up.sendall(head + body)
                    r = read_head(up, ubuf)
                    if r is None:
                        raise OSError("upstream closed")
                    rhead, ubuf = r
                    rbody, ubuf = read_body(up, ubuf, content_length(rhead))
                    break
                except OSError:
                    if up:
                        up.close()
                    up = None
                    if attempt:
                        client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                        return
            if fault == "truncate":
                client.sendall(rhead)
                send_rate(client, rbody[: len(rbody) // 2], args.rate)
                client.close()
                return
            if fault == "stall":
                client.sendall(rhead)
                client.settimeout(None)
                while client.recv(65536):
                    pass
                return
            client.sendall(rhead)
            send_rate(client, rbody, args.rate)
    except OSError:
        return
    finally:
        try:
            client.close()
        except OSError:
            pass
        if up:
            up.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--rate-mbit", type=float, default=0)
    ap.add_argument("--fault", choices=["none", "reset", "503", "403", "truncate", "stall"], default="none")
    ap.add_argument("--fault-every", type=int, default=1)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    args.upstream = (host.strip("[]") or "127.0.0.1", int(port))
    args.rate = args.rate_mbit * 1e6 / 8
    if args.fault_every < 1:
        ap.error("--fault-every must be at least 1")
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.listen))
    ls.listen(128)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write("%d\n" % ls.getsockname()[1])
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c, args), daemon=True).start()


if __name__ == "__main__":
    main()
