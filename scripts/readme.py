"""Writes README.md from docs/README.template.md, quoting the client examples
and the latest benchmark table verbatim, so the README shows what the tests
and `make bench` ran.   python scripts/readme.py"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bench_section() -> str:
    latest = REPO / "bench" / "latest.md"
    return latest.read_text().strip() if latest.exists() else ""


def main() -> None:
    text = (REPO / "docs" / "README.template.md").read_text()
    text = re.sub(r"@@(clients/[^@]+)@@", lambda m: (REPO / m.group(1)).read_text().strip(), text)
    text = text.replace("@@BENCH@@", bench_section())
    (REPO / "README.md").write_text(text.rstrip() + "\n")


if __name__ == "__main__":
    main()
