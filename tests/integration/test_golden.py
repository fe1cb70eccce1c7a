"""The golden transcripts (tests/golden/*.golden), each replayed whole, chunked and pipelined
on a fresh server; plus checks that the format parser and the replayer catch what they
should."""

import glob
import os
import re
import unittest

import golden_replay as gr
import harness

GOLDEN_FILES = sorted(glob.glob(os.path.join(gr.GOLDEN_DIR, "*.golden")))


def _method_name(path, mode):
    base = os.path.basename(path)[:-len(".golden")]
    return "test_%s_%s" % (re.sub(r"\W", "_", base), mode)


class GoldenReplayTest(unittest.TestCase):
    """One test per (file, mode). All replays run in setUpClass, several at once (each on its
    own server), and each test reports its own result."""

    results = {}

    @classmethod
    def setUpClass(cls):
        reason = harness.target_unavailable_reason()
        if reason:
            raise unittest.SkipTest(reason)
        goldens = []
        cls.parse_errors = {}
        for path in GOLDEN_FILES:
            try:
                goldens.append(gr.parse_golden(path))
            except gr.GoldenFormatError as e:
                cls.parse_errors[path] = str(e)
        cls.results = {}
        for g, mode, err in gr.run_all(goldens, gr.MODES):
            cls.results[(g.path, mode)] = err

    def _check(self, path, mode):
        if path in self.parse_errors:
            self.fail(self.parse_errors[path])
        err = self.results.get((path, mode), "not replayed")
        if err:
            self.fail(err)


for _path in GOLDEN_FILES:
    for _mode in gr.MODES:
        setattr(GoldenReplayTest, _method_name(_path, _mode),
                lambda self, p=_path, m=_mode: self._check(p, m))


class GoldenFormatTest(unittest.TestCase):
    """The parser and matcher alone (no server)."""

    def parse(self, text):
        return gr.parse_golden("<test>", text.encode("latin-1"))

    def test_every_file_parses(self):
        self.assertGreater(len(GOLDEN_FILES), 10)
        for path in GOLDEN_FILES:
            with self.subTest(path=os.path.basename(path)):
                g = gr.parse_golden(path)
                self.assertTrue(g.segments)

    def test_escapes(self):
        g = self.parse("> a\\r\\n\\t\\\\\\0\\x7b\\xff\n< ok\\r\\n\n")
        self.assertEqual(g.segments[0].request, [b"a\r\n\t\\\0{\xff"])

    def test_rep(self):
        g = self.parse("> get {rep:3:a}\\r\\n\n< {rep:2:-}\\r\\n\n")
        self.assertEqual(g.segments[0].request, [b"get aaa\r\n"])
        self.assertEqual(g.segments[0].expect, [b"--\r\n"])

    def test_checkpoints_split_segments(self):
        g = self.parse("> a\n< b\n\n> c\n< d\n==\n> e\n< f\n")
        self.assertEqual(len(g.segments), 3)

    def test_capture_use_splits_segment(self):
        g = self.parse("> gets k\\r\\n\n< VALUE k 0 1 {cas:c}\\r\\nx\\r\\nEND\\r\\n\n"
                       "> cas k 0 0 1 {c}\\r\\n\n> y\\r\\n\n< STORED\\r\\n\n")
        self.assertEqual(len(g.segments), 2)
        self.assertEqual(g.segments[1].uses_vars(), {"c"})

    def test_sync_and_sleep(self):
        g = self.parse("> a\n< b\n@sync\n> c\n< d\n@sleep 0.5\n> e\n< f\n")
        self.assertTrue(g.segments[0].barrier)
        self.assertEqual(g.segments[1].sleep, 0.5)
        self.assertEqual(len(gr._batches(g, "pipelined")), 3)
        g = self.parse("> a\n< b\n> c\n< d\n\n> e\n< f\n")
        self.assertEqual(len(gr._batches(g, "pipelined")), 1)

    def test_close_must_be_last(self):
        g = self.parse("> quit\\r\\n\n< {close}\n")
        self.assertTrue(g.expects_close)
        with self.assertRaises(gr.GoldenFormatError):
            self.parse("> quit\\r\\n\n< {close}\n> version\\r\\n\n")
        with self.assertRaises(gr.GoldenFormatError):
            self.parse("> quit\\r\\n\n< x{close}\n")

    def test_rejected_files(self):
        bad = [
            "> a\\q\n",                     # unknown escape
            "> a\\x4\n",                    # short \x
            "> a {nope}\n",                 # use of a name never captured
            "< {num}1\n",                   # a digit after {num}
            "< {any}x\n",                   # {any} not followed by \r or \n
            "< {stats}STAT\n",              # {stats} followed by S
            "< {num}{any}\n",               # two placeholders in a row
            "> a\n< {x}\n",                 # unknown captured name
            "x\n",                          # unknown line kind
            "@sleep 9\n",                   # sleep out of range
            "# only a comment\n",           # no requests
            "> a\r\n",                      # CRLF file
        ]
        for text in bad:
            with self.subTest(text=text):
                with self.assertRaises(gr.GoldenFormatError):
                    self.parse(text)

    def test_match(self):
        parts = gr.parse_golden("<t>", b"> x\n< VALUE k 0 1 {cas:c}\\r\\nx\\r\\nEND\\r\\n\n") \
            .segments[0].expect
        full = b"VALUE k 0 1 42\r\nx\r\nEND\r\n"
        status, used, caps, _ = gr.match(parts, full, {})
        self.assertEqual((status, used, caps), (gr.FULL, len(full), {"c": b"42"}))
        for cut in range(len(full)):
            self.assertEqual(gr.match(parts, full[:cut], {})[0], gr.PARTIAL, cut)
        self.assertEqual(gr.match(parts, b"VALUE k 0 1 x", {})[0], gr.MISMATCH)
        self.assertEqual(gr.match(parts, b"VALUE k 0 2", {})[0], gr.MISMATCH)
        # Extra bytes after a full match are left for the caller.
        self.assertEqual(gr.match(parts, full + b"junk", {})[:2], (gr.FULL, len(full)))

    def test_match_stats_and_any(self):
        parts = gr.parse_golden("<t>", b"> x\n< {stats}END\\r\\n\n").segments[0].expect
        self.assertEqual(gr.match(parts, b"END\r\n", {})[0], gr.FULL)
        self.assertEqual(gr.match(parts, b"STAT a 1\r\nSTAT b 2\r\nEND\r\n", {})[0], gr.FULL)
        self.assertEqual(gr.match(parts, b"STAT a 1\r\nST", {})[0], gr.PARTIAL)
        self.assertEqual(gr.match(parts, b"STAT a 1\r\nERROR\r\n", {})[0], gr.MISMATCH)
        parts = gr.parse_golden("<t>", b"> x\n< VERSION 1.6.18{any}\\r\\n\n").segments[0].expect
        self.assertEqual(gr.match(parts, b"VERSION 1.6.18\r\n", {})[0], gr.FULL)
        self.assertEqual(gr.match(parts, b"VERSION 1.6.18 petracache-0.1.0\r\n", {})[0],
                         gr.FULL)
        self.assertEqual(gr.match(parts, b"VERSION 1.6.19\r\n", {})[0], gr.MISMATCH)


class ReplayerSelfTest(harness.ServerTestCase):
    """The replayer must fail on wrong, missing, extra and late replies (checked against the
    real server, so a checker that passes everything cannot go unnoticed)."""

    def replay(self, text, mode="whole"):
        g = gr.parse_golden("<self-test>", text.encode("latin-1"))
        gr.replay(g, self.server.address, mode, timeout=1.0)

    def test_good_transcript_passes(self):
        for mode in gr.MODES:
            self.replay("> version\\r\\n\n< VERSION 1.6.18{any}\\r\\n\n", mode)

    def test_wrong_reply_fails(self):
        with self.assertRaisesRegex(gr.ReplayFailure, "differs at byte 8"):
            self.replay("> version\\r\\n\n< VERSION 9.9.9\\r\\n\n")

    def test_extra_reply_fails(self):
        for mode in gr.MODES:
            with self.assertRaisesRegex(gr.ReplayFailure, "extra reply bytes"):
                self.replay("> version\\r\\nversion\\r\\n\n< VERSION 1.6.18{any}\\r\\n\n", mode)

    def test_missing_reply_fails(self):
        with self.assertRaisesRegex(gr.ReplayFailure, "timed out"):
            self.replay("> version\\r\\n\n< VERSION 1.6.18{any}\\r\\nEND\\r\\n\n")

    def test_unexpected_close_fails(self):
        with self.assertRaisesRegex(gr.ReplayFailure, "closed"):
            self.replay("> quit\\r\\n\n< END\\r\\n\n")

    def test_expected_close_that_does_not_happen_fails(self):
        with self.assertRaisesRegex(gr.ReplayFailure, "did not close"):
            self.replay("> version\\r\\n\n< VERSION 1.6.18{any}\\r\\n\n< {close}\n")

    def test_captured_cas_is_used(self):
        for mode in gr.MODES:
            self.replay("> set selftest 0 0 1\\r\\nx\\r\\ngets selftest\\r\\n\n"
                        "< STORED\\r\\nVALUE selftest 0 1 {cas:c}\\r\\nx\\r\\nEND\\r\\n\n"
                        "> cas selftest 0 0 1 {c}\\r\\ny\\r\\n\n< STORED\\r\\n\n", mode)


if __name__ == "__main__":
    unittest.main()
