"""Python client of ctpd, the continual vision-language training daemon (gRPC ``ctp.v1``).

>>> from ctp_client import Client
>>> with Client("127.0.0.1:50051") as c:                        # doctest: +SKIP
...     task = c.submit("demo", "photos/", {"epochs": 2}, preset="tiny")
...     final = c.wait(task.id, on_event=print)
...     rows = c.versions("demo")
...     emb = c.embed("demo", images=["photos/cat.png"], texts=["a cat"])

Errors are exceptions carrying the gRPC code and the daemon's message
(:class:`CtpError` and subclasses such as :class:`InvalidArgument`, :class:`Aborted`).
The generated stubs are ``ctp_client.pb`` / ``ctp_client.pb_grpc``.
"""
from ._pb import ctp_pb2 as pb
from ._pb import ctp_pb2_grpc as pb_grpc
from .client import (
    DEFAULT_EVAL_FRACTION,
    Client,
    DataSource,
    Embeddings,
    Event,
    HeadChange,
    Progress,
    TaskInfo,
    VersionRow,
    train_settings,
)
from .datasets import DatasetError, Sample, read_path
from .errors import (
    Aborted,
    AlreadyExists,
    CtpError,
    DeadlineExceeded,
    FailedPrecondition,
    GateRejected,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TaskFailed,
    Unauthenticated,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "Aborted", "AlreadyExists", "Client", "CtpError", "DEFAULT_EVAL_FRACTION", "DataSource",
    "DatasetError", "DeadlineExceeded", "Embeddings", "Event", "FailedPrecondition",
    "GateRejected", "HeadChange", "InvalidArgument", "NotFound", "PermissionDenied", "Progress",
    "ResourceExhausted", "Sample", "TaskFailed", "TaskInfo", "Unauthenticated", "Unavailable",
    "VersionRow", "pb", "pb_grpc", "read_path", "train_settings",
]
