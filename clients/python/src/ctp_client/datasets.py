"""Reading image–caption samples for :meth:`ctp_client.Client.submit`, standard library only.

Accepted sources (the same as ``ctpctl submit``, plus plain image folders):

* a sequence of :class:`Sample` (or ``(image_bytes, caption)`` tuples);
* a ``.jsonl`` manifest: one ``{"image": PATH, "caption": TEXT, "split"?: "train"|"eval",
  "id"?: ID}`` per line, relative paths resolved against the manifest's folder;
* a WebDataset ``.tar`` shard (``key.png|jpg|jpeg`` + ``key.txt``, or ``key.json`` with
  ``"caption"``/``"split"``/``"id"``);
* a folder: its ``.tar`` shards, else its one ``.jsonl`` manifest, else its images with the
  caption from ``NAME.txt`` next to each image or from the file name
  (``red_square.png`` → ``red square``).
"""
from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class Sample:
    """One image–caption pair. ``split`` is ``"train"``, ``"eval"`` or ``None`` (let the
    task's eval split decide)."""

    image: bytes
    caption: str
    id: str = ""
    split: Optional[str] = None


SampleLike = Union[Sample, Tuple[bytes, str]]
Source = Union[str, "os.PathLike[str]", Sequence[SampleLike], Iterable[SampleLike]]


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file and the sample."""


def _split(value, where: str) -> Optional[str]:
    if value is None:
        return None
    if value in ("train", "eval"):
        return value
    raise DatasetError(f"{where}: split must be \"train\" or \"eval\", not {value!r}")


def read_jsonl(path: str) -> List[Sample]:
    base = os.path.dirname(os.path.abspath(path))
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: not JSON: {e}") from None
            if not isinstance(obj, dict) or "image" not in obj or "caption" not in obj:
                raise DatasetError(f"{where}: needs \"image\" and \"caption\"")
            image_path = os.path.join(base, obj["image"])
            try:
                with open(image_path, "rb") as img:
                    image = img.read()
            except OSError as e:
                raise DatasetError(f"{where}: cannot read {image_path}: {e}") from None
            sid = str(obj.get("id") or os.path.splitext(os.path.basename(obj["image"]))[0])
            out.append(Sample(image, str(obj["caption"]), sid, _split(obj.get("split"), where)))
    return out


def read_tar(path: str) -> List[Sample]:
    groups = {}
    order = []
    try:
        with tarfile.open(path) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                name = m.name
                slash = name.rfind("/")
                dot = name.find(".", slash + 1)
                if dot < 0:
                    continue
                key, ext = name[:dot], name[dot:].lower()
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                groups[key][ext] = tar.extractfile(m).read()
    except (OSError, tarfile.TarError) as e:
        raise DatasetError(f"{path}: {e}") from None
    out = []
    for key in order:
        g = groups[key]
        where = f"{path}: sample {key}"
        images = [g[e] for e in IMAGE_EXTENSIONS if e in g]
        if len(images) != 1:
            raise DatasetError(f"{where}: expected one image, found {len(images)}")
        meta = json.loads(g[".json"].decode("utf-8")) if ".json" in g else {}
        if ".txt" in g:
            caption = g[".txt"].decode("utf-8").strip()
        elif "caption" in meta:
            caption = str(meta["caption"])
        else:
            raise DatasetError(f"{where}: no caption (.txt or .json \"caption\")")
        sid = str(meta.get("id") or key.rsplit("/", 1)[-1])
        out.append(Sample(images[0], caption, sid, _split(meta.get("split"), where)))
    return out


def read_image_folder(path: str) -> List[Sample]:
    out = []
    for name in sorted(os.listdir(path)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            continue
        sidecar = os.path.join(path, stem + ".txt")
        if os.path.exists(sidecar):
            with open(sidecar, encoding="utf-8") as f:
                caption = f.read().strip()
        else:
            caption = stem.replace("_", " ").replace("-", " ").strip()
        with open(os.path.join(path, name), "rb") as f:
            out.append(Sample(f.read(), caption, stem))
    return out


def read_path(path: str) -> List[Sample]:
    """Samples of a file or folder (see the module documentation)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        if path.endswith(".jsonl"):
            return read_jsonl(path)
        if path.endswith(".tar"):
            return read_tar(path)
        raise DatasetError(f"{path}: not a dataset: expected a .tar shard, a .jsonl manifest or a folder")
    if not os.path.isdir(path):
        raise DatasetError(f"{path}: no such file or folder")
    names = sorted(os.listdir(path))
    tars = [n for n in names if n.endswith(".tar")]
    if tars:
        return [s for n in tars for s in read_tar(os.path.join(path, n))]
    manifests = [n for n in names if n.endswith(".jsonl")]
    if len(manifests) == 1:
        return read_jsonl(os.path.join(path, manifests[0]))
    if len(manifests) > 1:
        raise DatasetError(f"{path}: several .jsonl manifests; pass one of them")
    samples = read_image_folder(path)
    if not samples:
        raise DatasetError(f"{path}: no .tar shards, .jsonl manifest or images")
    return samples


def samples_of(source: Source) -> Iterator[Sample]:
    """Normalises any accepted source into :class:`Sample` objects."""
    if isinstance(source, (str, os.PathLike)):
        yield from read_path(os.fspath(source))
        return
    for i, s in enumerate(source):
        if isinstance(s, Sample):
            yield s
        elif isinstance(s, tuple) and len(s) == 2:
            yield Sample(bytes(s[0]), str(s[1]), f"s{i}")
        else:
            raise DatasetError(f"sample {i}: expected a Sample or (image_bytes, caption), got {type(s).__name__}")
