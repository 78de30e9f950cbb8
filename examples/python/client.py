#!/usr/bin/env python3
"""Submit a small training task to ctpd and follow it to the end, with the ctp_client package.

    pip install ./clients/python
    python examples/python/client.py --addr 127.0.0.1:50051 --model demo --images DIR
    python examples/python/client.py --addr 127.0.0.1:50051 --model demo   # 8 generated PNGs

Images come from DIR (*.png, *.jpg, *.jpeg; or a .jsonl manifest / .tar shards); a caption is
read from a sidecar FILE.txt, else made from the file name ("red_square.png" -> "red square").
Without --images a few solid-colour PNGs are generated in memory.

Exit codes (as ctpctl): 0 the task SUCCEEDED; 1 local/usage error; 2 the daemon rejected a
request; 3 daemon unavailable; 4 the task ended FAILED or CANCELLED; 5 the task succeeded but
the promotion gate rejected its version (the head did not move).
"""
import argparse
import os
import struct
import sys
import zlib

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


def png(rgb, size=32):
    """A solid-colour RGB PNG, encoded with zlib + struct only."""

    def chunk(tag, data):
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * size  # filter byte 0, then the pixels
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * size))
            + chunk(b"IEND", b""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", default="127.0.0.1:50051", help="daemon HOST:PORT")
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", help="folder of images, a .jsonl manifest or .tar shards (default: generated PNGs)")
    ap.add_argument("--name", default="python-example")
    ap.add_argument("--preset", default="tiny", help="tiny | small | base (for a new model)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token", default=os.environ.get("CTP_TOKEN"), help="bearer token (env CTP_TOKEN)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the task")
    ap.add_argument("--replay-per-task", type=int,
                    help="replay this many samples of each earlier task of the lineage per batch")
    ap.add_argument("--replay-fraction", type=float,
                    help="replay earlier tasks' samples as this fraction of the batch, in (0, 1]")
    ap.add_argument("--gate-max-avg-forgetting", type=float,
                    help="before submitting, set the model's promotion gate (needs the admin scope)")
    args = ap.parse_args()

    try:
        import ctp_client
    except ImportError as e:
        print(f"error: the ctp_client package is missing ({e}): pip install ./clients/python",
              file=sys.stderr)
        return EXIT_LOCAL

    if args.images:
        data = args.images
    else:
        # Every 4th sample is held out for evaluation, stated per sample.
        data = [ctp_client.Sample(png(rgb), caption, f"gen-{i}", "eval" if i % 4 == 3 else "train")
                for i, (caption, rgb) in enumerate(COLOURS)]
    settings = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "replay": {"samples_per_task": args.replay_per_task, "batch_fraction": args.replay_fraction},
    }

    def show(ev):
        if ev.kind == "snapshot":
            print(f"task {ev.data.id}: {ev.data.state}", file=sys.stderr)
        elif ev.kind == "progress" and (ev.data.step == ev.data.total_steps or ev.data.step % 10 == 0):
            losses = " ".join(f"{k} {v:.3f}" for k, v in sorted(ev.data.losses.items()) if k != "lr")
            print(f"  step {ev.data.step}/{ev.data.total_steps} {losses}", file=sys.stderr)
        elif ev.kind == "log":
            print(f"  {ev.data.message}", file=sys.stderr)

    with ctp_client.Client(args.addr, token=args.token) as c:
        try:
            if args.gate_max_avg_forgetting is not None:
                # The gate belongs to an existing model: set it once the model has a first task.
                gate = c.set_gate(args.model, max_avg_forgetting=args.gate_max_avg_forgetting)
                print(f"promotion gate of {args.model}: max_avg_forgetting {gate['max_avg_forgetting']}",
                      file=sys.stderr)
            task = c.submit(args.model, data, settings, name=args.name, preset=args.preset,
                            seed=args.seed)
            print(f"submitted task {task.id} ({task.n_train + task.n_eval} samples) to model {args.model}",
                  file=sys.stderr)
            print(task.id)
            final = c.wait(task.id, on_event=show, timeout=args.timeout)
            # Use the new version: embed the first generated image and its caption.
            emb = c.embed(args.model, images=[png(COLOURS[0][1])], texts=[COLOURS[0][0]],
                          version=final.produced_version)
            cos = float(emb.images[0] @ emb.texts[0])
            print(f"task SUCCEEDED: version {emb.version}, dim {emb.dim}, "
                  f"cos(image, caption) = {cos:.3f}", file=sys.stderr)
            return EXIT_OK
        except ctp_client.GateRejected as e:
            print(f"error: {e.message}", file=sys.stderr)
            return EXIT_GATE_REJECTED
        except ctp_client.TaskFailed as e:
            print(f"error: {e.message}", file=sys.stderr)
            return EXIT_TASK_FAILED
        except ctp_client.DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_LOCAL
        except (ctp_client.Unavailable, ctp_client.DeadlineExceeded) as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        except ctp_client.CtpError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_REJECTED


if __name__ == "__main__":
    sys.exit(main())
