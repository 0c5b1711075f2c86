"""Regenerate the *_pb2.py / *_pb2_grpc.py modules next to their .proto files.

Run from anywhere: ``python -m engine.proto.generate``. The generated files are
committed; tests/test_proto_fresh.py fails when they are stale.
"""
from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def proto_files() -> list[pathlib.Path]:
    return sorted(HERE.glob("*.proto"))


def generate(out_dir: pathlib.Path) -> None:
    """Write the generated modules for every .proto here into out_dir/engine/proto."""
    from grpc_tools import protoc
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    target = out_dir / "engine" / "proto"
    target.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p.relative_to(ROOT)) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(ROOT)
    sys.exit(0)
