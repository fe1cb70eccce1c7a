#!/usr/bin/python3
"""run_bench.py: PetraCache against Debian's memcached, same threads, same cores, same load.

Starts each server pinned with taskset to the server CPUs and petracache-loadgen pinned to the
client CPUs, runs every workload on both servers back to back (alternating which goes first,
median of the repetitions), and writes bench/results/<timestamp>.md (+ .json, + .png chart).
Run it through `./dev bench [--quick]`; docs/benchmarks.md explains the workloads and output.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

HEADLINE = dict(connections=20, pipeline=1, get_ratio=0.9, value_size="1000", keys=100_000)
ROUTER = dict(connections=4, pipeline=32, get_ratio=0.9, value_size="100", keys=100_000)
WRITE_HEAVY = dict(connections=50, pipeline=1, get_ratio=0.5, value_size="100", keys=100_000)

# name -> (title, servers, loadgen shape, petracache durability)
COMPARISONS = [
    ("headline", "90% get / 10% set, 1000 B values, 20 connections, no pipelining, "
     "100k keys prefilled", HEADLINE),
    ("router", "90% get / 10% set, 100 B values, 4 connections, pipeline depth 32, "
     "100k keys prefilled", ROUTER),
    ("write-heavy", "50% get / 50% set, 100 B values, 50 connections, no pipelining, "
     "100k keys prefilled", WRITE_HEAVY),
]
# Resolution of the restart timeline; re-binned into whole seconds from the restart.
RESTART_STEP = 0.1
ALL_WORKLOADS = ["headline", "router", "write-heavy", "durability", "large", "restart", "rss"]


T0 = time.monotonic()


def log(message):
    print(f"==> [{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class Stop(BaseException):
    """Raised from the SIGINT/SIGTERM handler so every `finally` runs."""


# -------------------------------------------------------------------------------------------
# Processes: every child is registered here and stopped by PID on exit.

class Processes:
    def __init__(self):
        self.live = []

    def spawn(self, argv, **kwargs):
        # Own session: Ctrl-C reaches only this driver, which then stops children in order.
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.live.append(proc)
        return proc

    def stop(self, proc, term_timeout=15.0, kill_timeout=5.0, sig=signal.SIGTERM):
        """SIGTERM (or `sig`), wait up to term_timeout, then SIGKILL. Returns the exit code."""
        try:
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                    proc.wait(timeout=term_timeout)
                except subprocess.TimeoutExpired:
                    log(f"pid {proc.pid} ignored {signal.Signals(sig).name} for "
                        f"{term_timeout:.0f} s; killing it")
                    proc.kill()
                    proc.wait(timeout=kill_timeout)
            return proc.returncode
        finally:
            if proc.poll() is not None and proc in self.live:
                self.live.remove(proc)

    def stop_all(self):
        for proc in list(reversed(self.live)):
            try:
                self.stop(proc, term_timeout=5.0)
            except Exception as e:  # keep stopping the others
                log(f"could not stop pid {proc.pid}: {e}")


PROCS = Processes()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid):
    """utime + stime of every thread of pid, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_read_bytes(pid):
    """Bytes the process made the storage layer fetch (page cache hits do not count)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# -------------------------------------------------------------------------------------------
# Servers

class Server:
    kind = "?"

    def __init__(self, args, workdir, name, threads, port=None):
        self.args = args
        self.workdir = workdir
        self.name = name
        self.threads = threads
        self.port = port or free_port()
        self.proc = None
        self.log_path = os.path.join(workdir, f"{name}.log")

    def command(self):
        raise NotImplementedError

    def start(self, timeout=60.0):
        argv = ["taskset", "-c", self.args.server_cpus] + self.command()
        log_file = open(self.log_path, "ab")
        try:
            self.proc = PROCS.spawn(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT)
        finally:
            log_file.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} while "
                                 f"starting; log {self.log_path}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not accept on port {self.port} within "
                                 f"{timeout:.0f} s; log:\n{self.log_tail()}")
            time.sleep(0.005)

    def stop(self):
        """Graceful stop; returns (exit code, seconds it took)."""
        if self.proc is None:
            return None, 0.0
        t0 = time.monotonic()
        rc = PROCS.stop(self.proc)
        self.proc = None
        return rc, time.monotonic() - t0

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    def metrics(self):
        return {}


class Memcached(Server):
    kind = "memcached"

    def command(self):
        argv = [self.args.memcached, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
                "-t", str(self.threads), "-m", "1024"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]  # memcached refuses to run as root without -u
        return argv


class PetraCache(Server):
    kind = "petracache"

    def __init__(self, args, workdir, name, threads, durability="wal",
                 block_cache_size="1GiB", hot_cache_size=None, metrics=False, port=None,
                 db_path=None):
        super().__init__(args, workdir, name, threads, port)
        self.durability = durability
        self.block_cache_size = block_cache_size
        self.hot_cache_size = hot_cache_size  # None: the server's default
        self.metrics_port = free_port() if metrics else None
        self.db_path = db_path or os.path.join(workdir, f"{name}-db")
        self.config_path = os.path.join(workdir, f"{name}.ini")

    def command(self):
        metrics = (f"enabled = true\nlisten_addr = 127.0.0.1:{self.metrics_port}\n"
                   if self.metrics_port else "enabled = false\n")
        with open(self.config_path, "w") as f:
            f.write(f"[server]\nlisten_addr = 127.0.0.1:{self.port}\n"
                    f"threads = {self.threads}\n"
                    f"[storage]\ndb_path = {self.db_path}\n"
                    f"block_cache_size = {self.block_cache_size}\n"
                    + (f"hot_cache_size = {self.hot_cache_size}\n" if self.hot_cache_size
                       else "")
                    + 
                    f"durability = {self.durability}\n"
                    f"[metrics]\n{metrics}")
        return [self.args.petracache, "--config", self.config_path]

    def metrics(self):
        """RocksDB counters from /metrics (only when started with metrics=True)."""
        if not self.metrics_port:
            return {}
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith(("petracache_rocksdb_", "petracache_hot_cache_")) and " " in line:
                name, value = line.rsplit(" ", 1)
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out


def settle(server, max_seconds):
    """Waits (bounded) until the server is idle: background work after a prefill (RocksDB
    flushes and compactions) would otherwise land in the measured window."""
    deadline = time.monotonic() + max_seconds
    last = proc_cpu_seconds(server.pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = proc_cpu_seconds(server.pid)
        if now - last < 0.025:  # under 10% of one core
            return
        last = now
    log(f"{server.name} still busy after {max_seconds:.0f} s of settling; measuring anyway")


# -------------------------------------------------------------------------------------------
# Load generator

def loadgen_argv(args, port, shape, extra=()):
    argv = ["taskset", "-c", args.client_cpus, args.loadgen,
            "--server", f"127.0.0.1:{port}",
            "--threads", str(args.client_threads),
            "--connections", str(shape["connections"]),
            "--pipeline", str(shape["pipeline"]),
            "--get-ratio", str(shape["get_ratio"]),
            "--value-size", str(shape["value_size"]),
            "--keys", str(shape["keys"]),
            "--key-dist", shape.get("key_dist", "uniform")]
    return argv + list(extra)


def run_loadgen(args, argv, timeout, label, during=None):
    """Runs the load generator to completion; returns its JSON. `during(proc)` runs while it
    does (sampling, restarts) and returns extra data stored under "during"."""
    argv = argv + ["--label", label]
    if args.verbose:
        log("$ " + shlex.join(argv))
    proc = PROCS.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=None if args.verbose else subprocess.PIPE, text=True)
    extra = None
    try:
        if during is not None:
            extra = during(proc)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            PROCS.stop(proc, term_timeout=5.0)
        elif proc in PROCS.live:
            PROCS.live.remove(proc)
    if proc.returncode not in (0, 3) or not out.strip():
        raise BenchError(f"loadgen [{label}] failed with {proc.returncode}:\n{err or ''}")
    result = json.loads(out.strip().splitlines()[-1])
    if extra is not None:
        result["during"] = extra
    if result["errors"] or result["prefill"]["errors"]:
        log(f"[{label}] {result['errors']} unexpected replies, "
            f"{result['prefill']['errors']} prefill errors")
    return result


def prefill(args, server, shape):
    argv = loadgen_argv(args, server.port, shape,
                        ["--prefill", "--duration", "0", "--warmup", "0"])
    result = run_loadgen(args, argv, timeout=600, label=f"{server.name} prefill")
    if result["prefill"]["errors"]:
        raise BenchError(f"prefill of {server.name} had {result['prefill']['errors']} errors")
    return result["prefill"]


def measure(args, server, shape, label, extra=()):
    """One measured run. Samples the server's CPU time over the measured window."""
    argv = loadgen_argv(args, server.port, shape,
                        ["--duration", str(args.duration), "--warmup", str(args.warmup)]
                        + list(extra))

    def sample(proc):
        pid = server.pid
        time.sleep(args.warmup)
        cpu0, io0, t0 = proc_cpu_seconds(pid), proc_read_bytes(pid), time.monotonic()
        metrics0 = server.metrics()
        time.sleep(args.duration)
        cpu1, io1, t1 = proc_cpu_seconds(pid), proc_read_bytes(pid), time.monotonic()
        metrics1 = server.metrics()
        d = {"server_cpu_s": cpu1 - cpu0, "window_s": t1 - t0}
        if io0 is not None and io1 is not None:
            d["server_disk_read_bytes"] = io1 - io0
        if metrics0 and metrics1:
            d["metrics_delta"] = {k: metrics1[k] - metrics0.get(k, 0) for k in metrics1}
            d["metrics"] = metrics1
        return d

    r = run_loadgen(args, argv, timeout=args.warmup + args.duration + 120, label=label,
                    during=sample)
    d = r["during"]
    ops_in_window = r["ops_per_sec"] * d["window_s"]
    r["server_cpu_us_per_op"] = d["server_cpu_s"] * 1e6 / ops_in_window if ops_in_window else 0
    client_cores = len(parse_cpu_list(args.client_cpus))
    r["client_cpu_util"] = r["client_cpu_s"] / max(r["duration_s"], 1e-9) / client_cores
    if r["client_cpu_util"] > 0.9:
        log(f"[{label}] the load generator used {r['client_cpu_util']:.0%} of its CPUs: this "
            "run may measure the client, not the server")
    summary = (f"[{label}] {r['ops_per_sec']:,.0f} ops/s  p50 {r['latency_us']['p50']} "
               f"p99 {r['latency_us']['p99']} p99.9 {r['latency_us']['p999']} us  "
               f"hit {r['hit_rate']:.4f}  cpu/op server {r['server_cpu_us_per_op']:.2f} "
               f"client {r['client_cpu_us_per_op']:.2f} us")
    log(summary)
    return r


# -------------------------------------------------------------------------------------------
# Workloads

def make_server(args, workdir, kind, tag, **kwargs):
    name = f"{kind}-{tag}"
    if kind == "memcached":
        return Memcached(args, workdir, name, args.threads)
    return PetraCache(args, workdir, name, args.threads, **kwargs)


def stable_rss_kib(pid, max_seconds=5.0):
    """VmRSS once it stops moving (allocators return freed memory a while after a burst of
    work; a connection's few KiB would drown in that): two samples 0.25 s apart within
    64 KiB, or the last sample after max_seconds."""
    deadline = time.monotonic() + max_seconds
    last = proc_rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = proc_rss_kib(pid)
        if abs(now - last) <= 64:
            return now
        last = now
    return last


# Of the idle connections, those opened first (see idle_connections_rss). memcached's
# default limit (-c 1024) counts file descriptors, so the total stays at `count`.
WAKE_CONNECTIONS = 16


def idle_connections_rss(server, count):
    """Returns the server's RSS (KiB) with WAKE_CONNECTIONS idle connections open, and with
    `count` open; the growth is per count - WAKE_CONNECTIONS connections.
    A few connections are opened first and kept open, only to wake the server's allocator:
    mimalloc, for one, returns memory freed during the prefill only when the owning thread
    allocates again, and that release (megabytes) would otherwise be charged, negatively, to
    the connections. (Closing them first would let the measured ones reuse their memory.)"""
    def measured():
        before = stable_rss_kib(server.pid)
        during = open_idle_connections(server, count - WAKE_CONNECTIONS,
                                       lambda: stable_rss_kib(server.pid))
        return before, during
    return open_idle_connections(server, WAKE_CONNECTIONS, measured)


def open_idle_connections(server, count, while_open, timeout=30.0):
    """Opens `count` connections, each answering one `version`; returns while_open()'s value
    computed while they are all open."""
    socks = []
    deadline = time.monotonic() + timeout
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            socks.append(s)
            s.sendall(b"version\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(256)
                if not chunk:
                    raise BenchError(f"{server.name} closed idle connection {len(socks)}")
                reply += chunk
            if not reply.startswith(b"VERSION "):
                raise BenchError(f"{server.name} answered version with {reply!r}")
            if time.monotonic() > deadline:
                raise BenchError(f"opening {count} connections took over {timeout:.0f} s")
        return while_open()
    finally:
        for s in socks:
            s.close()


def check_exit(results, server, rc, seconds):
    """A graceful stop must exit 0; anything else is recorded as a warning in the report."""
    if rc not in (0, None):
        w = f"{server.name} exited with {rc} after SIGTERM ({seconds:.2f} s)"
        results["warnings"].append(w)
        log(f"warning: {w}; log tail:\n{server.log_tail()}")


def run_comparisons(args, workdir, results):
    for name, title, shape in COMPARISONS:
        if name not in args.workloads:
            continue
        runs = {kind: [] for kind in args.servers}
        rss = {}
        for rep in range(args.reps):
            order = list(args.servers) if rep % 2 == 0 else list(reversed(args.servers))
            for kind in order:
                server = make_server(args, workdir, kind, f"{name}-{rep}")
                try:
                    server.start()
                    pre = prefill(args, server, shape)
                    settle(server, args.settle)
                    if name == "headline" and rep == 0 and "rss" in args.workloads:
                        # Before the measured run, while the prefilled server is idle.
                        before, during = idle_connections_rss(server, args.idle_connections)
                        measured = args.idle_connections - WAKE_CONNECTIONS
                        rss[kind] = {"prefilled_kib": before, "with_conns_kib": during,
                                     "per_conn_kib": (during - before) / measured}
                        log(f"[rss {kind}] prefilled {before} KiB; {during} KiB with "
                            f"{args.idle_connections} idle connections "
                            f"({rss[kind]['per_conn_kib']:.2f} KiB per connection)")
                    r = measure(args, server, shape, f"{name} {kind} rep {rep + 1}")
                    r["prefill_result"] = pre
                    runs[kind].append(r)
                finally:
                    check_exit(results, server, *server.stop())
                    shutil.rmtree(getattr(server, "db_path", ""), ignore_errors=True)
        results["comparisons"].append({"name": name, "title": title, "shape": shape,
                                       "runs": runs})
        if rss:
            results["rss"] = rss


def run_durability(args, workdir, results):
    if "durability" not in args.workloads or "petracache" not in args.servers:
        return
    runs = {}
    # durability=wal is the default the write-heavy comparison already ran with: reuse it.
    measured_wal = next((c["runs"].get("petracache") for c in results["comparisons"]
                         if c["name"] == "write-heavy"), None)
    for mode in ("none", "wal", "sync"):
        if mode == "wal" and measured_wal:
            runs[mode] = measured_wal
            continue
        runs[mode] = []
        for rep in range(args.reps):
            server = make_server(args, workdir, "petracache", f"dur-{mode}-{rep}",
                                 durability=mode)
            try:
                # Prefill without per-write syncing, then reopen the same data with the mode
                # under test (a sync prefill would take minutes and measure nothing new).
                server.durability = "none"
                server.start()
                prefill(args, server, WRITE_HEAVY)
                if mode != "none":
                    check_exit(results, server, *server.stop())
                    server.durability = mode
                    server.start()
                settle(server, args.settle)
                runs[mode].append(measure(args, server, WRITE_HEAVY,
                                          f"write-heavy petracache durability={mode} "
                                          f"rep {rep + 1}"))
            finally:
                check_exit(results, server, *server.stop())
                shutil.rmtree(server.db_path, ignore_errors=True)
    results["durability"] = runs


def drop_page_cache():
    """Empties the OS page cache (clean pages only; needs root). True if it was dropped."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError as e:
        log(f"[large] cannot drop the page cache ({e}): cold reads may come from it")
        return False


def run_large(args, workdir, results):
    if "large" not in args.workloads or "petracache" not in args.servers:
        return
    cache_mib = args.large_cache_mib
    value = 1000
    # Both memory tiers get cache_mib: the hot-item tier and RocksDB's block cache. The data
    # is ~10x what they hold together (keys and record headers come on top).
    keys = 2 * cache_mib * 1024 * 1024 * 10 // value
    shape = dict(connections=20, pipeline=1, get_ratio=0.9, value_size=str(value), keys=keys,
                 key_dist="zipf:0.99")
    server = make_server(args, workdir, "petracache", "large",
                         block_cache_size=f"{cache_mib}MiB", hot_cache_size=f"{cache_mib}MiB",
                         metrics=True)
    # The requests the memory tiers answer: gets of the most popular keys, a tenth of what
    # the hot tier holds (Zipf puts them there and keeps them), timed on their own.
    hot_keys = max(1, cache_mib * 2**20 // (value + 150) // 10)
    runs = []
    try:
        server.start()
        pre = prefill(args, server, dict(shape, connections=8))
        log(f"[large] prefilled {keys} keys in {pre['seconds']:.1f} s")
        settle(server, args.settle * 3)
        for rep in range(args.reps):
            # Cold reads must reach the device, not the OS page cache the prefill filled.
            dropped = drop_page_cache()
            r = measure(args, server, shape, f"large petracache rep {rep + 1}",
                        ["--hot-keys", str(hot_keys)])
            r["page_cache_dropped"] = dropped
            delta = r["during"].get("metrics_delta", {})
            hits = delta.get("petracache_rocksdb_block_cache_hits_total", 0)
            misses = delta.get("petracache_rocksdb_block_cache_misses_total", 0)
            r["block_cache_hit_rate"] = hits / (hits + misses) if hits + misses else None
            hot_hits = delta.get('petracache_hot_cache_lookups_total{result="hit"}', 0)
            hot_misses = delta.get('petracache_hot_cache_lookups_total{result="miss"}', 0)
            r["hot_cache_hit_rate"] = (hot_hits / (hot_hits + hot_misses)
                                       if hot_hits + hot_misses else None)
            runs.append(r)
        rss = proc_rss_kib(server.pid)
        sst = r["during"].get("metrics", {}).get("petracache_rocksdb_live_sst_bytes")
    finally:
        check_exit(results, server, *server.stop())
        shutil.rmtree(server.db_path, ignore_errors=True)
    results["large"] = {"cache_mib": cache_mib, "keys": keys, "hot_keys": hot_keys,
                        "shape": shape, "runs": runs,
                        "rss_kib": rss, "sst_bytes": sst, "prefill": pre}


def run_restart(args, workdir, results):
    if "restart" not in args.workloads:
        return
    shape = dict(HEADLINE)
    out = {}
    for kind in args.servers:
        server = make_server(args, workdir, kind, "restart")
        try:
            server.start()
            prefill(args, server, shape)
            settle(server, args.settle)
            argv = loadgen_argv(args, server.port, shape,
                                ["--duration", "3600", "--warmup", "0", "--timeline",
                                 "--timeline-interval", str(RESTART_STEP), "--fill-on-miss",
                                 "--reconnect-ms", "5"])
            events = {}

            def restart(proc):
                time.sleep(args.restart_before)
                events["stop_wall"] = time.time()
                rc, took = server.stop()
                events["stop_rc"], events["stop_seconds"] = rc, took
                check_exit(results, server, rc, took)
                # The old listener may linger a moment after exit: retry a few times.
                for attempt in range(3):
                    try:
                        server.start(timeout=120)
                        break
                    except BenchError as e:
                        if attempt == 2:
                            raise
                        log(f"restart of {server.name} failed ({e}); retrying")
                        time.sleep(0.2)
                events["up_wall"] = time.time()
                time.sleep(args.restart_after + 1.0)
                PROCS.stop(proc, sig=signal.SIGINT, term_timeout=10.0)
                return events

            r = run_loadgen(args, argv,
                            timeout=args.restart_before + args.restart_after + 300,
                            label=f"restart {kind}", during=restart)
        finally:
            check_exit(results, server, *server.stop())
            shutil.rmtree(getattr(server, "db_path", ""), ignore_errors=True)
        ev = r["during"]
        step = r["timeline_interval_s"]
        # Fine buckets, timed (at their middle) from the moment the restarted server accepted.
        fine = [(b["t"] + step / 2 - ev["up_wall"], b) for b in r["timeline"]]
        ops_series = [{"t": round(t, 3), "ops_per_sec": b["ops"] / step} for t, b in fine
                      if -args.restart_before <= t <= args.restart_after]
        # Whole seconds relative to that moment: [i, i + 1).
        series = []
        for i in range(-int(args.restart_before), int(args.restart_after)):
            members = [b for t, b in fine if i <= t < i + 1]
            hits = sum(b["hits"] for b in members)
            lookups = hits + sum(b["misses"] for b in members)
            series.append({"second": i, "ops": sum(b["ops"] for b in members),
                           "hit_rate": hits / lookups if lookups else None})
        downtime = ev["up_wall"] - ev["stop_wall"]
        log(f"[restart {kind}] stop took {ev['stop_seconds']:.2f} s (exit {ev['stop_rc']}), "
            f"down {downtime:.2f} s; hit rate after restart: "
            + " ".join(fmt(p["hit_rate"], 2) for p in series if p["second"] >= 0))
        out[kind] = {"series": series, "ops_series": ops_series, "downtime_s": downtime,
                     "stop_rc": ev["stop_rc"], "stop_seconds": ev["stop_seconds"]}
    results["restart"] = out


# -------------------------------------------------------------------------------------------
# Report

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    return {
        "ops_per_sec": median([r["ops_per_sec"] for r in runs]),
        "p50": median([r["latency_us"]["p50"] for r in runs]),
        "p99": median([r["latency_us"]["p99"] for r in runs]),
        "p999": median([r["latency_us"]["p999"] for r in runs]),
        "max": max(r["latency_us"]["max"] for r in runs),
        "hit_rate": median([r["hit_rate"] for r in runs]),
        "server_cpu": median([r["server_cpu_us_per_op"] for r in runs]),
        "client_cpu": median([r["client_cpu_us_per_op"] for r in runs]),
        "client_util": max(r["client_cpu_util"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "n": len(runs),
    }


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


HEADER = ("| server | ops/s | p50 µs | p99 µs | p99.9 µs | max µs | hit rate | "
          "server CPU µs/op | client CPU µs/op | errors |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")


def row(label, s):
    return (f"| {label} | {fmt(s['ops_per_sec'], 0)} | {fmt(s['p50'])} | {fmt(s['p99'])} | "
            f"{fmt(s['p999'])} | {fmt(s['max'])} | {fmt(s['hit_rate'], 4)} | "
            f"{fmt(s['server_cpu'], 2)} | {fmt(s['client_cpu'], 2)} | {s['errors']} |\n")


def render(args, results):
    md = []
    info = results["machine"]
    md.append(f"# PetraCache vs memcached — {results['started']}\n\n")
    md.append("Command:\n\n```\n" + results["command"] + "\n```\n\n")
    md.append("| | |\n| --- | --- |\n")
    for k, v in info.items():
        md.append(f"| {k} | {v} |\n")
    md.append(f"| server CPUs (taskset) | {args.server_cpus} |\n"
              f"| load generator CPUs | {args.client_cpus} ({args.client_threads} thread(s)) |\n"
              f"| server worker threads | {args.threads} (memcached -t, petracache threads) |\n"
              f"| measured / warm-up seconds | {args.duration} / {args.warmup} |\n"
              f"| repetitions (median) | {args.reps} |\n\n")
    if results.get("warnings"):
        md.append("**Warnings:**\n\n" + "".join(f"- {w}\n" for w in results["warnings"])
                  + "\n")

    for comp in results["comparisons"]:
        md.append(f"## {comp['name']}\n\n{comp['title']}. Median of {args.reps} run(s); "
                  f"the ratio row is petracache / memcached.\n\n")
        md.append(HEADER)
        sums = {k: summarize(v) for k, v in comp["runs"].items() if v}
        for kind in args.servers:
            if kind in sums:
                md.append(row(kind, sums[kind]))
        if "memcached" in sums and "petracache" in sums:
            p, m = sums["petracache"], sums["memcached"]
            md.append(f"| petracache/memcached | {ratio(p['ops_per_sec'], m['ops_per_sec'])} | "
                      f"{ratio(p['p50'], m['p50'])} | {ratio(p['p99'], m['p99'])} | "
                      f"{ratio(p['p999'], m['p999'])} | {ratio(p['max'], m['max'])} | | "
                      f"{ratio(p['server_cpu'], m['server_cpu'])} | | |\n")
        md.append("\n")

    if results.get("durability"):
        md.append("## write-heavy, petracache durability modes\n\n"
                  "The write-heavy load (50% sets, 100 B values, 50 connections) against "
                  "petracache with `[storage] durability` = none / wal / sync (wal is the "
                  "default: its row is the write-heavy petracache run above).\n\n")
        md.append(HEADER)
        for mode, runs in results["durability"].items():
            md.append(row(f"petracache durability={mode}", summarize(runs)))
        md.append("\n")

    if results.get("large"):
        lg = results["large"]
        s = summarize(lg["runs"])
        bc = median([r.get("block_cache_hit_rate") for r in lg["runs"]])
        hot = median([r.get("hot_cache_hit_rate") for r in lg["runs"]])
        disk = median([r["during"].get("server_disk_read_bytes") for r in lg["runs"]])
        sst = lg["sst_bytes"]
        hot_p99 = median([r.get("hot_get_latency_us", {}).get("p99") for r in lg["runs"]])
        dropped = all(r.get("page_cache_dropped") for r in lg["runs"])
        headline = next((c["runs"].get("petracache") for c in results["comparisons"]
                         if c["name"] == "headline"), None)
        headline_p99 = summarize(headline)["p99"] if headline else None
        md.append("## larger than memory (petracache only)\n\n"
                  f"`hot_cache_size = {lg['cache_mib']}MiB`, `block_cache_size = "
                  f"{lg['cache_mib']}MiB`; {lg['keys']:,} keys of 1000 B prefilled (about 10× "
                  f"both caches together; SST files: {fmt(sst / 2**20 if sst else None, 0)} "
                  "MiB), 90% get / 10% set, Zipf(0.99) key popularity, 20 connections. Hit "
                  "rate is the protocol's (every key exists); the hot tier's and RocksDB's "
                  "block cache's (all block types) hit rates come from `/metrics`. "
                  + ("The OS page cache is dropped before each run, so reads missing both "
                     "tiers go to the device; " if dropped else
                     "The page cache could not be dropped (not root): reads missing both "
                     "tiers may be served from it; ")
                  + "the disk reads column is what the server made the block device read "
                  f"during the window. Hot-key p99: gets of the {lg['hot_keys']:,} most "
                  "popular keys (a tenth of what the hot tier holds), the requests the "
                  "memory tiers answer, timed on their own while the others wait on disk"
                  + (f"; {fmt(hot_p99)} µs is {ratio(hot_p99, headline_p99)} the headline's "
                     f"p99 ({fmt(headline_p99)} µs, target ≤ 2×)" if hot_p99 and headline_p99
                     else "") + ".\n\n")
        md.append("| ops/s | p50 µs | p99 µs | p99.9 µs | max µs | hot-key p99 µs | hit rate "
                  "| hot tier hit rate | block cache hit rate | disk reads MiB "
                  "| server RSS MiB |\n"
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
        md.append(f"| {fmt(s['ops_per_sec'], 0)} | {fmt(s['p50'])} | {fmt(s['p99'])} | "
                  f"{fmt(s['p999'])} | {fmt(s['max'])} | {fmt(hot_p99)} | "
                  f"{fmt(s['hit_rate'], 4)} | "
                  f"{fmt(hot, 4)} | {fmt(bc, 4)} | "
                  f"{fmt(disk / 2**20 if disk is not None else None, 1)} | "
                  f"{fmt(lg['rss_kib'] / 1024, 0)} |\n\n")

    if results.get("rss"):
        md.append("## memory (RSS)\n\n"
                  "VmRSS of the server process after the headline prefill (100k × 1000 B) "
                  f"once it is idle, and while {args.idle_connections} idle connections (each "
                  "having sent one `version`) are open, before the measured run. Per "
                  f"connection: the growth over the last {args.idle_connections - WAKE_CONNECTIONS}"
                  f" connections (the first {WAKE_CONNECTIONS} wake the allocator; see "
                  "docs/benchmarks.md).\n\n"
                  "| server | after prefill MiB | with connections MiB | per connection KiB |\n"
                  "| --- | ---: | ---: | ---: |\n")
        for kind, r in results["rss"].items():
            per_conn = r["per_conn_kib"]
            if per_conn < 0:  # memory released elsewhere outweighed the connections
                fell = r["prefilled_kib"] - r["with_conns_kib"]
                per_conn_text = f"≈ 0 (RSS fell by {fell:,} KiB)"
            else:
                per_conn_text = fmt(per_conn, 2)
            md.append(f"| {kind} | {fmt(r['prefilled_kib'] / 1024)} | "
                      f"{fmt(r['with_conns_kib'] / 1024)} | {per_conn_text} |\n")
        md.append("\n")

    if results.get("restart"):
        rs = results["restart"]
        md.append("## restart under load\n\n"
                  "Headline load with a cache-aside client (a get miss is followed by a set of "
                  "that key). The server is stopped with SIGTERM and started again on the same "
                  f"port and data. Below: get hit rate in each second of the first "
                  f"{args.restart_after:.0f} s after it accepts again (column n = [n-1, n) s), "
                  "how long SIGTERM took, how long clients saw no server (stop to "
                  "accepting), and throughput in the seconds before the stop and in the "
                  "first 5 s after.\n\n")
        seconds = int(args.restart_after)
        md.append("| server | stop took s | down s | ops/s before | ops/s first 5 s | " + " | ".join(
            f"{i}" for i in range(1, seconds + 1)) + " |\n")
        md.append("| --- | ---: | ---: | ---: | ---: |" + " ---: |" * seconds + "\n")
        for kind, r in rs.items():
            by_second = {p["second"]: p for p in r["series"]}
            cells = [fmt(by_second[i]["hit_rate"], 3) if i in by_second else "–"
                     for i in range(seconds)]
            # Whole seconds before the one the stop fell in; the first five after.
            before = [p["ops"] for p in r["series"] if p["second"] < -1]
            after = [p["ops"] for p in r["series"] if 0 <= p["second"] < 5]
            md.append(f"| {kind} | {r['stop_seconds']:.2f} | {r['downtime_s']:.2f} | "
                      f"{fmt(statistics.mean(before) if before else None, 0)} | "
                      f"{fmt(statistics.mean(after) if after else None, 0)} | "
                      + " | ".join(cells) + " |\n")
        md.append("\n")
    if results.get("chart"):
        md.append(f"![chart]({os.path.basename(results['chart'])})\n")
    else:
        md.append(f"Chart: {results.get('chart_note', 'not drawn')}\n")
    return "".join(md)


def draw_chart(args, results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, "skipped: matplotlib is not installed (apt-get install python3-matplotlib)"
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {"memcached": "#4c72b0", "petracache": "#dd8452"}
    names = [c["name"] for c in results["comparisons"]]
    width = 0.38
    for ax, metric, title in ((axes[0][0], "ops_per_sec", "throughput (ops/s, higher is better)"),
                              (axes[0][1], "p99", "p99 latency (µs, lower is better)")):
        for i, kind in enumerate(args.servers):
            values = []
            for comp in results["comparisons"]:
                runs = comp["runs"].get(kind)
                values.append(summarize(runs)[metric] if runs else 0)
            xs = [x + (i - 0.5) * width for x in range(len(names))]
            ax.bar(xs, values, width, label=kind, color=colors.get(kind))
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title)
        if names:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no comparison workloads in this run", ha="center",
                    transform=ax.transAxes)
    rs = results.get("restart", {})
    for kind, r in rs.items():
        pts = [p for p in r["series"] if p["hit_rate"] is not None]
        axes[1][0].plot([p["second"] + 0.5 for p in pts], [p["hit_rate"] for p in pts],
                        marker="o", label=kind, color=colors.get(kind))
        axes[1][1].plot([p["t"] for p in r["ops_series"]],
                        [p["ops_per_sec"] for p in r["ops_series"]], label=kind,
                        color=colors.get(kind))
    axes[1][0].set_title("restart: get hit rate per second (t=0: accepting again)")
    axes[1][0].set_ylim(-0.05, 1.05)
    axes[1][1].set_title(f"restart: throughput (ops/s over {RESTART_STEP:g} s buckets)")
    for ax in axes[1]:
        ax.axvline(0, color="grey", linestyle=":")
        ax.set_xlabel("seconds since restart")
        if rs:
            ax.legend()
    fig.suptitle(f"PetraCache vs memcached — {results['started']} "
                 f"({args.threads} server thread(s), {'quick' if args.quick else 'full'} run)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path, None


def machine_info(args):
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])

    def run(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10,
                                  cwd=ROOT).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    commit = run(["git", "rev-parse", "--short", "HEAD"])
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"])
    versions = run([args.memcached, "-V"])
    if "petracache" in args.servers:
        versions += "; " + run([args.petracache, "--version"])
    return {
        "nproc": run(["nproc"]),
        "CPU": model,
        "kernel": platform.release(),
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "servers": versions,
        "tree": commit + (" (with uncommitted changes)" if dirty else ""),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def parse_cpu_list(text):
    cpus = set()
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return sorted(cpus)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short runs, 1 repetition, both servers (< 2 minutes)")
    p.add_argument("--threads", type=int, default=1, help="server worker threads (1)")
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for the servers (0)")
    p.add_argument("--client-cpus", default=None,
                   help="taskset CPU list for the load generator (the other CPUs)")
    p.add_argument("--client-threads", type=int, default=None,
                   help="load generator threads (one per client CPU)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (3; quick: 1)")
    p.add_argument("--duration", type=float, default=None, help="measured seconds (10; quick 2)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds (2; quick 0.5)")
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                   help="comma-separated subset of " + ",".join(ALL_WORKLOADS))
    p.add_argument("--servers", default="memcached,petracache",
                   help="comma-separated: memcached,petracache")
    p.add_argument("--large-cache-mib", type=int, default=None,
                   help="block cache and hot tier size of the larger-than-memory workload "
                   "(64; quick 16)")
    p.add_argument("--idle-connections", type=int, default=1000,
                   help="idle connections open for the RSS figure (1000, at least 100)")
    p.add_argument("--restart-after", type=float, default=None,
                   help="seconds of hit rate recorded after a restart (30; quick 5)")
    p.add_argument("--petracache", default=os.environ.get(
        "PETRACACHE_BIN", os.path.join(ROOT, "build-release/src/server/petracache")))
    p.add_argument("--loadgen", default=os.environ.get(
        "PETRACACHE_LOADGEN", os.path.join(ROOT, "build-release/bench/petracache-loadgen")))
    p.add_argument("--memcached", default=shutil.which("memcached") or "/usr/bin/memcached")
    p.add_argument("--results-dir", default=os.path.join(ROOT, "bench", "results"))
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--verbose", action="store_true", help="show every load generator run")
    p.add_argument("--render", metavar="JSON",
                   help="only rewrite the .md (and .png) of an earlier run from its .json")
    args = p.parse_args(argv)
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.duration = args.duration or (2.0 if q else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if q else 2.0)
    args.large_cache_mib = args.large_cache_mib or (16 if q else 64)
    args.restart_after = args.restart_after or (5.0 if q else 30.0)
    args.restart_before = 2.0 if q else 5.0
    args.settle = 2.0 if q else 20.0
    if args.idle_connections < 100:
        p.error("--idle-connections must be at least 100")
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for w in args.workloads:
        if w not in ALL_WORKLOADS:
            p.error(f"unknown workload {w!r}")
    if "rss" in args.workloads and "headline" not in args.workloads:
        args.workloads.append("headline")  # RSS is measured on the headline servers
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.servers:
        if s not in ("memcached", "petracache"):
            p.error(f"unknown server {s!r}")
    ncpu = os.cpu_count() or 1
    server_cpus = parse_cpu_list(args.server_cpus)
    if args.client_cpus is None:
        rest = [c for c in range(ncpu) if c not in server_cpus]
        args.client_cpus = ",".join(map(str, rest or server_cpus))
    args.client_threads = args.client_threads or len(parse_cpu_list(args.client_cpus))
    return args


def check_tools(args):
    missing = []
    for kind, path in (("load generator", args.loadgen), ("memcached", args.memcached),
                       ("petracache", args.petracache)):
        if kind == "petracache" and "petracache" not in args.servers:
            continue
        if kind == "memcached" and "memcached" not in args.servers:
            continue
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            missing.append(f"{kind}: {path}")
    if shutil.which("taskset") is None:
        missing.append("taskset (util-linux)")
    if missing:
        hint = (" (build with ./dev bench, or pass --servers memcached to benchmark memcached "
                "alone)")
        raise BenchError("missing: " + "; ".join(missing) + hint)


def write_report(args, results, stem):
    if args.no_chart:
        results["chart_note"] = "skipped (--no-chart)"
    else:
        chart, note = draw_chart(args, results, stem + ".png")
        results["chart"] = chart
        if note:
            results["chart_note"] = note
            log("chart " + note)
    report = render(args, results)
    with open(stem + ".md", "w") as f:
        f.write(report)
    return report


def rerender(path, no_chart):
    with open(path) as f:
        saved = json.load(f)
    args = argparse.Namespace(**saved.pop("args"))
    args.no_chart = no_chart
    stem = path[:-len(".json")] if path.endswith(".json") else path
    write_report(args, saved, stem)
    log(f"rewrote {stem}.md" + ("" if no_chart else f" and {stem}.png"))
    return 0


def main(argv):
    args = parse_args(argv)
    if args.render:
        return rerender(args.render, args.no_chart)
    check_tools(args)

    def on_stop_signal(signum, frame):
        raise Stop()
    # Also SIGINT: a shell starts background jobs with SIGINT ignored, and Python then would
    # not turn it into KeyboardInterrupt; the children must be stopped either way.
    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.idle_connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    started = datetime.datetime.now().replace(microsecond=0)
    results = {
        "started": started.isoformat(sep=" "),
        "command": shlex.join(["./dev", "bench"] + argv) if os.environ.get("PETRACACHE_BIN")
        else shlex.join([sys.executable, "bench/run_bench.py"] + argv),
        "machine": machine_info(args),
        "comparisons": [],
        "warnings": [],
    }
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        w = (f"load average was {load1:.2f} at start: other processes compete for the CPUs, "
             "so these numbers are noisier than on an idle machine")
        results["warnings"].append(w)
        log("warning: " + w)
    workdir = tempfile.mkdtemp(prefix="petracache-bench-")
    t0 = time.monotonic()
    try:
        log(f"servers on CPU(s) {args.server_cpus}, load generator on {args.client_cpus}; "
            f"{args.threads} server thread(s); workdir {workdir}")
        run_comparisons(args, workdir, results)
        run_durability(args, workdir, results)
        run_large(args, workdir, results)
        run_restart(args, workdir, results)
    except (KeyboardInterrupt, Stop):
        log("interrupted; stopping servers")
        return 130
    finally:
        PROCS.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["elapsed_s"] = round(time.monotonic() - t0, 1)

    os.makedirs(args.results_dir, exist_ok=True)
    stem = os.path.join(args.results_dir, started.strftime("%Y-%m-%dT%H-%M-%S"))
    report = write_report(args, results, stem)
    with open(stem + ".json", "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items()}, **results}, f, indent=1)
    print(report)
    log(f"wrote {stem}.md, {stem}.json" + (f", {stem}.png" if results.get("chart") else "")
        + f" in {results['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
