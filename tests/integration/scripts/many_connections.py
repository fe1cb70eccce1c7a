#!/usr/bin/python3
r"""Opens many concurrent connections to petracache (10,000 by default), each doing one set and
one get while all are open, and reports how many were correct and the server's memory (RSS)
before, with all of them open, and after they close. Not part of ./dev test: it needs about
N file descriptors on each side and takes a few seconds.

Usage (from the repository root):

  # a fresh petracache (temp dir, free port on 127.0.0.1) with the right limits, then stopped
  PETRACACHE_BIN=build/src/server/petracache \
      /usr/bin/python3 tests/integration/scripts/many_connections.py
  /usr/bin/python3 tests/integration/scripts/many_connections.py \
      --bin build/src/server/petracache --connections 15000 --threads 4 --io-backend epoll
  # a server you started yourself (RSS is read from /proc/PID when --pid is given)
  /usr/bin/python3 tests/integration/scripts/many_connections.py --addr 127.0.0.1:11211 --pid 1234

File descriptors: the script raises its own RLIMIT_NOFILE to N + 100 (this needs a hard limit
that high, see `ulimit -Hn`, or CAP_SYS_RESOURCE), and starts its server with RLIMIT_NOFILE =
N + 1000 (set in the child before exec, like `ulimit -n`) and `[server] max_connections` =
N + 100 (the default cap is 10,000, and the script's own stats connection counts too). A
server you start yourself needs the same: run it under `ulimit -n $((N + 1000))` with
max_connections above N. The client also needs N local ports (net.ipv4.ip_local_port_range
gives 28,231 by default).

Output: one line per phase and a summary; exit status 0 only if every connection was correct.
"""

import argparse
import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness  # noqa: E402

PHASE_TIMEOUT = 60.0  # every phase (connect, set, get) must finish within this


def set_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    for new in ((want, max(hard, want)), (min(want, hard), hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, new)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status(pid, field):
    """VmRSS / VmHWM of pid in bytes, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mib(n):
    return "?" if n is None else "%.1f MiB" % (n / 1048576.0)


def exchange(socks, requests, replies, deadline):
    """Sends requests[i] on socks[i] (all first), then reads until each has len(replies[i])
    bytes or EOF or the deadline. Returns the set of indexes whose reply was exact."""
    for i, s in enumerate(socks):
        if s is None:
            continue
        try:
            s.sendall(requests[i])
        except OSError:
            socks[i] = None
    bufs = {}
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        if s is not None:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
            bufs[i] = b""
    pending = len(bufs)
    while pending and time.monotonic() < deadline:
        for k, _ in sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
            i = k.data
            try:
                chunk = k.fileobj.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if chunk:
                bufs[i] += chunk
            if not chunk or len(bufs[i]) >= len(replies[i]):
                sel.unregister(k.fileobj)
                pending -= 1
    sel.close()
    for s in socks:
        if s is not None:
            s.setblocking(True)
    return {i for i, b in bufs.items() if b == replies[i]}


def stat(address, name):
    try:
        with harness.RawClient(address, timeout=10) as c:
            c.send(b"stats\r\n")
            for line in c.read_until(b"END\r\n").split(b"\r\n"):
                parts = line.split(b" ")
                if len(parts) == 3 and parts[1] == name.encode():
                    return parts[2].decode()
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return "? (%s)" % e
    return "?"


def run(address, pid, n):
    rss_before = proc_status(pid, "VmRSS") if pid else None
    socks = []
    t0 = time.monotonic()
    deadline = t0 + PHASE_TIMEOUT
    connect_errors = 0
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        try:
            s = socket.create_connection(address, timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        except OSError as e:
            connect_errors += 1
            if connect_errors <= 3:
                print("connect error: %s" % e, flush=True)
    t_connect = time.monotonic() - t0
    print("connect: %d of %d open in %.2fs (%d errors)" % (len(socks), n, t_connect,
                                                           connect_errors), flush=True)

    t0 = time.monotonic()
    values = [b"v%d-" % i + b"x" * (i % 50) for i in range(len(socks))]
    sets = [b"set many%d %d 0 %d\r\n%s\r\n" % (i, i, len(v), v) for i, v in enumerate(values)]
    set_ok = exchange(socks, sets, [b"STORED\r\n"] * len(socks), t0 + PHASE_TIMEOUT)
    print("set: %d correct in %.2fs" % (len(set_ok), time.monotonic() - t0), flush=True)

    t0 = time.monotonic()
    gets = [b"get many%d\r\n" % i for i in range(len(socks))]
    want = [b"VALUE many%d %d %d\r\n%s\r\nEND\r\n" % (i, i, len(v), v)
            for i, v in enumerate(values)]
    get_ok = exchange(socks, gets, want, t0 + PHASE_TIMEOUT)
    print("get: %d correct in %.2fs" % (len(get_ok), time.monotonic() - t0), flush=True)

    curr = stat(address, "curr_connections")
    rss_open = proc_status(pid, "VmRSS") if pid else None
    for s in socks:
        if s is not None:
            s.close()
    # Give the server a moment to count the closes down (bounded).
    end = time.monotonic() + 10
    curr_after = stat(address, "curr_connections")
    while curr_after not in ("1", "?") and time.monotonic() < end:
        time.sleep(0.1)
        curr_after = stat(address, "curr_connections")
    rss_after = proc_status(pid, "VmRSS") if pid else None
    hwm = proc_status(pid, "VmHWM") if pid else None

    ok = len(set_ok & get_ok)
    print("summary: %d of %d connections correct (set and get), %d failed" % (ok, n, n - ok))
    print("server: curr_connections %s with all open (including the stats connection), "
          "%s after closing" % (curr, curr_after))
    if pid:
        per = ("%.1f KiB" % ((rss_open - rss_before) / 1024.0 / max(1, len(socks)))
               if rss_open is not None and rss_before is not None else "?")
        print("server RSS: %s before, %s with all open (%s per connection), %s after, "
              "peak (VmHWM) %s" % (mib(rss_before), mib(rss_open), per, mib(rss_after), mib(hwm)))
    else:
        print("server RSS: unknown (pass --pid)")
    return ok == n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", "-n", type=int, default=10000)
    ap.add_argument("--bin", default=os.environ.get("PETRACACHE_BIN", ""),
                    help="petracache binary (default $PETRACACHE_BIN)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--io-backend", default="auto",
                    choices=("auto", "io_uring", "io_uring_basic", "epoll"))
    ap.add_argument("--addr", help="host:port of a running server (then nothing is started)")
    ap.add_argument("--pid", type=int, help="with --addr: the server's PID, for its RSS")
    args = ap.parse_args(argv)
    n = args.connections

    have = set_nofile(n + 100)
    if have < n + 100:
        print("many_connections: RLIMIT_NOFILE is %d, need %d: raise the hard limit "
              "(ulimit -Hn; raising it needs CAP_SYS_RESOURCE)" % (have, n + 100), file=sys.stderr)
        return 2

    if args.addr:
        host, _, port = args.addr.rpartition(":")
        return 0 if run((host.strip("[]"), int(port)), args.pid, n) else 1

    if not args.bin or not os.access(args.bin, os.X_OK):
        print("many_connections: pass --bin or set PETRACACHE_BIN (or use --addr)",
              file=sys.stderr)
        return 2
    os.environ["PETRACACHE_BIN"] = os.path.abspath(args.bin)  # the server runs in a temp dir
    harness.set_server_kind("petracache")
    server_nofile = n + 1000

    def server_limits():
        set_nofile(server_nofile)

    server = harness.make_server(threads=args.threads, extra_config={"server": {
        "max_connections": n + 100, "io_backend": args.io_backend}})
    server.preexec_fn = server_limits
    try:
        server.start()
        soft = None
        try:
            with open("/proc/%d/limits" % server.pid) as f:
                for line in f:
                    if line.startswith("Max open files"):
                        soft = int(line.split()[3])
        except (OSError, ValueError):
            pass
        print("server: pid %d on %s:%d, %d threads, io_backend %s, max_connections %d, "
              "RLIMIT_NOFILE %s" % (server.pid, server.address[0], server.port, args.threads,
                                    args.io_backend, n + 100, soft), flush=True)
        ok = run(server.address, server.pid, n)
        if not server.alive():
            print("the server exited (code %s)\n%s" % (server.proc.returncode,
                                                       server.output_tail()))
            ok = False
        return 0 if ok else 1
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
