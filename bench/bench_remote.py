"""bench/bench_remote.py - the remote-snapshot section of bench/bench.py
(issue 10): w1 restored from a snapshot on an HTTP server across a modelled
network, against downloading the snapshot first.

The server is a private nginx on loopback serving the bench directory; in
front of it tests/tools/faultproxy.py adds REMOTE_RTT_MS before each
response and caps each connection at REMOTE_MBIT. Four ways to run the w1
trace (the main section's, 2 vCPUs, every byte verified):

  download+File  the raw snapshot downloaded through the proxy as 4 MiB
                 range GETs over 8 kept-alive connections (as a multipart
                 downloader such as the AWS CLI does, and as many connections
                 as pagein's --fetch-parallel default), then the File backend
                 runs w1 on the local copy (page cache warm: just written)
  pagein cold    pagein serve --snapshot http://.../w1.pagein --cache-dir
                 EMPTY: the pagein file with the recorded working set stored
                 first (replayed from the handshake), background population
  pagein warm    the same with the cache directory (b) left behind
  4MiB on-fault  an E2B-like handler: a pagein file of 4 MiB chunks, no
                 working set, --populate none --fault-around 0, empty cache:
                 each fault fetches the 4 MiB chunk around it, nothing else

Time to first vCPU progress: from the start of the restore (the download's
start; pagein serve's launch, which fetches the header and index before it
listens) until vCPU 0's first access is served, vmmsim's own setup (guest
memory, handshake) left out. End of trace: the same start until the last
vCPU finished the trace. First access served: vCPU 0's first access (fault
to served); as that page may be a zero page, which needs no fetch, the
slowest of vCPU 0's first 16 accesses is given too. Bytes: what nginx sent
(its access log).

Runs only when pagein serve has --cache-dir, tests/tools/faultproxy.py is
there and nginx is installed; otherwise the section says why it did not run.
"""
import os
import re
import shutil
import socket
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTPROXY = os.path.join(ROOT, "tests", "tools", "faultproxy.py")
REMOTE_RTT_MS = 2
REMOTE_MBIT = 1000
FIRST_ACCESS_TARGET_MS = 50
DL_PARALLEL = 8
DL_PART = 4 << 20
SPEEDUP_TARGET = 3

CONFIGS = [
    ("download-file", "download, then the File backend"),
    ("pagein-cold", "pagein, cold cache (working set first, background)"),
    ("pagein-warm", "pagein, warm cache"),
    ("e2b-4m", "4 MiB chunks on fault, no working set (E2B-like)"),
]


def log(*a):
    import sys
    print("bench:", *a, file=sys.stderr, flush=True)


def unsupported(pagein):
    """None when the section can run, else why it cannot."""
    p = subprocess.run([pagein, "serve", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if "--cache-dir" not in p.stdout:
        return "this pagein serve has no --cache-dir (the http(s):// source is not built in)"
    if not os.path.exists(FAULTPROXY):
        return "tests/tools/faultproxy.py is missing"
    if not shutil.which("nginx"):
        return "nginx is not installed (apt-get install nginx-light)"
    if not shutil.which("curl"):
        return "curl is not installed"
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited at start" % what)
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("%s did not listen on %d" % (what, port))


class Server:
    """nginx serving root on loopback, faultproxy in front of it."""

    def __init__(self, root, workdir):
        d = os.path.join(workdir, "nginx")
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        self.access = os.path.join(d, "access.log")
        self.nport = free_port()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("""daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
	log_format bytes '$body_bytes_sent';
	access_log {access} bytes;
	sendfile on;
	client_body_temp_path {d}/tmp;
	proxy_temp_path {d}/tmp;
	fastcgi_temp_path {d}/tmp;
	uwsgi_temp_path {d}/tmp;
	scgi_temp_path {d}/tmp;
	server {{
		listen 127.0.0.1:{port};
		root {root};
	}}
}}
""".format(d=d, access=self.access, port=self.nport, root=root))
        self.nginx = subprocess.Popen(["nginx", "-c", conf, "-p", d],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.nport, self.nginx, "nginx")
        self.pport = free_port()
        self.proxy = subprocess.Popen(
            ["python3", FAULTPROXY, "--listen", str(self.pport),
             "--upstream", "127.0.0.1:%d" % self.nport, "--delay-ms", str(REMOTE_RTT_MS),
             "--rate-mbit", str(REMOTE_MBIT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.pport, self.proxy, "faultproxy")

    def url(self, name):
        return "http://127.0.0.1:%d/%s" % (self.pport, name)

    def sent_mark(self):
        return os.path.getsize(self.access) if os.path.exists(self.access) else 0

    def sent_since(self, mark):
        """Bytes nginx sent since mark (access log lines are written when a
        response ends)."""
        time.sleep(0.05)
        with open(self.access) as f:
            f.seek(mark)
            return sum(int(x) for x in f.read().split() if x.isdigit())

    def stop(self):
        for p in (self.proxy, self.nginx):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def download(url, path, size):
    """GETs url into path as DL_PART ranges over DL_PARALLEL kept-alive
    connections."""
    import http.client
    import threading
    import urllib.parse
    u = urllib.parse.urlsplit(url)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, size)
    parts = list(range(0, size, DL_PART))
    lock = threading.Lock()
    errors = []

    def worker():
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        try:
            while True:
                with lock:
                    if not parts or errors:
                        return
                    off = parts.pop(0)
                last = min(size, off + DL_PART) - 1
                c.request("GET", u.path, headers={"Range": "bytes=%d-%d" % (off, last)})
                r = c.getresponse()
                body = r.read()
                if r.status != 206 or len(body) != last - off + 1:
                    errors.append("GET %s bytes %d-%d: HTTP %d, %d bytes" % (
                        url, off, last, r.status, len(body)))
                    return
                os.pwrite(fd, body, off)
        except OSError as e:
            errors.append("GET %s: %s" % (url, e))
        finally:
            c.close()

    ts = [threading.Thread(target=worker) for _ in range(DL_PARALLEL)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    os.close(fd)
    if errors:
        raise RuntimeError(errors[0])


def vmmsim_w1(b, snap, expect, trace, extra, tag):
    """Runs w1 (2 vCPUs) and returns (report, vCPU 0's first-access latency
    in seconds, the slowest of its first 16)."""
    r, latf, _ = b.vmmsim_report(snap, ["--pattern", "trace:" + trace, "--vcpus", "2"] + extra,
                                 tag, expect, timeout=300)
    with open(latf) as f:
        head = [int(f.readline() or 0) for _ in range(16)]
    os.unlink(latf)
    return r, head[0] / 1e9, max(head) / 1e9


def run_pagein(b, handler, url, local, raw, trace, cache, extra, tag):
    """pagein serve from url (handler: bench.py's Handler); returns
    (open_s, report, first_s, its session-end line)."""
    if os.path.exists(b.sock):
        os.unlink(b.sock)
    argv = [b.pagein, "serve", "--snapshot", url, "--socket", b.sock, "--log-level", "info",
            "--cache-dir", cache] + extra
    t0 = time.monotonic()
    h = handler(argv, os.path.join(b.dir, tag + ".log"), b.sock)
    open_s = time.monotonic() - t0
    try:
        r, first, first16 = vmmsim_w1(b, local, raw, trace, ["--socket", b.sock], tag)
        end = h.wait_for(r"session ended[^\n]*")
    finally:
        h.stop()
    return open_s, r, first, first16, end.group(0) if end else ""


def convert(b, raw, out, args):
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(raw):
        tmp = out + ".new"
        subprocess.run([b.pagein, "snapshot", "convert", raw, "-o", tmp, "-q"] + args,
                       check=True, stdout=subprocess.DEVNULL)
        os.replace(tmp, out)


def run_remote(b, a, raw, trace, ws, handler):
    """The section's results: {"skipped": why} or the runs and medians. A
    failure here is reported in the section, not raised: the rest of a
    long run keeps its results."""
    why = unsupported(b.pagein)
    if why:
        log("remote section not run: " + why)
        return {"skipped": why}
    try:
        return measure_remote(b, a, raw, trace, ws, handler)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        log("remote section failed: %s" % e)
        return {"skipped": "it failed: %s" % str(e)[:500]}


def measure_remote(b, a, raw, trace, ws, handler):
    ws_pf = os.path.join(b.dir, "remote-w1.pagein")
    big_pf = os.path.join(b.dir, "remote-4m.pagein")
    convert(b, raw, ws_pf, ["--working-set", ws])
    convert(b, raw, big_pf, ["--chunk", "4M"])
    srv = Server(b.dir, b.dir)
    runs = []
    dl = os.path.join(b.dir, "remote-download.raw")
    try:
        for rep in range(1, a.reps + 1):
            b.wait_quiet()
            # (a) download, then the File backend
            mark = srv.sent_mark()
            t0 = time.monotonic()
            download(srv.url(os.path.basename(raw)), dl, os.path.getsize(raw))
            dl_s = time.monotonic() - t0
            sent = srv.sent_since(mark)
            r, first, first16 = vmmsim_w1(b, dl, raw, trace, ["--backend", "file"],
                                          "remote-file-%d" % rep)
            runs.append({"config": "download-file", "rep": rep, "open_s": round(dl_s, 4),
                         "first_access_s": first, "first16_max_s": first16,
                         "p99_us": r["first_touch_us"]["p99"], "first_progress_s": dl_s + first,
                         "end_s": dl_s + r["wall_s"], "wall_s": r["wall_s"], "bytes": sent})
            os.unlink(dl)
            # (b) cold cache, (c) warm cache, (d) 4 MiB chunks on fault
            cache = os.path.join(b.dir, "remote-cache")
            shutil.rmtree(cache, ignore_errors=True)
            os.makedirs(cache)
            for cfg, pf, extra, fresh in (
                    ("pagein-cold", ws_pf, ["--populate", "background"], False),
                    ("pagein-warm", ws_pf, ["--populate", "background"], False),
                    ("e2b-4m", big_pf, ["--populate", "none", "--fault-around", "0"], True)):
                c = cache
                if fresh:
                    c = os.path.join(b.dir, "remote-cache-4m")
                    shutil.rmtree(c, ignore_errors=True)
                    os.makedirs(c)
                b.wait_quiet()
                mark = srv.sent_mark()
                open_s, r, first, first16, end = run_pagein(b, handler, srv.url(os.path.basename(pf)), pf, raw,
                                                   trace, c, extra, "remote-%s-%d" % (cfg, rep))
                m = re.search(r"complete in ([\d.]+) s", end)
                runs.append({"config": cfg, "rep": rep, "open_s": round(open_s, 4),
                             "first_access_s": first, "first16_max_s": first16,
                             "p99_us": r["first_touch_us"]["p99"],
                             "first_progress_s": open_s + first,
                             "end_s": open_s + r["wall_s"], "wall_s": r["wall_s"],
                             "bytes": srv.sent_since(mark),
                             "complete_s": float(m.group(1)) if m else None})
            for x in runs[-4:]:
                log("remote %-13s rep %d: first progress %7.3f s (first access %6.1f ms, "
                    "first 16 <= %6.1f ms), end of trace %7.3f s, %6.1f MiB fetched" % (
                        x["config"], rep, x["first_progress_s"], x["first_access_s"] * 1e3,
                        x["first16_max_s"] * 1e3, x["end_s"], x["bytes"] / 2**20))
            shutil.rmtree(os.path.join(b.dir, "remote-cache-4m"), ignore_errors=True)
    finally:
        srv.stop()
        if os.path.exists(dl):
            os.unlink(dl)
        shutil.rmtree(os.path.join(b.dir, "remote-cache"), ignore_errors=True)
    med = {}
    for cfg, _ in CONFIGS:
        rs = [x for x in runs if x["config"] == cfg]
        med[cfg] = {k: statistics.median([x[k] for x in rs])
                    for k in ("open_s", "first_access_s", "first16_max_s", "p99_us",
                              "first_progress_s", "end_s", "wall_s", "bytes")}
    base = med["download-file"]
    targets = [
        {"target": "w1 from remote, cold cache: end of trace vs download-then-File",
         "value": round(base["end_s"] / med["pagein-cold"]["end_s"], 2), "op": ">=",
         "limit": SPEEDUP_TARGET},
        {"target": "w1 from remote, cold cache: first access served (ms)",
         "value": round(med["pagein-cold"]["first_access_s"] * 1e3, 1), "op": "<=",
         "limit": FIRST_ACCESS_TARGET_MS},
        {"target": "w1 from remote, cold cache: slowest of vCPU 0's first 16 accesses (ms)",
         "value": round(med["pagein-cold"]["first16_max_s"] * 1e3, 1), "op": "<=",
         "limit": FIRST_ACCESS_TARGET_MS},
    ]
    for t in targets:
        t["pass"] = t["value"] >= t["limit"] if t["op"] == ">=" else t["value"] <= t["limit"]
    return {"rtt_ms": REMOTE_RTT_MS, "mbit_per_connection": REMOTE_MBIT, "reps": a.reps,
            "snapshot_bytes": os.path.getsize(raw), "pagein_bytes": os.path.getsize(ws_pf),
            "pagein_4m_bytes": os.path.getsize(big_pf), "median": med, "targets": targets,
            "runs": runs}


def markdown(res):
    r = res.get("remote")
    if not r:
        return ""
    L = ["", "#### Remote snapshots: w1 over HTTP (%s ms RTT, %s Mbit/s per connection)" % (
        REMOTE_RTT_MS, REMOTE_MBIT), ""]
    if "skipped" in r:
        L.append("Not run: %s." % r["skipped"])
        return "\n".join(L) + "\n"
    m = r["median"]
    L.append("nginx on loopback behind tests/tools/faultproxy.py; the raw snapshot is %d MiB, "
             "its pagein file %d MiB (256 KiB chunks, working set first), the 4 MiB-chunk file "
             "%d MiB; medians of %d runs. Time from the start of the restore (download start, "
             "or pagein serve's launch) to vCPU 0's first access served, and to the end of the "
             "trace. bench/bench_remote.py has the method." % (
                 r["snapshot_bytes"] >> 20, r["pagein_bytes"] >> 20, r["pagein_4m_bytes"] >> 20,
                 r["reps"]))
    L.append("")
    L.append("| configuration | before the VM (download / open) | first access served "
             "(slowest of first 16) | first-touch p99 | time to first vCPU progress | "
             "end of trace | fetched | end of trace vs download+File |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = m["download-file"]["end_s"]
    for cfg, name in CONFIGS:
        x = m[cfg]
        L.append("| %s | %.3f s | %.1f ms (%.1f ms) | %.1f ms | %.3f s | %.3f s | %.1f MiB | %.2fx |" % (
            name, x["open_s"], x["first_access_s"] * 1e3, x["first16_max_s"] * 1e3,
            x["p99_us"] / 1e3, x["first_progress_s"], x["end_s"], x["bytes"] / 2**20,
            base / x["end_s"]))
    L.append("")
    L.append("| target | value | limit | met |")
    L.append("|---|---:|---:|---|")
    for t in r["targets"]:
        L.append("| %s | %s | %s %s | %s |" % (t["target"], t["value"], t["op"], t["limit"],
                                               "yes" if t["pass"] else "**no**"))
    return "\n".join(L) + "\n"
