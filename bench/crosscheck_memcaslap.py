#!/usr/bin/python3
"""crosscheck_memcaslap.py: petracache-loadgen against libmemcached's memcaslap, same load.

Starts Debian's memcached on the server CPU, then alternately runs memcaslap and
petracache-loadgen on the client CPU with the same shape (1 thread, 20 connections, 90% get /
10% set, 1000 B values, 16-byte keys, no pipelining, closed loop) and prints, per tool,
throughput, mean latency, the tool's own CPU time per operation, memcached's CPU time per
operation, and the tool's operation count against memcached's own counters. A third row runs
the load generator over 1,000 of its keys, to show how much memcached's cost depends on key
locality. docs/benchmarks.md has the result.

Usage: bench/crosscheck_memcaslap.py [--loadgen BIN] [--duration S] [--reps N]
"""

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_bench  # noqa: E402  (shares the process handling and server start/stop)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def server_ops(port):
    """cmd_get + cmd_set from memcached's own `stats`: counts the tools cannot influence."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    stats = dict(line.split()[1:3] for line in data.decode().splitlines()
                 if line.startswith("STAT "))
    return int(stats["cmd_get"]) + int(stats["cmd_set"])


def run_timed(argv, timeout):
    """Runs argv to completion; returns (stdout+stderr, CPU seconds it used)."""
    before = children_cpu()
    proc = run_bench.PROCS.spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        run_bench.PROCS.stop(proc, term_timeout=5.0)
    return out, children_cpu() - before


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loadgen", default=os.environ.get(
        "PETRACACHE_LOADGEN",
        os.path.join(run_bench.ROOT, "build-release/bench/petracache-loadgen")))
    p.add_argument("--memcaslap", default=shutil.which("memcaslap") or "/usr/bin/memcaslap")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    args.memcached = shutil.which("memcached") or "/usr/bin/memcached"
    args.threads = 1
    workdir = tempfile.mkdtemp(prefix="petracache-crosscheck-")
    small = "petracache-loadgen, 1k keys"
    results = {"memcaslap": [], "petracache-loadgen": [], small: []}
    server = run_bench.Memcached(args, workdir, "memcached", 1)
    try:
        server.start()
        cnf = os.path.join(workdir, "memaslap.cnf")
        with open(cnf, "w") as f:
            # key length, value length (min max proportion); cmd 0 = set, 1 = get.
            f.write("key\n16 16 1\nvalue\n1000 1000 1\ncmd\n0 0.1\n1 0.9\n")
        memcaslap = ["taskset", "-c", args.client_cpus, args.memcaslap,
                     "-s", f"127.0.0.1:{server.port}", "-T", "1", "-c", "20",
                     "-t", f"{args.duration}s", "-S", f"{args.duration}s", "-F", cnf]
        # memcaslap's window: 20 connections x 10k keys, set before they are read.
        loadgen = ["taskset", "-c", args.client_cpus, args.loadgen,
                   "--server", f"127.0.0.1:{server.port}", "--threads", "1",
                   "--connections", "20", "--get-ratio", "0.9", "--value-size", "1000",
                   "--keys", "200000", "--key-prefix", "memasl", "--warmup", "0",
                   "--duration", str(args.duration)]
        # The load generator's keys exist before it reads them, like memcaslap's.
        run_timed(loadgen[:-2] + ["--duration", "0", "--prefill"], 300)
        # The same load over 1,000 of those keys: how much memcached's cost per request
        # depends on the locality of the key set (its items stay in the CPU caches).
        loadgen_small = [a if a != "200000" else "1000" for a in loadgen]
        for rep in range(args.reps):
            order = ["memcaslap", "petracache-loadgen", small]
            if rep % 2:
                order.reverse()
            for tool in order:
                ops_before = server_ops(server.port)
                server_cpu_before = run_bench.proc_cpu_seconds(server.pid)
                if tool == "memcaslap":
                    out, cpu = run_timed(memcaslap, args.duration + 60)
                    tps = float(re.search(r"TPS: (\d+)", out).group(1))
                    total = out[out.index("Total Statistics"):]
                    avg = float(re.search(r"Avg:\s+(\d+)", total).group(1))
                    secs = float(re.search(r"Run time: ([\d.]+)s", out).group(1))
                    ops = tps * secs
                else:
                    out, cpu = run_timed(loadgen if tool != small else loadgen_small,
                                         args.duration + 60)
                    r = json.loads(out[out.index("{"):].splitlines()[0])
                    tps, avg, ops = r["ops_per_sec"], r["latency_us"]["mean"], r["ops"]
                # The server's count over the tool's whole run (memcaslap includes its window
                # warm-up sets; the load generator runs without warm-up here).
                counted = server_ops(server.port) - ops_before
                server_cpu = run_bench.proc_cpu_seconds(server.pid) - server_cpu_before
                results[tool].append({"ops_per_sec": tps, "mean_us": avg,
                                      "cpu_us_per_op": cpu * 1e6 / ops,
                                      "server_cpu_us_per_op": server_cpu * 1e6 / counted,
                                      "server_counted_ops": counted, "tool_ops": ops})
                print(f"{tool:28s} rep {rep + 1}: {tps:10,.0f} ops/s  mean {avg:7.1f} us  "
                      f"client CPU {cpu * 1e6 / ops:5.2f} us/op  memcached CPU "
                      f"{server_cpu * 1e6 / counted:5.2f} us/op  ops: tool {ops:,.0f} "
                      f"server {counted:,}", flush=True)
    finally:
        run_bench.PROCS.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n| tool | ops/s | mean latency µs | client CPU µs/op | memcached CPU µs/op | "
          "ops counted by the tool / by memcached |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for tool, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        counted = sum(r["tool_ops"] for r in runs) / sum(r["server_counted_ops"] for r in runs)
        print(f"| {tool} | {med['ops_per_sec']:,.0f} | {med['mean_us']:.1f} | "
              f"{med['cpu_us_per_op']:.2f} | {med['server_cpu_us_per_op']:.2f} | {counted:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
