"""A job module only some worker processes import (the fleet tests): ``Train``."""

from __future__ import annotations

from typing import ClassVar

from kinds_common import LoggedRun

from khadem_nb import QueueJob


class Train(LoggedRun, QueueJob):
    word: ClassVar[str] = "train"
