"""The jobs' settings, one frozen object per concern, each checked when it is made.

- ``ModelSettings``: what is learned and how (hashing, optimizer, standardization, clipping);
- ``LoopSettings``: the parameter server's loop (shards, workers, mini-batches, consistency);
- ``TrainTopics``: where training records come from and go, and in which format;
- ``Bounds``: when a run stops (train and serve);
- ``ServingSettings``, ``ServeTopics``: the serve job's.

A job's config (``flink_jobs.train.TrainConfig``, ``flink_jobs.serve.ServeConfig``) holds
them, its flags are made from their fields (``flink_jobs.options.add_field_flags``), and the
operators get the same objects (``operators.ps_fn.PsSettings``,
``operators.serve_fn.ServeSettings``): a default is written once, here.

Every field's ``help`` is its flag's help text; ``flag`` names a flag that is not the field's
name. A check that fails raises ``ConfigError`` with one line naming the flag.

Examples
--------
>>> LoopSettings(shards=0)
Traceback (most recent call last):
...
connectors.errors.ConfigError: --shards must be >= 1, got 0
>>> ModelSettings(bits=18).dim  # 2**18 hashed features and the intercept
262145
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.errors import ConfigError
from connectors.events import DEFAULT_CLIP
from connectors.hashing import check_bits
from operators.drift import DRIFT_BOOST
from operators.logistic import dimension
from operators.optim import make_optimizer, make_rule
from operators.predictions import PREDICTION_FORMATS
from operators.ps import DEFAULT_BATCH_SIZE, DEFAULT_MAX_TASKS, Consistency, TaskGate, batch_size_at
from operators.serving import MAX_REQUEST_AGE_MS, MAX_WAIT_MS

INPUT_FORMATS = ("event", "ndjson", "columns", "arrow")
DRIFT_ACTIONS = ("alert", "reset", "boost")


def flag_of(cls, name: str) -> str:
    """The command-line flag of field ``name`` of settings class ``cls``."""
    meta = cls.__dataclass_fields__[name].metadata
    return meta.get("flag", f"--{name.replace('_', '-')}")


def _at_least(obj, names: tuple, low: float) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value >= low:
            unit = " ms" if name.endswith("_ms") else ""
            raise ConfigError(f"{flag_of(type(obj), name)} must be >= {low:g}{unit}, got {value}")


def _one_of(obj, name: str, allowed: tuple) -> None:
    if getattr(obj, name) not in allowed:
        raise ConfigError(f"{flag_of(type(obj), name)} must be one of {', '.join(allowed)}, "
                          f"got {getattr(obj, name)!r}")  # fmt: skip


def _help(text: str, **meta) -> dict:
    return {"help": text, **meta}


@dataclass(frozen=True)
class ModelSettings:
    """What is learned and how."""

    bits: int = field(default=20, metadata=_help("2**BITS hashed features", flag="--hash-bits"))
    optimizer: str = field(default="ftrl", metadata=_help(None, choices=("ftrl", "adagrad", "sgd")))
    # (name, value) pairs: --alpha, --beta, --l1, --l2, --lr
    hyper: tuple = (("alpha", 0.2), ("beta", 1.0), ("l1", 0.0), ("l2", 0.0))
    standardize: bool = field(default=True, metadata=_help(
        "learn over numeric features standardized online (running mean and variance kept on "
        "the shards with the weights; default)"))  # fmt: skip
    clip: float | None = DEFAULT_CLIP  # |feature value| limit (--clip-features; None: none)
    on_drift: str = field(default="alert", metadata=_help(
        "what a drift in the prequential loss does: alert (a record on metrics), reset (also "
        f"restart the model from zero) or boost (also raise the step sizes {DRIFT_BOOST:g}x, "
        "fading as new gradients arrive; ftrl or adagrad)", choices=DRIFT_ACTIONS))  # fmt: skip
    kkt_filter: bool = field(default=False, metadata=_help(
        "KKT filter: a worker holds back the gradient of a zero weight until it could move the "
        "weight off zero under --l1 (needs ftrl, --l1 > 0 and --no-standardize)"))  # fmt: skip

    def __post_init__(self) -> None:
        check_bits(self.bits)
        rule = make_optimizer(self.optimizer, **dict(self.hyper))
        _at_least(self, ("clip",), 0)
        _one_of(self, "on_drift", DRIFT_ACTIONS)
        if self.on_drift == "boost" and not rule.boosts:
            raise ConfigError(f"--on-drift boost needs ftrl or adagrad, not {self.optimizer}")
        if self.kkt_filter and (
            self.optimizer != "ftrl" or not self.l1 > 0 or self.standardize
        ):  # a standardized push also carries each coordinate's moments, which none may skip
            raise ConfigError("--kkt-filter needs --optimizer ftrl, --l1 > 0 and --no-standardize")

    @property
    def l1(self) -> float:
        return dict(self.hyper).get("l1", 0.0)

    @property
    def dim(self) -> int:
        return dimension(self.bits)

    def make_optimizer(self):
        """The shards' update rule (standardized unless ``--no-standardize``)."""
        return make_rule(self.optimizer, self.standardize, **dict(self.hyper))


@dataclass(frozen=True)
class LoopSettings:
    """The parameter server's loop."""

    shards: int = field(default=4, metadata=_help("parameter-server shards per task"))
    workers: int = field(default=2, metadata=_help("workers per task"))
    batch_size: int = field(default=DEFAULT_BATCH_SIZE, metadata=_help("examples per mini-batch"))
    warmup: bool = field(
        default=True,
        metadata=_help(
            "a worker's mini-batches grow from 1 by an eighth each up to --batch-size (default)"
        ),
    )
    batch_timeout_ms: int = field(default=200, metadata=_help(
        "train a partial mini-batch once its oldest example waited MS (0: count only)",
        flag="--batch-timeout", metavar="MS"))  # fmt: skip
    consistency: str = field(default="async", metadata=_help("async | bounded:TAU | sync"))
    update_threshold: float = field(default=0.0, metadata=_help(
        "significantly-modified filter: send a weight only once it moved more than EPS",
        metavar="EPS"))  # fmt: skip
    read_my_writes: bool = field(
        default=True,
        metadata=_help(
            "a worker scores with its own pushes applied at once, before the shards' updates come "
            "back (default; updates then carry the optimizer state; no effect in sync mode)"
        ),
    )
    max_in_flight: int = field(
        default=16,
        metadata=_help(
            "flow control: a worker waits while N of its mini-batches are not yet applied by "
            "every shard (default 16; in every mode, bounded:TAU waits sooner)",
            metavar="N",
        ),
    )
    block: int = field(default=4096, metadata=_help(
        "coordinates per keyed-state entry of shards and replicas (default 4096)",
        flag="--block-size", metavar="N"))  # fmt: skip
    tasks: tuple | None = None  # the tasks it may train (--tasks; None: any)
    max_tasks: int = DEFAULT_MAX_TASKS  # at most this many of them (--max-tasks)

    def __post_init__(self) -> None:
        _at_least(self, ("shards", "workers", "batch_size", "block", "max_in_flight",
                         "max_tasks"), 1)  # fmt: skip
        _at_least(self, ("batch_timeout_ms", "update_threshold"), 0)
        Consistency.parse(self.consistency)

    @property
    def rmw(self) -> bool:
        """Read-my-writes in effect: a sync worker never runs ahead of its own pushes."""
        return self.read_my_writes and self.consistency != "sync"

    def task_gate(self) -> TaskGate:
        return TaskGate.of(self.tasks, self.max_tasks)

    def batch_size_at(self, clock: int) -> int:
        return batch_size_at(clock, self.batch_size, self.warmup)


@dataclass(frozen=True)
class TrainTopics:
    """Where the training job reads and writes, and in which record format."""

    input: str = field(default="events", metadata=_help(None, flag="--input-topic"))
    updates: str = field(default="model-updates", metadata=_help(None, flag="--updates-topic"))
    predictions: str = field(default="train-predictions",
                             metadata=_help(None, flag="--predictions-topic"))  # fmt: skip
    metrics: str = field(default="metrics", metadata=_help(None, flag="--metrics-topic"))
    dead_letters: str = field(default="dead-letters",
                              metadata=_help(None, flag="--dead-letter-topic"))  # fmt: skip
    input_format: str = field(default="event", metadata=_help(
        "event: one event per Kafka record; ndjson: a record carries many events, one per line; "
        "columns: a record carries many events as JSON columns (connectors/columns.py); arrow: "
        "as an Arrow record batch (connectors/arrow_records.py), the fastest; a bad event of a "
        "record is dead-lettered with its record's partition, offset and index",
        choices=INPUT_FORMATS))  # fmt: skip
    prediction_format: str = field(
        default="event",
        metadata=_help(
            "event: one train-predictions record per event; batch: one record per mini-batch "
            "holding its predictions one per line (NDJSON); columns: one record per mini-batch "
            "as one JSON object of columns (operators/predictions.py)",
            choices=PREDICTION_FORMATS,
        ),
    )

    def __post_init__(self) -> None:
        _one_of(self, "input_format", INPUT_FORMATS)
        _one_of(self, "prediction_format", PREDICTION_FORMATS)

    @property
    def ndjson(self) -> bool:
        return self.input_format == "ndjson"

    @property
    def batched(self) -> bool:
        """Whether a record carries many events (``ndjson``, ``columns`` or ``arrow``)."""
        return self.input_format != "event"

    @property
    def columnar(self) -> bool:
        """Whether a record carries its events as columns (``columns`` or ``arrow``)."""
        return self.input_format in ("columns", "arrow")


@dataclass(frozen=True)
class Bounds:
    """When a run stops (none set: it runs until cancelled)."""

    max_events: int | None = field(default=None, metadata=_help(
        "stop after N events (serve: requests)", metavar="N", type=int))  # fmt: skip
    stop_offsets: dict | None = None  # partition -> end offset (--stop-at-offsets)
    timeout_s: float | None = field(default=None, metadata=_help(
        "give up after S seconds", flag="--timeout", metavar="S", type=float))  # fmt: skip
    updates_from: int | None = None  # the updates topic offset a new run starts reading at

    def __post_init__(self) -> None:
        _at_least(self, ("max_events",), 1)

    @property
    def bounded(self) -> bool:
        return self.max_events is not None or self.stop_offsets is not None


@dataclass(frozen=True)
class ServingSettings:
    """How the serve job answers: the model's size, its replicas, requests that wait."""

    bits: int = field(default=20, metadata=_help("the model's --hash-bits", flag="--hash-bits"))
    replicas: int = field(default=1, metadata=_help("serving keys per task"))
    max_pending: int = field(default=10_000, metadata=_help(
        "requests a replica holds while no model is known; more go to dead-letters",
        metavar="N"))  # fmt: skip
    max_wait_ms: int = MAX_WAIT_MS  # a request waiting this long for a model (--max-wait S)
    max_request_age_ms: int = MAX_REQUEST_AGE_MS  # older ts: no latency (--max-request-age S)
    clip: float | None = DEFAULT_CLIP  # as the training run's --clip-features
    tasks: tuple | None = None  # the tasks it may serve (--tasks; None: any)
    max_tasks: int = DEFAULT_MAX_TASKS  # at most this many of them (--max-tasks)
    follow_run: str | None = field(default=None, metadata=_help(
        "serve this training run only", metavar="RUN", type=str))  # fmt: skip
    trace: bool = field(
        default=False,
        metadata=_help(
            "predictions carry when their batch was parsed and scored (where latency goes)"
        ),
    )

    def __post_init__(self) -> None:
        check_bits(self.bits)
        _at_least(self, ("replicas", "max_pending", "max_tasks"), 1)
        _at_least(self, ("clip",), 0)
        if self.max_request_age_ms < 1 or self.max_wait_ms < 1:
            raise ConfigError("--max-request-age and --max-wait must be > 0 s")

    @property
    def dim(self) -> int:
        return dimension(self.bits)

    def task_gate(self) -> TaskGate:
        return TaskGate.of(self.tasks, self.max_tasks)


@dataclass(frozen=True)
class ServeTopics:
    """Where the serve job reads and writes."""

    requests: str = field(default="requests", metadata=_help(None, flag="--requests-topic"))
    updates: str = field(default="model-updates", metadata=_help(None, flag="--updates-topic"))
    predictions: str = field(default="predictions",
                             metadata=_help(None, flag="--predictions-topic"))  # fmt: skip
    dead_letters: str = field(default="dead-letters",
                              metadata=_help(None, flag="--dead-letter-topic"))  # fmt: skip
