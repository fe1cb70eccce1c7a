"""Online backup: `petracache --backup` (POST /backup) writes a consistent checkpoint while the
server keeps serving, and a server started on that checkpoint has the data as of the backup."""

import os
import subprocess
import unittest

import harness


def free_admin_config(port):
    return {"metrics": {"enabled": "true", "listen_addr": "127.0.0.1:%d" % port}}


class BackupTest(unittest.TestCase):
    def setUp(self):
        if not harness.is_petracache():
            raise unittest.SkipTest("petracache only")
        reason = harness.target_unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)

    def backup(self, server):
        return subprocess.run([harness.petracache_bin(), "--backup", "--config",
                               server.config_path], capture_output=True, text=True,
                              timeout=60)

    def test_backup_while_serving_then_restore(self):
        admin = harness.free_port()
        server = harness.start_server(extra_config=free_admin_config(admin))
        self.addCleanup(server.cleanup)
        with harness.connect(server) as c:
            for i in range(200):
                self.assertEqual(c.request(b"set k%d %d 0 2\r\nv%d\r\n" % (i, i, i % 10)),
                                 b"STORED\r\n")
            done = self.backup(server)
            self.assertEqual(done.returncode, 0, done.stderr)
            checkpoint = done.stdout.strip()
            self.assertTrue(checkpoint.startswith(server.db_path + ".backups/petracache-"),
                            checkpoint)
            # The server kept serving; a write after the backup is not in it.
            self.assertEqual(c.request(b"set after 0 0 1\r\nx\r\n"), b"STORED\r\n")
        status, _ = harness.http_get(admin, "/backup")
        self.assertNotEqual(status, 200, "GET must not take a backup")
        server.stop()

        restored = harness.make_server(extra_config={"storage": {"db_path": checkpoint}})
        self.addCleanup(restored.cleanup)
        restored.start()
        with harness.connect(restored) as c:
            self.assertEqual(c.get_reply(b"get k7\r\n"), b"VALUE k7 7 2\r\nv7\r\nEND\r\n")
            self.assertEqual(c.get_reply(b"get after\r\n"), b"END\r\n")

    def test_backup_without_a_running_server_fails_clearly(self):
        server = harness.make_server(extra_config=free_admin_config(harness.free_port()))
        self.addCleanup(server.cleanup)
        done = self.backup(server)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("cannot reach", done.stderr)


if __name__ == "__main__":
    unittest.main()
