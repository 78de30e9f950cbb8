"""Against a live daemon at $CTP_ADDR (tests/daemon/python_client.rs starts one with the tiny
preset and runs these); skipped without it."""
import io
import json
import os
import tarfile
import unittest

import grpc
import numpy as np

import ctp_client
from helpers import COLOURS, png

ADDR = os.environ.get("CTP_ADDR")
MODEL = "pylib"


def samples():
    return [
        ctp_client.Sample(png(rgb), cap, f"c{i}", "eval" if i % 4 == 3 else "train")
        for i, (cap, rgb) in enumerate(COLOURS)
    ]


@unittest.skipUnless(ADDR, "CTP_ADDR is not set (no live daemon)")
class Live(unittest.TestCase):
    """One flow in order: unittest runs test methods alphabetically, hence the numbers."""

    @classmethod
    def setUpClass(cls):
        cls.c = ctp_client.Client(ADDR, timeout=60)
        cls.sent = []
        cls.events = []
        task = cls.c.submit(MODEL, samples(), {"epochs": 2, "batch_size": 4}, preset="tiny",
                            name="colours", progress=lambda n, total: cls.sent.append((n, total)))
        cls.task = task
        cls.final = cls.c.wait(task.id, on_event=cls.events.append, timeout=600)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()

    def test_1_submit_reports_upload_progress_and_succeeds(self):
        self.assertEqual(self.sent[-1], (8, 8))
        self.assertEqual(self.task.model, MODEL)
        self.assertIn(self.task.state, ("QUEUED", "RUNNING", "SUCCEEDED"))
        self.assertEqual(self.final.state, "SUCCEEDED")
        self.assertEqual(self.final.produced_version, 1)
        self.assertEqual((self.final.n_train, self.final.n_eval), (6, 2))

    def test_2_watch_yields_typed_events_in_seq_order_ending_terminal(self):
        kinds = [e.kind for e in self.events]
        self.assertEqual(kinds[0], "snapshot")
        self.assertEqual(kinds[-1], "terminal")
        self.assertIn("progress", kinds)
        seqs = [e.seq for e in self.events if e.kind != "snapshot"]
        self.assertEqual(seqs, sorted(set(seqs)))
        progress = [e.data for e in self.events if e.kind == "progress"]
        self.assertIsInstance(progress[-1], ctp_client.Progress)
        self.assertEqual(progress[-1].step, progress[-1].total_steps)

    def test_3_watch_resumes_after_seq(self):
        seqs = [e.seq for e in self.events if e.kind not in ("snapshot",)]
        middle = seqs[len(seqs) // 2]
        again = [e for e in self.c.watch(self.task.id, after_seq=middle) if e.kind != "snapshot"]
        self.assertTrue(again)
        self.assertTrue(all(e.seq > middle for e in again[:-1]), [e.seq for e in again])
        self.assertEqual(again[-1].kind, "terminal")

    def test_4_tasks_and_versions_as_rows(self):
        tasks = self.c.tasks(model=MODEL)
        self.assertEqual([t.id for t in tasks], [self.task.id])
        self.assertEqual(self.c.tasks(model=MODEL, state="FAILED"), [])
        rows = self.c.versions(MODEL)
        self.assertEqual(len(rows), 1)
        v = rows[0]
        self.assertIsInstance(v, ctp_client.VersionRow)
        self.assertEqual((v.version, v.parent, v.is_head, v.state), (1, None, True, "ACCEPTED"))
        self.assertEqual(list(v.rm), [self.task.id])
        self.assertTrue(0.0 <= v.rm[self.task.id] <= 100.0)
        self.assertIsNotNone(v.union_rm)

    def test_5_embed_returns_normalised_numpy_arrays(self):
        e = self.c.embed(MODEL, images=[png((220, 30, 30)), png((30, 60, 220))], texts=["a red square"])
        self.assertEqual(e.version, 1)
        self.assertEqual(e.images.shape, (2, e.dim))
        self.assertEqual(e.texts.shape, (1, e.dim))
        self.assertEqual(e.images.dtype, np.float32)
        np.testing.assert_allclose(np.linalg.norm(e.images, axis=1), 1.0, atol=1e-4)

    def test_6_errors_carry_code_and_message(self):
        with self.assertRaises(ctp_client.NotFound) as cm:
            self.c.task("00000000-0000-0000-0000-000000000000")
        self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(ctp_client.InvalidArgument) as cm:
            self.c.submit(MODEL, [ctp_client.Sample(b"not an image", "x", "bad", "train"),
                                  ctp_client.Sample(png((0, 0, 0)), "y", "ok", "eval")],
                          preset="tiny")
        self.assertIn("sample 0", cm.exception.message)
        self.assertEqual(cm.exception.code_name, "INVALID_ARGUMENT")

    def test_7_rollback_compare_and_set(self):
        second = self.c.submit(MODEL, samples(), {"epochs": 1, "batch_size": 4}, name="again",
                               preset="tiny")
        self.c.wait(second.id, timeout=600)
        self.assertEqual(self.c.version(MODEL).version, 2)
        with self.assertRaises(ctp_client.Aborted) as cm:
            self.c.rollback(MODEL, 1, expected_head=1, reason="stale")
        self.assertEqual(cm.exception.code, grpc.StatusCode.ABORTED)
        change = self.c.rollback(MODEL, 1, expected_head=2, reason="python test")
        self.assertEqual((change.from_version, change.to_version), (2, 1))
        self.assertEqual(change.head.version, 1)
        self.assertTrue(self.c.version(MODEL, 1).is_head)

    def test_8_submit_by_reference(self):
        """Shards the daemon reads itself ($CTP_SHARDS_DIR is in its storage.allow_urls)."""
        shards = os.environ.get("CTP_SHARDS_DIR")
        self.assertTrue(shards, "tests/daemon/python_client.rs sets CTP_SHARDS_DIR")
        for i, part in enumerate((samples()[:4], samples()[4:])):
            with tarfile.open(os.path.join(shards, f"py-{i}.tar"), "w") as tar:
                for s in part:
                    meta = json.dumps({"split": s.split}).encode()
                    for ext, data in (("png", s.image), ("txt", s.caption.encode()), ("json", meta)):
                        info = tarfile.TarInfo(f"{s.id}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        pattern = f"file://{shards}/py-{{0..1}}.tar"
        task = self.c.submit_by_reference("pyref", pattern, {"epochs": 1, "batch_size": 4},
                                          preset="tiny", name="by-reference")
        self.assertEqual([s.samples for s in task.sources], [4, 4])
        self.assertEqual(task.sources[1].url, f"file://{shards}/py-1.tar")
        self.assertEqual(len(task.sources[0].sha256), 64)
        self.assertEqual((task.n_train, task.n_eval), (6, 2))
        self.assertEqual(self.c.wait(task.id, timeout=600).state, "SUCCEEDED")
        # submit() takes a URL too; one outside the allow-list is refused, named.
        with self.assertRaises(ctp_client.InvalidArgument) as cm:
            self.c.submit("pyref", "file:///etc/ctp/x.tar", preset="tiny")
        self.assertIn("file:///etc/ctp/x.tar", cm.exception.message)

    def test_9_priority_and_quota(self):
        """Priorities and quotas (no tokens: the anonymous caller, with admin scope)."""
        task = self.c.submit("pyprio", samples(), {"epochs": 1, "batch_size": 4}, preset="tiny",
                             name="low", priority="low")
        self.assertEqual((task.priority, task.submitted_by), ("LOW", "anonymous"))
        self.assertEqual(self.c.wait(task.id, timeout=600).state, "SUCCEEDED")
        with self.assertRaises(ctp_client.FailedPrecondition):
            self.c.set_priority(task.id, "high")
        with self.assertRaises(ValueError):
            self.c.submit("pyprio", samples(), preset="tiny", priority="urgent")
        q = self.c.quota()
        self.assertEqual(q["caller"], "anonymous")
        self.assertEqual(q["queued_tasks"], {"used": 0.0, "limit": None})
        self.assertGreater(q["stored_bytes"]["used"], 0)
        self.assertGreater(q["training_seconds_per_day"]["used"], 0)


if __name__ == "__main__":
    unittest.main()
