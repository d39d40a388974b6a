#!/usr/bin/env python3
"""bench/bench.py - pagein's benchmark (issues 3 and 4), run by `make bench`.

One run, one machine, one snapshot file on a disk filesystem. Every
configuration runs the same vmmsim workloads side by side, several times,
interleaved (rep 1 of every configuration, then rep 2, ...), and the median
of each figure is reported. Ratios are computed within this run only.

Configurations
  file        the File backend: vmmsim maps the snapshot MAP_PRIVATE, no uffd
              (what Firecracker does without a UFFD backend)
  floor       the touch floor: vmmsim --backend populated, the workload over
              anonymous memory already holding the snapshot (no faults at all);
              every table also gives each configuration as a multiple of it
  ref         bench/ref_handler: one thread, one 4 KiB UFFDIO_COPY per fault
  bulk        bench/bulk_ceiling: 2 MiB UFFDIO_COPYs, no faults (w4 only)
  pagein-none pagein --populate none --fault-around 0 (the on-demand path)
  pagein-fa   pagein --populate none (fault-around auto, the default)
  pagein-faN  pagein --populate none --fault-around N
  pagein-bgN  pagein --populate background --fault-around N
  pagein-ws   pagein --populate none --prefetch WS (w1 only)
  pagein-bg   pagein as shipped: --populate background, fault-around auto
              (+ --prefetch WS on w1)
  pagein-eager pagein --populate eager (w4 only)

Remote section (bench/bench_remote.py): w1 from a snapshot on HTTP (nginx
behind tests/tools/faultproxy.py: 2 ms per response, 1 Gbit/s per
connection): download-then-File, pagein cold and warm cache, and 4 MiB
chunks fetched on fault; skipped, saying why, without the http(s) source.

Workloads (vmmsim run, every byte verified against a tmpfs copy of the image)
  w1  function cold start: trace of a clustered ~15% working set in a fixed
      order, ~10% jitter, ~2% new pages; WS recorded on a run with another
      jitter seed; 2 vCPUs
  w2  uniform random first touches of 25% of pages; 2 vCPUs
  w3  sequential scan of all memory; 1 vCPU
  w4  time until every page is present
  w5  short clustered runs: 15% of pages in runs of 1 to 16 pages (8.5 on
      average), the runs in random order, jittered as w1; 2 vCPUs
      (--only w5: not part of the full run)

Targeted runs (no doc rewritten): --only w5,w2,w3 --configs
pagein-fa,pagein-none,pagein-fa64 [--reps N] [--size 512M] prints the
medians and each configuration's time ratio to the first one.

Usage: bench/bench.py [--smoke] [--size 2G] [--reps 3] [--dir DIR] [--out DIR]
                      [--doc FILE] [--guest-image PATH|none]
                      [--only WL,... --configs CFG,...]
Only the standard library; gnuplot (gnuplot-nox) draws the plots.
"""
import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import bench_remote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pagein serve's default --fault-around (DEFAULT_FAULT_AROUND in src/cli/main.c).
DEFAULT_FA = "auto"
PAGE = 4096
MIB = 1 << 20

# Targets of issue 3 (see docs/benchmarks.md).
RSS_BASE_MIB = 64
RSS_FRACTION = 0.005
SHM = "/dev/shm"
QUIET_BUDGET_S = 240


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s.upper())
    if not m:
        raise SystemExit("bad size %r" % s)
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


# ---------------------------------------------------------------- workloads

def w1_base(npages, seed):
    """The function's working set: clustered runs covering ~15% of pages,
    in a fixed (seeded) order; pages ascend within a run."""
    rng = random.Random(seed)
    target = int(0.15 * npages)
    used = bytearray(npages)
    runs, total = [], 0
    while total < target:
        length = min(int(rng.expovariate(1 / 24)) + 1, 256, target - total)
        start = rng.randrange(0, npages - length)
        if 1 in used[start:start + length]:
            continue
        used[start:start + length] = b"\x01" * length
        runs.append((start, length))
        total += length
    rng.shuffle(runs)
    return [p for s, n in runs for p in range(s, s + n)], used


def w1_trace(base, used, npages, jitter_seed):
    """One invocation: ~10% of accesses displaced (swapped with a neighbour
    up to 256 accesses away) and ~2% pages never seen before (runs of 1..8
    pages outside the working set) inserted at random points."""
    rng = random.Random(jitter_seed)
    order = list(base)
    n = len(order)
    for _ in range(n // 20):  # a swap moves two accesses
        i = rng.randrange(n)
        j = min(n - 1, max(0, i + rng.randint(-256, 256)))
        order[i], order[j] = order[j], order[i]
    taken = bytearray(used)
    new_runs, count = [], 0
    while count < n * 2 // 100:
        length = rng.randint(1, 8)
        start = rng.randrange(0, npages - length)
        if 1 in taken[start:start + length]:
            continue
        taken[start:start + length] = b"\x01" * length
        new_runs.append((rng.randrange(n), list(range(start, start + length))))
        count += length
    new_runs.sort()
    out, k = [], 0
    for i, p in enumerate(order):
        while k < len(new_runs) and new_runs[k][0] == i:
            out.extend(new_runs[k][1])
            k += 1
        out.append(p)
    return out


def w5_base(npages, seed):
    """Short clustered runs: 15% of pages in runs of 1 to 16 pages, the
    runs in random order; pages ascend within a run."""
    rng = random.Random(seed)
    target = int(0.15 * npages)
    used = bytearray(npages)
    runs, total = [], 0
    while total < target:
        length = min(rng.randint(1, 16), target - total)
        start = rng.randrange(0, npages - length)
        if 1 in used[start:start + length]:
            continue
        used[start:start + length] = b"\x01" * length
        runs.append((start, length))
        total += length
    rng.shuffle(runs)
    return [p for s, n in runs for p in range(s, s + n)], used


def write_trace(path, pages):
    with open(path, "w") as f:
        f.write("\n".join(map(str, pages)))
        f.write("\n")


# ---------------------------------------------------------------- machinery

class Machine:
    """Per-run bookkeeping: device counters of the disk holding DIR."""

    def __init__(self, workdir):
        st = os.stat(workdir)
        self.dev = (os.major(st.st_dev), os.minor(st.st_dev))

    def disk_read_bytes(self):
        with open("/proc/diskstats") as f:
            for line in f:
                p = line.split()
                if (int(p[0]), int(p[1])) == self.dev:
                    return int(p[5]) * 512
        return 0


def cpu_busy(interval=0.25):
    """Fraction of all CPUs busy over interval (others' work: ours is idle)."""
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def resident_bytes(path):
    p = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        return int(p.stdout.split()[0])
    except (ValueError, IndexError):
        return None


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_field(pid, name, path="status"):
    try:
        with open("/proc/%d/%s" % (pid, path)) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class RssSampler(threading.Thread):
    """Peak RssAnon (KiB) of a process, sampled every 10 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.start()

    def run(self):
        while not self.stop.is_set():
            v = proc_field(self.pid, "RssAnon:")
            if v is not None:
                self.peak = max(self.peak, v)
            self.stop.wait(0.01)

    def finish(self):
        self.stop.set()
        self.join()
        v = proc_field(self.pid, "RssAnon:")
        if v is not None:
            self.peak = max(self.peak, v)
        return self.peak


class Handler:
    """A pagein or ref_handler daemon serving exactly one VM."""

    def __init__(self, argv, logpath, sock):
        self.sock, self.logpath = sock, logpath
        if os.path.exists(sock):
            os.unlink(sock)
        self.logf = open(logpath, "w")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not os.path.exists(sock):
            if self.p.poll() is not None or time.time() > deadline:
                raise RuntimeError("%s did not start: %s" % (argv[0], self.text()))
            time.sleep(0.005)
        self.cpu0 = proc_cpu(self.p.pid)
        self.rss = RssSampler(self.p.pid)

    def text(self):
        self.logf.flush()
        with open(self.logpath) as f:
            return f.read()

    def wait_for(self, pattern, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            time.sleep(0.01)
        return None

    def stop(self):
        """Ends the daemon; returns (cpu seconds, peak RssAnon KiB, read_bytes)."""
        rss = self.rss.finish()
        read_bytes = proc_field(self.p.pid, "read_bytes:", "io") or 0
        self.p.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = status
        self.logf.close()
        return ru.ru_utime + ru.ru_stime - self.cpu0, rss, read_bytes


def load_latencies(path):
    with open(path) as f:
        v = sorted(int(x) for x in f)
    os.unlink(path)
    return v


def cdf_points(ns):
    """(microseconds, fraction) at ~200 fractions, for the CDF plot."""
    if not ns:
        return []
    fr = [i / 100 for i in range(1, 100)] + [0.995, 0.999, 0.9999, 1.0]
    n = len(ns)
    return [[round(ns[min(n - 1, int(f * n + 0.999999) - 1)] / 1e3, 3), f] for f in fr]


class Bench:
    def __init__(self, a):
        self.a = a
        self.dir = a.dir
        os.makedirs(self.dir, exist_ok=True)
        self.machine = Machine(self.dir)
        # Private copies of the binaries: others rebuild build/ in this
        # tree while a run goes on, and a run must measure one build.
        bindir = os.path.join(self.dir, "bin")
        os.makedirs(bindir, exist_ok=True)
        for name, src in (("pagein", "build/pagein"), ("vmmsim", "build/vmmsim"),
                          ("ref_handler", "build/bench/ref_handler"),
                          ("bulk_ceiling", "build/bench/bulk_ceiling")):
            dst = os.path.join(bindir, name)
            subprocess.run(["cp", os.path.join(ROOT, src), dst + ".tmp"], check=True)
            os.replace(dst + ".tmp", dst)
        self.pagein = os.path.join(bindir, "pagein")
        self.vmmsim = os.path.join(bindir, "vmmsim")
        self.ref = os.path.join(bindir, "ref_handler")
        self.bulk = os.path.join(bindir, "bulk_ceiling")
        self.sock = os.path.join(self.dir, "bench.sock")
        self.copies = {}        # raw image -> its copy on tmpfs
        self.quiet_waited = 0   # seconds spent waiting for a quiet machine
        self.runs = []          # every measurement
        self.lat = {}           # key -> list of per-rep sorted latencies
        self.t0 = time.time()

    def expect_copy(self, raw):
        """vmmsim verifies against a copy of the raw image on tmpfs, mapped
        and faulted in before each run (--expect-prefault): verifying then
        takes no page fault and reads nothing of the snapshot file, which
        can be evicted on its own; one copy serves every run."""
        if raw not in self.copies:
            dst = os.path.join(SHM, "pagein-bench-%d-%s" % (os.getpid(), os.path.basename(raw)))
            subprocess.run(["cp", raw, dst], check=True)
            self.copies[raw] = dst
        return self.copies[raw]

    def wait_quiet(self):
        """Others share this machine: before a measurement wait (up to 20 s
        each, QUIET_BUDGET_S in all) until the CPUs are mostly idle.
        Returns the busy fraction seen last (kept with the run)."""
        busy = cpu_busy()
        waited = 0
        budget = 0 if self.a.smoke else QUIET_BUDGET_S  # smoke: under a minute
        while busy > 0.3 and waited < 20 and self.quiet_waited < budget:
            time.sleep(1)
            waited += 1
            self.quiet_waited += 1
            busy = cpu_busy()
        return busy

    def warm(self, path):
        """A warm run needs every page of the file cached (the host may
        have reclaimed some since the last run): read it if not."""
        if resident_bytes(path) != os.path.getsize(path):
            subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)

    def cleanup(self):
        for f in self.copies.values():
            if os.path.exists(f):
                os.unlink(f)

    # -- one measurement --------------------------------------------------
    def vmmsim_report(self, snap, args, tag, expect=None, timeout=120):
        """vmmsim run on snap with args, every byte verified against expect
        (default snap): its JSON report, the path of its latency file (in
        touch order; the caller reads and removes it) and the process."""
        rep = os.path.join(self.dir, tag + ".json")
        latf = os.path.join(self.dir, tag + ".lat")
        argv = [self.vmmsim, "run", "--snapshot", snap, "--expect-prefault",
                "--expect", self.expect_copy(expect or snap),
                "--timeout", str(timeout), "--report-json", rep, "--latency-out", latf] + args
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0 or "verify: ok" not in p.stdout:
            raise RuntimeError("vmmsim failed (%d): %s\n%s" % (p.returncode, " ".join(argv),
                                                                p.stderr[-2000:]))
        with open(rep) as f:
            r = json.load(f)
        os.unlink(rep)
        return r, latf, p

    def vmmsim_run(self, snap, wl, extra, tag, expect=None):
        r, latf, p = self.vmmsim_report(snap, wl["args"] + extra, tag, expect)
        return r, load_latencies(latf), p

    def measure(self, snap, wl, cfg, cache, rep, ws=None, expect=None, record=None,
                vm_extra=()):
        """Runs workload wl under configuration cfg once, serving snap
        (whose bytes are those of the raw file expect, default snap);
        returns the record. Cold (and throttled): both files are evicted.
        vm_extra: more vmmsim options (hugetlb: --page-size 2m)."""
        tag = "%s-%s-%s-%d" % (wl["name"], cfg, cache, rep)
        ev = []
        if cache in ("cold", "throttled"):
            for f in sorted({snap, expect or snap}):
                ev += ["--evict", f]
        busy = self.wait_quiet()
        if cache == "warm":
            self.warm(snap)
        disk0 = self.machine.disk_read_bytes()
        load0 = os.getloadavg()[0]
        rec = {"workload": wl["name"], "config": cfg, "cache": cache, "rep": rep,
               "snapshot": os.path.basename(snap)}
        if cfg in ("file", "floor"):
            backend = "file" if cfg == "file" else "populated"
            r, lat, _ = self.vmmsim_run(snap, wl, ["--backend", backend] + ev + list(vm_extra),
                                        tag)
            rec.update(faults=r["workload_minflt"] + r["workload_majflt"],
                       major_faults=r["workload_majflt"], cpu_s=None, rss_anon_kib=None,
                       read_bytes=None)
        else:
            h = self.start_handler(cfg, snap, ws, tag, record)
            try:
                r, lat, _ = self.vmmsim_run(snap, wl, ["--socket", self.sock] + ev +
                                            list(vm_extra), tag, expect)
                end = h.wait_for(r"session ended[^\n]*")
            finally:
                cpu, rss, rb = h.stop()
            if not end:
                raise RuntimeError("%s: no session end in its log:\n%s" % (cfg, h.text()[-2000:]))
            rec.update(self.parse_end(cfg, end.group(0)), cpu_s=round(cpu, 3),
                       rss_anon_kib=rss, read_bytes=rb)
        rec.update(guest_bytes=r["guest_pages"] * r["page_size"],
                   wall_s=r["wall_s"], p50_us=r["first_touch_us"]["p50"],
                   p99_us=r["first_touch_us"]["p99"], pages_touched=r["pages_touched"],
                   gb_s=round(r["pages_touched"] * PAGE / 1e9 / r["wall_s"], 4),
                   vmmsim_faults=r["workload_minflt"] + r["workload_majflt"],
                   disk_read_bytes=self.machine.disk_read_bytes() - disk0,
                   loadavg=round(load0, 2), others_busy=round(busy, 2))
        self.runs.append(rec)
        self.lat.setdefault((wl["name"], cfg, cache, rec["snapshot"]), []).append(
            (r["wall_s"], lat))
        log("%-3s %-12s %-4s rep %d: %7.3f s  faults %7s  p50 %7.1f us  p99 %8.1f us  "
            "cpu %5s  rss %6s KiB" % (wl["name"], cfg, cache, rep, rec["wall_s"], rec["faults"],
                                      rec["p50_us"], rec["p99_us"], rec["cpu_s"],
                                      rec["rss_anon_kib"]))
        return rec

    def start_handler(self, cfg, snap, ws, tag, record=None):
        logpath = os.path.join(self.dir, tag + ".log")
        if cfg == "ref":
            return Handler([self.ref, "--snapshot", snap, "--socket", self.sock], logpath,
                           self.sock)
        argv = [self.pagein, "serve", "--snapshot", snap, "--socket", self.sock,
                "--log-level", "info"]
        m = re.fullmatch(r"pagein-fa(\d+)", cfg)
        mb = re.fullmatch(r"pagein-bg(\d+)", cfg)
        if mb:
            argv += ["--populate", "background", "--fault-around", mb.group(1)]
        elif cfg == "pagein-none":
            argv += ["--populate", "none", "--fault-around", "0"]
        elif m:
            argv += ["--populate", "none", "--fault-around", m.group(1)]
        elif cfg == "pagein-fa":
            argv += ["--populate", "none"]
        elif cfg == "pagein-ws":
            argv += ["--populate", "none", "--prefetch", ws]
        elif cfg == "pagein-bg":
            argv += ["--populate", "background"] + (["--prefetch", ws] if ws else [])
        elif cfg == "pagein-eager":
            argv += ["--populate", "eager"]
        elif cfg == "pagein-record":
            argv += ["--populate", "none", "--fault-around", "0", "--record", record]
        else:
            raise ValueError(cfg)
        return Handler(argv, logpath, self.sock)

    @staticmethod
    def parse_end(cfg, line):
        if cfg == "ref":
            return {"faults": int(re.search(r"faults (\d+)", line).group(1))}
        # Only the parts of pagein's stats line the report uses; the rest
        # of its wording may change.
        m = re.search(r"faults (\d+) missing/(\d+) minor", line)
        out = {"faults": int(m.group(1)) + int(m.group(2))}
        for key, pat in (("filled_fault_around", r"fault-around (\d+)"),
                         ("filled_prefetch", r"prefetch (\d+)"),
                         ("filled_background", r"background (\d+)")):
            f = re.search(r"\([^)]*\b" + pat, line)
            out[key] = int(f.group(1)) if f else None
        c = re.search(r"complete in ([\d.]+) s", line)
        out["complete_s"] = float(c.group(1)) if c else None
        return out

    # -- w4 -------------------------------------------------------------
    def measure_w4(self, snap, cfg, rep, size):
        """pagein: time from the handshake until every page is present, the
        guest touching a few pages and then idling (--hold)."""
        tag = "w4-%s-warm-%d" % (cfg, rep)
        busy = self.wait_quiet()
        self.warm(snap)
        h = self.start_handler(cfg, snap, None, tag)
        argv = [self.vmmsim, "run", "--socket", self.sock, "--snapshot", snap,
                "--pattern", "random", "--touch", "64K", "--vcpus", "1", "--hold", "600",
                "--timeout", "120"]
        v = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = None
        try:
            deadline = time.time() + 300
            while time.time() < deadline and v.poll() is None:
                h.p.send_signal(signal.SIGUSR1)
                done = re.search(r"complete in ([\d.]+) s", h.text())
                if done:
                    break
                time.sleep(0.05)
        finally:
            v.terminate()
            v.wait()
            end = h.wait_for(r"session ended[^\n]*")
            cpu, rss, rb = h.stop()
        if not end or not done:
            raise RuntimeError("w4 %s: restore did not complete:\n%s" % (cfg, h.text()[-2000:]))
        rec = {"workload": "w4", "config": cfg, "cache": "warm", "rep": rep,
               "snapshot": os.path.basename(snap), "guest_bytes": size}
        rec.update(self.parse_end(cfg, end.group(0)), cpu_s=round(cpu, 3), rss_anon_kib=rss,
                   read_bytes=rb)
        rec["wall_s"] = rec["complete_s"]
        rec["gb_s"] = round(size / 1e9 / rec["wall_s"], 4)
        rec["p50_us"] = rec["p99_us"] = None
        rec["others_busy"] = round(busy, 2)
        self.runs.append(rec)
        log("w4  %-12s warm rep %d: %7.3f s  %.2f GB/s" % (cfg, rep, rec["wall_s"], rec["gb_s"]))

    def measure_bulk(self, snap, rep):
        self.wait_quiet()
        self.warm(snap)
        p = subprocess.run([self.bulk, "--snapshot", snap, "--repeat", "1"],
                           stdout=subprocess.PIPE, text=True, check=True)
        for m in re.finditer(r"run \d+: ([\d.]+) s, ([\d.]+) GB/s", p.stdout):
            rec = {"workload": "w4", "config": "bulk", "cache": "warm", "rep": rep,
                   "snapshot": os.path.basename(snap), "wall_s": float(m.group(1)),
                   "gb_s": float(m.group(2)), "faults": 0, "p50_us": None, "p99_us": None,
                   "cpu_s": None, "rss_anon_kib": None}
            self.runs.append(rec)
            log("w4  bulk         warm rep %d: %7.3f s  %.2f GB/s" % (rep, rec["wall_s"],
                                                                     rec["gb_s"]))

    # -- medians --------------------------------------------------------
    def median(self, wl, cfg, cache, snap=None):
        rs = [r for r in self.runs if r["workload"] == wl and r["config"] == cfg
              and r["cache"] == cache and (snap is None or r["snapshot"] == snap)]
        if not rs:
            return None
        out = {"n": len(rs)}
        for k in ("wall_s", "faults", "p50_us", "p99_us", "gb_s", "cpu_s", "rss_anon_kib",
                  "read_bytes", "disk_read_bytes", "filled_prefetch", "filled_fault_around",
                  "major_faults", "vmmsim_faults"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                out[k] = statistics.median(vals)
        if (wl, cfg, cache, snap or rs[0]["snapshot"]) in self.lat:
            reps = sorted(self.lat[(wl, cfg, cache, snap or rs[0]["snapshot"])],
                          key=lambda x: x[0])
            out["cdf"] = cdf_points(reps[len(reps) // 2][1])
        return out


# ---------------------------------------------------------------- the run

CONFIG_NAMES = {
    "floor": "touch floor (memory already populated, no faults)",
    "file": "File backend (MAP_PRIVATE)",
    "ref": "reference handler (4 KiB COPY per fault)",
    "bulk": "bulk ceiling (2 MiB COPYs)",
    "pagein-none": "pagein --populate none --fault-around 0",
    "pagein-fa": "pagein --populate none (fault-around %s)" % DEFAULT_FA,
    "pagein-ws": "pagein --populate none --prefetch WS",
    "pagein-bg": "pagein defaults (background, fault-around %s)" % DEFAULT_FA,
    "pagein-eager": "pagein --populate eager",
    "pagein-bg0": "pagein --fault-around 0 (background population)",
    "pagein-bg64": "pagein --fault-around 64 (background population)",
}


def split_key(k):
    """A results key "workload/cache/config[.pagein]": the workload, the
    configuration and whether it ran from a pagein-format file."""
    wl, _, cfg = k.split("/")
    fmt_file = cfg.endswith(".pagein")
    return wl, cfg[:-len(".pagein")] if fmt_file else cfg, fmt_file


def workloads(ws_trace):
    return {
        "w1": {"name": "w1", "args": ["--pattern", "trace:" + ws_trace, "--vcpus", "2"]},
        "w2": {"name": "w2", "args": ["--pattern", "random", "--touch", "0.25", "--vcpus", "2",
                                      "--seed", "2"]},
        "w3": {"name": "w3", "args": ["--pattern", "seq", "--vcpus", "1"]},
    }


def ensure_snapshot(b, path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    log("generating %s (%d MiB, dense, 30%% zero pages)" % (path, size >> 20))
    subprocess.run([b.vmmsim, "gen", "-o", path, "--size", str(size), "--seed", "7", "--dense"],
                   check=True, stdout=subprocess.DEVNULL)


def prepare_w1(b, snap, npages, prefix):
    """Traces for w1 and the working set recorded by pagein on the first."""
    base, used = w1_base(npages, seed=11)
    rec_trace = os.path.join(b.dir, prefix + "-w1-record.trace")
    run_trace = os.path.join(b.dir, prefix + "-w1-run.trace")
    write_trace(rec_trace, w1_trace(base, used, npages, jitter_seed=1))
    write_trace(run_trace, w1_trace(base, used, npages, jitter_seed=2))
    # --record needs %n (the VM's number); a fresh handler's one VM is vm1.
    record = os.path.join(b.dir, prefix + "-w1-%n.ws")
    ws = record.replace("%n", "1")
    if os.path.exists(ws):
        os.unlink(ws)
    wl = {"name": "w1-record", "args": ["--pattern", "trace:" + rec_trace, "--vcpus", "2"]}
    b.measure(snap, wl, "pagein-record", "warm", 0, record=record)
    b.runs.pop()  # the recording run is not a measurement
    if not os.path.exists(ws):
        raise RuntimeError("pagein wrote no working set to " + ws)
    return run_trace, ws, len(base)


def run_main(b, a, snap, size):
    npages = size // PAGE
    res = {}
    run_trace, ws, wsn = prepare_w1(b, snap, npages, "synthetic")
    b.w1_files = (run_trace, ws)  # for the remote section
    res["w1_working_set_pages"] = wsn
    wls = workloads(run_trace)
    base5, used5 = w5_base(npages, seed=13)
    w5_path = os.path.join(b.dir, "synthetic-w5.trace")
    write_trace(w5_path, w1_trace(base5, used5, npages, jitter_seed=2))
    wls["w5"] = {"name": "w5", "args": ["--pattern", "trace:" + w5_path, "--vcpus", "2"]}
    reps = a.reps
    uffd_cfgs = ["ref", "pagein-none", "pagein-fa", "pagein-bg"]
    # (workload, cache, configurations)
    plan = [("w1", "warm", ["floor", "file"] + uffd_cfgs + ["pagein-ws"]),
            ("w1", "cold", ["file"] + uffd_cfgs + ["pagein-ws"]),
            ("w2", "warm", ["floor", "file"] + uffd_cfgs),
            ("w2", "cold", ["file", "pagein-fa", "pagein-bg"]),
            ("w3", "warm", ["floor", "file"] + uffd_cfgs),
            ("w3", "cold", ["file", "pagein-fa", "pagein-bg"]),
            # Issue 11: short clustered runs; the defaults against fixed
            # windows of 0 (pagein-none is --populate none, so also
            # pagein-bg0: the defaults with --fault-around 0) and 64.
            ("w5", "warm", ["floor", "file"] + uffd_cfgs + ["pagein-bg0", "pagein-bg64"])]
    sweep = ["pagein-fa%d" % n for n in (4, 16, 64, 256)]
    for rep in range(1, reps + 1):
        # Each repetition runs every group once, the configurations of a
        # group in a new random order: on this machine a run can be slowed
        # by the one before it (a long on-demand run, memory given back to
        # the host), and a fixed order would pin that on one configuration.
        order = random.Random(rep)
        for wl, cache, cfgs in plan:
            cfgs = cfgs + (sweep if cache == "warm" and wl in ("w2", "w3") else [])
            for cfg in order.sample(cfgs, len(cfgs)):
                b.measure(snap, wls[wl], cfg, cache, rep,
                          ws=ws if wl == "w1" and cfg in ("pagein-ws", "pagein-bg") else None)
        for cfg in order.sample(["pagein-bg", "pagein-eager", "bulk"], 3):
            if cfg == "bulk":
                b.measure_bulk(snap, rep)
            else:
                b.measure_w4(snap, cfg, rep, size)
    med = {}
    for wl, cache, cfgs in plan:
        for cfg in cfgs:
            med["%s/%s/%s" % (wl, cache, cfg)] = b.median(wl, cfg, cache)
    for cfg in ("bulk", "pagein-bg", "pagein-eager"):
        med["w4/warm/%s" % cfg] = b.median("w4", cfg, "warm")
    # w4 for configurations without population: a sequential touch of every
    # page, i.e. their w3 (1 vCPU, all memory).
    for cfg in ("floor", "file", "ref", "pagein-none", "pagein-fa"):
        m = dict(med["w3/warm/%s" % cfg])
        m.pop("cdf", None)
        m["from"] = "w3"
        med["w4/warm/%s" % cfg] = m
    add_floor_rows(med)
    for k, v in med.items():  # CDFs for every workload table (w4 has none)
        if v and k.startswith("w4/"):
            v.pop("cdf", None)
    res["median"] = med
    sw = {}
    for wl in ("w2", "w3"):
        sw[wl] = {}
        for fa in [0, 4, 16, 64, 256]:
            cfg = {0: "pagein-none"}.get(fa, "pagein-fa%d" % fa)
            m = b.median(wl, cfg, "warm")
            sw[wl][str(fa)] = {k: m.get(k) for k in ("wall_s", "faults", "p50_us", "p99_us",
                                                     "gb_s", "cpu_s")}
    res["sweep"] = sw
    return res


def run_format(b, a, images):
    """Issue 4: the pagein format vs the raw file, per image."""
    out = []
    for name, raw in images:
        size = os.path.getsize(raw)
        npages = size // PAGE
        run_trace, ws, _ = prepare_w1(b, raw, npages, name)
        pf = os.path.join(b.dir, name + ".pagein")
        if os.path.exists(pf):
            os.unlink(pf)
        subprocess.run(["cat", raw], stdout=subprocess.DEVNULL, check=True)  # warm input
        t = time.time()
        subprocess.run([b.pagein, "snapshot", "convert", raw, "-o", pf, "--working-set", ws],
                       check=True, stdout=subprocess.DEVNULL)
        conv_s = time.time() - t
        psize = os.path.getsize(pf)
        allocated = os.stat(raw).st_blocks * 512
        entry = {"image": name, "raw_bytes": size, "raw_allocated_bytes": allocated,
                 "pagein_bytes": psize, "ratio": round(size / psize, 2),
                 "convert_s": round(conv_s, 3), "convert_mb_s": round(size / 1e6 / conv_s, 1)}
        wls = workloads(run_trace)
        for rep in range(1, a.reps + 1):
            for src, path in (("raw", raw), ("pagein", pf)):
                for wl, cfg in (("w1", "pagein-ws"), ("w3", "pagein-fa")):
                    r = b.measure(path, wls[wl], cfg, "cold", rep,
                                  ws=ws if wl == "w1" else None, expect=raw)
                    r["format_image"] = name
                    r["format_source"] = src
        for wl, cfg in (("w1", "pagein-ws"), ("w3", "pagein-fa")):
            for src, path in (("raw", raw), ("pagein", pf)):
                m = b.median(wl, cfg, "cold", os.path.basename(path))
                m.pop("cdf", None)
                entry["%s_%s" % (wl, src)] = m
        out.append(entry)
        log("format %s: %.2fx, convert %.0f MB/s" % (name, entry["ratio"], entry["convert_mb_s"]))
    return out


# ---------------------------------------------------------------- floors
#
# Two baselines every table is read against (issue 11, item 1): the touch
# floor (the workload over memory already populated: what the guest itself
# costs, no fault at all) and the bulk-copy ceiling (w4's 2 MiB COPY loop:
# the fastest a handler can put all memory in place). The floor is measured
# warm once per workload and stands for the cold and throttled tables too
# (populated memory reads no snapshot); the bulk ceiling is w4's.

def floor_source(wl, cache, cfg):
    """Where a baseline row of table (wl, cache) was measured."""
    if cfg == "floor" and cache != "warm":
        return wl, "warm"
    if cfg == "bulk":
        return "w4", "warm"
    return wl, cache


def add_floor_rows(med):
    """Puts the floor first in every table of med (a cold table gets the
    warm floor, marked), and the bulk ceiling into the w3 warm table (w3
    touches every page: the ceiling is filling all of it)."""
    out, seen = {}, set()
    for k in list(med):
        wl, cache, cfg = k.split("/")
        if (wl, cache) not in seen:
            seen.add((wl, cache))
            fk = "%s/%s/floor" % (wl, cache)
            src = "%s/warm/floor" % wl
            if fk not in med and cache != "warm" and med.get(src):
                m = dict(med[src])
                m.pop("cdf", None)
                m["from"] = "%s warm" % wl
                out[fk] = m
            elif fk in med:
                out[fk] = med[fk]
        if k not in out:
            out[k] = med[k]
    if med.get("w4/warm/bulk") and "w3/warm/file" in out:
        m = dict(med["w4/warm/bulk"])
        m["from"] = "w4"
        out["w3/warm/bulk"] = m
    med.clear()
    med.update(out)


def x_floor(res, key):
    """key's time as a multiple of its table's touch floor (median of the
    per-repetition ratios)."""
    wl, cache, cfg = key.split("/")
    if cfg == "floor":
        return 1.0
    return rep_ratio(res, key, "%s/%s/floor" % (wl, cache))


# ---------------------------------------------------------------- throttled volume
#
# Issue 11, item 2: cold runs also on a volume like a general-purpose cloud
# disk. A cgroup v1 blkio group throttles reads of the whole disk behind
# the snapshot to THR_BPS and THR_IOPS; the driver moves itself into it for
# the section, so every process of a run (pagein, ref_handler, vmmsim, the
# File backend's vmmsim) is in it; the disk's read_ahead_kb is THR_RA_KB
# meanwhile. Both are undone on the way out, also on an error or a signal.

THR_BPS = 250 * 1000 * 1000
THR_IOPS = 3000
THR_RA_KB = 128
BLKIO = "/sys/fs/cgroup/blkio"


class SkipSection(Exception):
    pass


def disk_of(path):
    """(MAJ:MIN, name) of the whole disk holding path (a partition's disk:
    blkio throttles whole devices)."""
    st = os.stat(path)
    sysd = os.path.realpath("/sys/dev/block/%d:%d" % (os.major(st.st_dev), os.minor(st.st_dev)))
    if not os.path.isdir(sysd):
        raise SkipSection("%s is not on a block device" % path)
    if os.path.exists(os.path.join(sysd, "partition")):
        sysd = os.path.dirname(sysd)
    with open(os.path.join(sysd, "dev")) as f:
        return f.read().strip(), os.path.basename(sysd)


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


class Throttled:
    """with Throttled(path): the calling process (and so every child it
    starts) in a blkio cgroup throttling the disk of path, read_ahead_kb
    THR_RA_KB; everything restored on exit, also on SIGTERM/SIGINT/SIGHUP
    (turned into SystemExit so that the finally blocks run)."""

    def __init__(self, path):
        self.dev, self.disk = disk_of(path)
        self.cg = os.path.join(BLKIO, "pagein-bench-%d" % os.getpid())
        self.ra_path = "/sys/block/%s/queue/read_ahead_kb" % self.disk
        self.ra_old = self.home = None
        self.old_handlers = {}

    def __enter__(self):
        if not os.path.exists(os.path.join(BLKIO, "blkio.throttle.read_bps_device")):
            os.makedirs(BLKIO, exist_ok=True)
            p = subprocess.run(["mount", "-t", "cgroup", "-o", "blkio", "cgroup", BLKIO],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode or not os.path.exists(
                    os.path.join(BLKIO, "blkio.throttle.read_bps_device")):
                raise SkipSection("cgroup v1 blkio is not mounted and mounting it failed: %s"
                                  % p.stdout.strip())
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.old_handlers[sig] = signal.signal(sig, self._signal)
        try:
            with open("/proc/self/cgroup") as f:
                for line in f:
                    _, ctl, path = line.rstrip("\n").split(":", 2)
                    if "blkio" in ctl.split(","):
                        self.home = os.path.join(BLKIO, path.lstrip("/"))
            self.home = self.home or BLKIO
            os.mkdir(self.cg)
            write_file(os.path.join(self.cg, "blkio.throttle.read_bps_device"),
                       "%s %d" % (self.dev, THR_BPS))
            write_file(os.path.join(self.cg, "blkio.throttle.read_iops_device"),
                       "%s %d" % (self.dev, THR_IOPS))
            with open(self.ra_path) as f:
                self.ra_old = f.read().strip()
            write_file(self.ra_path, str(THR_RA_KB))
            write_file(os.path.join(self.cg, "cgroup.procs"), str(os.getpid()))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _signal(self, sig, frame):
        raise SystemExit("bench: signal %d during the throttled section" % sig)

    def __exit__(self, *exc):
        try:
            write_file(os.path.join(self.home or BLKIO, "cgroup.procs"), str(os.getpid()))
        except OSError as e:
            log("throttled: could not leave %s: %s" % (self.cg, e))
        if self.ra_old is not None:
            write_file(self.ra_path, self.ra_old)
            self.ra_old = None
        for _ in range(50):  # children that just exited may linger a moment
            try:
                if os.path.isdir(self.cg):
                    os.rmdir(self.cg)
                break
            except OSError:
                time.sleep(0.1)
        else:
            log("throttled: could not remove %s" % self.cg)
        for sig, h in self.old_handlers.items():
            signal.signal(sig, h)
        self.old_handlers = {}
        return False


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def throttle_check(snap, size, smoke=False):
    """Inside the group: a buffered dd of the evicted snapshot (MB/s) and
    4 KiB direct reads (IOPS), to show that the throttle applies."""
    n = min(size, 512 * MIB) // MIB
    evict(snap)
    t = time.time()
    subprocess.run(["dd", "if=" + snap, "of=/dev/null", "bs=1M", "count=%d" % n],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    mb_s = n * MIB / 1e6 / (time.time() - t)
    k = 300 if smoke else 3000
    evict(snap)
    t = time.time()
    subprocess.run(["dd", "if=" + snap, "of=/dev/null", "bs=4k", "count=%d" % k,
                    "iflag=direct", "skip=%d" % (size // 8192)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    iops = k / (time.time() - t)
    return {"dd_mb_s": round(mb_s, 1), "dd_mib": n, "direct_4k_iops": round(iops),
            "direct_4k_reads": k}


THR_PLAN = [("w1", ["file", "ref", "pagein-ws", "pagein-bg"]),
            ("w2", ["file", "pagein-fa", "pagein-bg"]),
            ("w3", ["file", "pagein-fa", "pagein-bg"])]


def thr_plan(a):
    """The smoke run keeps a tiny version of the section."""
    if a.smoke:
        return [("w1", ["file", "pagein-ws"])]
    return THR_PLAN


def run_throttled(b, a, snap, wls, ws, pagein_file):
    """Cold runs under the throttle; returns the section's results (or
    {"skipped": reason})."""
    try:
        thr = Throttled(snap)
        with thr:
            out = {"device": thr.dev, "disk": thr.disk, "read_bps": THR_BPS,
                   "read_iops": THR_IOPS, "read_ahead_kb": THR_RA_KB,
                   "read_ahead_kb_before": thr.ra_old, "cgroup": thr.cg}
            out["check"] = throttle_check(snap, a.size, a.smoke)
            log("throttled: dd %.0f MB/s, %d direct 4 KiB reads/s (limits %d MB/s, %d IOPS)"
                % (out["check"]["dd_mb_s"], out["check"]["direct_4k_iops"], THR_BPS // 10**6,
                   THR_IOPS))
            for rep in range(1, a.reps + 1):
                order = random.Random(100 + rep)
                for wl, cfgs in thr_plan(a):
                    for cfg in order.sample(cfgs, len(cfgs)):
                        b.measure(snap, wls[wl], cfg, "throttled", rep,
                                  ws=ws if wl == "w1" and cfg in ("pagein-ws", "pagein-bg")
                                  else None)
                    if pagein_file and wl in ("w1", "w3"):
                        cfg = "pagein-ws" if wl == "w1" else "pagein-fa"
                        r = b.measure(pagein_file, wls[wl], cfg, "throttled", rep,
                                      ws=ws if wl == "w1" else None, expect=snap)
                        r["format_image"] = "synthetic"
                        r["format_source"] = "pagein"
    except SkipSection as e:
        log("throttled: skipped: %s" % e)
        return {"skipped": str(e)}
    med = {}
    for wl, cfgs in thr_plan(a):
        for cfg in cfgs:
            med["%s/throttled/%s" % (wl, cfg)] = b.median(wl, cfg, "throttled",
                                                          os.path.basename(snap))
        if pagein_file and wl in ("w1", "w3"):
            cfg = "pagein-ws" if wl == "w1" else "pagein-fa"
            med["%s/throttled/%s.pagein" % (wl, cfg)] = b.median(
                wl, cfg, "throttled", os.path.basename(pagein_file))
    out["median"] = drop_cdf(med)
    return out


def drop_cdf(med):
    """The medians of a section without their latency samples (no CDF plot)."""
    for v in med.values():
        if v:
            v.pop("cdf", None)
    return med


def markdown_throttled(res):
    t = res.get("throttled")
    if not t:
        return []
    L = ["#### Cold page cache on a throttled volume (cloud-disk-like)", ""]
    if t.get("skipped"):
        return L + ["Skipped: " + t["skipped"], ""]
    c = t["check"]
    L.append("cgroup v1 blkio on %s (disk %s): read_bps_device %d MB/s, read_iops_device %d; "
             "read_ahead_kb %d during the section (%s before, restored after); the snapshot "
             "evicted before every run. Check under the throttle: dd of %d MiB of the evicted "
             "snapshot %.0f MB/s, %d direct 4 KiB reads at %d/s." % (
                 t["device"], t["disk"], t["read_bps"] // 10**6, t["read_iops"],
                 t["read_ahead_kb"], t["read_ahead_kb_before"], c["dd_mib"], c["dd_mb_s"],
                 c["direct_4k_reads"], c["direct_4k_iops"]))
    L.append("")
    L.append("| workload | configuration | time s | x floor | speedup vs File | faults "
             "| read MiB | GB/s |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for k, v in t["median"].items():
        if not v:
            continue
        wl, base, fmt_file = split_key(k)
        name = CONFIG_NAMES.get(base, base) + (", pagein-format file" if fmt_file else "")
        fl = res["median"].get("%s/warm/floor" % wl) or {}
        xf = v["wall_s"] / fl["wall_s"] if fl.get("wall_s") else None
        fv = t["median"].get("%s/throttled/file" % wl) or {}
        sp = (fv["wall_s"] / v["wall_s"]) if fv.get("wall_s") and (base, fmt_file) != ("file", False) else None
        rb = v.get("read_bytes")
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            wl, name, fmt(v.get("wall_s")), fmt(xf), fmt(sp), fmt(v.get("faults")),
            fmt(rb / MIB if rb else None), fmt(v.get("gb_s"))))
    L.append("")
    L.append("x floor: against the warm touch floor of the workload (ratio of medians); "
             "speedup vs File: File's throttled median time / this one's; read MiB: the "
             "handler's /proc/PID/io read_bytes (File: -).")
    L.append("")
    return L


# ---------------------------------------------------------------- hugetlbfs
#
# Issue 11, item 7: guests in 2 MiB huge pages (Firecracker huge_pages "2M")
# can only be restored through a UFFD handler. The competitor is the
# reference handler copying one 2 MiB page per fault. The section reserves
# its huge pages itself and gives them back.

HUGE = 2 * MIB
HUGE_PLAN = [("h2", ["floor", "ref", "pagein-fa", "pagein-bg"]),
             ("h3", ["floor", "ref", "pagein-fa", "pagein-bg"])]


def huge_plan(a):
    """The smoke run keeps a tiny version of the section."""
    return [("h3", ["floor", "ref", "pagein-fa"])] if a.smoke else HUGE_PLAN


class HugePages:
    """with HugePages(n): n more 2 MiB pages reserved, restored on exit,
    also on SIGTERM/SIGINT/SIGHUP (turned into SystemExit)."""

    PATH = "/proc/sys/vm/nr_hugepages"

    def __init__(self, n):
        self.n, self.before = n, None
        self.old_handlers = {}

    def _signal(self, sig, frame):
        raise SystemExit("bench: signal %d during the huge-page section" % sig)

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.old_handlers[sig] = signal.signal(sig, self._signal)
        try:
            with open(self.PATH) as f:
                self.before = int(f.read())
            write_file(self.PATH, str(self.before + self.n))
            with open(self.PATH) as f:
                got = int(f.read()) - self.before
        except OSError as e:
            self.__exit__()
            raise SkipSection("cannot reserve huge pages: %s" % e)
        if got < self.n:
            self.__exit__()
            raise SkipSection("reserved %d of the %d 2 MiB huge pages needed" % (got, self.n))
        return self

    def __exit__(self, *exc):
        if self.before is not None:
            try:
                write_file(self.PATH, str(self.before))
            except OSError as e:
                log("hugetlb: could not give back huge pages: %s" % e)
            self.before = None
        for sig, h in self.old_handlers.items():
            signal.signal(sig, h)
        self.old_handlers = {}
        return False


def run_hugetlb(b, a):
    size = min(a.size, 1 << 30)
    snap = os.path.join(b.dir, "synthetic-%dM.raw" % (size >> 20))
    ensure_snapshot(b, snap, size)
    pf = os.path.join(b.dir, "synthetic-%dM-huge.pagein" % (size >> 20))
    if not os.path.exists(pf) or os.path.getmtime(pf) < os.path.getmtime(snap):
        subprocess.run([b.pagein, "snapshot", "convert", snap, "-o", pf, "--huge"],
                       check=True, stdout=subprocess.DEVNULL)
    wls = {"h2": {"name": "h2", "args": ["--pattern", "random", "--touch", "0.25",
                                         "--vcpus", "2", "--seed", "2"]},
           "h3": {"name": "h3", "args": ["--pattern", "seq", "--vcpus", "1"]}}
    extra = ["--page-size", "2m"]
    out = {"guest_bytes": size, "snapshot": os.path.basename(snap),
           "pagein_file": os.path.basename(pf), "pagein_file_bytes": os.path.getsize(pf)}
    try:
        with HugePages(size // HUGE + 4) as hp:
            out["nr_hugepages_before"] = hp.before
            out["reserved"] = hp.n
            for rep in range(1, a.reps + 1):
                order = random.Random(200 + rep)
                for wl, cfgs in huge_plan(a):
                    for cfg in order.sample(cfgs, len(cfgs)):
                        b.measure(snap, wls[wl], cfg, "warm", rep, vm_extra=extra)
                    b.warm(pf)
                    r = b.measure(pf, wls[wl], "pagein-fa", "warm", rep, expect=snap,
                                  vm_extra=extra)
                    r["format_image"] = "huge"
                    r["format_source"] = "pagein"
    except SkipSection as e:
        log("hugetlb: skipped: %s" % e)
        return {"skipped": str(e)}
    med = {}
    for wl, cfgs in huge_plan(a):
        for cfg in cfgs:
            med["%s/warm/%s" % (wl, cfg)] = b.median(wl, cfg, "warm", os.path.basename(snap))
        med["%s/warm/pagein-fa.pagein" % wl] = b.median(wl, "pagein-fa", "warm",
                                                        os.path.basename(pf))
    out["median"] = drop_cdf(med)
    return out


def markdown_hugetlb(res):
    h = res.get("hugetlb")
    if not h:
        return []
    L = ["#### Guest memory in 2 MiB huge pages (hugetlbfs), warm page cache", ""]
    if h.get("skipped"):
        return L + ["Skipped: " + h["skipped"], ""]
    L.append("vmmsim --page-size 2m (anonymous MAP_HUGETLB guest memory, %d MiB, %d huge "
             "pages reserved by the driver and given back). h2: random 25%% of the 2 MiB pages, "
             "2 vCPUs; h3: sequential, 1 vCPU. The pagein-format file was converted with "
             "`--huge` (2 MiB chunks, %.0f MiB)." % (h["guest_bytes"] >> 20, h["reserved"],
                                                     h["pagein_file_bytes"] / MIB))
    L.append("")
    L.append("| workload | configuration | time s | x floor | speedup vs ref | faults | p50 us "
             "| p99 us | handler CPU s |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, v in h["median"].items():
        if not v:
            continue
        wl, base, fmt_file = split_key(k)
        name = CONFIG_NAMES.get(base, base) + (", pagein-format file" if fmt_file else "")
        if base == "ref":
            name = "reference handler (one 2 MiB COPY per fault)"
        fl = h["median"].get("%s/warm/floor" % wl) or {}
        rf = h["median"].get("%s/warm/ref" % wl) or {}
        xf = v["wall_s"] / fl["wall_s"] if fl.get("wall_s") else None
        sp = rf["wall_s"] / v["wall_s"] if rf.get("wall_s") and base.startswith("pagein") \
            else None
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            wl, name, fmt(v.get("wall_s")), fmt(xf), fmt(sp), fmt(v.get("faults")),
            fmt(v.get("p50_us")), fmt(v.get("p99_us")), fmt(v.get("cpu_s"))))
    L.append("")
    L.append("x floor and speedup vs ref are ratios of medians.")
    L.append("")
    return L


# ---------------------------------------------------------------- report

def rep_ratio(res, num, den, field="wall_s"):
    """Median over repetitions of num[field] / den[field], num and den
    being "workload/cache/config" of the main section, matched by
    repetition: runs of one repetition are minutes apart at most, so the
    machine's slow drifts cancel out. w4 of a configuration without
    population is its w3."""
    def by_rep(key):
        wl, cache, cfg = key.split("/")
        if wl == "w4" and cfg in ("floor", "file", "ref", "pagein-none", "pagein-fa"):
            wl = "w3"
        wl, cache = floor_source(wl, cache, cfg)
        out = {}
        for r in res["runs"]:
            if (r["workload"], r["cache"], r["config"]) == (wl, cache, cfg) \
                    and "format_image" not in r and r.get(field):
                out[r["rep"]] = r[field]
        return out
    a, b = by_rep(num), by_rep(den)
    v = [a[k] / b[k] for k in a if k in b]
    return statistics.median(v) if v else None


def targets(res, guest_bytes):
    def row(name, value, op, limit, detail):
        ok = value is not None and (value >= limit if op == ">=" else value <= limit)
        return {"target": name, "value": None if value is None else round(value, 3),
                "op": op, "limit": limit, "pass": bool(ok), "detail": detail}

    def q(num, den, field="wall_s"):
        return rep_ratio(res, num, den, field)

    rows = [
        row("w1 cold: speedup vs File", q("w1/cold/file", "w1/cold/pagein-ws"), ">=", 3,
            "File cold time / pagein-ws cold time"),
        row("w1 cold: speedup vs reference handler", q("w1/cold/ref", "w1/cold/pagein-ws"),
            ">=", 10, "ref cold time / pagein-ws cold time"),
        row("w1 warm: time ratio vs File", q("w1/warm/pagein-ws", "w1/warm/file"), "<=", 1.0,
            "pagein-ws warm time / File warm time"),
        row("w2: speedup vs reference handler", q("w2/warm/ref", "w2/warm/pagein-bg"), ">=", 4,
            "ref time / pagein defaults time (warm)"),
        row("w3: speedup vs reference handler", q("w3/warm/ref", "w3/warm/pagein-bg"), ">=",
            15, "ref time / pagein defaults time (warm)"),
        row("w3: throughput vs File warm", q("w3/warm/pagein-bg", "w3/warm/file", "gb_s"),
            ">=", 0.8, "pagein defaults GB/s / File warm GB/s"),
        row("w4: throughput vs bulk ceiling", q("w4/warm/pagein-bg", "w4/warm/bulk", "gb_s"),
            ">=", 0.9, "pagein background population GB/s / bulk ceiling GB/s"),
    ]
    # Issue 11's targets.
    rows += [
        row("w1 warm: pagein-ws time vs File (issue 11)", q("w1/warm/pagein-ws", "w1/warm/file"),
            "<=", 0.8, "pagein-ws warm time / File warm time"),
        row("w1 warm: pagein-ws time vs touch floor", q("w1/warm/pagein-ws", "w1/warm/floor"),
            "<=", 1.5, "pagein-ws warm time / floor time"),
        row("w1 cold, throttled volume: speedup vs File",
            q("w1/throttled/file", "w1/throttled/pagein-ws"), ">=", 2,
            "File time / pagein-ws time, both on the throttled volume"),
        row("w5: speedup vs reference handler", q("w5/warm/ref", "w5/warm/pagein-bg"), ">=", 2,
            "ref time / pagein defaults time"),
        row("w5: defaults vs --fault-around 0", q("w5/warm/pagein-bg0", "w5/warm/pagein-bg"),
            ">=", 1.0, "time with --fault-around 0 / defaults time (both populate)"),
        row("w5: on demand, auto vs --fault-around 0", q("w5/warm/pagein-none", "w5/warm/pagein-fa"),
            ">=", 1.0, "--populate none: time with window 0 / time with auto"),
        row("w3: throughput vs File warm (issue 11)", q("w3/warm/pagein-bg", "w3/warm/file", "gb_s"),
            ">=", 0.9, "pagein defaults GB/s / File warm GB/s"),
    ]
    for wl in ("w1", "w2", "w3"):
        rows.append(row("%s warm: on-demand p50 vs reference handler" % wl,
                        q(wl + "/warm/pagein-none", wl + "/warm/ref", "p50_us"), "<=", 1.2,
                        "pagein-none p50 / ref p50"))
    # Every pagein run, raw or pagein-format source, each against the limit
    # for its own guest size; the row shows the run closest to (or over) it.
    def limit_kib(r):
        return RSS_BASE_MIB * 1024 + RSS_FRACTION * r["guest_bytes"] / 1024
    for kind, is_kind in (("raw", lambda n: not n.endswith(".pagein")),
                          ("pagein-format", lambda n: n.endswith(".pagein"))):
        prs = [r for r in res["runs"] if r["config"].startswith("pagein")
               and r.get("rss_anon_kib") and r.get("guest_bytes") and is_kind(r["snapshot"])]
        if not prs:
            continue
        worst = max(prs, key=lambda r: r["rss_anon_kib"] / limit_kib(r))
        rows.append(row("handler anonymous RSS, %s source (MiB)" % kind,
                        worst["rss_anon_kib"] / 1024, "<=", round(limit_kib(worst) / 1024, 2),
                        "worst run against 64 MiB + 0.5%% of its guest memory: %s %s %s, %s"
                        % (worst["workload"], worst["config"], worst["cache"], worst["snapshot"])))
    return rows


def fmt(v):
    """Numbers for the tables: integers as such, else 3 significant digits
    (at least the units)."""
    if v is None:
        return "-"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 100):
        return "%d" % v
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    if abs(v) >= 1:
        return "%.2f" % v
    return "%.3g" % v


def markdown(res):
    m = res["median"]
    L = []
    meta = res["meta"]
    L.append("Run: %s, commit %s%s, kernel %s, %d CPUs, snapshot %s (%d MiB, %s), %d reps "
             "(median), load average %.2f at start, %.2f at end; %.0f s in all." % (
                 meta["date"], meta["commit"], " (+ uncommitted changes)" if meta["dirty"] else "",
                 meta["kernel"], meta["cpus"], meta["snapshot"], meta["snapshot_bytes"] >> 20,
                 meta["snapshot_kind"], meta["reps"], meta["loadavg_start"], meta["loadavg_end"],
                 meta["elapsed_s"]))
    L.append("")
    titles = {("w1", "warm"): "w1 function cold start, warm page cache",
              ("w1", "cold"): "w1 function cold start, cold page cache",
              ("w2", "warm"): "w2 random 25%, warm page cache",
              ("w2", "cold"): "w2 random 25%, cold page cache",
              ("w3", "warm"): "w3 sequential scan, warm page cache",
              ("w3", "cold"): "w3 sequential scan, cold page cache",
              ("w5", "warm"): "w5 short clustered runs (15% in runs of 1 to 16 pages), warm page cache",
              ("w4", "warm"): "w4 restore complete (every page present), warm page cache"}
    for (wl, cache), title in titles.items():
        keys = [k for k in m if k.startswith("%s/%s/" % (wl, cache))]
        if not keys:
            continue
        L.append("#### %s" % title)
        L.append("")
        L.append("| configuration | time s | x floor | faults | p50 us | p99 us | GB/s "
                 "| handler CPU s | handler peak RssAnon MiB |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k in keys:
            v = m[k]
            cfg = k.split("/")[2]
            name = CONFIG_NAMES.get(cfg, cfg) + (" (its %s)" % v["from"] if v.get("from")
                                                 else "")
            rss = v.get("rss_anon_kib")
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, fmt(v.get("wall_s")), fmt(x_floor(res, k)), fmt(v.get("faults")),
                fmt(v.get("p50_us")), fmt(v.get("p99_us")), fmt(v.get("gb_s")),
                fmt(v.get("cpu_s")), fmt(rss / 1024 if rss else None)))
        L.append("")
        # ratios of every pagein configuration to every baseline, same table
        bases = [c for c in ("file", "ref", "bulk") if "%s/%s/%s" % (wl, cache, c) in m]
        if wl in ("w1", "w2", "w3") and cache == "cold":
            bases.insert(1, "file@warm")
        pcs = [k.split("/")[2] for k in keys if k.split("/")[2].startswith("pagein")]
        if bases and pcs:
            hdr = []
            for bs in bases:
                hdr.append("vs %s" % bs)
            L.append("Speedup (baseline time / pagein time; > 1 = pagein faster) and p50 "
                     "ratio (pagein / baseline), each the median of the per-repetition ratios:")
            L.append("")
            L.append("| pagein configuration | " + " | ".join(
                "time vs %s | p50 vs %s" % (bs, bs) for bs in bases) + " |")
            L.append("|---|" + "---:|---:|" * len(bases))
            for pc in pcs:
                pk = "%s/%s/%s" % (wl, cache, pc)
                cells = []
                for bs in bases:
                    bk = ("%s/warm/file" % wl) if bs == "file@warm" else "%s/%s/%s" % (wl, cache, bs)
                    sp = rep_ratio(res, bk, pk)
                    lr = rep_ratio(res, pk, bk, "p50_us")
                    cells.append("%s | %s" % (fmt(sp), fmt(lr)))
                L.append("| %s | %s |" % (pc, " | ".join(cells)))
            L.append("")
    L.append("#### Targets")
    L.append("")
    L.append("| target | measured | limit | result | how |")
    L.append("|---|---:|---:|---|---|")
    for t in res["targets"]:
        L.append("| %s | %s | %s %s | %s | %s |" % (t["target"], fmt(t["value"]), t["op"],
                                                 t["limit"], "PASS" if t["pass"] else "MISS",
                                                 t["detail"]))
    L.append("")
    L.append("#### Fault-around sweep (pagein --populate none --fault-around N, warm)")
    L.append("")
    L.append("| N | w2 time s | w2 faults | w2 p50 us | w2 p99 us | w2 handler CPU s "
             "| w3 time s | w3 faults | w3 GB/s | w3 handler CPU s |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fa in ["0", "4", "16", "64", "256"]:
        a, c = res["sweep"]["w2"][fa], res["sweep"]["w3"][fa]
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            fa, fmt(a["wall_s"]), fmt(a["faults"]), fmt(a["p50_us"]), fmt(a["p99_us"]),
            fmt(a["cpu_s"]), fmt(c["wall_s"]), fmt(c["faults"]), fmt(c["gb_s"]),
            fmt(c["cpu_s"])))
    L.append("")
    L.append("Best N: w2 %s, w3 %s (by time)." % (res["sweep_best"]["w2"], res["sweep_best"]["w3"]))
    L.append("")
    if res.get("format"):
        L.append("#### Snapshot format: pagein file vs raw file (cold page cache)")
        L.append("")
        L.append("| image | raw MiB | pagein MiB | ratio | convert MB/s | w1 raw s | w1 pagein s "
                 "| w1 raw read MiB | w1 pagein read MiB | w3 raw s | w3 pagein s "
                 "| w3 raw read MiB | w3 pagein read MiB |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for e in res["format"]:
            def rd(k):
                v = e[k].get("read_bytes")
                return fmt(v / MIB if v is not None else None)
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                e["image"], fmt(e["raw_bytes"] / MIB), fmt(e["pagein_bytes"] / MIB),
                fmt(e["ratio"]), fmt(e["convert_mb_s"]), fmt(e["w1_raw"]["wall_s"]),
                fmt(e["w1_pagein"]["wall_s"]), rd("w1_raw"), rd("w1_pagein"),
                fmt(e["w3_raw"]["wall_s"]), fmt(e["w3_pagein"]["wall_s"]), rd("w3_raw"),
                rd("w3_pagein")))
        L.append("")
        L.append("Read MiB = /proc/PID/io read_bytes of pagein (bytes it caused to be read "
                 "from the block device). w1 = pagein --populate none --prefetch WS, "
                 "w3 = pagein --populate none; both files evicted before each run.")
        L.append("")
        for e in res["format"]:
            if e.get("note"):
                L.append(e["note"])
                L.append("")
    L += markdown_throttled(res)
    L += markdown_hugetlb(res)
    for s in res.get("skipped", []):
        L.append("Skipped: " + s)
        L.append("")
    return "\n".join(L)


# One colour per configuration, the same in every panel: the Okabe-Ito
# palette, which stays distinct with the common colour-vision deficiencies
# (yellow only for a bar, never for a line).
# Past its eight, dark colours of Paul Tol's palettes (also safe for the
# common deficiencies): w5's two fault-around variants, the pagein-format
# file's runs in the throttled and huge-page panels, and the remote section's
# 4 MiB-chunk configuration.
COLOURS = {"floor": "#000000", "file": "#E69F00", "ref": "#D55E00", "bulk": "#999999", "pagein-none": "#009E73",
           "pagein-fa": "#56B4E9", "pagein-ws": "#CC79A7", "pagein-bg": "#0072B2",
           "pagein-eager": "#F0E442", "pagein-bg0": "#882255", "pagein-bg64": "#999933",
           "pagein-format": "#332288", "e2b-4m": "#44AA99"}
# And one gnuplot dash type per configuration for the CDF lines.
DASHES = {"file": 1, "ref": 2, "pagein-none": 3, "pagein-fa": 1, "pagein-bg": 2, "pagein-ws": 4,
          "pagein-bg0": 5, "pagein-bg64": 3}
# The remote section's configurations (bench_remote.py): short label, colour.
REMOTE_BARS = [("download-file", "download+File", "file"), ("pagein-cold", "p: cold cache", "pagein-bg"),
               ("pagein-warm", "p: warm cache", "pagein-ws"), ("e2b-4m", "4 MiB chunks", "e2b-4m")]


def extra_panels(res, short):
    """The bar panels of the sections outside res["median"]: the throttled
    volume, huge pages and the remote section. [(title, [(label, seconds,
    colour key)])], only those with data."""
    out = []
    for key, title in (("throttled", "Cold cache, throttled volume (250 MB/s, 3000 IOPS)"),
                       ("hugetlb", "Guest memory in 2 MiB huge pages, warm cache")):
        sec = res.get(key) or {}
        med = sec.get("median") or {}
        if key == "throttled" and sec.get("read_bps"):
            title = "Cold cache, throttled volume (%d MB/s, %s IOPS)" % (
                sec["read_bps"] // 1000000, sec.get("read_iops", "?"))
        bars = []
        for k, v in med.items():
            if not v or not v.get("wall_s"):
                continue
            wl, base, fmt_file = split_key(k)
            bars.append(("%s %s%s" % (wl, short.get(base, base), " pgn" if fmt_file else ""),
                         v["wall_s"], "pagein-format" if fmt_file else base))
        if bars:
            out.append((title, bars))
    rem = (res.get("remote") or {}).get("median") or {}
    bars = [(label, rem[k]["end_s"], ck) for k, label, ck in REMOTE_BARS
            if rem.get(k) and rem[k].get("end_s")]
    if bars:
        out.append(("Remote snapshot over HTTP (%s ms RTT): w1, restore start to end of trace" %
                    (res["remote"].get("rtt_ms", "?")), bars))
    return out


def plots(res, outdir, workdir, prefix):
    """Data files + bench/plot.gp -> PNGs. Returns the PNG names.

    Time figure: one panel per results table (w1..w3 warm and cold, w5,
    w4), the fault-around sweep, the snapshot-format comparison, the
    throttled volume, huge pages and the remote section (every table but
    the targets). CDF figure: one panel per table whose medians kept their
    latency samples. Needs only res: `bench.py --render JSON` redraws them
    from docs/benchmarks.json without running anything."""
    m = res["median"]
    panels = [("w1", "warm"), ("w1", "cold"), ("w2", "warm"), ("w2", "cold"), ("w3", "warm"),
              ("w3", "cold"), ("w5", "warm"), ("w4", "warm")]
    titles = {"w1": "w1 function cold start", "w2": "w2 random 25%", "w3": "w3 sequential",
              "w4": "w4 restore complete", "w5": "w5 short clustered runs"}
    short = {"floor": "floor", "file": "File", "ref": "ref", "bulk": "bulk", "pagein-none": "p:none",
             "pagein-fa": "p:fa %s" % DEFAULT_FA, "pagein-ws": "p:ws", "pagein-bg": "p:default",
             "pagein-eager": "p:eager", "pagein-bg0": "p:bg fa0", "pagein-bg64": "p:bg fa64"}
    colour = lambda cfg: int(COLOURS.get(cfg, "#000000")[1:], 16)
    dat = os.path.join(workdir, "plot-time.dat")
    inc = os.path.join(workdir, "plot-vars.gp")
    panels = [p for p in panels if any(k.startswith("%s/%s/" % p) and v and v.get("wall_s")
                                       for k, v in m.items())]
    with open(dat, "w") as f, open(inc, "w") as g:
        g.write("npanels = %d\narray T[%d]\n" % (len(panels), len(panels)))
        for i, (wl, cache) in enumerate(panels):
            g.write('T[%d] = "%s, %s cache"\n' % (i + 1, titles[wl], cache))
            for k, v in m.items():
                w, c, cfg = k.split("/")
                if (w, c) == (wl, cache) and v and v.get("wall_s"):
                    f.write('"%s%s" %.4f %d\n' % (short.get(cfg, cfg),
                                                  " (%s)" % v["from"] if v.get("from") else "",
                                                  v["wall_s"], colour(cfg)))
            f.write("\n\n")
        # The fault-around sweep: time against N, one line per workload.
        sw = res.get("sweep") or {}
        with open(os.path.join(workdir, "plot-sweep.dat"), "w") as f2:
            for wl in ("w2", "w3"):
                f2.write('"%s"\n' % titles.get(wl, wl))
                for n in sorted(sw.get(wl, {}), key=int):
                    f2.write("%s %.4f\n" % (n, sw[wl][n]["wall_s"]))
                f2.write("\n\n")
        g.write("nsweep = %d\n" % sum(1 for wl in ("w2", "w3") if sw.get(wl)))
        # The snapshot format: raw file against pagein file, cold, per image.
        nfmt = 0
        with open(os.path.join(workdir, "plot-format.dat"), "w") as f3:
            for e in res.get("format") or []:
                for wl in ("w1", "w3"):
                    for src, cfg in (("raw", "file"), ("pagein", "pagein-bg")):
                        r = e.get("%s_%s" % (wl, src))
                        if r and r.get("wall_s"):
                            f3.write('"%s %s %s" %.4f %d\n' % (e["image"], wl, src, r["wall_s"],
                                                              colour(cfg)))
                            nfmt += 1
        g.write("nformat = %d\n" % nfmt)
        # The throttled volume, huge pages, remote: one bar panel each.
        extra = extra_panels(res, short)
        with open(os.path.join(workdir, "plot-extra.dat"), "w") as f4:
            for _, bars in extra:
                for label, secs, ck in bars:
                    f4.write('"%s" %.4f %d\n' % (label, secs, colour(ck)))
                f4.write("\n\n")
        g.write("nextra = %d\narray E[%d]\n" % (len(extra), max(len(extra), 1)))
        for i, (title, _) in enumerate(extra):
            g.write('E[%d] = "%s"\n' % (i + 1, title))
        ntime = len(panels) + (1 if sw.get("w2") or sw.get("w3") else 0) + (1 if nfmt else 0) + len(extra)
        g.write("trows = %d\n" % max(1, (ntime + 2) // 3))
        cdfs = [p for p in [("w1", "warm"), ("w1", "cold"), ("w2", "warm"), ("w2", "cold"),
                            ("w3", "warm"), ("w3", "cold"), ("w5", "warm")]
                if any(k.startswith("%s/%s/" % p) and v and v.get("cdf") for k, v in m.items())]
        g.write("ncdf = %d\narray C[%d]\narray S[%d]\narray L[%d]\narray D[%d]\n" % (
            len(cdfs), len(cdfs), len(cdfs), len(cdfs), len(cdfs)))
        cdat = os.path.join(workdir, "plot-cdf-%d.dat")
        for i, (wl, cache) in enumerate(cdfs):
            g.write('C[%d] = "%s, %s cache"\n' % (i + 1, titles[wl], cache))
            series = []
            with open(cdat % (i + 1), "w") as f2:
                for k, v in m.items():
                    w, c, cfg = k.split("/")
                    if (w, c) == (wl, cache) and v and v.get("cdf"):
                        f2.write('"%s"\n' % short.get(cfg, cfg))
                        for us, fr in v["cdf"]:
                            f2.write("%g %g\n" % (max(us, 0.01), fr))
                        f2.write("\n\n")
                        series.append(cfg)
            g.write("S[%d] = %d\n" % (i + 1, len(series)))
            g.write('L[%d] = "%s"\n' % (i + 1, " ".join(COLOURS.get(c, "#000000")
                                                        for c in series)))
            g.write('D[%d] = "%s"\n' % (i + 1, " ".join(str(DASHES.get(c, 1)) for c in series)))
        g.write('datadir = "%s"\noutdir = "%s"\nprefix = "%s"\n' % (workdir, outdir, prefix))
    p = subprocess.run(["gnuplot", "-e", 'vars="%s"' % inc,
                        os.path.join(ROOT, "bench", "plot.gp")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode:
        log("gnuplot failed:\n" + p.stdout)
        return []
    return [prefix + "-time.png", prefix + "-latency-cdf.png"]


def write_json(path, res):
    """Indented, but one line per run and per CDF point: small and diffable."""
    text = json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1)
    text = re.sub(r"\[\s*(-?[\d.eE+-]+),\s*(-?[\d.eE+-]+)\s*\]", r"[\1, \2]", text)
    runs = ",\n".join("  " + json.dumps(r, separators=(",", ":")) for r in res.get("runs", []))
    with open(path, "w") as f:
        f.write(text[:-2] + ',\n "runs": [\n' + runs + "\n ]\n}\n")


def update_doc(doc, body):
    begin, end = "<!-- BEGIN RESULTS (bench/bench.py writes this part) -->", "<!-- END RESULTS -->"
    text = open(doc).read() if os.path.exists(doc) else "# pagein benchmarks\n\n%s\n%s\n" % (
        begin, end)
    if begin not in text:
        text += "\n%s\n%s\n" % (begin, end)
    a, rest = text.split(begin, 1)
    _, b = rest.split(end, 1)
    with open(doc, "w") as f:
        f.write(a + begin + "\n" + body + "\n" + end + b)


def git(*args):
    try:
        return subprocess.run(["git", "-C", ROOT] + list(args), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True).stdout.strip()
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="64 MiB, 1 rep, into build/bench-smoke")
    ap.add_argument("--size", default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--dir", default=None, help="work directory on a disk filesystem")
    ap.add_argument("--out", default=None, help="where the JSON and PNGs go")
    ap.add_argument("--doc", default=None, help="markdown file whose results part is rewritten")
    ap.add_argument("--guest-image", default="auto",
                    help="real guest image for the format section (auto: scripts/make-guest-image.sh)")
    ap.add_argument("--render", metavar="JSON",
                    help="only redraw the plots and rewrite the doc from a results file")
    ap.add_argument("--only", default=None, help="targeted run: these workloads (w1,w2,w3,w5), or remote: the remote section alone")
    ap.add_argument("--configs", default="pagein-fa,pagein-none,pagein-fa64",
                    help="targeted run: these configurations; ratios are to the first")
    a = ap.parse_args()
    if a.only:
        run_targeted(a)
        return
    if a.render:
        with open(a.render) as f:
            res = json.load(f)
        a.out = a.out or os.path.dirname(os.path.abspath(a.render))
        a.doc = a.doc or os.path.join(a.out, "benchmarks.md")
        a.dir = a.dir or ("/var/tmp/pagein-bench-smoke" if a.smoke else "/var/tmp/pagein-bench")
        os.makedirs(a.dir, exist_ok=True)
        os.makedirs(a.out, exist_ok=True)
        report(a, res, res["meta"]["snapshot_bytes"])
        return
    smoke = a.smoke
    a.size = parse_size(a.size or ("64M" if smoke else "2G"))
    a.reps = a.reps or (1 if smoke else 3)
    a.dir = a.dir or ("/var/tmp/pagein-bench-smoke" if smoke else "/var/tmp/pagein-bench")
    a.out = a.out or os.path.join(ROOT, "build/bench-smoke" if smoke else "docs")
    a.doc = a.doc or os.path.join(a.out, "benchmarks.md")
    os.makedirs(a.out, exist_ok=True)
    b = Bench(a)
    fs = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", a.dir], stdout=subprocess.PIPE,
                        text=True).stdout.strip()
    if fs in ("tmpfs", "ramfs"):
        raise SystemExit("bench: %s is on %s; use --dir on a disk filesystem" % (a.dir, fs))
    snap = os.path.join(a.dir, "synthetic-%dM.raw" % (a.size >> 20))
    ensure_snapshot(b, snap, a.size)
    subprocess.run(["cat", snap], stdout=subprocess.DEVNULL, check=True)  # warm
    res = {"meta": {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "src", "include")),
        "kernel": os.uname().release, "cpus": os.cpu_count(),
        "snapshot": snap, "snapshot_bytes": a.size, "snapshot_fs": fs,
        "snapshot_kind": "synthetic, dense, 30% zero pages", "reps": a.reps,
        "loadavg_start": os.getloadavg()[0],
        "cold_method": "posix_fadvise(POSIX_FADV_DONTNEED) on the snapshot (and pagein file) "
                       "by vmmsim --evict after its setup, right before the handshake"}}
    res["snapshot_name"] = os.path.basename(snap)
    try:
        run_all(b, a, snap, res)
    finally:
        b.cleanup()
    res["meta"]["quiet_waited_s"] = b.quiet_waited
    finish(b, a, res)


def run_targeted(a):
    """A few workloads x a few configurations, interleaved; prints medians
    and time ratios to the first configuration (within this run)."""
    a.size = parse_size(a.size or "2G")
    a.reps = a.reps or 3
    a.dir = a.dir or "/var/tmp/pagein-bench"
    b = Bench(a)
    snap = os.path.join(a.dir, "synthetic-%dM.raw" % (a.size >> 20))
    ensure_snapshot(b, snap, a.size)
    subprocess.run(["cat", snap], stdout=subprocess.DEVNULL, check=True)
    npages = a.size // PAGE
    wls = {}
    if a.only == "remote":  # the remote section alone (w1 over HTTP)
        run_trace, ws, _ = prepare_w1(b, snap, npages, "synthetic")
        try:
            rem = bench_remote.run_remote(b, a, snap, run_trace, ws, Handler)
        finally:
            b.cleanup()
        print("commit %s, %s, %s, load %.2f" % (git("rev-parse", "--short", "HEAD"),
              os.path.basename(snap), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              os.getloadavg()[0]))
        print(json.dumps(rem, indent=1, default=str))
        return
    ws_file = None
    for wl in a.only.split(","):
        if wl == "w1":
            run_trace, ws_file, _ = prepare_w1(b, snap, npages, "synthetic")
            wls["w1"] = workloads(run_trace)["w1"]
        elif wl == "w5":
            base, used = w5_base(npages, seed=13)
            path = os.path.join(b.dir, "synthetic-w5.trace")
            write_trace(path, w1_trace(base, used, npages, jitter_seed=2))
            wls["w5"] = {"name": "w5", "args": ["--pattern", "trace:" + path, "--vcpus", "2"]}
        else:
            wls[wl] = workloads("unused")[wl]
    cfgs = a.configs.split(",")
    try:
        for rep in range(1, a.reps + 1):
            order = random.Random(rep)
            for wl in wls:
                for cfg in order.sample(cfgs, len(cfgs)):
                    b.measure(snap, wls[wl], cfg, "warm", rep,
                              ws=ws_file if wl == "w1" and cfg in ("pagein-ws", "pagein-bg")
                              else None)
    finally:
        b.cleanup()
    print("commit %s, %s, %d reps, %s" % (git("rev-parse", "--short", "HEAD"),
                                          os.path.basename(snap), a.reps,
                                          time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print("| workload | configuration | time s | faults | p50 us | p99 us | time / %s |" % cfgs[0])
    print("|---|---|---:|---:|---:|---:|---:|")
    for wl in wls:
        for cfg in cfgs:
            m = b.median(wl, cfg, "warm")
            mine = [r["wall_s"] for r in b.runs if r["workload"] == wl and r["config"] == cfg]
            base = [r["wall_s"] for r in b.runs if r["workload"] == wl and r["config"] == cfgs[0]]
            ratio = statistics.median(x / y for x, y in zip(mine, base))
            print("| %s | %s | %s | %s | %s | %s | %s |" % (wl, cfg, fmt(m["wall_s"]),
                  fmt(m["faults"]), fmt(m["p50_us"]), fmt(m["p99_us"]), fmt(ratio)))
    write_json(os.path.join(b.dir, "targeted.json"), {"runs": b.runs})


def run_all(b, a, snap, res):
    res.update(run_main(b, a, snap, a.size))
    run_all_formats(b, a, snap, res)
    if True:  # issue 11: the throttled volume and hugetlbfs sections
        run_trace = os.path.join(b.dir, "synthetic-w1-run.trace")
        ws = os.path.join(b.dir, "synthetic-w1-1.ws")
        pf = os.path.join(b.dir, "synthetic.pagein")
        res["throttled"] = run_throttled(b, a, snap, workloads(run_trace), ws,
                                         pf if os.path.exists(pf) else None)
        res["hugetlb"] = run_hugetlb(b, a)


def run_all_formats(b, a, snap, res):
    images, skipped = [("synthetic", snap)], []
    gi = a.guest_image
    if gi == "auto":
        p = subprocess.run([os.path.join(ROOT, "scripts/make-guest-image.sh")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        gi = p.stdout.strip() if p.returncode == 0 else None
        if not gi:
            skipped.append("real guest image: make-guest-image.sh: " + p.stderr.strip()[-300:])
    elif gi == "none":
        gi = None
    if gi:
        images.append(("guest", gi))
    res["format"] = run_format(b, a, images)
    res["skipped"] = skipped
    res["remote"] = bench_remote.run_remote(b, a, snap, b.w1_files[0], b.w1_files[1], Handler)


def finish(b, a, res):
    res["runs"] = b.runs
    best = {}
    for wl in ("w2", "w3"):
        best[wl] = min(res["sweep"][wl], key=lambda k: res["sweep"][wl][k]["wall_s"])
    res["sweep_best"] = best
    res["meta"]["loadavg_end"] = os.getloadavg()[0]
    res["meta"]["elapsed_s"] = round(time.time() - b.t0, 1)
    report(a, res, a.size)
    log("done in %.0f s: %s, %s" % (time.time() - b.t0, os.path.join(a.out, "benchmarks.json"),
                                    a.doc))


def report(a, res, size):
    res["targets"] = targets(res, size)
    prefix = "bench"
    pngs = plots(res, a.out, a.dir, prefix)
    body = markdown(res) + bench_remote.markdown(res)
    if pngs:
        body += ("\n![time to finish: every results table but the targets: w1-w5, the sweep, the format, the throttled volume, huge pages and the remote section (lower is better)](%s)\n\n"
                 "![first-touch latency CDF (further left is better)](%s)\n" % tuple(pngs))
    write_json(os.path.join(a.out, "benchmarks.json"), res)
    update_doc(a.doc, body)
    print(body)


if __name__ == "__main__":
    main()
