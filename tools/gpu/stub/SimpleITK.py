"""Stand-in for SimpleITK on a lent GPU machine, where its 53 MB wheel does not fit the transfer beside the data.

Training from packed data sets (tools/gpu/pack.py) never calls SimpleITK; the modules only import it. Any use
of it here fails with the message below instead of an error far from the cause."""

MESSAGE = "SimpleITK is not installed here (tools/gpu/stub stands in for it): read packed data sets only"


class _AbsentType(type):
    def __getattr__(cls, name: str):
        raise ImportError(MESSAGE)


class _Absent(metaclass=_AbsentType):
    def __init__(self, *args, **kwargs):
        raise ImportError(MESSAGE)


def __getattr__(name: str):
    return _Absent
