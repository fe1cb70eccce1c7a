#!/usr/bin/python3
"""A local PetraCache cluster: N petracache nodes behind twemproxy (nutcracker), all on
127.0.0.1 free ports, for the twemproxy suites and for `./dev cluster`.

  /usr/bin/python3 tests/integration/cluster.py --interactive            # 3 nodes + router
  /usr/bin/python3 tests/integration/cluster.py --interactive --nodes 5 --router-port 22121
  /usr/bin/python3 tests/integration/cluster.py --interactive --data-dir /tmp/pc-cluster
  /usr/bin/python3 tests/integration/cluster.py --interactive --server memcached

--interactive starts everything, prints how to connect, then reads commands (`status`,
`kill N`, `stop N`, `start N`, `add`, `help`, `quit`) until quit, Ctrl-C or SIGTERM, and stops
every process it started, by PID (end of input keeps it running unless --quit-on-eof). The data lives in a temp dir removed on exit, unless
--data-dir names one (kept, and reused by the next run: node names, not ports, place keys on
the ketama ring, so the same keys land on the same nodes again).

From Python (what the suites do):

    with cluster.Cluster(nodes=3) as c:        # starts; stops and removes everything on exit
        client = harness.RawClient(c.router_address)
        c.kill_node(1); c.start_node(1)        # SIGKILL, then restart on the same port and db

The petracache binary is $PETRACACHE_BIN, else build/src/server/petracache in this checkout;
nutcracker is $NUTCRACKER_BIN, else /usr/sbin/nutcracker (Debian package `nutcracker`).
"""

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import harness  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_PETRACACHE_BIN = os.path.join(REPO_ROOT, "build", "src", "server", "petracache")
NUTCRACKER_BIN = os.environ.get("NUTCRACKER_BIN", "/usr/sbin/nutcracker")

# The pool settings the docs recommend (docs/twemproxy.md), scaled down so that tests see an
# ejection and a re-admission within seconds.
DEFAULT_POOL = {
    "hash": "md5",
    "distribution": "ketama",
    "auto_eject_hosts": True,
    "server_failure_limit": 2,
    "server_retry_timeout": 2000,  # ms
    "timeout": 500,  # ms
}

# Small caches: a dev or test cluster shares one machine.
DEFAULT_NODE_CONFIG = {
    "storage": {"block_cache_size": "32MiB", "hot_cache_size": "16MiB"},
}


def nutcracker_unavailable_reason():
    """None if nutcracker can be run, otherwise why not."""
    if not os.access(NUTCRACKER_BIN, os.X_OK):
        return ("nutcracker not found at %s (Debian: apt-get install nutcracker, or set "
                "NUTCRACKER_BIN)" % NUTCRACKER_BIN)
    return None


def _yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def nutcracker_yaml(pool_name, listen, servers, pool_options):
    """The YAML nutcracker reads: one pool; `servers` is a list of (host, port, weight, name)."""
    lines = ["%s:" % pool_name, "  listen: %s" % listen]
    for key, value in pool_options.items():
        lines.append("  %s: %s" % (key, _yaml_scalar(value)))
    lines.append("  servers:")
    for host, port, weight, name in servers:
        lines.append("   - %s:%d:%d %s" % (host, port, weight, name))
    return "\n".join(lines) + "\n"


class Node:
    """One cache node: a harness.Server plus its name on the ketama ring."""

    def __init__(self, name, server):
        self.name = name
        self.server = server

    @property
    def port(self):
        return self.server.port

    @property
    def address(self):
        return self.server.address

    @property
    def pid(self):
        return self.server.pid

    @property
    def db_path(self):
        return self.server.db_path

    def alive(self):
        return self.server.alive()


class Router:
    """nutcracker on 127.0.0.1: listen port for clients, stats port for its JSON stats."""

    def __init__(self, workdir, config_path, port, stats_port, stats_interval_ms):
        self.workdir = workdir
        self.config_path = config_path
        self.port = port
        self.stats_port = stats_port
        self.stats_interval_ms = stats_interval_ms
        self.log_path = os.path.join(workdir, "nutcracker.log")
        self.pid_path = os.path.join(workdir, "nutcracker.pid")
        self.proc = None

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def check_config(self):
        """`nutcracker -t`: raises harness.ServerError with nutcracker's words if it refuses."""
        r = subprocess.run([NUTCRACKER_BIN, "-t", "-c", self.config_path],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=harness.START_TIMEOUT)
        if r.returncode != 0 or "syntax is ok" not in (r.stdout + r.stderr):
            raise harness.ServerError("nutcracker -t refused %s (exit %d):\n%s%s" % (
                self.config_path, r.returncode, r.stdout, r.stderr))
        return (r.stdout + r.stderr).strip()

    def start(self, timeout=harness.START_TIMEOUT):
        argv = [NUTCRACKER_BIN, "-c", self.config_path, "-o", self.log_path,
                "-p", self.pid_path, "-a", "127.0.0.1", "-s", str(self.stats_port),
                "-i", str(self.stats_interval_ms), "-v", "6"]
        with open(os.path.join(self.workdir, "nutcracker.stderr"), "ab") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, cwd=self.workdir,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        if not harness.wait_for_port(self.port, deadline, self.proc):
            code = self.proc.poll()
            self.stop()
            raise harness.ServerError("nutcracker did not listen on %d within %.0fs (exit %s)\n%s"
                                      % (self.port, timeout, code, self.log_tail()))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=harness.STOP_TIMEOUT):
        """SIGTERM to our own nutcracker (by PID), SIGKILL if it outlives the bound."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)

    def log_tail(self, limit=4000):
        out = []
        for name in ("nutcracker.log", "nutcracker.stderr"):
            try:
                with open(os.path.join(self.workdir, name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if data:
                out.append("--- %s ---\n%s" % (name, data[-limit:].decode("utf-8", "replace")))
        return "\n".join(out)

    def stats(self, timeout=2.0):
        """nutcracker's stats JSON (connect to the stats port, read until it closes)."""
        deadline = time.monotonic() + timeout
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=timeout) as s:
            data = b""
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    break
                if not chunk:
                    break
                data += chunk
        return json.loads(data.decode("utf-8", "replace"))


class Cluster:
    """N cache nodes of one kind (petracache by default) behind one nutcracker pool."""

    def __init__(self, nodes=3, kind=None, workdir=None, keep_workdir=False, threads=1,
                 node_config=None, pool_options=None, router_port=None, node_ports=None,
                 stats_interval_ms=500, pool_name="petracache"):
        self.kind = kind or harness.server_kind()
        self.node_count = nodes
        self.threads = threads
        self.node_config = {s: dict(v) for s, v in DEFAULT_NODE_CONFIG.items()}
        for section, values in (node_config or {}).items():
            self.node_config.setdefault(section, {}).update(values)
        self.pool_options = dict(DEFAULT_POOL)
        self.pool_options.update(pool_options or {})
        self.pool_name = pool_name
        self.requested_router_port = router_port
        self.node_ports = list(node_ports or [])
        self.stats_interval_ms = stats_interval_ms
        self.keep_workdir = keep_workdir or workdir is not None
        self.workdir = workdir
        self.nodes = []
        self.router = None
        self.config_check = ""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self):
        reason = nutcracker_unavailable_reason()
        if reason:
            raise harness.ServerError(reason)
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="petracache-cluster-")
        else:
            os.makedirs(self.workdir, exist_ok=True)
        try:
            for _ in range(self.node_count):
                self._start_new_node()
            router_dir = os.path.join(self.workdir, "router")
            os.makedirs(router_dir, exist_ok=True)
            router_port = self.requested_router_port or harness.free_port()
            self.router = Router(router_dir, os.path.join(router_dir, "nutcracker.yml"),
                                 router_port, harness.free_port(), self.stats_interval_ms)
            self._write_router_config()
            self.router.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_new_node(self):
        i = len(self.nodes)
        name = "node%d" % (i + 1)
        node_dir = os.path.join(self.workdir, name)
        os.makedirs(node_dir, exist_ok=True)
        port = self.node_ports[i] if i < len(self.node_ports) else harness.free_port()
        server = harness.make_server(kind=self.kind, port=port, workdir=node_dir,
                                     threads=self.threads, extra_config=self.node_config)
        node = Node(name, server)
        self.nodes.append(node)  # before start(), so that cleanup() stops it on failure
        server.start()
        return node

    def _write_router_config(self):
        with open(self.router.config_path, "w") as f:
            f.write(nutcracker_yaml(
                self.pool_name, "127.0.0.1:%d" % self.router.port,
                [("127.0.0.1", n.port, 1, n.name) for n in self.nodes], self.pool_options))
        self.config_check = self.router.check_config()

    def add_node(self):
        """Starts one more node and restarts the router with it in the pool (nutcracker 0.5.0
        does not reload its configuration): the docs' procedure for growing a pool."""
        node = self._start_new_node()
        self.router.stop()
        self._write_router_config()
        self.router.start()
        return node

    def stop(self):
        """Stops the router and every node (SIGTERM, then SIGKILL past the bound); files stay."""
        if self.router is not None:
            self.router.stop()
        for n in self.nodes:
            n.server.stop()

    def cleanup(self):
        """stop(), then removes the work dir unless it was given or keep_workdir is set."""
        self.stop()
        if self.workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
        return False

    # -- nodes ------------------------------------------------------------------------------

    def node(self, index):
        return self.nodes[index]

    def kill_node(self, index):
        """SIGKILL (a crash): whatever was not yet written is lost; the db stays."""
        return self.nodes[index].server.kill()

    def stop_node(self, index):
        """SIGTERM (a clean stop)."""
        return self.nodes[index].server.stop()

    def start_node(self, index):
        """Starts a stopped node again, on the same port and db_path."""
        self.nodes[index].server.start()
        return self.nodes[index]

    @property
    def router_address(self):
        return self.router.address

    @property
    def config_path(self):
        return self.router.config_path

    def router_config(self):
        with open(self.router.config_path) as f:
            return f.read()


# -- interactive mode (./dev cluster) --------------------------------------------------------

_HELP = """commands:
  status      nodes, router and whether each process is running
  kill N      SIGKILL node N (a crash; its data stays on disk)
  stop N      SIGTERM node N (a clean stop)
  start N     start node N again on the same port and data
  add         start one more node and restart the router with it in the pool
  help        this text
  quit        stop everything (as do Ctrl-C and SIGTERM)"""


class _Stop(Exception):
    pass


def _status_lines(c):
    r = c.router
    lines = ["  router  127.0.0.1:%-5d  %s  pid %s  (stats: 127.0.0.1:%d)" % (
        r.port, "up  " if r.alive() else "DOWN", r.pid, r.stats_port)]
    for i, n in enumerate(c.nodes):
        lines.append("  %-6s  127.0.0.1:%-5d  %s  pid %s  %s" % (
            "node%d" % (i + 1), n.port, "up  " if n.alive() else "DOWN",
            n.pid if n.alive() else "-", n.db_path or n.server.workdir))
    return "\n".join(lines)


def _banner(c, data_dir_kept):
    p = c.router.port
    opts = c.pool_options
    return "\n".join([
        "PetraCache dev cluster: %d %s nodes behind twemproxy (nutcracker), loopback only" % (
            len(c.nodes), c.kind),
        _status_lines(c),
        "  pool: distribution %s, hash %s, auto_eject_hosts %s, server_failure_limit %s, "
        "server_retry_timeout %s ms, timeout %s ms" % (
            opts["distribution"], opts["hash"], _yaml_scalar(opts["auto_eject_hosts"]),
            opts["server_failure_limit"], opts["server_retry_timeout"], opts["timeout"]),
        "  router config: %s" % c.config_path,
        "  data: %s (%s)" % (c.workdir, "kept" if data_dir_kept else "removed on exit"),
        "",
        "connect (memcached text protocol) to the router, 127.0.0.1:%d:" % p,
        "  printf 'set k 0 0 5\\r\\nhello\\r\\nget k\\r\\n' | nc -q 1 127.0.0.1 %d" % p,
        "  /usr/bin/python3 -c 'from pymemcache.client.base import Client; "
        "c = Client((\"127.0.0.1\", %d)); c.set(\"k\", \"v\"); print(c.get(\"k\"))'" % p,
        "router stats (JSON): nc 127.0.0.1 %d" % c.router.stats_port,
        "",
        "stop: Ctrl-C (or `quit`) stops the router and every node this started.",
        _HELP,
    ])


def _node_index(c, arg):
    try:
        i = int(arg) - 1
    except ValueError:
        i = -1
    if not 0 <= i < len(c.nodes):
        raise ValueError("no node %r (1..%d)" % (arg, len(c.nodes)))
    return i


def _run_command(c, line):
    words = line.split()
    if not words:
        return
    cmd, args = words[0], words[1:]
    if cmd in ("quit", "exit", "q"):
        raise _Stop()
    if cmd in ("help", "?"):
        print(_HELP)
    elif cmd == "status":
        print(_status_lines(c))
    elif cmd == "add" and not args:
        n = c.add_node()
        print("%s started on 127.0.0.1:%d (pid %s); nutcracker restarted with %d nodes "
              "(about 1/%d of the keys now map to %s)" % (
                  n.name, n.port, n.pid, len(c.nodes), len(c.nodes), n.name))
    elif cmd in ("kill", "stop", "start") and len(args) == 1:
        i = _node_index(c, args[0])
        n = c.nodes[i]
        if cmd == "start":
            if n.alive():
                print("node%d is already running (pid %s)" % (i + 1, n.pid))
                return
            c.start_node(i)
            print("node%d started on 127.0.0.1:%d (pid %s), same data" % (i + 1, n.port, n.pid))
        elif not n.alive():
            print("node%d is not running" % (i + 1))
        elif cmd == "kill":
            c.kill_node(i)
            print("node%d killed (SIGKILL); the router ejects it after %s failed requests"
                  % (i + 1, c.pool_options["server_failure_limit"]))
        else:
            code = c.stop_node(i)
            print("node%d stopped (exit code %s)" % (i + 1, code))
    else:
        print("unknown command %r; try `help`" % line.strip())


def interactive(args):
    if args.server == "petracache" and not os.environ.get("PETRACACHE_BIN"):
        os.environ["PETRACACHE_BIN"] = args.bin or DEFAULT_PETRACACHE_BIN
    elif args.bin:
        os.environ["PETRACACHE_BIN"] = args.bin
    harness.set_server_kind(args.server)
    reason = harness.target_unavailable_reason() or nutcracker_unavailable_reason()
    if reason:
        print("cluster: %s" % reason, file=sys.stderr)
        return 1

    def on_signal(signum, frame):
        raise _Stop()

    # Ctrl-C too (explicitly: a shell may start us with SIGINT ignored).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    pool = {}
    if args.retry_timeout is not None:
        pool["server_retry_timeout"] = args.retry_timeout
    c = Cluster(nodes=args.nodes, kind=args.server, workdir=args.data_dir,
                threads=args.threads, router_port=args.router_port, pool_options=pool)
    try:
        print("starting %d %s nodes and nutcracker..." % (args.nodes, args.server), flush=True)
        c.start()
        print(_banner(c, args.data_dir is not None), flush=True)
        reported_dead = set()
        stdin_open = True
        while True:
            if stdin_open:
                print("cluster> ", end="", flush=True)
            line = None
            # Wait for a command, waking twice a second to notice processes that died.
            while line is None:
                if stdin_open:
                    ready, _, _ = select.select([sys.stdin], [], [], 0.5)
                    if ready:
                        line = sys.stdin.readline()
                        if line == "":
                            stdin_open = False  # end of input: keep running until a signal
                            if args.quit_on_eof:
                                raise _Stop()
                            print("\n(end of input: Ctrl-C or SIGTERM stops the cluster)",
                                  flush=True)
                else:
                    time.sleep(0.5)
                if not c.router.alive() and "router" not in reported_dead:
                    reported_dead.add("router")
                    print("\nnutcracker exited (code %s)\n%s" % (
                        c.router.proc.poll(), c.router.log_tail(1500)), flush=True)
                for i, n in enumerate(c.nodes):
                    key = (i, n.pid)
                    if not n.alive() and n.server.proc is not None and \
                            n.server.proc.returncode not in (None, 0, -9) and \
                            key not in reported_dead:
                        reported_dead.add(key)
                        print("\nnode%d exited unexpectedly (code %s)\n%s" % (
                            i + 1, n.server.proc.returncode, n.server.output_tail(1500)),
                            flush=True)
            try:
                _run_command(c, line)
            except ValueError as e:
                print(e)
            except harness.ServerError as e:
                print("failed: %s" % e)
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut cleanup short
        print("\nstopping nutcracker and %d nodes..." % len(c.nodes), flush=True)
        c.cleanup()
        if args.data_dir:
            print("stopped; data kept in %s" % args.data_dir)
        else:
            print("stopped; temp data removed")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interactive", action="store_true",
                    help="start the cluster, print how to connect, run until Ctrl-C/quit")
    ap.add_argument("--nodes", type=int, default=3, help="cache nodes (default 3)")
    ap.add_argument("--server", choices=harness.SERVERS, default="petracache",
                    help="node kind (default petracache; memcached for comparison)")
    ap.add_argument("--bin", help="petracache binary (default $PETRACACHE_BIN, else %s)"
                    % os.path.relpath(DEFAULT_PETRACACHE_BIN, os.getcwd()))
    ap.add_argument("--router-port", type=int, help="router port (default: a free port)")
    ap.add_argument("--data-dir", help="keep node data here across runs (default: temp dir)")
    ap.add_argument("--threads", type=int, default=1, help="worker threads per node")
    ap.add_argument("--retry-timeout", type=int,
                    help="server_retry_timeout in ms (default %d)"
                    % DEFAULT_POOL["server_retry_timeout"])
    ap.add_argument("--quit-on-eof", action="store_true",
                    help="stop when standard input ends (default: keep running until a signal)")
    args = ap.parse_args(argv)
    if not args.interactive:
        ap.print_help()
        return 2
    if not 1 <= args.nodes <= 64:
        ap.error("--nodes must be 1..64")
    return interactive(args)


if __name__ == "__main__":
    sys.exit(main())
