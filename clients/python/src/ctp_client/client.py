"""The ctpd client: one :class:`Client` per daemon, typed results, exceptions with gRPC codes."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import grpc
import numpy as np

from . import errors
from ._pb import ctp_pb2 as pb
from ._pb import ctp_pb2_grpc as pb_grpc
from .datasets import DatasetError, Sample, Source, samples_of

#: The daemon holds out this fraction for evaluation when samples state no split
#: (the same default as ``ctpctl submit``).
DEFAULT_EVAL_FRACTION = 0.2

_FINISHED = (pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)


def _state(value: int) -> str:
    return pb.TaskState.Name(value).replace("TASK_STATE_", "")


def _time(ts) -> Optional[datetime]:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


def _opt(msg, name):
    return getattr(msg, name) if msg.HasField(name) else None


@dataclass
class Progress:
    """Where a task's training stands; ``total_steps`` is 0 until the daemon knows it."""

    step: int
    total_steps: int
    percent: float
    epoch: int
    total_epochs: int
    losses: Dict[str, float]
    samples_per_second: float
    momentum_syncs: int
    eta_seconds: Optional[float]
    #: Drift between the online and momentum model at the latest check (None before it).
    drift: Optional[float] = None

    @classmethod
    def from_pb(cls, p: "pb.Progress") -> "Progress":
        return cls(
            step=p.step,
            total_steps=p.total_steps,
            percent=p.percent,
            epoch=p.epoch,
            total_epochs=p.total_epochs,
            losses=dict(p.losses),
            samples_per_second=p.samples_per_second,
            momentum_syncs=p.momentum_syncs,
            eta_seconds=_opt(p, "eta_seconds"),
            drift=_opt(p, "drift"),
        )


@dataclass
class DataSource:
    """One shard a task submitted by reference was read from (``TaskInfo.sources``)."""

    url: str
    etag: str
    sha256: str
    samples: int
    bytes: int

    @classmethod
    def from_pb(cls, d: "pb.DataSource") -> "DataSource":
        return cls(url=d.url, etag=d.etag, sha256=d.sha256, samples=d.samples, bytes=d.bytes)


@dataclass
class TaskInfo:
    """A task (``GetTask``/``ListTasks``/``SubmitTask``), with ``state`` as a name
    (``QUEUED``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``, ``CANCELLED``)."""

    id: str
    model: str
    name: str
    state: str
    progress: Optional[Progress]
    error: str
    produced_version: Optional[int]
    base_version: Optional[int]
    rejection_reason: Optional[str]
    n_train: int
    n_eval: int
    seed: int
    cancel_requested: bool
    created_at: Optional[datetime]
    started_at: Optional[datetime]
    finished_at: Optional[datetime]
    #: For a task submitted by reference: the shards read at submission, in order.
    sources: List[DataSource] = field(default_factory=list)
    #: ``LOW``, ``NORMAL`` or ``HIGH``.
    priority: str = "NORMAL"
    #: How many times higher-priority work preempted it.
    preemptions: int = 0
    #: The token name that submitted it (``anonymous`` without tokens).
    submitted_by: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED")

    @classmethod
    def from_pb(cls, t: "pb.Task") -> "TaskInfo":
        return cls(
            id=t.id,
            model=t.model,
            name=t.name,
            state=_state(t.state),
            progress=Progress.from_pb(t.progress) if t.HasField("progress") else None,
            error=t.error,
            produced_version=_opt(t, "produced_version"),
            base_version=_opt(t, "base_version"),
            rejection_reason=_opt(t, "rejection_reason"),
            n_train=t.n_train,
            n_eval=t.n_eval,
            seed=t.seed,
            cancel_requested=t.cancel_requested,
            created_at=_time(t.created_at) if t.HasField("created_at") else None,
            started_at=_time(t.started_at) if t.HasField("started_at") else None,
            finished_at=_time(t.finished_at) if t.HasField("finished_at") else None,
            sources=[DataSource.from_pb(d) for d in t.sources],
            priority=pb.TaskPriority.Name(t.priority or pb.TASK_PRIORITY_NORMAL).removeprefix("TASK_PRIORITY_"),
            preemptions=t.preemptions,
            submitted_by=t.submitted_by,
        )


@dataclass
class VersionRow:
    """One row of ``ctpctl versions``: a model version with its accuracy on every task it
    has seen. ``rm`` maps task id → Rm (mean of TR@1/5/10 and IR@1/5/10, in %), ``task_names``
    task id → name; ``union_rm`` is Rm with the eval samples of all seen tasks pooled into one
    candidate set (so it is lower than per-task Rm and falls as tasks accumulate)."""

    model: str
    version: int
    parent: Optional[int]
    task_id: str
    task_name: str
    state: str
    is_head: bool
    rm: Dict[str, float]
    task_names: Dict[str, str]
    union_rm: Optional[float]
    average_forgetting: Optional[float]
    forgetting: Dict[str, float]
    bwt: Optional[float]
    momentum_syncs: int
    momentum_steps: int
    rejection_reason: str
    checkpoint_sha256: str
    created_at: Optional[datetime]

    @classmethod
    def from_pb(cls, v: "pb.Version") -> "VersionRow":
        return cls(
            model=v.model,
            version=v.version,
            parent=_opt(v, "parent"),
            task_id=v.task_id,
            task_name=v.task_name,
            state=pb.VersionState.Name(v.state).replace("VERSION_STATE_", ""),
            is_head=v.is_head,
            rm={e.task_id: e.rm for e in v.evals},
            task_names={e.task_id: e.task_name for e in v.evals},
            union_rm=v.union_eval.rm if v.HasField("union_eval") else None,
            average_forgetting=_opt(v, "average_forgetting"),
            forgetting={f.task_id: f.forgetting for f in v.forgetting},
            bwt=_opt(v, "bwt"),
            momentum_syncs=v.momentum_syncs,
            momentum_steps=v.momentum_steps,
            rejection_reason=v.rejection_reason,
            checkpoint_sha256=v.checkpoint_sha256,
            created_at=_time(v.created_at) if v.HasField("created_at") else None,
        )


@dataclass
class HeadChange:
    """What a rollback did: the head moved from ``from_version`` to ``to_version``."""

    model: str
    from_version: Optional[int]
    to_version: int
    who: str
    reason: str
    at: Optional[datetime]
    head: Optional[VersionRow]


@dataclass
class Embeddings:
    """L2-normalised embeddings: ``images`` is ``(len(images), dim)`` and ``texts`` is
    ``(len(texts), dim)``, both float32, in request order."""

    version: int
    dim: int
    images: np.ndarray
    texts: np.ndarray


@dataclass
class Event:
    """One WatchTask event. ``kind`` is ``snapshot``, ``progress``, ``sync``, ``log``,
    ``terminal`` or ``server_closing``; ``data`` is the typed payload (a :class:`TaskInfo`
    for snapshots, :class:`Progress` for progress, else the protobuf message)."""

    seq: int
    kind: str
    data: Any
    time: Optional[datetime] = None


@dataclass
class _Resume:
    cursor: int = 0
    failures: int = 0
    last_error: str = ""
    seen_terminal: bool = field(default=False)


def _enum(enum, prefix: str, value: Union[str, int, None], what: str):
    if value is None or isinstance(value, int):
        return value
    try:
        return enum.Value(prefix + value.upper())
    except ValueError:
        raise ValueError(f"{what}: unknown value {value!r}") from None


def train_settings(settings: Union[None, Mapping[str, Any], "pb.TrainSettings"]) -> "pb.TrainSettings":
    """A ``TrainSettings`` message from a dict such as ``{"epochs": 2, "learning_rate": 3e-4,
    "method": "ctp", "bn_policy": "frozen", "replay": {"samples_per_task": 4},
    "loss_weights": {"mlm": 0.1}}`` (unset keys keep the daemon's defaults)."""
    if settings is None:
        return pb.TrainSettings()
    if isinstance(settings, pb.TrainSettings):
        return settings
    s = dict(settings)
    msg = pb.TrainSettings()
    for key in ("epochs", "batch_size", "learning_rate", "drift_threshold", "drift_check_every",
                "momentum_reference_steps", "queue_size"):
        if s.get(key) is not None:
            setattr(msg, key, s.pop(key))
        else:
            s.pop(key, None)
    if s.get("method") is not None:
        msg.method = _enum(pb.Method, "METHOD_", s.pop("method"), "settings.method")
    if s.get("bn_policy") is not None:
        msg.bn_policy = _enum(pb.BnPolicy, "BN_POLICY_", s.pop("bn_policy"), "settings.bn_policy")
    if s.get("loss_weights"):
        msg.loss_weights.CopyFrom(pb.LossWeights(**s.pop("loss_weights")))
    if s.get("replay"):
        replay = {k: v for k, v in s.pop("replay").items() if v is not None}
        msg.replay.CopyFrom(pb.Replay(**replay))
    unknown = [k for k, v in s.items() if v is not None]
    if unknown:
        raise ValueError(f"settings: unknown keys {unknown}")
    return msg


class Client:
    """A connection to one ctpd.

    ``addr`` is ``host:port``. ``token`` is sent as ``authorization: Bearer …``. TLS: pass
    ``ca_cert`` (PEM bytes or a path) and, for mTLS, ``client_cert`` + ``client_key``.
    ``timeout`` bounds every unary call (seconds). Use as a context manager or call
    :meth:`close`.
    """

    def __init__(
        self,
        addr: str = "127.0.0.1:50051",
        *,
        token: Optional[str] = None,
        ca_cert: Union[None, bytes, str] = None,
        client_cert: Union[None, bytes, str] = None,
        client_key: Union[None, bytes, str] = None,
        timeout: float = 60.0,
        max_message_bytes: int = 64 << 20,
    ):
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if ca_cert is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_pem(ca_cert),
                private_key=_pem(client_key) if client_key is not None else None,
                certificate_chain=_pem(client_cert) if client_cert is not None else None,
            )
            self._channel = grpc.secure_channel(addr, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(addr, options=options)
        self._stub = pb_grpc.ContinualTrainerStub(self._channel)
        self._metadata = [("authorization", f"Bearer {token}")] if token else []
        self.timeout = timeout
        #: The generated protobuf module, for requests the helpers do not cover.
        self.pb = pb
        #: The raw stub (``ContinualTrainerStub``) on the same channel.
        self.stub = self._stub

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, timeout=None):
        try:
            return method(request, metadata=self._metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    # Tasks ---------------------------------------------------------------------------

    def submit(
        self,
        model: str,
        data: Source,
        settings: Union[None, Mapping[str, Any], "pb.TrainSettings"] = None,
        *,
        name: Optional[str] = None,
        preset: str = "",
        eval_fraction: Optional[float] = None,
        seed: int = 0,
        idempotency_key: Optional[str] = None,
        priority: Optional[str] = None,
        progress: Optional[Callable[[int, int], None]] = None,
        chunk_bytes: int = 4 << 20,
        timeout: float = 600.0,
    ) -> TaskInfo:
        """Uploads a task and returns it once the daemon has stored and queued it.

        ``data``: a sequence of :class:`Sample` / ``(image_bytes, caption)``, a folder, a
        ``.jsonl`` manifest or a ``.tar`` shard (see :mod:`ctp_client.datasets`).
        ``settings``: a dict (see :func:`train_settings`) or a ``TrainSettings`` message.
        ``preset`` (``tiny``/``small``/``small-split``/``base``) must be the model's; empty
        means the daemon's default (``small``).
        Splits: ``eval_fraction`` holds out that fraction; otherwise the samples' own
        ``split`` is used when every sample states one, else the daemon holds out 20 %.
        ``progress(samples_sent, total)`` is called after each chunk.
        ``priority``: ``"low"``, ``"normal"`` (the default) or ``"high"`` (admin scope).
        Follow the task with :meth:`watch` or :meth:`wait`.

        A string with a scheme (``s3://…``, ``https://…``, ``file://…``) is shard URLs for
        the daemon to read: see :meth:`submit_by_reference`.
        """
        if isinstance(data, str) and _is_url(data):
            return self.submit_by_reference(
                model, [data], settings, name=name, preset=preset, eval_fraction=eval_fraction,
                seed=seed, idempotency_key=idempotency_key, priority=priority, timeout=timeout)
        samples = list(samples_of(data))
        if not samples:
            raise DatasetError("no samples to submit")
        stated = [s.split is not None for s in samples]
        if eval_fraction is not None:
            if not 0.0 < eval_fraction < 1.0:
                raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
            eval_split, per_sample = pb.EvalSplit(eval_fraction=eval_fraction), False
        elif all(stated):
            if not any(s.split == "eval" for s in samples):
                raise DatasetError("every sample is marked train; mark some eval or pass eval_fraction")
            eval_split, per_sample = pb.EvalSplit(per_sample=pb.PerSampleSplit()), True
        elif any(stated):
            raise DatasetError("some samples state a split and some do not; state all or pass eval_fraction")
        else:
            eval_split, per_sample = pb.EvalSplit(eval_fraction=DEFAULT_EVAL_FRACTION), False
        header = pb.TaskHeader(
            model=model,
            preset=preset,
            task_name=name or model,
            settings=train_settings(settings),
            eval_split=eval_split,
            seed=seed,
            expected_samples=len(samples),
            priority=_enum(pb.TaskPriority, "TASK_PRIORITY_", priority, "priority") or 0,
        )
        if idempotency_key is not None:
            header.idempotency_key = idempotency_key
        split_of = {None: pb.SPLIT_UNSPECIFIED, "train": pb.SPLIT_TRAIN, "eval": pb.SPLIT_EVAL}

        def requests():
            yield pb.SubmitTaskRequest(header=header)
            chunk, size, sent = [], 0, 0
            for i, s in enumerate(samples):
                msg = pb.Sample(
                    image=s.image,
                    caption=s.caption.encode("utf-8"),
                    id=s.id or f"s{i}",
                    split=split_of[s.split] if per_sample else pb.SPLIT_UNSPECIFIED,
                )
                n = len(s.image) + len(msg.caption) + 64
                if chunk and size + n > chunk_bytes:
                    yield pb.SubmitTaskRequest(chunk=pb.SampleChunk(samples=chunk))
                    sent += len(chunk)
                    if progress:
                        progress(sent, len(samples))
                    chunk, size = [], 0
                chunk.append(msg)
                size += n
            if chunk:
                yield pb.SubmitTaskRequest(chunk=pb.SampleChunk(samples=chunk))
                if progress:
                    progress(sent + len(chunk), len(samples))

        return TaskInfo.from_pb(self._call(self._stub.SubmitTask, requests(), timeout))

    def submit_by_reference(
        self,
        model: str,
        data_urls: Union[str, Sequence[str]],
        settings: Union[None, Mapping[str, Any], "pb.TrainSettings"] = None,
        *,
        name: Optional[str] = None,
        preset: str = "",
        eval_fraction: Optional[float] = None,
        seed: int = 0,
        idempotency_key: Optional[str] = None,
        priority: Optional[str] = None,
        timeout: float = 600.0,
    ) -> TaskInfo:
        """Submits a task whose data the daemon reads itself: WebDataset ``.tar`` shard URLs
        (``s3://bucket/key``, ``https://…``, ``file:///…``), each possibly a brace pattern
        such as ``"s3://b/emoji/shard-{000..008}.tar"`` (expanded by the daemon).

        The URLs must be allowed by the daemon's ``storage.allow_urls`` (or name its own
        bucket). The daemon fetches and checks every sample as for an upload before it
        accepts the task, copies them into its own store, and records what it read in
        ``TaskInfo.sources``. Splits: ``eval_fraction``, else the shards' own splits when
        they state them, else the daemon holds out 20 %.
        """
        urls = [data_urls] if isinstance(data_urls, str) else list(data_urls)
        if not urls:
            raise ValueError("data_urls is empty")
        header = pb.TaskHeader(
            model=model,
            preset=preset,
            task_name=name or model,
            settings=train_settings(settings),
            seed=seed,
            data_urls=urls,
            priority=_enum(pb.TaskPriority, "TASK_PRIORITY_", priority, "priority") or 0,
        )
        if eval_fraction is not None:
            if not 0.0 < eval_fraction < 1.0:
                raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
            header.eval_split.CopyFrom(pb.EvalSplit(eval_fraction=eval_fraction))
        if idempotency_key is not None:
            header.idempotency_key = idempotency_key
        requests = iter([pb.SubmitTaskRequest(header=header)])
        return TaskInfo.from_pb(self._call(self._stub.SubmitTask, requests, timeout))

    def task(self, task_id: str) -> TaskInfo:
        return TaskInfo.from_pb(self._call(self._stub.GetTask, pb.GetTaskRequest(task_id=task_id)))

    def tasks(self, model: Optional[str] = None, state: Optional[str] = None) -> List[TaskInfo]:
        """Every task (all pages), newest first as the daemon lists them; filter by model
        and by state name (``"RUNNING"``, …)."""
        out: List[TaskInfo] = []
        token = ""
        while True:
            req = pb.ListTasksRequest(page_token=token, page_size=200)
            if model is not None:
                req.model = model
            if state is not None:
                req.state = _enum(pb.TaskState, "TASK_STATE_", state, "state")
            resp = self._call(self._stub.ListTasks, req)
            out.extend(TaskInfo.from_pb(t) for t in resp.tasks)
            token = resp.next_page_token
            if not token:
                return out

    def set_priority(self, task_id: str, priority: str) -> TaskInfo:
        """Changes a QUEUED task's priority (``low``/``normal``/``high``; admin scope)."""
        req = pb.SetTaskPriorityRequest(
            task_id=task_id, priority=_enum(pb.TaskPriority, "TASK_PRIORITY_", priority, "priority"))
        return TaskInfo.from_pb(self._call(self._stub.SetTaskPriority, req))

    def quota(self) -> Dict[str, Any]:
        """This caller's quotas: ``{"caller", "queued_tasks", "stored_bytes",
        "training_seconds_per_day"}``, each ``{"used", "limit"}`` (limit ``None`` = unlimited)."""
        q = self._call(self._stub.GetQuota, pb.GetQuotaRequest())

        def item(i):
            return {"used": i.used, "limit": i.limit if i.HasField("limit") else None}

        return {"caller": q.caller, "queued_tasks": item(q.queued_tasks),
                "stored_bytes": item(q.stored_bytes),
                "training_seconds_per_day": item(q.training_seconds_per_day)}

    def cancel(self, task_id: str) -> TaskInfo:
        return TaskInfo.from_pb(self._call(self._stub.CancelTask, pb.CancelTaskRequest(task_id=task_id)))

    def watch(
        self, task_id: str, after_seq: int = 0, max_retries: int = 20, timeout: Optional[float] = None
    ) -> Iterator[Event]:
        """Events of a task, until its terminal event (the last one yielded).

        Reconnects when the stream breaks (daemon restart or drain, network) with
        ``after_seq`` = the last event seen, so no event is lost or repeated; gives up after
        ``max_retries`` consecutive failures with :class:`ctp_client.Unavailable`. A
        snapshot comes first on every (re)connection. Stopping the iteration never cancels
        the task.
        """
        r = _Resume(cursor=after_seq)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                remaining = None if deadline is None else max(deadline - time.monotonic(), 1.0)
                stream = self._stub.WatchTask(
                    pb.WatchTaskRequest(task_id=task_id, after_seq=r.cursor),
                    metadata=self._metadata,
                    timeout=remaining,
                )
                for ev in stream:
                    r.failures = 0
                    kind = ev.WhichOneof("event")
                    at = _time(ev.time) if ev.HasField("time") else None
                    if kind == "heartbeat":
                        r.cursor = max(r.cursor, ev.seq)
                        continue
                    if kind == "snapshot":
                        # Its seq is the newest stored event, maybe not received yet: it
                        # never moves the cursor.
                        yield Event(ev.seq, kind, TaskInfo.from_pb(ev.snapshot), at)
                        continue
                    if kind == "terminal" and ev.terminal.state not in _FINISHED:
                        raise ConnectionError(ev.terminal.error or "daemon closed the stream")
                    if ev.seq <= r.cursor and kind != "terminal":
                        continue  # replayed after a reconnect
                    r.cursor = max(r.cursor, ev.seq)
                    if kind == "progress":
                        data = Progress.from_pb(ev.progress)
                    else:
                        data = getattr(ev, kind)
                    yield Event(ev.seq, kind, data, at)
                    if kind == "terminal":
                        return
                raise ConnectionError("stream ended before the task did")
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
                    raise errors.from_rpc_error(e) from None
                r.last_error = e.details() or e.code().name
            except ConnectionError as e:
                r.last_error = str(e)
            r.failures += 1
            if r.failures > max_retries or (deadline is not None and time.monotonic() > deadline):
                raise errors.Unavailable(
                    grpc.StatusCode.UNAVAILABLE,
                    f"lost the event stream of task {task_id} ({r.last_error}); "
                    f"resume with after_seq={r.cursor}",
                )
            time.sleep(min(0.25 * 2 ** (r.failures - 1), 10.0))

    def wait(
        self,
        task_id: str,
        on_event: Optional[Callable[[Event], None]] = None,
        timeout: Optional[float] = None,
    ) -> TaskInfo:
        """Follows a task to its end and returns its final state. Raises
        :class:`ctp_client.TaskFailed` if it ended FAILED/CANCELLED and
        :class:`ctp_client.GateRejected` if the promotion gate refused its version."""
        for ev in self.watch(task_id, timeout=timeout):
            if on_event is not None:
                on_event(ev)
            if ev.kind == "terminal":
                t = ev.data
                state = _state(t.state)
                if state != "SUCCEEDED":
                    raise errors.TaskFailed(task_id, state, t.error)
                if t.HasField("rejection_reason"):
                    raise errors.GateRejected(task_id, _opt(t, "produced_version"), t.rejection_reason)
        return self.task(task_id)

    # Versions ------------------------------------------------------------------------

    def versions(self, model: str) -> List[VersionRow]:
        """Every version of ``model`` as rows (all pages), by version number."""
        out: List[VersionRow] = []
        token = ""
        while True:
            resp = self._call(
                self._stub.ListVersions, pb.ListVersionsRequest(model=model, page_token=token)
            )
            out.extend(VersionRow.from_pb(v) for v in resp.versions)
            token = resp.next_page_token
            if not token:
                return sorted(out, key=lambda v: v.version)

    def version(self, model: str, version: Optional[int] = None) -> VersionRow:
        """One version (default: the head)."""
        req = pb.GetVersionRequest(model=model)
        if version is not None:
            req.version = version
        return VersionRow.from_pb(self._call(self._stub.GetVersion, req))

    def rollback(
        self, model: str, version: int, *, expected_head: Optional[int] = None, reason: str = ""
    ) -> HeadChange:
        """Moves the head of ``model`` to ``version`` (admin scope). With ``expected_head``
        the move is a compare-and-set: :class:`ctp_client.Aborted` if the head moved."""
        req = pb.RollbackRequest(model=model, version=version, reason=reason)
        if expected_head is not None:
            req.expected_head = expected_head
        resp = self._call(self._stub.Rollback, req)
        c = resp.change
        return HeadChange(
            model=model,
            from_version=_opt(c, "from"),
            to_version=c.to,
            who=c.who,
            reason=c.reason,
            at=_time(c.at) if c.HasField("at") else None,
            head=VersionRow.from_pb(resp.head) if resp.HasField("head") else None,
        )

    def set_gate(
        self,
        model: str,
        *,
        max_avg_forgetting: Optional[float] = None,
        min_union_rm: Optional[float] = None,
        max_rm_drop: Optional[float] = None,
        max_anchor_drop: Optional[float] = None,
        anchor_resamples: Optional[int] = None,
    ) -> Dict[str, Optional[float]]:
        """Sets the model's promotion gate (admin scope); all ``None`` clears it.
        ``max_anchor_drop``: refuse a version whose mean Rm drop from the parent on an anchor
        suite is significantly above it (95 % paired bootstrap, ``anchor_resamples`` draws,
        default 1000; docs/anchors.md)."""
        gate = pb.PromotionGate()
        for k, v in (("max_avg_forgetting", max_avg_forgetting), ("min_union_rm", min_union_rm),
                     ("max_rm_drop", max_rm_drop), ("max_anchor_drop", max_anchor_drop),
                     ("anchor_resamples", anchor_resamples)):
            if v is not None:
                setattr(gate, k, v)
        resp = self._call(self._stub.SetPromotionGate, pb.SetPromotionGateRequest(model=model, gate=gate))
        return {k: _opt(resp, k) for k in ("max_avg_forgetting", "min_union_rm", "max_rm_drop",
                                           "max_anchor_drop", "anchor_resamples")}

    def embed(
        self,
        model: str,
        images: Sequence[Union[bytes, str]] = (),
        texts: Sequence[str] = (),
        version: Optional[int] = None,
    ) -> Embeddings:
        """Embeddings of images (bytes or file paths) and texts with a version (default:
        the head), as numpy arrays."""
        blobs = []
        for img in images:
            if isinstance(img, (bytes, bytearray)):
                blobs.append(bytes(img))
            else:
                with open(img, "rb") as f:
                    blobs.append(f.read())
        req = pb.EmbedRequest(model=model, images=blobs, texts=list(texts))
        if version is not None:
            req.version = version
        resp = self._call(self._stub.Embed, req)

        def matrix(rows):
            if not rows:
                return np.zeros((0, resp.dim), dtype=np.float32)
            return np.asarray([list(r.values) for r in rows], dtype=np.float32)

        return Embeddings(resp.version, resp.dim, matrix(resp.image_embeddings), matrix(resp.text_embeddings))


def _pem(value: Union[bytes, str]) -> bytes:
    if isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


def _is_url(s: str) -> bool:
    """``scheme://…`` (letters, digits, ``+-.``), as ctpctl decides."""
    scheme, sep, _ = s.partition("://")
    return bool(sep) and scheme[:1].isalpha() and all(c.isalnum() or c in "+-." for c in scheme)
