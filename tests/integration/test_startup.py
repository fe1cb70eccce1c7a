"""Starting petracache: every bad configuration fails before serving with one clear message
and a non-zero exit; --help and --version; environment overrides; IPv6; the embedded
defaults. petracache only."""

import os
import re
import socket
import subprocess
import tempfile
import time
import unittest

import faults_util as fu
import harness

RUN_TIMEOUT = 15.0  # a failing start must exit well within this


def _skip_unless_petracache(test):
    if not harness.is_petracache():
        test.skipTest("petracache only (running against %s)" % harness.server_kind())
    reason = harness.target_unavailable_reason()
    if reason:
        test.skipTest(reason)


def _has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class _StartupCase(unittest.TestCase):

    def setUp(self):
        _skip_unless_petracache(self)
        self.dir = tempfile.mkdtemp(prefix="petracache-startup-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", self.dir], check=False))

    def write_config(self, text, name="petracache.ini"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def base_config(self, port=None, db_path=None, extra_server="", extra=""):
        """An INI that would start: free port, db under the test dir, metrics off."""
        port = port or harness.free_port()
        db_path = db_path or os.path.join(self.dir, "db")
        return ("[server]\nlisten_addr = 127.0.0.1:%d\nthreads = 1\n%s"
                "[storage]\ndb_path = %s\n"
                "[metrics]\nenabled = false\n%s" % (port, extra_server, db_path, extra))

    def run_petracache(self, args, env=None, cwd=None, preexec_fn=None):
        """Runs the binary to completion; returns (rc, stdout, stderr) as text. A process that
        becomes ready (or outlives RUN_TIMEOUT) is stopped and the test fails, so a start that
        should have been refused costs no more than the start itself."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PETRACACHE_")}
        full_env.update(env or {})
        out_path = os.path.join(self.dir, "run.stdout")
        err_path = os.path.join(self.dir, "run.stderr")
        with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
            proc = subprocess.Popen([os.path.abspath(harness.petracache_bin())] + list(args),
                                    stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f,
                                    cwd=cwd or self.dir, env=full_env, start_new_session=True,
                                    preexec_fn=preexec_fn)

        def read(path):
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        deadline = time.monotonic() + RUN_TIMEOUT
        try:
            while proc.poll() is None:
                if "info: ready" in read(err_path) or time.monotonic() > deadline:
                    proc.terminate()
                    try:
                        proc.wait(timeout=harness.STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=harness.STOP_TIMEOUT)
                    self.fail("petracache %s started serving (it should have refused)\n%s" % (
                        " ".join(args), read(err_path)))
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=harness.STOP_TIMEOUT)
        return proc.returncode, read(out_path), read(err_path)

    def assert_refuses(self, args, *needles, env=None, preexec_fn=None, pattern=None):
        """The start fails: non-zero exit, never ready, and stderr names every needle."""
        rc, out, err = self.run_petracache(args, env=env, preexec_fn=preexec_fn)
        self.assertNotEqual(rc, 0, "exit code 0; stderr:\n%s" % err)
        self.assertNotIn("info: ready", err, "it became ready before failing:\n%s" % err)
        self.assertNotIn("listening on", err, err)
        for needle in needles:
            self.assertIn(needle, err, "the message should name %r:\n%s" % (needle, err))
        if pattern:
            self.assertRegex(err, pattern)
        # One message, not a cascade (log lines before it are fine, e.g. storage opened).
        errors = [line for line in err.splitlines() if line.startswith("petracache:")]
        self.assertEqual(len(errors), 1, err)
        return err

    def start(self, server, timeout=harness.START_TIMEOUT):
        """Starts a harness.Server and registers its cleanup."""
        self.addCleanup(server.cleanup)
        server.start(timeout)
        server.wait_for_log(r"\bready\b")
        return server


class BadConfigTest(_StartupCase):

    def test_unknown_key(self):
        path = self.write_config(self.base_config(extra_server="bogus_key = 1\n"))
        self.assert_refuses(["--config", path], "bogus_key", "%s:4" % path)

    def test_unknown_section(self):
        path = self.write_config(self.base_config(extra="[bogus]\nx = 1\n"))
        self.assert_refuses(["--config", path], "[bogus]", "%s:9" % path)

    def test_bad_durability(self):
        path = self.write_config(self.base_config(extra="[storage]\ndurability = maybe\n"))
        self.assert_refuses([path], "durability", "maybe", "%s:9" % path)

    def test_negative_max_connections(self):
        path = self.write_config(self.base_config(extra_server="max_connections = -1\n"))
        self.assert_refuses(["--config", path], "max_connections", "-1", "%s:4" % path)

    def test_bad_listen_addr_port_is_a_config_error(self):
        # Like any other bad value: file:line and key, and nothing done before (the store
        # is not opened, so no database directory appears).
        db = os.path.join(self.dir, "db")
        text = re.sub(r"listen_addr = \S+", "listen_addr = 127.0.0.1:99999",
                      self.base_config(db_path=db))
        path = self.write_config(text)
        self.assert_refuses(["--config", path], "listen_addr", "%s:2" % path)
        self.assertFalse(os.path.exists(db), "the database was created before the check")

    def test_bad_env_value_names_the_variable(self):
        path = self.write_config(self.base_config())
        self.assert_refuses(["--config", path], "PETRACACHE_MAX_CONNECTIONS", "abc",
                            env={"PETRACACHE_MAX_CONNECTIONS": "abc"})

    def test_unknown_argument(self):
        rc, out, err = self.run_petracache(["--bogus"])
        self.assertEqual(rc, 2, err)
        self.assertIn("--bogus", err)
        self.assertIn("Usage:", err)

    def test_missing_config_file(self):
        path = os.path.join(self.dir, "nope.ini")
        self.assert_refuses(["--config", path], path)

    def test_unreadable_config_file(self):
        path = self.write_config(self.base_config())
        os.chmod(path, 0)
        preexec = None
        if os.geteuid() == 0:
            # root reads anything: run the server as nobody, for whom mode 000 means no.
            os.chmod(self.dir, 0o755)

            def preexec():
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
        elif os.access(path, os.R_OK):
            self.skipTest("mode 000 is still readable here")
        self.assert_refuses(["--config", path], path, preexec_fn=preexec)

    def test_config_path_that_is_a_directory(self):
        # Opening a directory "succeeds"; reading it must still be an error, not an empty
        # config that silently starts on the embedded defaults.
        path = os.path.join(self.dir, "conf.d")
        os.mkdir(path)
        self.assert_refuses(["--config", path], path,
                            env={"PETRACACHE_LISTEN_ADDR": "127.0.0.1:%d" % harness.free_port(),
                                 "PETRACACHE_METRICS_ENABLED": "false",
                                 "PETRACACHE_DB_PATH": os.path.join(self.dir, "db")})

    def test_db_path_under_a_regular_file(self):
        blocker = os.path.join(self.dir, "afile")
        with open(blocker, "w") as f:
            f.write("not a directory\n")
        db = os.path.join(blocker, "db")
        path = self.write_config(self.base_config(db_path=db))
        self.assert_refuses(["--config", path], db)


class InUseTest(_StartupCase):
    """Resources another process holds: the port and the database LOCK."""

    def test_listen_port_in_use_by_another_socket(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            path = self.write_config(self.base_config(port=port))
            self.assert_refuses(["--config", path], "127.0.0.1:%d" % port, "in use")

    def test_listen_port_in_use_by_another_petracache(self):
        # Both would bind with SO_REUSEPORT; the second must refuse, not share the port.
        first = self.start(harness.make_server())
        path = self.write_config(self.base_config(port=first.port))
        self.assert_refuses(["--config", path], "127.0.0.1:%d" % first.port, "in use")
        self.assertTrue(first.alive())

    def test_admin_port_equal_to_the_listen_port_is_refused(self):
        # The admin socket must not join the memcached listeners' SO_REUSEPORT group (it
        # would then take a share of the memcached connections and answer them as HTTP).
        port = harness.free_port()
        path = self.write_config(self.base_config(
            port=port, extra="enabled = true\nlisten_addr = 127.0.0.1:%d\n" % port))
        self.assert_refuses(["--config", path], "127.0.0.1:%d" % port, "in use")

    def test_admin_port_in_use_by_another_petracache_is_refused(self):
        admin = harness.free_port()
        first = self.start(harness.make_server(extra_config={
            "metrics": {"enabled": "true", "listen_addr": "127.0.0.1:%d" % admin}}))
        path = self.write_config(self.base_config(
            extra="enabled = true\nlisten_addr = 127.0.0.1:%d\n" % admin))
        self.assert_refuses(["--config", path], "127.0.0.1:%d" % admin, "in use")
        self.assertTrue(first.alive())

    def test_db_path_locked_by_another_petracache(self):
        first = self.start(harness.make_server())
        path = self.write_config(self.base_config(db_path=first.db_path))
        self.assert_refuses(["--config", path], first.db_path, "LOCK")
        with harness.connect(first) as c:
            self.assertEqual(c.request(b"set k 0 0 1\r\nx\r\n"), b"STORED\r\n")


class CommandLineTest(_StartupCase):

    def test_help(self):
        for flag in ("--help", "-h"):
            rc, out, err = self.run_petracache([flag])
            self.assertEqual(rc, 0, err)
            self.assertTrue(out.startswith("Usage: petracache"), out)
            for word in ("--config", "--version", "--log-level", "PETRACACHE_LISTEN_ADDR"):
                self.assertIn(word, out)

    def test_version(self):
        for flag in ("--version", "-V"):
            rc, out, err = self.run_petracache([flag])
            self.assertEqual(rc, 0, err)
            self.assertRegex(out, r"\Apetracache \d+\.\d+\.\d+\S* \(memcached protocol 1\.6\.18\)"
                                  r"\n\Z")


class EnvironmentAndAddressTest(_StartupCase):

    def test_env_beats_the_file(self):
        file_port = harness.free_port()
        server = harness.make_server(port=file_port)
        env_port = harness.free_port()
        while env_port == file_port:
            env_port = harness.free_port()
        server.port = env_port
        server.env = dict(os.environ, PETRACACHE_LISTEN_ADDR="127.0.0.1:%d" % env_port,
                          PETRACACHE_SERVER_THREADS="3")
        self.start(server)
        self.assertIn("(port %d), 3 worker threads" % env_port, server.log_text())
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", file_port), timeout=2).close()
        with harness.connect(server) as c:
            c.send(b"stats settings\r\n")
            settings = c.read_until(b"END\r\n")
        self.assertIn(b"STAT tcpport %d\r\n" % env_port, settings)
        self.assertIn(b"STAT num_threads 3\r\n", settings)

    def test_ipv6_loopback(self):
        if not _has_ipv6_loopback():
            self.skipTest("no ::1 on this machine")
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            port = s.getsockname()[1]
        server = harness.make_server(port=port, extra_config={
            "server": {"listen_addr": "[::1]:%d" % port}})
        server.host = "::1"
        self.start(server)
        self.assertIn("listening on [::1]:%d" % port, server.log_text())
        with harness.connect(server) as c:
            self.assertEqual(c.request(b"set k6 0 0 3\r\nsix\r\n"), b"STORED\r\n")
            self.assertEqual(c.get_reply(b"get k6\r\n"), b"VALUE k6 0 3\r\nsix\r\nEND\r\n")
        with self.assertRaises(OSError):  # not on IPv4
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def test_embedded_defaults_create_data_under_cwd(self):
        port = harness.free_port()
        admin = harness.free_port()
        cwd = os.path.join(self.dir, "cwd")
        os.mkdir(cwd)
        server = harness.Server("petracache", port, [harness.petracache_bin()], cwd)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PETRACACHE_")}
        env.update(PETRACACHE_LISTEN_ADDR="127.0.0.1:%d" % port,
                   PETRACACHE_METRICS_ADDR="127.0.0.1:%d" % admin)
        server.env = env
        self.start(server)
        self.assertIn("(embedded defaults)", server.log_text())
        self.assertTrue(os.path.isfile(os.path.join(cwd, "data", "rocksdb", "CURRENT")),
                        os.listdir(cwd))
        with harness.connect(server) as c:
            self.assertEqual(c.request(b"set d 0 0 1\r\nx\r\n"), b"STORED\r\n")
        self.assertEqual(harness.http_get(admin, "/ready")[0], 200)  # metrics on by default
        self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()


def _thp_mode():
    """The kernel's transparent huge page mode ('always', 'madvise', 'never'), or None."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return re.search(r"\[(\w+)\]", f.read()).group(1)
    except (OSError, AttributeError):
        return None


def _huge_kib(pid):
    """KiB of the process's memory on huge pages: transparent ones (AnonHugePages) and, where
    the administrator reserved a hugetlb pool (vm.nr_hugepages), explicit ones, which mimalloc
    tries first."""
    total = 0
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if line.startswith(("AnonHugePages:", "Private_Hugetlb:", "Shared_Hugetlb:")):
                total += int(line.split()[1])
    return total


def _uses_mimalloc(pid):
    with open("/proc/%d/maps" % pid) as f:
        return "libmimalloc" in f.read()


class HugePagesTest(_StartupCase):
    """[server] huge_pages: the server's memory sits on transparent huge pages, or not."""

    def fill(self, huge_pages):
        """Starts a server (huge_pages None: the default), stores 40 MB, returns the KiB of
        the server's memory on huge pages."""
        extra = {"storage": {"hot_cache_size": "64MiB"}}
        if huge_pages is not None:
            extra["server"] = {"huge_pages": "true" if huge_pages else "false"}
        server = harness.make_server(threads=1, extra_config=extra)
        self.start(server)
        if not _uses_mimalloc(server.pid):
            self.skipTest("built without mimalloc")
        value = b"x" * 100_000
        with harness.connect(server) as c:
            # 40 MB into the hot tier and the memtable: more than the allocator segment it
            # had before the setting applied.
            for i in range(400):
                self.assertEqual(c.request(b"set hp%d 0 0 %d\r\n%s\r\n" % (i, len(value), value)),
                                 b"STORED\r\n")
            self.assertEqual(c.get_reply(b"get hp7\r\n"),
                             b"VALUE hp7 0 %d\r\n%s\r\nEND\r\n" % (len(value), value))
        if huge_pages:
            # A fault may get a small page when memory is fragmented; khugepaged collapses
            # such ranges later. Bounded wait for any huge page to appear.
            fu.wait_until(lambda: _huge_kib(server.pid) > 0, 10, 0.1)
        return _huge_kib(server.pid)

    def test_on_where_the_kernel_offers_them(self):
        if _thp_mode() not in ("always", "madvise"):
            self.skipTest("transparent huge pages are off in this kernel")
        self.assertGreater(self.fill(huge_pages=True), 0)

    def test_off_by_default_keeps_small_pages(self):
        if _thp_mode() != "madvise":
            self.skipTest("needs THP in madvise mode (with 'always' the kernel decides)")
        self.assertEqual(self.fill(huge_pages=None), 0)


def _thread_nices(pid):
    """{thread name: [nice value, ...]} for the threads of process `pid`."""
    nices = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                stat = f.read()
        except FileNotFoundError:
            continue  # the thread exited
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        # Fields after the name start at field 3 (state); nice is field 19.
        nice = int(stat[stat.rindex(")") + 2:].split()[16])
        nices.setdefault(name, []).append(nice)
    return nices


class DiskPoolPriorityTest(_StartupCase):
    """[server] disk_read_nice: the disk pool's threads run below the event loops, by the
    configured nice increment; everything else keeps the process's priority."""

    def thread_nices(self, extra_server=None):
        extra = {"server": {"disk_read_threads": "3"}}
        if extra_server:
            extra["server"].update(extra_server)
        server = self.start(harness.make_server(threads=2, extra_config=extra))
        return _thread_nices(server.pid)

    def test_pool_runs_ten_below_the_loops_by_default(self):
        base = os.getpriority(os.PRIO_PROCESS, 0)  # the server inherits ours
        nices = self.thread_nices()
        self.assertEqual(sorted(nices.get("pc-worker0", [])), [base], nices)
        self.assertEqual(sorted(nices.get("pc-worker1", [])), [base], nices)
        pool = [n for name, values in nices.items() if name.startswith("pc-disk")
                for n in values]
        self.assertEqual(pool, [min(base + 10, 19)] * 3, nices)

    def test_zero_keeps_the_loops_priority(self):
        base = os.getpriority(os.PRIO_PROCESS, 0)
        nices = self.thread_nices({"disk_read_nice": "0"})
        # (RocksDB's compaction threads have their own setting, CompactionPriorityTest.)
        values = [n for name, values in nices.items() if name != "rocksdb:low" for n in values]
        self.assertEqual(set(values), {base}, nices)
        self.assertEqual(len([n for n in nices if n.startswith("pc-disk")]), 3, nices)

    def test_out_of_range_is_refused(self):
        path = self.write_config(self.base_config(extra_server="disk_read_nice = 20\n"))
        self.assert_refuses(["--config", path], "disk_read_nice", "an integer from 0 to 19")


class CompactionPriorityTest(_StartupCase):
    """[storage] low_priority_compaction: RocksDB's compaction threads run at nice 19 (they
    lower themselves when they pick up a job); its flush threads and the event loops keep
    the process's priority."""

    def nices_after_a_compaction(self, low):
        """Starts a server with 1 MiB memtables, stores until RocksDB compacts (four level-0
        files trigger it), and returns its threads' nice values once a compaction finished."""
        extra = {"storage": {"write_buffer_size": "1MiB",
                             "low_priority_compaction": "true" if low else "false"}}
        server = self.start(harness.make_server(threads=1, extra_config=extra))
        value = b"c" * 100_000
        with harness.connect(server) as c:
            for i in range(80):  # 8 MB: several memtables flushed into level 0
                self.assertEqual(
                    c.request(b"set cp%d 0 0 %d\r\n%s\r\n" % (i, len(value), value)),
                    b"STORED\r\n")
        log_path = os.path.join(server.db_path, "LOG")

        def compacted():
            with open(log_path, errors="replace") as f:
                return '"event": "compaction_finished"' in f.read()
        self.assertTrue(fu.wait_until(compacted, 15, 0.1), "no compaction in %s" % log_path)
        return _thread_nices(server.pid)

    def test_compaction_threads_run_at_nice_19(self):
        base = os.getpriority(os.PRIO_PROCESS, 0)
        nices = self.nices_after_a_compaction(low=True)
        self.assertIn(19, nices.get("rocksdb:low", []), nices)  # RocksDB sets 19 itself
        self.assertEqual(set(nices.get("rocksdb:high", [base])), {base}, nices)
        self.assertEqual(nices.get("pc-worker0"), [base], nices)

    def test_off_keeps_the_process_priority(self):
        base = os.getpriority(os.PRIO_PROCESS, 0)
        nices = self.nices_after_a_compaction(low=False)
        self.assertEqual(set(nices.get("rocksdb:low", [])), {base}, nices)
