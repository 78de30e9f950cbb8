#!/usr/bin/env python3
"""Submit a small training task to ctpd over gRPC and follow it to the end.

Shows the whole client protocol from Python (grpcio):
  * SubmitTask: a client stream whose first message is a TaskHeader, then SampleChunks;
  * WatchTask: a server stream with a resume cursor (after_seq), reconnected on failure
    without losing events;
  * GetTask / Embed: read the result and use the new version.

Usage:
  python client.py --addr 127.0.0.1:50051 --model demo --images DIR
  python client.py --addr 127.0.0.1:50051 --model demo          # 8 generated PNGs

Images come from DIR (*.png, *.jpg, *.jpeg); a caption is read from a sidecar FILE.txt,
else made from the file name ("red_square.png" -> "red square"). Without --images a few
solid-colour PNGs are generated in memory (stdlib only; no Pillow needed).

Stubs: --stubs DIR imports ctp/v1/ctp_pb2*.py from DIR; otherwise generate.sh (next to this
file) is run into a temp dir with this interpreter, which needs grpcio-tools.

Exit codes (as ctpctl): 0 the task SUCCEEDED; 1 local/usage error; 2 the daemon rejected a
request; 3 daemon unavailable; 4 the task ended FAILED or CANCELLED.
"""
import argparse
import os
import struct
import subprocess
import sys
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))

EXIT_OK, EXIT_LOCAL, EXIT_REJECTED, EXIT_UNAVAILABLE, EXIT_TASK_FAILED = 0, 1, 2, 3, 4
EXIT_GATE_REJECTED = 5

# Generated samples: (caption, RGB). Distinct colours so retrieval has something to learn.
COLOURS = [
    ("a red square", (220, 30, 30)),
    ("a green square", (30, 180, 60)),
    ("a blue square", (30, 60, 220)),
    ("a yellow square", (240, 220, 40)),
    ("a black square", (10, 10, 10)),
    ("a white square", (250, 250, 250)),
    ("an orange square", (250, 140, 20)),
    ("a purple square", (140, 40, 180)),
]


def load_stubs(stubs_dir):
    """Imports the generated modules, generating them first if no folder was given."""
    if stubs_dir is None:
        script = os.path.join(HERE, "generate.sh")
        env = dict(os.environ, PYTHON=sys.executable)
        out = subprocess.run([script], check=True, capture_output=True, text=True, env=env)
        stubs_dir = out.stdout.strip().splitlines()[-1]
    sys.path.insert(0, stubs_dir)
    from ctp.v1 import ctp_pb2, ctp_pb2_grpc  # noqa: E402  (generated at run time)

    return ctp_pb2, ctp_pb2_grpc


def png(rgb, size=32):
    """A solid-colour RGB PNG, encoded with zlib + struct only."""

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * size  # filter byte 0, then the pixels
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def read_samples(images_dir):
    """(id, caption, image bytes) from a folder, sorted by file name."""
    out = []
    for name in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        path = os.path.join(images_dir, name)
        sidecar = os.path.join(images_dir, stem + ".txt")
        if os.path.exists(sidecar):
            with open(sidecar, encoding="utf-8") as f:
                caption = f.read().strip()
        else:
            caption = stem.replace("_", " ").replace("-", " ").strip()
        with open(path, "rb") as f:
            out.append((stem, caption, f.read()))
    return out


def requests(pb, header, samples, chunk_bytes=4 << 20):
    """The SubmitTask stream: the header, then chunks of about chunk_bytes."""
    yield pb.SubmitTaskRequest(header=header)
    chunk, size = [], 0
    for sample in samples:
        n = len(sample.image) + len(sample.caption) + 64
        if chunk and size + n > chunk_bytes:
            yield pb.SubmitTaskRequest(chunk=pb.SampleChunk(samples=chunk))
            chunk, size = [], 0
        chunk.append(sample)
        size += n
    if chunk:
        yield pb.SubmitTaskRequest(chunk=pb.SampleChunk(samples=chunk))


def state_name(pb, state):
    return pb.TaskState.Name(state).replace("TASK_STATE_", "")


def watch(grpc, pb, stub, task_id, metadata, timeout_s, max_retries=20):
    """Follows the task until a terminal event; returns (state, error, version, rejection).

    The resume cursor is the seq of the last event processed (or of a heartbeat, which the
    daemon stamps with the last event it sent); replayed events at or below it are skipped,
    so a reconnect neither loses nor repeats events. A snapshot's seq is the newest stored
    event, possibly not yet received, so it never moves the cursor.
    """
    cursor, failures, deadline = 0, 0, time.monotonic() + timeout_s
    finished = (pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)
    last_print = 0.0
    while True:
        try:
            req = pb.WatchTaskRequest(task_id=task_id, after_seq=cursor)
            remaining = max(deadline - time.monotonic(), 1.0)
            for ev in stub.WatchTask(req, metadata=metadata, timeout=remaining):
                failures = 0
                kind = ev.WhichOneof("event")
                if kind == "snapshot":
                    print(f"task {task_id}: {state_name(pb, ev.snapshot.state)}", file=sys.stderr)
                elif kind == "heartbeat":
                    cursor = max(cursor, ev.seq)
                elif kind == "terminal":
                    t = ev.terminal
                    if t.state in finished:
                        version = t.produced_version if t.HasField("produced_version") else None
                        rejection = t.rejection_reason if t.HasField("rejection_reason") else None
                        return t.state, t.error, version, rejection
                    # A terminal event with a live state means the daemon is draining.
                    raise ConnectionError(t.error or "daemon closed the stream")
                elif ev.seq > cursor:
                    cursor = ev.seq
                    if kind == "progress":
                        p = ev.progress
                        if time.monotonic() - last_print > 2 or p.step == p.total_steps:
                            last_print = time.monotonic()
                            losses = " ".join(f"{k} {v:.3f}" for k, v in sorted(p.losses.items()))
                            print(f"  step {p.step}/{p.total_steps} {losses}", file=sys.stderr)
                    elif kind == "log":
                        print(f"  {ev.log.message}", file=sys.stderr)
            raise ConnectionError("stream ended before the task did")
        except grpc.RpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                raise
            why = e.details()
        except ConnectionError as e:
            why = str(e)
        failures += 1
        if failures > max_retries or time.monotonic() > deadline:
            raise ConnectionError(f"lost the event stream ({why}); resume with after_seq={cursor}")
        delay = min(0.25 * 2 ** (failures - 1), 10.0)
        print(f"  {why}; reconnecting in {delay:.1f}s (after_seq={cursor})", file=sys.stderr)
        time.sleep(delay)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", default="127.0.0.1:50051", help="daemon HOST:PORT")
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", help="folder of .png/.jpg images (default: generated PNGs)")
    ap.add_argument("--name", default="python-example")
    ap.add_argument("--preset", default="tiny", help="tiny | small | base (for a new model)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token", default=os.environ.get("CTP_TOKEN"), help="bearer token (env CTP_TOKEN)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the task")
    ap.add_argument("--stubs", help="folder with generated ctp/v1/ctp_pb2*.py")
    ap.add_argument("--replay-per-task", type=int,
                    help="replay this many samples of each earlier task of the lineage per batch")
    ap.add_argument("--replay-fraction", type=float,
                    help="replay earlier tasks' samples as this fraction of the batch, in (0, 1]")
    ap.add_argument("--gate-max-avg-forgetting", type=float,
                    help="before submitting, set the model's promotion gate (needs the admin scope)")
    args = ap.parse_args()

    try:
        import grpc
    except ImportError:
        print("error: grpcio is not installed (pip install grpcio grpcio-tools)", file=sys.stderr)
        return EXIT_LOCAL
    try:
        pb, pb_grpc = load_stubs(args.stubs)
    except (subprocess.CalledProcessError, ImportError) as e:
        detail = getattr(e, "stderr", "") or e
        print(f"error: cannot generate/import the stubs: {detail}", file=sys.stderr)
        return EXIT_LOCAL

    if args.images:
        found = read_samples(args.images)
        if not found:
            print(f"error: no .png/.jpg images in {args.images}", file=sys.stderr)
            return EXIT_LOCAL
    else:
        found = [(f"gen-{i}", caption, png(rgb)) for i, (caption, rgb) in enumerate(COLOURS)]
    # Every 4th sample is held out for evaluation (at least one), stated per sample.
    samples = [
        pb.Sample(
            image=image,
            caption=caption.encode("utf-8"),
            id=sid,
            split=pb.SPLIT_EVAL if i % 4 == 3 or len(found) == 1 else pb.SPLIT_TRAIN,
        )
        for i, (sid, caption, image) in enumerate(found)
    ]
    if len(samples) >= 2 and all(s.split == pb.SPLIT_TRAIN for s in samples):
        samples[-1].split = pb.SPLIT_EVAL
    header = pb.TaskHeader(
        model=args.model,
        preset=args.preset,
        task_name=args.name,
        settings=pb.TrainSettings(epochs=args.epochs, batch_size=args.batch_size),
        eval_split=pb.EvalSplit(per_sample=pb.PerSampleSplit()),
        seed=args.seed,
        expected_samples=len(samples),
    )
    if args.replay_per_task is not None or args.replay_fraction is not None:
        replay = {"samples_per_task": args.replay_per_task, "batch_fraction": args.replay_fraction}
        header.settings.replay.CopyFrom(pb.Replay(**{k: v for k, v in replay.items() if v is not None}))
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []

    channel = grpc.insecure_channel(args.addr, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = pb_grpc.ContinualTrainerStub(channel)
    try:
        if args.gate_max_avg_forgetting is not None:
            # The gate belongs to an existing model: set it once the model has a first task.
            gate = stub.SetPromotionGate(
                pb.SetPromotionGateRequest(
                    model=args.model,
                    gate=pb.PromotionGate(max_avg_forgetting=args.gate_max_avg_forgetting)),
                metadata=metadata, timeout=30)
            print(f"promotion gate of {args.model}: max_avg_forgetting {gate.max_avg_forgetting}",
                  file=sys.stderr)
        task = stub.SubmitTask(requests(pb, header, samples), metadata=metadata, timeout=300)
        print(f"submitted task {task.id} ({len(samples)} samples) to model {args.model}", file=sys.stderr)
        print(task.id)
        state, error, version, rejection = watch(grpc, pb, stub, task.id, metadata, args.timeout)
        if state != pb.TASK_STATE_SUCCEEDED:
            print(f"error: task ended {state_name(pb, state)}: {error}", file=sys.stderr)
            return EXIT_TASK_FAILED
        if rejection is not None:
            print(f"error: version {version} was rejected ({rejection}); the head did not move",
                  file=sys.stderr)
            return EXIT_GATE_REJECTED
        # Use the new version: embed the first image and its caption.
        first = samples[0]
        emb = stub.Embed(
            pb.EmbedRequest(model=args.model, version=version, images=[first.image],
                            texts=[first.caption.decode("utf-8")]),
            metadata=metadata,
            timeout=120,
        )
        img, txt = emb.image_embeddings[0].values, emb.text_embeddings[0].values
        cos = sum(a * b for a, b in zip(img, txt))
        print(f"task SUCCEEDED: version {emb.version}, dim {emb.dim}, "
              f"cos(image, caption) of {first.id} = {cos:.3f}", file=sys.stderr)
        return EXIT_OK
    except grpc.RpcError as e:
        code = e.code()
        print(f"error: {code.name}: {e.details()}", file=sys.stderr)
        unavailable = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return EXIT_UNAVAILABLE if unavailable else EXIT_REJECTED
    except ConnectionError as e:
        print(f"error: UNAVAILABLE: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
