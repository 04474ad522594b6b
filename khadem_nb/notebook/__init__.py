"""The notebook layer: cell-defined jobs, in-kernel workers, handles, DataFrames, the panel."""

from ..runtime.context import progress
from .functions import JobFunction
from .handles import JobGroup, JobHandle
from .queue import Queue
from .workflows import chain

__all__ = ["JobFunction", "JobGroup", "JobHandle", "Queue", "chain", "progress"]
