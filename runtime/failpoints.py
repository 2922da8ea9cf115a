"""Named crash points for tests: FAILPOINTS=name[,name] makes the process die
at once (as kill -9 would) when it reaches one. Unset in production."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def crash_if_armed(name: str) -> None:
    if name in os.environ.get("FAILPOINTS", "").split(","):
        log.error("failpoint %s: crashing", name)
        os._exit(86)
