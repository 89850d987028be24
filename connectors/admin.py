"""Topic administration and small kafka-python helpers for tools and tests.

Consumers here use ``assign()``, never group subscription: the embedded broker's group
membership never completes (JoinGroup answers MEMBER_ID_REQUIRED and the rejoin hangs), and
tools that read a topic end to end need no group anyway.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from connectors.config import KafkaConfig
from connectors.errors import KafkaUnavailable, StreamshardError


def _unreachable(cfg: KafkaConfig, exc: Exception) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {cfg.bootstrap_servers} ({type(exc).__name__}); is a broker "
        "running? start one with `streamshard broker start` or pass --bootstrap-servers"
    )


def check_reachable(cfg: KafkaConfig, timeout: float = 3.0) -> None:
    """Fail fast, in seconds rather than the client's 30 s bootstrap timeout, when no
    bootstrap server accepts a TCP connection."""
    last: Exception | None = None
    for server in cfg.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        except (OSError, ValueError) as exc:
            last = exc
            continue
        with sock:
            if cfg.uses_tls:
                _check_tls(sock, server.strip(), cfg, timeout)
        return
    raise _unreachable(cfg, last or OSError("no bootstrap servers"))


def _check_tls(sock: socket.socket, server: str, cfg: KafkaConfig, timeout: float) -> None:
    """With ``security.protocol`` SSL or SASL_SSL, the server must answer a TLS handshake:
    a client speaking TLS to a plaintext listener otherwise waits for minutes with no word.
    Only the protocol is probed here (no certificate check); the clients verify certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock.settimeout(timeout)
    try:
        context.wrap_socket(sock, server_hostname=server.rpartition(":")[0]).close()
    except (OSError, ssl.SSLError) as exc:
        protocol = cfg.properties.get("security.protocol")
        raise KafkaUnavailable(
            f"no TLS handshake with {server} within {timeout:.0f}s ({type(exc).__name__}): "
            f"security.protocol={protocol}, but the listener there looks like PLAINTEXT; "
            "check the port or the protocol"
        ) from None


@contextmanager
def admin_client(cfg: KafkaConfig) -> Iterator[KafkaAdminClient]:
    check_reachable(cfg)
    try:
        client = KafkaAdminClient(**cfg.kafka_python_kwargs(), request_timeout_ms=10000)
    except (KafkaError, OSError) as exc:
        raise _unreachable(cfg, exc) from exc
    try:
        yield client
    finally:
        client.close()


def create_topics(cfg: KafkaConfig, names: Iterable[str], partitions: int = 1) -> list[str]:
    """Create topics that do not exist yet; return the names created (idempotent)."""
    if partitions < 1:
        raise StreamshardError(f"partitions must be >= 1, got {partitions}")
    created = []
    with admin_client(cfg) as admin:
        existing = set(admin.list_topics())
        for name in dict.fromkeys(names):
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    return created


def list_topics(cfg: KafkaConfig) -> list[str]:
    with admin_client(cfg) as admin:
        return sorted(t for t in admin.list_topics() if not t.startswith("__"))


def delete_topics(cfg: KafkaConfig, names: Iterable[str]) -> list[str]:
    with admin_client(cfg) as admin:
        doomed = [n for n in names if n in set(admin.list_topics())]
        if doomed:
            admin.delete_topics(doomed)
    return doomed


def producer(cfg: KafkaConfig, **overrides) -> KafkaProducer:
    check_reachable(cfg)
    try:
        return KafkaProducer(**cfg.kafka_python_kwargs(), **overrides)
    except (KafkaError, OSError) as exc:
        raise _unreachable(cfg, exc) from exc


def produce(
    cfg: KafkaConfig, topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> dict[int, int]:
    """Send (key, value) records, wait for every ack; return the end offset of each partition.

    The end offsets come from the acks, not from ListOffsets, which the embedded broker answers
    wrongly for "latest" (so they can bound a Flink source exactly).
    """
    prod = producer(cfg, acks="all", linger_ms=5)
    try:
        futures = [prod.send(topic, key=key, value=value) for key, value in records]
        prod.flush()
        ends: dict[int, int] = {}
        for future in futures:
            meta = future.get(timeout=30)
            ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
        return ends
    finally:
        prod.close()


def consumer(cfg: KafkaConfig, topic: str, committed_only: bool = True) -> KafkaConsumer:
    """A group-less consumer assigned to every partition of ``topic``, from the beginning."""
    check_reachable(cfg)
    try:
        cons = KafkaConsumer(
            **cfg.kafka_python_kwargs(),
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed" if committed_only else "read_uncommitted",
        )
    except (KafkaError, OSError) as exc:
        raise _unreachable(cfg, exc) from exc
    parts = cons.partitions_for_topic(topic)
    if not parts:
        cons.close()
        raise StreamshardError(f"topic {topic!r} does not exist at {cfg.bootstrap_servers}")
    cons.assign([TopicPartition(topic, p) for p in sorted(parts)])
    cons.seek_to_beginning()
    return cons


class FastReader:
    """A group-less ``read_committed`` reader of every partition of ``topic`` from the
    beginning, on librdkafka (confluent-kafka). kafka-python decodes each record in Python,
    tens of µs per record, which a job's driver watching the job's output pays for every
    output record on the cores the job runs on.

    ``poll(timeout_s)`` returns the values read (at most 10,000)."""

    def __init__(self, cfg: KafkaConfig, topic: str, fetch_max_wait_ms: int = 100):
        # an idle fetch waits fetch_max_wait_ms: the embedded broker always waits that long
        # (connectors.flink_kafka.LATENCY_FETCH_MAX_WAIT_MS)
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException
        from confluent_kafka import TopicPartition as Partition

        check_reachable(cfg)
        conf = {**cfg.librdkafka_config(), "group.id": "streamshard-reader",
                "enable.auto.commit": False, "isolation.level": "read_committed",
                "fetch.wait.max.ms": fetch_max_wait_ms}  # fmt: skip
        self.cons = Consumer(conf)
        try:
            meta = self.cons.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException as exc:
            self.cons.close()
            raise _unreachable(cfg, exc) from exc
        if meta is None or meta.error is not None or not meta.partitions:
            self.cons.close()
            raise StreamshardError(f"topic {topic!r} does not exist at {cfg.bootstrap_servers}")
        self.cons.assign([Partition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)])

    def poll(self, timeout_s: float) -> list[bytes]:
        return [m.value() for m in self.cons.consume(10_000, timeout_s) if m.error() is None]

    def close(self) -> None:
        self.cons.close()


def read_records(
    cfg: KafkaConfig,
    topic: str,
    count: int | None = None,
    timeout: float = 30.0,
    idle: float | None = None,
    committed_only: bool = True,
) -> list:
    """Read ``topic`` from the beginning until ``count`` records, ``timeout`` seconds, or
    ``idle`` seconds without a new record; returns kafka-python ``ConsumerRecord``s.

    Tests pass the count they expect and judge the result: "latest" offsets cannot be
    trusted on the embedded broker, so a read ends on what arrived, not on end offsets.
    """
    cons = consumer(cfg, topic, committed_only)
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while count is None or len(out) < count:
            now = time.monotonic()
            if now > deadline or (idle is not None and now - last > idle):
                break
            for batch in cons.poll(timeout_ms=200).values():
                out.extend(batch)
                last = time.monotonic()
    finally:
        cons.close()
    return out


def end_offset_at_most(cfg: KafkaConfig, topic: str, partition: int = 0) -> int:
    """The end offset of one partition as ListOffsets "latest" reports it: exact on Kafka, and
    on the embedded broker sometimes lower than the truth, never higher, so a reader that
    starts there misses nothing written after this call."""
    tp = TopicPartition(topic, partition)
    cons = consumer(cfg, topic, committed_only=False)
    try:
        return int(cons.end_offsets([tp])[tp])
    finally:
        cons.close()


def bounds(
    cfg: KafkaConfig, topic: str, stop_offsets: dict | None, max_events: int | None
) -> tuple[dict[int, int] | None, int | None]:
    """End offsets per partition of ``topic`` and the number of records they hold for a
    bounded run (``None, None``: unbounded).

    ``max_events`` N on a one-partition topic is offsets [earliest, earliest + N); on several
    partitions the first N records read decide. Never "latest" offsets: the embedded broker
    answers ListOffsets "latest" wrongly.
    """
    if stop_offsets is None and max_events is None:
        return None, None
    cons = consumer(cfg, topic, committed_only=False)
    try:
        parts = sorted(tp.partition for tp in cons.assignment())
        begin = cons.beginning_offsets([TopicPartition(topic, p) for p in parts])
        start = {tp.partition: off for tp, off in begin.items()}
        if stop_offsets is not None:
            ends = {p: stop_offsets.get(p, start[p]) for p in parts}
        elif len(parts) == 1:
            ends = {parts[0]: start[parts[0]] + max_events}
        else:
            ends = dict(start)
            seen, idle_since = 0, time.monotonic()
            while seen < max_events and time.monotonic() - idle_since < 5:
                for tp, records in cons.poll(timeout_ms=200).items():
                    for record in records[: max_events - seen]:
                        ends[tp.partition] = record.offset + 1
                        seen += 1
                    idle_since = time.monotonic()
    finally:
        cons.close()
    return ends, sum(ends[p] - start.get(p, 0) for p in ends)
