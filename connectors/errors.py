"""The project's one exception root and its children.

Every error a user can cause (a bad flag, an unreachable broker, a malformed record)
is a :class:`StreamshardError`; the CLI prints its message on one line and exits 2.
"""


class StreamshardError(Exception):
    """Root of every error raised on purpose by streamshard."""


class ConfigError(StreamshardError, ValueError):
    """A flag, environment variable, properties file or setting holds a value we cannot use.
    The pure core raises it too (a ``ValueError`` as well, for code that expects one), so no
    caller translates errors by hand."""


class BrokerError(StreamshardError):
    """The embedded broker could not be started, reached or stopped."""


class KafkaUnavailable(StreamshardError):
    """No Kafka broker answered at the configured bootstrap servers."""


class DecodeError(StreamshardError):
    """A record could not be decoded; ``reason`` is what goes to ``dead-letters``.

    Parameters
    ----------
    reason
        One line saying what was expected and what arrived.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
