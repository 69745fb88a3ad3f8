"""One exception type for every problem a user can fix; its message says what to do."""


class InspectorError(Exception):
    """A refused operation, with a message meant for the operator or engineer."""


class TrainingCancelled(InspectorError):
    """The engineer stopped a training run; nothing was written."""


QUOTE_LIMIT = 200


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """A value as a message quotes it, cut to ``limit`` characters: a hostile file must not turn
    one error line into megabytes."""
    text = value if isinstance(value, str) else repr(value)
    return f"'{text}'" if len(text) <= limit else f"'{text[:limit]}...' ({len(text)} characters)"
