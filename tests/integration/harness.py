"""Shared helpers for the integration suites: free ports, starting and stopping memcached or
petracache, and a raw socket client whose every read is bounded by a deadline.

The target server is chosen by `--server memcached|petracache` on the command line of run.py
or golden_replay.py, or by the PETRACACHE_TEST_SERVER environment variable (the flag wins).
petracache is started as `$PETRACACHE_BIN --config FILE`; memcached as Debian's
`memcached -l 127.0.0.1 -p PORT -U 0 -u nobody`.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

SERVERS = ("petracache", "memcached")
MEMCACHED_BIN = os.environ.get("MEMCACHED_BIN", "/usr/bin/memcached")

# Every wait in this file is bounded by one of these.
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 5.0

_server_kind = os.environ.get("PETRACACHE_TEST_SERVER", "petracache")


def set_server_kind(kind):
    """Selects which server start_server() launches for the rest of the process."""
    global _server_kind
    if kind not in SERVERS:
        raise ValueError("unknown server %r (want one of %s)" % (kind, ", ".join(SERVERS)))
    _server_kind = kind
    os.environ["PETRACACHE_TEST_SERVER"] = kind


def server_kind():
    return _server_kind


def is_petracache():
    return _server_kind == "petracache"


def petracache_bin():
    # Absolute, because servers are started with their temp dir as the working directory.
    path = os.environ.get("PETRACACHE_BIN", "")
    return os.path.abspath(path) if path else ""


def target_unavailable_reason():
    """None if the selected server can be started, otherwise why not."""
    if _server_kind == "memcached":
        if not os.access(MEMCACHED_BIN, os.X_OK):
            return "memcached not found at %s" % MEMCACHED_BIN
        return None
    path = petracache_bin()
    if not path:
        return "PETRACACHE_BIN is not set (or pass --server memcached)"
    if not os.access(path, os.X_OK):
        return "PETRACACHE_BIN=%s is not an executable file" % path
    return None


_handed_out = set()
_handed_out_lock = threading.Lock()


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on right now (the kernel picks it), never one
    this process was given before: the kernel can hand the same free port to two calls in a
    row (a test's admin port and its server port would then collide)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with _handed_out_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no fresh free port after 1000 tries")


def wait_for_port(port, deadline, proc=None, host="127.0.0.1"):
    """Polls until host:port (127.0.0.1 by default) accepts a connection. False if the
    deadline passes or the process exits first."""
    delay = 0.01
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    return False


def wait_for_port_closed(port, deadline, host="127.0.0.1"):
    """Polls until host:port refuses connections. A process that used io_uring leaves its
    sockets to the kernel's asynchronous ring teardown: for a few milliseconds after it is
    reaped, its listener still accepts connections (into a backlog that is then reset), and
    a restarted server sharing the port (SO_REUSEPORT) would race with it."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return True
        time.sleep(0.01)
    return False


class ServerError(RuntimeError):
    pass


_reap_lock = threading.Lock()
_reaping = []


def reap_all():
    """Waits for every cleanup_in_background() to finish (each is bounded by STOP_TIMEOUT
    before SIGKILL)."""
    with _reap_lock:
        threads = list(_reaping)
        _reaping.clear()
    for t in threads:
        t.join(2 * STOP_TIMEOUT + 1)


class Server:
    """One running server process on 127.0.0.1:port. Use start_server() to make one."""

    def __init__(self, kind, port, argv, workdir, db_path=None, config_path=None):
        self.kind = kind
        self.port = port
        self.argv = argv
        self.workdir = workdir  # owned temp dir (removed by cleanup())
        self.db_path = db_path
        self.config_path = config_path
        self.proc = None
        self.host = "127.0.0.1"  # where start() waits for the port and address points
        # Extra subprocess.Popen settings for start(): the environment (None: inherit) and a
        # preexec_fn (e.g. to raise RLIMIT_NOFILE for the server).
        self.env = None
        self.preexec_fn = None
        self._stderr_path = os.path.join(workdir, "stderr-%d.log" % port)
        self._stdout_path = os.path.join(workdir, "stdout-%d.log" % port)

    @property
    def address(self):
        return (self.host, self.port)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=START_TIMEOUT):
        err = open(self._stderr_path, "ab")
        out = open(self._stdout_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=self.workdir, start_new_session=True, env=self.env,
                preexec_fn=self.preexec_fn)
        finally:
            err.close()
            out.close()
        if not wait_for_port(self.port, time.monotonic() + timeout, self.proc, self.host):
            rc = self.proc.poll()
            self._terminate()
            raise ServerError("%s did not accept connections on port %d within %.0fs "
                              "(exit code %s)\n%s" % (self.kind, self.port, timeout, rc,
                                                      self.output_tail()))
        self._wait_until_serving(time.monotonic() + timeout)
        return self

    def _wait_until_serving(self, deadline):
        """Accepting is not serving: petracache binds its port before it opens the database
        and starts its loops, and the connection wait_for_port made sits in a backlog until
        then. Wait (bounded) until a request is answered and, for petracache, until `stats`
        counts both connections, so no test's first request pays for the rest of startup and
        no counter a test reads still has the probes' accepts to come."""
        want_connections = 2 if self.kind == "petracache" else 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with RawClient(self.address, timeout=1.0) as c:
                    if not c.request(b"version\r\n").startswith(b"VERSION "):
                        raise ServerError("%s answered `version` wrongly" % self.kind)
                    while time.monotonic() < deadline:
                        c.send(b"stats\r\n")
                        body = c.read_until(b"END\r\n")
                        m = re.search(rb"STAT total_connections (\d+)\r\n", body)
                        if m is None or int(m.group(1)) >= want_connections:
                            return
                        time.sleep(0.01)
            except (OSError, ConnectionClosed, ReadTimeout):
                time.sleep(0.05)
            except ServerError:
                self._terminate()
                raise
        rc = self.proc.poll()
        self._terminate()
        raise ServerError("%s accepted connections but did not answer within the start "
                          "timeout (exit code %s)\n%s" % (self.kind, rc, self.output_tail()))

    def output_tail(self, limit=4000):
        parts = []
        for name, path in (("stderr", self._stderr_path), ("stdout", self._stdout_path)):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if data:
                parts.append("--- %s of %s ---\n%s" % (
                    name, self.kind, data[-limit:].decode("utf-8", "replace")))
        return "\n".join(parts)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_text(self):
        """Everything the server wrote to stderr so far (petracache logs there)."""
        try:
            with open(self._stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_for_log(self, pattern, timeout=START_TIMEOUT):
        """Polls stderr until the regex `pattern` matches; returns the match. Raises
        ServerError if the deadline passes first."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            m = re.search(pattern, self.log_text())
            if m:
                return m
            if time.monotonic() >= deadline:
                raise ServerError("no log line matching %r within %.1fs\n%s" % (
                    pattern, timeout, self.output_tail()))
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def admin_port(self, timeout=START_TIMEOUT):
        """The port of petracache's admin HTTP server, from its `admin HTTP on ...` log line
        (so `[metrics] listen_addr = 127.0.0.1:0` works)."""
        return int(self.wait_for_log(r"admin HTTP on \S+ \(port (\d+)\)", timeout).group(1))

    def _terminate(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
        """Sends sig to our own process only (by PID), then SIGKILL once the bound passes.
        Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
            wait_for_port_closed(self.port, time.monotonic() + 5, self.host)
        return self.proc.returncode

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, then SIGKILL if still running after `timeout` seconds."""
        return self._terminate(signal.SIGTERM, timeout)

    def kill(self):
        """kill -9, as a crash would."""
        return self._terminate(signal.SIGKILL, STOP_TIMEOUT)

    def restart(self, timeout=START_TIMEOUT):
        self.stop()
        return self.start(timeout)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def cleanup_in_background(self):
        """cleanup() without waiting for the process to exit (memcached takes a second to
        stop); reap_all() waits for every such cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        t = threading.Thread(target=self.cleanup, daemon=True)
        t.start()
        with _reap_lock:
            _reaping.append(t)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False


def write_petracache_config(path, port, db_path, threads=2, extra=None):
    """Writes the INI petracache reads; `extra` maps section -> {key: value} to add."""
    sections = {
        "server": {"listen_addr": "127.0.0.1:%d" % port, "threads": str(threads)},
        "storage": {"db_path": db_path},
        "metrics": {"enabled": "false"},
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update({k: str(v) for k, v in values.items()})
    with open(path, "w") as f:
        for section, values in sections.items():
            f.write("[%s]\n" % section)
            for k, v in values.items():
                f.write("%s = %s\n" % (k, v))


def make_server(kind=None, port=None, workdir=None, threads=2, extra_config=None,
                memcached_args=()):
    """Builds (does not start) a Server of the selected kind on a free port, in its own temp
    dir. For petracache the INI and the db_path live in that dir."""
    kind = kind or _server_kind
    reason = target_unavailable_reason() if kind == _server_kind else None
    if reason:
        raise ServerError(reason)
    port = port or free_port()
    workdir = workdir or tempfile.mkdtemp(prefix="petracache-it-")
    if kind == "memcached":
        argv = [MEMCACHED_BIN, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                "-t", str(threads)]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        argv += list(memcached_args)
        return Server(kind, port, argv, workdir)
    db_path = os.path.join(workdir, "db")
    config_path = os.path.join(workdir, "petracache.ini")
    write_petracache_config(config_path, port, db_path, threads, extra_config)
    argv = [petracache_bin(), "--config", config_path]
    return Server(kind, port, argv, workdir, db_path=db_path, config_path=config_path)


def start_server(**kwargs):
    """make_server(...) and start it. On a failed start, the temp dir is removed."""
    server = make_server(**kwargs)
    try:
        return server.start()
    except BaseException:
        server.cleanup()
        raise


class ConnectionClosed(Exception):
    pass


class ReadTimeout(Exception):
    pass


class RawClient:
    """A blocking TCP client for exact-byte tests. Every read has a deadline."""

    def __init__(self, address, timeout=DEFAULT_READ_TIMEOUT, server=None):
        self.timeout = timeout
        self.server = server  # named in the message when the connection closes unexpectedly
        self.sock = socket.create_connection(address, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        """Reads whatever arrives before the deadline into buf. False on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            message = "server closed the connection; unread: %r" % self.buf[:200]
            if self.server is not None and self.server.proc is not None:
                rc = self.server.proc.poll()
                message += "\n%s %s\n%s" % (
                    self.server.kind, "still running" if rc is None else "exited: %s" % rc,
                    self.server.output_tail(1500))
            raise ConnectionClosed(message)
        self.buf += chunk
        return True

    def read_until(self, marker, timeout=None):
        """Returns the bytes up to and including marker."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out, self.buf = self.buf[:i + len(marker)], self.buf[i + len(marker):]
                return out
            if not self._fill(deadline):
                raise ReadTimeout("no %r within %.1fs; got %r" % (
                    marker, timeout or self.timeout, self.buf[:200]))

    def read_line(self, timeout=None):
        return self.read_until(b"\r\n", timeout)

    def read_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ReadTimeout("wanted %d bytes within %.1fs; got %d" % (
                    n, timeout or self.timeout, len(self.buf)))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_available(self, quiet=0.2, timeout=None):
        """Reads until nothing new arrives for `quiet` seconds (bounded by timeout) or EOF."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            try:
                if not self._fill(min(deadline, time.monotonic() + quiet)):
                    break
            except ConnectionClosed:
                break
        out, self.buf = self.buf, b""
        return out

    def request(self, data, timeout=None):
        """Sends one request whose reply is a single line; returns that line."""
        self.send(data)
        return self.read_line(timeout)

    def get_reply(self, data, timeout=None):
        """Sends a retrieval request; returns the bytes through END\\r\\n (or an error line)."""
        self.send(data)
        deadline = time.monotonic() + (timeout or self.timeout)
        out = b""
        while True:
            line = self.read_line(max(0.01, deadline - time.monotonic()))
            out += line
            if line.startswith(b"VALUE "):
                size = int(line.split()[3])
                out += self.read_exact(size + 2, max(0.01, deadline - time.monotonic()))
                continue
            return out

    def wait_closed(self, timeout=None):
        """True if the server closes the connection before the deadline (extra bytes before
        the close are discarded)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            while self._fill(deadline):
                pass
        except ConnectionClosed:
            return True
        return False


def connect(server, timeout=DEFAULT_READ_TIMEOUT):
    return RawClient(server.address, timeout, server)


def http_get(port, path, host="127.0.0.1", timeout=DEFAULT_READ_TIMEOUT):
    """GET http://host:port/path with a bounded wait; returns (status, body bytes)."""
    import http.client
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class ServerTestCase(unittest.TestCase):
    """A test class with one server of the selected kind for all its tests (started in
    setUpClass, stopped in tearDownClass). Set petracache_only for suites that only make
    sense against petracache; set server_kwargs to pass make_server() options."""

    petracache_only = False
    server_kwargs = {}
    server = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.petracache_only and not is_petracache():
            raise unittest.SkipTest("petracache only (running against %s)" % server_kind())
        reason = target_unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.server = start_server(**cls.server_kwargs)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            cls.server.cleanup()
            cls.server = None
        super().tearDownClass()

    def connect(self, timeout=DEFAULT_READ_TIMEOUT):
        c = connect(self.server, timeout)
        self.addCleanup(c.close)
        return c
