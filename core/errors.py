"""One exception type for every problem a user can fix; its message says what to do."""


class InspectorError(Exception):
    """A refused operation, with a message meant for the operator or engineer."""


class TrainingCancelled(InspectorError):
    """The engineer stopped a training run; nothing was written."""
