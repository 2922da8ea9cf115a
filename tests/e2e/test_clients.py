"""The README's "Clients" examples, run as written against the test mesh:
curl through Envoy, grpcurl by reflection, a Node.js gRPC client, a
gRPC-Web call and the Postman collection's purchase, by newman. The README
quotes each file verbatim (checked here too)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.mail_sink import MailSink
from scripts.mesh import REPO, Mesh, free_port
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.support import start_second_edge

CLIENTS = [
    "clients/curl/purchase.sh",
    "clients/curl/account-recovery.sh",
    "clients/go/main.go",
    "clients/ts/purchase.test.ts",
    "clients/curl/organizer.sh",
    "clients/web/app.ts",
    "clients/grpcurl/purchase.sh",
    "clients/node/purchase.test.mjs",
    "clients/grpc-web/list-events.mjs",
    "clients/postman/purchase.mjs",
]


def run(mesh: Mesh, *argv: str, **extra: str) -> str:
    env = {
        **os.environ,
        "EDGE": f"http://127.0.0.1:{mesh.env['EDGE_PORT']}",
        "AUTH": mesh.addr("auth"),
        "EVENT": mesh.addr("event").split(",")[0],
        "BOOKING": mesh.addr("booking").split(",")[0],
        "AUTH_ADDR": mesh.target("auth"),
        "EVENT_ADDR": mesh.target("event"),
        "BOOKING_ADDR": mesh.target("booking"),
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "TLS_DIR": str(mesh.tls_dir),
        "GRPCURL": shutil.which("grpcurl") or str(REPO / ".venv" / "bin" / "grpcurl"),
        **extra,
    }
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_curl_purchase(mesh: Mesh) -> None:
    lines = run(mesh, "bash", "clients/curl/purchase.sh").splitlines()
    assert lines[1:] == [
        '["vip-1-1","vip-1-2","vip-1-3"]',
        '{"state":"BOOKING_STATE_CONFIRMED","total":{"currency_code":"USD","amount_minor":"20000"}}',
        '["vip-1-4","standard-3-10"]',
        '{"state":"PAYMENT_STATE_SUCCEEDED","card_brand":"visa","card_last4":"4242"}',
        "application/pdf",
        '{"seat_id":"vip-1-4"}',
        '"ALREADY_CHECKED_IN"',
        '{"state":"BOOKING_STATE_CANCELLED"}',
        '{"seats":["vip-1-1","vip-1-2"],"total":{"currency_code":"USD","amount_minor":"30000"},'
        '"placement":"PLACEMENT_ADJACENT","renewals_left":2}',
        '{"renewals_left":1}',
        '{"state":"BOOKING_STATE_CONFIRMED","seats":["vip-1-1","vip-1-2"]}',
    ]


def test_curl_organizer_lifecycle(mesh: Mesh) -> None:
    lines = run(mesh, "bash", "clients/curl/organizer.sh").splitlines()
    assert lines == [
        '{"role":"ROLE_ORGANIZER"}',
        '{"state":"EVENT_STATE_DRAFT","etag":"\\"1\\""}',
        "404",
        '{"title":"Summer festival","etag":"\\"2\\"","price":"4500"}',
        '["ETAG_MISMATCH"]',
        '{"state":"EVENT_STATE_PUBLISHED"}',
        '["Summer festival"]',
        '{"state":"BOOKING_STATE_CONFIRMED","total":"4500"}',
        '{"state":"EVENT_STATE_CANCELLED","reason":"Storm warning"}',
        '{"bookings_total":1,"bookings_refunded":1}',
        '{"state":"BOOKING_STATE_CANCELLED"}',
    ]


def test_curl_account_recovery(mesh: Mesh, mail_sink: MailSink) -> None:
    lines = run(mesh, "bash", "clients/curl/account-recovery.sh", MAIL_DIR=str(mail_sink.directory))
    assert lines.splitlines() == [
        '{"email_verified":false}',
        '{"email_verified":true}',
        "{}",
        "{}",
        '{"code":16,"reason":"INVALID_REFRESH_TOKEN"}',
        '{"token_type":"Bearer"}',
        "{}",
        '{"code":16,"reason":"INVALID_CREDENTIALS"}',
    ]


def test_grpcurl_purchase(mesh: Mesh) -> None:
    assert run(mesh, "bash", "clients/grpcurl/purchase.sh").strip() == (
        '{"state":"BOOKING_STATE_CONFIRMED","total":{"currency_code":"USD","amount_minor":"15000"}}'
    )


def test_node_grpc_client(mesh: Mesh) -> None:
    out = run(mesh, "node", "--test", "clients/node/purchase.test.mjs")
    assert "# pass 1" in out and "# fail 0" in out


def go_env() -> dict[str, str]:
    """Go in GOPATH mode, offline: the stubs of gen/go as ticketing.local/gen/go
    (the link `make stubs` puts in var/gopath) and grpc, protobuf and genproto
    from Debian's packages in /usr/share/gocode."""
    return {
        "GO111MODULE": "off",
        "GOPATH": f"{REPO / 'var' / 'gopath'}{os.pathsep}/usr/share/gocode",
        "GOFLAGS": "",
        "GOPROXY": "off",
    }


def test_go_client(mesh: Mesh, tmp_path: Path) -> None:
    """The Go client built from gen/go against Debian's grpc: the purchase,
    and two refusals read to their ErrorInfo reason, one from the booking
    service, one from Envoy's jwt_authn (no token)."""
    binary = tmp_path / "purchase-go"
    run(mesh, "go", "build", "-o", str(binary), "./clients/go", **go_env())
    lines = run(mesh, str(binary), EDGE=f"127.0.0.1:{mesh.env['EDGE_PORT']}").splitlines()
    assert lines == [
        "BOOKING_STATE_CONFIRMED 30000 USD",
        "2 seats: vip-1-1 vip-1-2",
        "refused: Aborted SEAT_UNAVAILABLE",
        "BOOKING_STATE_CANCELLED",
        "refused: Unauthenticated UNAUTHENTICATED",
    ]


def test_typescript_client_over_grpc_and_grpc_web(mesh: Mesh, tmp_path: Path) -> None:
    """The Connect-ES client on gen/ts, type-checked by tsc, bundled by esbuild,
    run by node's test runner: the purchase over gRPC, then over gRPC-Web."""
    bin_ = REPO / "node_modules" / ".bin"
    run(mesh, str(bin_ / "tsc"), "--noEmit", "-p", "clients/ts")
    bundle = tmp_path / "purchase.test.mjs"
    run(
        mesh,
        str(bin_ / "esbuild"),
        "clients/ts/purchase.test.ts",
        "--bundle",
        "--platform=node",
        "--format=esm",
        "--packages=external",
        "--log-level=warning",
        f"--outfile={bundle}",
    )
    # Bundled beside the repository's node_modules, so the packages resolve.
    placed = REPO / "var" / "ts" / f"purchase-{os.getpid()}.test.mjs"
    placed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(bundle, placed)
    try:
        out = run(mesh, "node", "--test", str(placed))
    finally:
        placed.unlink()
    assert "# pass 2" in out and "# fail 0" in out, out


@pytest.fixture
def page_origin(tmp_path: Path) -> Iterator[str]:
    """clients/web, its script bundled by esbuild from the gen/ts stubs, served
    by a static file server of its own: another origin than any Envoy's."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(REPO / "clients" / "web" / "index.html", site)
    esbuild = REPO / "node_modules" / ".bin" / "esbuild"
    subprocess.run(
        [
            str(esbuild),
            "clients/web/app.ts",
            "--bundle",
            "--format=esm",
            "--log-level=warning",
            f"--outfile={site / 'app.js'}",
        ],
        cwd=REPO,
        check=True,
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_browser_page_over_grpc_web(mesh: Mesh, page_origin: str) -> None:
    """clients/web in headless Chromium (playwright-core), against an Envoy
    whose CORS allows the page's origin: the events, a seat map, a booking,
    and two refusals' reasons read through the headers CORS exposes."""
    run(mesh, str(REPO / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", "clients/web")
    web_edge = start_second_edge(mesh, "envoy-web", CORS_ALLOWED_ORIGINS=page_origin)
    try:
        out = run(
            mesh,
            "node",
            "--test",
            "clients/web/browser.test.mjs",
            EDGE=web_edge.base_url,
            PAGE=f"{page_origin}/",
        )
    finally:
        mesh.stop("envoy-web")
    assert "# pass 1" in out and "# fail 0" in out, out


def test_grpc_web_call(mesh: Mesh) -> None:
    assert run(mesh, "node", "clients/grpc-web/list-events.mjs").startswith("[{")


def test_newman_runs_the_postman_purchase(mesh: Mesh, tmp_path: Path) -> None:
    """The collection generated from /openapi.json, its Purchase folder run by
    newman with the environment file, pointed at the test mesh."""
    report = tmp_path / "newman.json"
    out = run(
        mesh,
        str(REPO / "node_modules" / ".bin" / "newman"),
        "run",
        "gen/postman/ticketing.postman_collection.json",
        "--environment",
        "clients/postman/ticketing.postman_environment.json",
        "--folder",
        "Purchase",
        "--env-var",
        f"baseUrl=http://127.0.0.1:{mesh.env['EDGE_PORT']}",
        "--env-var",
        f"admin_email={ADMIN_EMAIL}",
        "--env-var",
        f"admin_password={ADMIN_PASSWORD}",
        "--bail",
        "--color",
        "off",
        "--reporters",
        "cli,json",
        "--reporter-json-export",
        str(report),
    )
    stats = json.loads(report.read_text())["run"]["stats"]
    assert (stats["requests"]["total"], stats["requests"]["failed"]) == (10, 0), out
    # One or more checks a step, and none failed.
    assert stats["assertions"]["total"] >= 10 and stats["assertions"]["failed"] == 0, out


@pytest.mark.parametrize("client", CLIENTS)
def test_the_readme_quotes_the_client_as_tested(client: str) -> None:
    readme = (REPO / "README.md").read_text()
    body = (REPO / client).read_text()
    assert body.strip() in readme, f"README's copy of {client} is out of date"
