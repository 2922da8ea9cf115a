"""Client stubs: every contract carries each language's file options, and plain
protoc (grpcio-tools' copy) with the same plugins writes exactly what `make
stubs` (buf, with buf.gen.go.yaml and buf.gen.ts.yaml) wrote to gen/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

from scripts.mesh import REPO

CONTRACTS = sorted((REPO / "protos").glob("ticketing/*/v1/*.proto"))


def descriptors() -> list[descriptor_pb2.FileDescriptorProto]:
    files = descriptor_pb2.FileDescriptorSet.FromString(
        (REPO / "gen" / "descriptors.binpb").read_bytes()
    ).file
    return [f for f in files if f.name.startswith("ticketing/")]


def test_every_contract_names_its_package_in_each_language() -> None:
    found = descriptors()
    assert len(found) == len(CONTRACTS)
    for file in found:
        service, version = file.package.split(".")[1:]
        options = file.options
        title = service.capitalize()
        assert options.go_package == (
            f"ticketing.local/gen/go/ticketing/{service}/{version};{service}{version}"
        ), file.name
        assert options.java_package == f"local.ticketing.{service}.{version}", file.name
        assert options.java_multiple_files, file.name
        assert options.java_outer_classname.endswith("Proto"), file.name
        assert options.csharp_namespace == f"Ticketing.{title}.V1", file.name
        assert options.php_namespace == f"Ticketing\\{title}\\V1", file.name
        assert options.ruby_package == f"Ticketing::{title}::V1", file.name


def protoc(tmp: Path, *args: str, files: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iprotos", *args, *files],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


# What may differ: Go's header names the protoc version, and the embedded file
# descriptor (Go's byte literal, protobuf-es' base64 string) is serialized by
# buf and by protoc with the options in another order.
VARYING = re.compile(r'^// \tprotoc +.*$|^\t(0x[0-9a-f]{2}, ?)+$|fileDesc\("[^"]*"', re.M)


def same_tree(made: Path, generated: Path) -> None:
    """The same files with the same code."""
    names = sorted(p.relative_to(made) for p in made.rglob("*") if p.is_file())
    assert names
    assert names == sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    for name in names:
        ours, theirs = ((root / name).read_text() for root in (made, generated))
        assert VARYING.sub("", ours) == VARYING.sub("", theirs), name


def test_plain_protoc_writes_the_go_stubs(tmp_path: Path) -> None:
    files = [str(p.relative_to(REPO / "protos")) for p in CONTRACTS]
    protoc(
        tmp_path,
        f"--go_out={tmp_path}",
        "--go_opt=paths=source_relative",
        f"--go-grpc_out={tmp_path}",
        "--go-grpc_opt=paths=source_relative",
        files=files,
    )
    same_tree(tmp_path, REPO / "gen" / "go")


def test_plain_protoc_writes_the_typescript_stubs(tmp_path: Path) -> None:
    files = sorted(str(p.relative_to(REPO / "protos")) for p in (REPO / "protos").rglob("*.proto"))
    protoc(
        tmp_path,
        f"--plugin={REPO / 'node_modules' / '.bin' / 'protoc-gen-es'}",
        f"--es_out={tmp_path}",
        "--es_opt=target=ts,import_extension=js",
        files=files,
    )
    same_tree(tmp_path, REPO / "gen" / "ts")
