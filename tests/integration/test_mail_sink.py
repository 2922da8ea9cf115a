"""The development SMTP sink `make up` runs writes each email to a file as it
arrives and keeps nothing in memory: a flood of mail leaves its size flat."""

from __future__ import annotations

import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

from scripts.mesh import PYTHON, REPO, free_port, port_open
from tests.support import wait_for

BODY = "x" * 16_000  # a ticket email with its QR code is about this big


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def send(port: int, count: int, first: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        for n in range(first, first + count):
            message = EmailMessage()
            message["From"] = "tickets@example.com"
            message["To"] = f"buyer-{n}@example.com"
            message["Subject"] = f"Your tickets #{n}"
            message.set_content(BODY)
            smtp.send_message(message)


def test_the_sink_streams_emails_to_files_in_constant_memory(tmp_path: Path) -> None:
    port = free_port()
    sink = subprocess.Popen(
        [
            PYTHON,
            str(REPO / "scripts" / "mail_sink.py"),
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: port_open(port), "the SMTP sink", 10)
        send(port, 200, 0)  # warmed up: its buffers and imports are in place
        before = rss_mb(sink.pid)
        send(port, 800, 200)  # 13 MB of mail
        after = rss_mb(sink.pid)
        files = sorted(tmp_path.glob("*.eml"))
        assert len(files) == 1000
        assert "Subject: Your tickets #999" in files[-1].read_text()
        assert after - before < 5, f"the sink grew from {before:.1f} to {after:.1f} MB"
    finally:
        sink.terminate()
        sink.wait(10)
