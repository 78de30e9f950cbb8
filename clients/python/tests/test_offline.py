"""What needs no daemon: dataset readers, settings, error mapping."""
import io
import json
import os
import tarfile
import tempfile
import unittest

import grpc

import ctp_client
from ctp_client import datasets, errors
from helpers import COLOURS, png


class Datasets(unittest.TestCase):
    def test_folder_of_images_with_sidecars_and_names(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "red_square.png"), "wb") as f:
                f.write(png((255, 0, 0)))
            with open(os.path.join(d, "b.png"), "wb") as f:
                f.write(png((0, 0, 255)))
            with open(os.path.join(d, "b.txt"), "w") as f:
                f.write("a blue square\n")
            got = ctp_client.read_path(d)
        self.assertEqual([(s.id, s.caption) for s in got], [("b", "a blue square"), ("red_square", "red square")])

    def test_jsonl_resolves_paths_against_the_manifest(self):
        with tempfile.TemporaryDirectory() as d:
            os.mkdir(os.path.join(d, "img"))
            lines = []
            for i, (cap, rgb) in enumerate(COLOURS[:3]):
                with open(os.path.join(d, "img", f"{i}.png"), "wb") as f:
                    f.write(png(rgb))
                lines.append(json.dumps({"image": f"img/{i}.png", "caption": cap,
                                         "split": "eval" if i == 2 else "train"}))
            path = os.path.join(d, "data.jsonl")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n\n")
            got = ctp_client.read_path(path)
        self.assertEqual([s.split for s in got], ["train", "train", "eval"])
        self.assertEqual(got[0].caption, "a red square")

    def test_bad_split_names_the_line(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "x.png"), "wb") as f:
                f.write(png((1, 2, 3)))
            path = os.path.join(d, "m.jsonl")
            with open(path, "w") as f:
                f.write(json.dumps({"image": "x.png", "caption": "c", "split": "test"}) + "\n")
            with self.assertRaisesRegex(ctp_client.DatasetError, r"m\.jsonl:1: split"):
                ctp_client.read_path(path)

    def test_webdataset_shard(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "shard-0.tar")
            with tarfile.open(path, "w") as tar:
                for key, data in [("k1.png", png((1, 1, 1))), ("k1.txt", b"one"),
                                  ("k2.png", png((2, 2, 2))),
                                  ("k2.json", json.dumps({"caption": "two", "split": "eval"}).encode())]:
                    info = tarfile.TarInfo(key)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            got = ctp_client.read_path(d)
        self.assertEqual([(s.id, s.caption, s.split) for s in got], [("k1", "one", None), ("k2", "two", "eval")])

    def test_tuples_are_samples(self):
        got = list(datasets.samples_of([(png((0, 0, 0)), "black")]))
        self.assertEqual((got[0].caption, got[0].id), ("black", "s0"))


class Settings(unittest.TestCase):
    def test_dict_to_message(self):
        m = ctp_client.train_settings({"epochs": 2, "learning_rate": 3e-4, "method": "seqft",
                                       "bn_policy": "train", "replay": {"batch_fraction": 0.25}})
        self.assertEqual(m.epochs, 2)
        self.assertEqual(m.method, ctp_client.pb.METHOD_SEQFT)
        self.assertEqual(m.bn_policy, ctp_client.pb.BN_POLICY_TRAIN)
        self.assertAlmostEqual(m.replay.batch_fraction, 0.25)
        self.assertFalse(m.HasField("batch_size"))

    def test_queue_and_momentum_scaling(self):
        m = ctp_client.train_settings({"queue_size": 256, "momentum_reference_steps": 1000})
        self.assertEqual((m.queue_size, m.momentum_reference_steps), (256, 1000))
        self.assertFalse(m.HasField("epochs"))

    def test_unknown_key_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "epoch"):
            ctp_client.train_settings({"epoch": 2})


class Errors(unittest.TestCase):
    def test_rpc_errors_keep_code_and_message(self):
        class Fake(grpc.RpcError):
            def code(self):
                return grpc.StatusCode.ABORTED

            def details(self):
                return "head is 3, expected 2"

        e = errors.from_rpc_error(Fake())
        self.assertIsInstance(e, ctp_client.Aborted)
        self.assertIsInstance(e, ctp_client.CtpError)
        self.assertEqual(e.code, grpc.StatusCode.ABORTED)
        self.assertEqual(e.code_name, "ABORTED")
        self.assertEqual(e.message, "head is 3, expected 2")
        self.assertEqual(str(e), "ABORTED: head is 3, expected 2")

    def test_unreachable_daemon_is_unavailable(self):
        with ctp_client.Client("127.0.0.1:1", timeout=2) as c:
            with self.assertRaises(ctp_client.Unavailable) as cm:
                c.tasks()
        self.assertEqual(cm.exception.code, grpc.StatusCode.UNAVAILABLE)


class ByReference(unittest.TestCase):
    def test_header_alone_carries_the_urls(self):
        sent = []

        def fake_submit(requests, metadata=None, timeout=None):
            sent.extend(requests)
            return ctp_client.pb.Task(id="t", sources=[ctp_client.pb.DataSource(
                url="s3://b/x/shard-0.tar", etag='"e"', sha256="ab" * 32, samples=3, bytes=99)])

        with ctp_client.Client("127.0.0.1:1", timeout=2) as c:
            c._stub = type("S", (), {"SubmitTask": staticmethod(fake_submit)})()
            pattern = "s3://b/x/shard-{0..8}.tar"
            task = c.submit("m", pattern, {"epochs": 1}, eval_fraction=0.25, idempotency_key="k")
        self.assertEqual(len(sent), 1, "a header and no SampleChunk")
        h = sent[0].header
        self.assertEqual(list(h.data_urls), [pattern])
        self.assertEqual(h.eval_split.eval_fraction, 0.25)
        self.assertEqual((h.idempotency_key, h.settings.epochs), ("k", 1))
        self.assertFalse(h.HasField("expected_samples"))
        self.assertEqual(task.sources, [ctp_client.DataSource(
            url="s3://b/x/shard-0.tar", etag='"e"', sha256="ab" * 32, samples=3, bytes=99)])

    def test_local_paths_are_not_urls(self):
        from ctp_client.client import _is_url
        self.assertTrue(_is_url("file:///srv/x.tar"))
        self.assertFalse(_is_url("data/shard-0.tar"))
        self.assertFalse(_is_url("/srv/a://b"))


if __name__ == "__main__":
    unittest.main()
