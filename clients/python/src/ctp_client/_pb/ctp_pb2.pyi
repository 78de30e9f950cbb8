import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_PRIORITY_UNSPECIFIED: _ClassVar[TaskPriority]
    TASK_PRIORITY_LOW: _ClassVar[TaskPriority]
    TASK_PRIORITY_NORMAL: _ClassVar[TaskPriority]
    TASK_PRIORITY_HIGH: _ClassVar[TaskPriority]

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_QUEUED: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_SUCCEEDED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_CTP: _ClassVar[Method]
    METHOD_SEQFT: _ClassVar[Method]

class BnPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BN_POLICY_UNSPECIFIED: _ClassVar[BnPolicy]
    BN_POLICY_FROZEN: _ClassVar[BnPolicy]
    BN_POLICY_TRAIN: _ClassVar[BnPolicy]

class Split(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_UNSPECIFIED: _ClassVar[Split]
    SPLIT_TRAIN: _ClassVar[Split]
    SPLIT_EVAL: _ClassVar[Split]

class VersionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_STATE_UNSPECIFIED: _ClassVar[VersionState]
    VERSION_STATE_ACCEPTED: _ClassVar[VersionState]
    VERSION_STATE_REJECTED: _ClassVar[VersionState]
TASK_PRIORITY_UNSPECIFIED: TaskPriority
TASK_PRIORITY_LOW: TaskPriority
TASK_PRIORITY_NORMAL: TaskPriority
TASK_PRIORITY_HIGH: TaskPriority
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_QUEUED: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_SUCCEEDED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
METHOD_UNSPECIFIED: Method
METHOD_CTP: Method
METHOD_SEQFT: Method
BN_POLICY_UNSPECIFIED: BnPolicy
BN_POLICY_FROZEN: BnPolicy
BN_POLICY_TRAIN: BnPolicy
SPLIT_UNSPECIFIED: Split
SPLIT_TRAIN: Split
SPLIT_EVAL: Split
VERSION_STATE_UNSPECIFIED: VersionState
VERSION_STATE_ACCEPTED: VersionState
VERSION_STATE_REJECTED: VersionState

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "device", "precision", "backend", "storage_problem", "precision_rule")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PROBLEM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_RULE_FIELD_NUMBER: _ClassVar[int]
    version: str
    device: str
    precision: str
    backend: str
    storage_problem: str
    precision_rule: str
    def __init__(self, version: _Optional[str] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., backend: _Optional[str] = ..., storage_problem: _Optional[str] = ..., precision_rule: _Optional[str] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class BackupResponse(_message.Message):
    __slots__ = ("path", "files", "bytes", "schema_version", "created_at", "database_sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DATABASE_SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    files: int
    bytes: int
    schema_version: int
    created_at: _timestamp_pb2.Timestamp
    database_sha256: str
    def __init__(self, path: _Optional[str] = ..., files: _Optional[int] = ..., bytes: _Optional[int] = ..., schema_version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., database_sha256: _Optional[str] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("load_weights",)
    LOAD_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    load_weights: bool
    def __init__(self, load_weights: _Optional[bool] = ...) -> None: ...

class VerifyReport(_message.Message):
    __slots__ = ("sound", "models", "versions", "tasks", "resume_points", "problems", "unreferenced", "temp_files", "loaded_weights")
    SOUND_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RESUME_POINTS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    UNREFERENCED_FIELD_NUMBER: _ClassVar[int]
    TEMP_FILES_FIELD_NUMBER: _ClassVar[int]
    LOADED_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    sound: bool
    models: int
    versions: int
    tasks: int
    resume_points: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    unreferenced: _containers.RepeatedScalarFieldContainer[str]
    temp_files: _containers.RepeatedScalarFieldContainer[str]
    loaded_weights: bool
    def __init__(self, sound: _Optional[bool] = ..., models: _Optional[int] = ..., versions: _Optional[int] = ..., tasks: _Optional[int] = ..., resume_points: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ..., unreferenced: _Optional[_Iterable[str]] = ..., temp_files: _Optional[_Iterable[str]] = ..., loaded_weights: _Optional[bool] = ...) -> None: ...

class SubmitTaskRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: TaskHeader
    chunk: SampleChunk
    def __init__(self, header: _Optional[_Union[TaskHeader, _Mapping]] = ..., chunk: _Optional[_Union[SampleChunk, _Mapping]] = ...) -> None: ...

class TaskHeader(_message.Message):
    __slots__ = ("model", "preset", "task_name", "idempotency_key", "settings", "eval_split", "seed", "expected_samples", "data_urls", "priority")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EVAL_SPLIT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATA_URLS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    model: str
    preset: str
    task_name: str
    idempotency_key: str
    settings: TrainSettings
    eval_split: EvalSplit
    seed: int
    expected_samples: int
    data_urls: _containers.RepeatedScalarFieldContainer[str]
    priority: TaskPriority
    def __init__(self, model: _Optional[str] = ..., preset: _Optional[str] = ..., task_name: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., settings: _Optional[_Union[TrainSettings, _Mapping]] = ..., eval_split: _Optional[_Union[EvalSplit, _Mapping]] = ..., seed: _Optional[int] = ..., expected_samples: _Optional[int] = ..., data_urls: _Optional[_Iterable[str]] = ..., priority: _Optional[_Union[TaskPriority, str]] = ...) -> None: ...

class TrainSettings(_message.Message):
    __slots__ = ("epochs", "batch_size", "learning_rate", "drift_threshold", "drift_check_every", "method", "bn_policy", "loss_weights", "replay", "momentum_reference_steps", "queue_size")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DRIFT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFT_CHECK_EVERY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    BN_POLICY_FIELD_NUMBER: _ClassVar[int]
    LOSS_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_REFERENCE_STEPS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    batch_size: int
    learning_rate: float
    drift_threshold: float
    drift_check_every: int
    method: Method
    bn_policy: BnPolicy
    loss_weights: LossWeights
    replay: Replay
    momentum_reference_steps: int
    queue_size: int
    def __init__(self, epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., drift_threshold: _Optional[float] = ..., drift_check_every: _Optional[int] = ..., method: _Optional[_Union[Method, str]] = ..., bn_policy: _Optional[_Union[BnPolicy, str]] = ..., loss_weights: _Optional[_Union[LossWeights, _Mapping]] = ..., replay: _Optional[_Union[Replay, _Mapping]] = ..., momentum_reference_steps: _Optional[int] = ..., queue_size: _Optional[int] = ...) -> None: ...

class Replay(_message.Message):
    __slots__ = ("samples_per_task", "batch_fraction")
    SAMPLES_PER_TASK_FIELD_NUMBER: _ClassVar[int]
    BATCH_FRACTION_FIELD_NUMBER: _ClassVar[int]
    samples_per_task: int
    batch_fraction: float
    def __init__(self, samples_per_task: _Optional[int] = ..., batch_fraction: _Optional[float] = ...) -> None: ...

class LossWeights(_message.Message):
    __slots__ = ("itc", "itc_queue", "mlm", "mlm_distill", "tp_cross", "tp_intra")
    ITC_FIELD_NUMBER: _ClassVar[int]
    ITC_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MLM_FIELD_NUMBER: _ClassVar[int]
    MLM_DISTILL_FIELD_NUMBER: _ClassVar[int]
    TP_CROSS_FIELD_NUMBER: _ClassVar[int]
    TP_INTRA_FIELD_NUMBER: _ClassVar[int]
    itc: float
    itc_queue: float
    mlm: float
    mlm_distill: float
    tp_cross: float
    tp_intra: float
    def __init__(self, itc: _Optional[float] = ..., itc_queue: _Optional[float] = ..., mlm: _Optional[float] = ..., mlm_distill: _Optional[float] = ..., tp_cross: _Optional[float] = ..., tp_intra: _Optional[float] = ...) -> None: ...

class EvalSplit(_message.Message):
    __slots__ = ("eval_fraction", "per_sample")
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    PER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    eval_fraction: float
    per_sample: PerSampleSplit
    def __init__(self, eval_fraction: _Optional[float] = ..., per_sample: _Optional[_Union[PerSampleSplit, _Mapping]] = ...) -> None: ...

class PerSampleSplit(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SampleChunk(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("image", "caption", "id", "split")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    caption: bytes
    id: str
    split: Split
    def __init__(self, image: _Optional[bytes] = ..., caption: _Optional[bytes] = ..., id: _Optional[str] = ..., split: _Optional[_Union[Split, str]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "model", "name", "state", "progress", "created_at", "started_at", "finished_at", "error", "produced_version", "base_version", "n_train", "n_eval", "settings", "idempotency_key", "cancel_requested", "seed", "rejection_reason", "sources", "priority", "preemptions", "submitted_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    N_TRAIN_FIELD_NUMBER: _ClassVar[int]
    N_EVAL_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PREEMPTIONS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    name: str
    state: TaskState
    progress: Progress
    created_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    produced_version: int
    base_version: int
    n_train: int
    n_eval: int
    settings: TrainSettings
    idempotency_key: str
    cancel_requested: bool
    seed: int
    rejection_reason: str
    sources: _containers.RepeatedCompositeFieldContainer[DataSource]
    priority: TaskPriority
    preemptions: int
    submitted_by: str
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., produced_version: _Optional[int] = ..., base_version: _Optional[int] = ..., n_train: _Optional[int] = ..., n_eval: _Optional[int] = ..., settings: _Optional[_Union[TrainSettings, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., seed: _Optional[int] = ..., rejection_reason: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[DataSource, _Mapping]]] = ..., priority: _Optional[_Union[TaskPriority, str]] = ..., preemptions: _Optional[int] = ..., submitted_by: _Optional[str] = ...) -> None: ...

class DataSource(_message.Message):
    __slots__ = ("url", "etag", "sha256", "samples", "bytes")
    URL_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    url: str
    etag: str
    sha256: str
    samples: int
    bytes: int
    def __init__(self, url: _Optional[str] = ..., etag: _Optional[str] = ..., sha256: _Optional[str] = ..., samples: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("epoch", "total_epochs", "step", "total_steps", "percent", "eta_seconds", "losses", "samples_per_second", "momentum_syncs", "resumed_from_step", "drift")
    class LossesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_SYNCS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    total_epochs: int
    step: int
    total_steps: int
    percent: float
    eta_seconds: float
    losses: _containers.ScalarMap[str, float]
    samples_per_second: float
    momentum_syncs: int
    resumed_from_step: int
    drift: float
    def __init__(self, epoch: _Optional[int] = ..., total_epochs: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., percent: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., losses: _Optional[_Mapping[str, float]] = ..., samples_per_second: _Optional[float] = ..., momentum_syncs: _Optional[int] = ..., resumed_from_step: _Optional[int] = ..., drift: _Optional[float] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("model", "state", "page_size", "page_token")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model: str
    state: TaskState
    page_size: int
    page_token: str
    def __init__(self, model: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class WatchTaskRequest(_message.Message):
    __slots__ = ("task_id", "after_seq")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    after_seq: int
    def __init__(self, task_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("seq", "time", "snapshot", "progress", "sync", "heartbeat", "terminal", "log", "server_closing", "preempted")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    SERVER_CLOSING_FIELD_NUMBER: _ClassVar[int]
    PREEMPTED_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    snapshot: Task
    progress: Progress
    sync: MomentumSync
    heartbeat: Heartbeat
    terminal: Terminal
    log: Log
    server_closing: ServerClosing
    preempted: Preempted
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[_Union[Task, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., sync: _Optional[_Union[MomentumSync, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., terminal: _Optional[_Union[Terminal, _Mapping]] = ..., log: _Optional[_Union[Log, _Mapping]] = ..., server_closing: _Optional[_Union[ServerClosing, _Mapping]] = ..., preempted: _Optional[_Union[Preempted, _Mapping]] = ...) -> None: ...

class Preempted(_message.Message):
    __slots__ = ("count", "step", "by_task_id")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BY_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    count: int
    step: int
    by_task_id: str
    def __init__(self, count: _Optional[int] = ..., step: _Optional[int] = ..., by_task_id: _Optional[str] = ...) -> None: ...

class SetTaskPriorityRequest(_message.Message):
    __slots__ = ("task_id", "priority")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    priority: TaskPriority
    def __init__(self, task_id: _Optional[str] = ..., priority: _Optional[_Union[TaskPriority, str]] = ...) -> None: ...

class GetQuotaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QuotaItem(_message.Message):
    __slots__ = ("used", "limit")
    USED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    used: float
    limit: float
    def __init__(self, used: _Optional[float] = ..., limit: _Optional[float] = ...) -> None: ...

class QuotaUsage(_message.Message):
    __slots__ = ("caller", "queued_tasks", "stored_bytes", "training_seconds_per_day")
    CALLER_FIELD_NUMBER: _ClassVar[int]
    QUEUED_TASKS_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_SECONDS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    caller: str
    queued_tasks: QuotaItem
    stored_bytes: QuotaItem
    training_seconds_per_day: QuotaItem
    def __init__(self, caller: _Optional[str] = ..., queued_tasks: _Optional[_Union[QuotaItem, _Mapping]] = ..., stored_bytes: _Optional[_Union[QuotaItem, _Mapping]] = ..., training_seconds_per_day: _Optional[_Union[QuotaItem, _Mapping]] = ...) -> None: ...

class ServerClosing(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class MomentumSync(_message.Message):
    __slots__ = ("step", "k", "drift", "threshold", "duration_ms")
    STEP_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    step: int
    k: int
    drift: float
    threshold: float
    duration_ms: float
    def __init__(self, step: _Optional[int] = ..., k: _Optional[int] = ..., drift: _Optional[float] = ..., threshold: _Optional[float] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Terminal(_message.Message):
    __slots__ = ("state", "error", "produced_version", "rejection_reason")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PRODUCED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    state: TaskState
    error: str
    produced_version: int
    rejection_reason: str
    def __init__(self, state: _Optional[_Union[TaskState, str]] = ..., error: _Optional[str] = ..., produced_version: _Optional[int] = ..., rejection_reason: _Optional[str] = ...) -> None: ...

class Log(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class Version(_message.Message):
    __slots__ = ("model", "version", "parent", "task_id", "task_name", "checkpoint_sha256", "created_at", "evals", "union_eval", "average_forgetting", "forgetting", "bwt", "momentum_syncs", "momentum_steps", "is_head", "state", "rejection_reason", "device", "precision", "anchors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EVALS_FIELD_NUMBER: _ClassVar[int]
    UNION_EVAL_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_FORGETTING_FIELD_NUMBER: _ClassVar[int]
    FORGETTING_FIELD_NUMBER: _ClassVar[int]
    BWT_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_SYNCS_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    IS_HEAD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    ANCHORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    parent: int
    task_id: str
    task_name: str
    checkpoint_sha256: str
    created_at: _timestamp_pb2.Timestamp
    evals: _containers.RepeatedCompositeFieldContainer[TaskEval]
    union_eval: TaskEval
    average_forgetting: float
    forgetting: _containers.RepeatedCompositeFieldContainer[TaskForgetting]
    bwt: float
    momentum_syncs: int
    momentum_steps: int
    is_head: bool
    state: VersionState
    rejection_reason: str
    device: str
    precision: str
    anchors: _containers.RepeatedCompositeFieldContainer[AnchorEval]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., parent: _Optional[int] = ..., task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., checkpoint_sha256: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., evals: _Optional[_Iterable[_Union[TaskEval, _Mapping]]] = ..., union_eval: _Optional[_Union[TaskEval, _Mapping]] = ..., average_forgetting: _Optional[float] = ..., forgetting: _Optional[_Iterable[_Union[TaskForgetting, _Mapping]]] = ..., bwt: _Optional[float] = ..., momentum_syncs: _Optional[int] = ..., momentum_steps: _Optional[int] = ..., is_head: _Optional[bool] = ..., state: _Optional[_Union[VersionState, str]] = ..., rejection_reason: _Optional[str] = ..., device: _Optional[str] = ..., precision: _Optional[str] = ..., anchors: _Optional[_Iterable[_Union[AnchorEval, _Mapping]]] = ...) -> None: ...

class RegisterAnchorSuiteRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: AnchorSuiteHeader
    chunk: SampleChunk
    def __init__(self, header: _Optional[_Union[AnchorSuiteHeader, _Mapping]] = ..., chunk: _Optional[_Union[SampleChunk, _Mapping]] = ...) -> None: ...

class AnchorSuiteHeader(_message.Message):
    __slots__ = ("model", "name", "expected_samples", "preset")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    model: str
    name: str
    expected_samples: int
    preset: str
    def __init__(self, model: _Optional[str] = ..., name: _Optional[str] = ..., expected_samples: _Optional[int] = ..., preset: _Optional[str] = ...) -> None: ...

class AnchorSuite(_message.Message):
    __slots__ = ("model", "name", "samples", "sha256", "created_at", "created_by", "baseline_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    name: str
    samples: int
    sha256: str
    created_at: _timestamp_pb2.Timestamp
    created_by: str
    baseline_version: int
    def __init__(self, model: _Optional[str] = ..., name: _Optional[str] = ..., samples: _Optional[int] = ..., sha256: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_by: _Optional[str] = ..., baseline_version: _Optional[int] = ...) -> None: ...

class ListAnchorSuitesRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListAnchorSuitesResponse(_message.Message):
    __slots__ = ("suites",)
    SUITES_FIELD_NUMBER: _ClassVar[int]
    suites: _containers.RepeatedCompositeFieldContainer[AnchorSuite]
    def __init__(self, suites: _Optional[_Iterable[_Union[AnchorSuite, _Mapping]]] = ...) -> None: ...

class AnchorEval(_message.Message):
    __slots__ = ("suite", "samples", "tr1", "tr5", "tr10", "ir1", "ir5", "ir10", "rm")
    SUITE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TR1_FIELD_NUMBER: _ClassVar[int]
    TR5_FIELD_NUMBER: _ClassVar[int]
    TR10_FIELD_NUMBER: _ClassVar[int]
    IR1_FIELD_NUMBER: _ClassVar[int]
    IR5_FIELD_NUMBER: _ClassVar[int]
    IR10_FIELD_NUMBER: _ClassVar[int]
    RM_FIELD_NUMBER: _ClassVar[int]
    suite: str
    samples: int
    tr1: float
    tr5: float
    tr10: float
    ir1: float
    ir5: float
    ir10: float
    rm: float
    def __init__(self, suite: _Optional[str] = ..., samples: _Optional[int] = ..., tr1: _Optional[float] = ..., tr5: _Optional[float] = ..., tr10: _Optional[float] = ..., ir1: _Optional[float] = ..., ir5: _Optional[float] = ..., ir10: _Optional[float] = ..., rm: _Optional[float] = ...) -> None: ...

class PromotionGate(_message.Message):
    __slots__ = ("max_avg_forgetting", "min_union_rm", "max_rm_drop", "max_anchor_drop", "anchor_resamples")
    MAX_AVG_FORGETTING_FIELD_NUMBER: _ClassVar[int]
    MIN_UNION_RM_FIELD_NUMBER: _ClassVar[int]
    MAX_RM_DROP_FIELD_NUMBER: _ClassVar[int]
    MAX_ANCHOR_DROP_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_RESAMPLES_FIELD_NUMBER: _ClassVar[int]
    max_avg_forgetting: float
    min_union_rm: float
    max_rm_drop: float
    max_anchor_drop: float
    anchor_resamples: int
    def __init__(self, max_avg_forgetting: _Optional[float] = ..., min_union_rm: _Optional[float] = ..., max_rm_drop: _Optional[float] = ..., max_anchor_drop: _Optional[float] = ..., anchor_resamples: _Optional[int] = ...) -> None: ...

class SetPromotionGateRequest(_message.Message):
    __slots__ = ("model", "gate")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    model: str
    gate: PromotionGate
    def __init__(self, model: _Optional[str] = ..., gate: _Optional[_Union[PromotionGate, _Mapping]] = ...) -> None: ...

class GetPromotionGateRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class TaskEval(_message.Message):
    __slots__ = ("task_id", "task_name", "tr1", "tr5", "tr10", "ir1", "ir5", "ir10", "rm")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    TR1_FIELD_NUMBER: _ClassVar[int]
    TR5_FIELD_NUMBER: _ClassVar[int]
    TR10_FIELD_NUMBER: _ClassVar[int]
    IR1_FIELD_NUMBER: _ClassVar[int]
    IR5_FIELD_NUMBER: _ClassVar[int]
    IR10_FIELD_NUMBER: _ClassVar[int]
    RM_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    task_name: str
    tr1: float
    tr5: float
    tr10: float
    ir1: float
    ir5: float
    ir10: float
    rm: float
    def __init__(self, task_id: _Optional[str] = ..., task_name: _Optional[str] = ..., tr1: _Optional[float] = ..., tr5: _Optional[float] = ..., tr10: _Optional[float] = ..., ir1: _Optional[float] = ..., ir5: _Optional[float] = ..., ir10: _Optional[float] = ..., rm: _Optional[float] = ...) -> None: ...

class TaskForgetting(_message.Message):
    __slots__ = ("task_id", "forgetting")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FORGETTING_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    forgetting: float
    def __init__(self, task_id: _Optional[str] = ..., forgetting: _Optional[float] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ("model", "page_size", "page_token")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model: str
    page_size: int
    page_token: str
    def __init__(self, model: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Version]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[Version, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("model", "version", "expected_head", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_HEAD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    expected_head: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., expected_head: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("head", "change")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    head: Version
    change: HeadChange
    def __init__(self, head: _Optional[_Union[Version, _Mapping]] = ..., change: _Optional[_Union[HeadChange, _Mapping]] = ...) -> None: ...

class HeadChange(_message.Message):
    __slots__ = ("to", "at", "who", "reason")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    to: int
    at: _timestamp_pb2.Timestamp
    who: str
    reason: str
    def __init__(self, to: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., who: _Optional[str] = ..., reason: _Optional[str] = ..., **kwargs) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("model", "version", "images", "texts")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    images: _containers.RepeatedScalarFieldContainer[bytes]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., images: _Optional[_Iterable[bytes]] = ..., texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("version", "dim", "image_embeddings", "text_embeddings")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    IMAGE_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    TEXT_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    version: int
    dim: int
    image_embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    text_embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    def __init__(self, version: _Optional[int] = ..., dim: _Optional[int] = ..., image_embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., text_embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class ExportVersionRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ExportVersionChunk(_message.Message):
    __slots__ = ("manifest", "chunk")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    manifest: ExportManifest
    chunk: ExportFileChunk
    def __init__(self, manifest: _Optional[_Union[ExportManifest, _Mapping]] = ..., chunk: _Optional[_Union[ExportFileChunk, _Mapping]] = ...) -> None: ...

class ExportManifest(_message.Message):
    __slots__ = ("model", "version", "preset", "files", "probe_source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    PROBE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    preset: str
    files: _containers.RepeatedCompositeFieldContainer[ExportFile]
    probe_source: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., preset: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ExportFile, _Mapping]]] = ..., probe_source: _Optional[str] = ...) -> None: ...

class ExportFile(_message.Message):
    __slots__ = ("name", "size", "sha256", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: str
    description: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ExportFileChunk(_message.Message):
    __slots__ = ("name", "offset", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    data: bytes
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
