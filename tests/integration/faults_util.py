"""Helpers shared by the fault-injection suites (test_crash, test_disk_full,
test_storage_faults, test_abuse): petracache on a chosen db_path, tmpfs and read-only bind
mounts that are always undone, process memory from /proc, pipelined gets, and the
expect-a-failed-start check. Built on harness.py; every wait is bounded."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import harness

BATCH = 200


class PetracacheFaultTest(unittest.TestCase):
    """Base of the fault suites: petracache only, and each suite's figures (test methods
    append lines to `summaries`) printed once the class is done."""

    summaries = []

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.summaries = []
        skip_unless_petracache(cls)

    @classmethod
    def tearDownClass(cls):
        for line in cls.summaries:
            print("\n  " + line, file=sys.stderr, end="")
        if cls.summaries:
            print(file=sys.stderr)
        super().tearDownClass()


def skip_unless_petracache(test):
    """Skips the test (or class) unless the target is petracache and its binary exists."""
    if not harness.is_petracache():
        raise unittest.SkipTest("petracache only: it needs petracache's storage (running "
                                "against %s)" % harness.server_kind())
    reason = harness.target_unavailable_reason()
    if reason:
        raise unittest.SkipTest(reason)


def make_petracache(db_path=None, durability=None, storage=None, server=None, threads=2):
    """A petracache Server (not started) in its own temp dir; db_path defaults to
    <workdir>/db. `storage`/`server` add INI keys."""
    workdir = tempfile.mkdtemp(prefix="petracache-faults-")
    extra = {"storage": dict(storage or {}), "server": dict(server or {})}
    if durability:
        extra["storage"]["durability"] = durability
    if db_path:
        extra["storage"]["db_path"] = db_path
    s = harness.make_server(kind="petracache", workdir=workdir, threads=threads,
                            extra_config=extra)
    if db_path:
        s.db_path = db_path
    return s


def answers(port, timeout=0.5):
    """True if a server on 127.0.0.1:port answers `version` within timeout. (Accepting a
    connection is not enough: petracache listens before it opens the database.)"""
    try:
        with harness.RawClient(("127.0.0.1", port), timeout=timeout) as c:
            return c.request(b"version\r\n", timeout=timeout).startswith(b"VERSION ")
    except (OSError, harness.ConnectionClosed, harness.ReadTimeout):
        return False


def start_checked(server, timeout=harness.START_TIMEOUT):
    """server.start(), which returns once the server answers (bounded); on failure the
    process is stopped and ServerError carries its output."""
    return server.start(timeout)


def run_expecting_exit(server, timeout=20.0):
    """Runs the server's argv and waits for it to exit by itself. Returns (exit code,
    stderr+stdout). If it comes up instead (answers `version`) or is still running at the
    deadline, it is killed and (None, output) is returned."""
    out_path = os.path.join(server.workdir, "failed-start.log")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(server.argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=server.workdir,
                                start_new_session=True)
    code = None
    came_up = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            break
        if answers(server.port, timeout=0.2):
            came_up = True
            break
        time.sleep(0.05)
    if code is None:
        proc.kill()
        proc.wait(timeout=harness.STOP_TIMEOUT)
        wait_port_released(server.port)
    with open(out_path, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    if came_up:
        text = "(it started and answered requests)\n" + text
    elif code is None:
        text = "(still running after %.0fs)\n" % timeout + text
    return code, text


@contextlib.contextmanager
def tmpfs(size_mib):
    """Mounts a tmpfs of size_mib MiB on a new temp dir; always unmounts. Raises SkipTest
    when mounting is not allowed (e.g. a container without CAP_SYS_ADMIN)."""
    mnt = tempfile.mkdtemp(prefix="petracache-tmpfs-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm" % size_mib, "tmpfs", mnt],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        os.rmdir(mnt)
        raise unittest.SkipTest("cannot mount a tmpfs (%s)" % e)
    if r.returncode != 0:
        os.rmdir(mnt)
        raise unittest.SkipTest("cannot mount a tmpfs (needs root with CAP_SYS_ADMIN): %s"
                                % r.stderr.strip())
    try:
        yield mnt
    finally:
        _umount(mnt)
        shutil.rmtree(mnt, ignore_errors=True)


@contextlib.contextmanager
def readonly_bind(path):
    """Bind-mounts path read-only onto itself (root ignores file permissions, not a
    read-only mount); always unmounts. SkipTest if not allowed."""
    r = subprocess.run(["mount", "--bind", path, path], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise unittest.SkipTest("cannot bind-mount (needs CAP_SYS_ADMIN): %s" % r.stderr.strip())
    try:
        r = subprocess.run(["mount", "-o", "remount,bind,ro", path], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise unittest.SkipTest("cannot remount read-only: %s" % r.stderr.strip())
        yield path
    finally:
        _umount(path)


def _umount(path):
    for args in (["umount", path], ["umount", "-l", path]):
        try:
            if subprocess.run(args, capture_output=True, timeout=30).returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
        time.sleep(0.2)


def proc_status(pid):
    """{field: kB} for the Vm* lines of /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            m = re.match(r"(Vm\w+|Rss\w+):\s+(\d+) kB", line)
            if m:
                out[m.group(1)] = int(m.group(2))
    return out


def rss_mib(pid):
    return proc_status(pid)["VmRSS"] / 1024.0


def peak_rss_mib(pid):
    return proc_status(pid)["VmHWM"] / 1024.0


def reset_peak_rss(pid):
    """Resets VmHWM to the current RSS (Linux >= 4.0, writing 5 to clear_refs). False if not
    possible."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def pipeline(client, requests, expect=None, timeout=30):
    """Sends requests in batches and returns the one-line replies (checked against expect
    if given)."""
    replies = []
    for start in range(0, len(requests), BATCH):
        chunk = requests[start:start + BATCH]
        client.send(b"".join(chunk))
        for _ in chunk:
            line = client.read_line(timeout=timeout)
            if expect is not None and line != expect:
                raise AssertionError("got %r, want %r" % (line, expect))
            replies.append(line)
    return replies


_VALUE_RE = re.compile(rb"VALUE (\S+) (\d+) (\d+)(?: (\d+))?\r\n\Z")


def get_many(client, keys, timeout=30, cmd=b"get"):
    """{key: (flags, value)} of the keys present, through pipelined multi-gets. A reply
    that is not VALUE/END (e.g. SERVER_ERROR) is raised as AssertionError, unless
    errors is a list, see get_many_checked."""
    found, errors = get_many_checked(client, keys, timeout, cmd)
    if errors:
        raise AssertionError("get failed: %r" % errors[:5])
    return found


def get_many_checked(client, keys, timeout=30, cmd=b"get", batch=100):
    """Like get_many, one key per request so an error reply names its key: returns
    (found {key: (flags, value)}, [(key, error line)])."""
    found, errors = {}, []
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        client.send(b"".join(b"%s %s\r\n" % (cmd, k) for k in chunk))
        for k in chunk:
            line = client.read_line(timeout=timeout)
            if line == b"END\r\n":
                continue
            m = _VALUE_RE.match(line)
            if not m:
                errors.append((k, line))
                continue
            data = client.read_exact(int(m.group(3)) + 2, timeout=timeout)
            end = client.read_line(timeout=timeout)
            if data[-2:] != b"\r\n" or end != b"END\r\n" or m.group(1) != k:
                raise AssertionError("malformed reply for %r: %r ... %r" % (k, line, end))
            found[k] = (int(m.group(2)), data[:-2])
    return found, errors


def wait_until(predicate, timeout, interval=0.1):
    """Polls predicate() until it is true or the deadline passes; returns the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def kill9(server):
    """SIGKILL our own server by PID (never by name) and reap it."""
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=harness.STOP_TIMEOUT)


def _listening(port):
    """True if some socket is in LISTEN state on `port` (any address), from /proc/net."""
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A" and \
                            int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def wait_port_released(port, timeout=5.0):
    """After a kill -9 the kernel may hold the dead server's listening sockets for a few
    tens of milliseconds (io_uring tears its ring down asynchronously), and a restart in
    that window fails with "address already in use". Waits (bounded) until nothing listens
    on the port; returns the seconds waited."""
    start = time.monotonic()
    wait_until(lambda: not _listening(port), timeout, interval=0.005)
    return time.monotonic() - start


def restart_after_kill(server, timeout=harness.START_TIMEOUT):
    """Starts a killed server again on its port and db_path, once the port is free."""
    wait_port_released(server.port)
    return start_checked(server, timeout)
