"""The committed generated protobuf modules must match their .proto sources."""
import pathlib

from engine.proto import generate


def test_generated_modules_are_fresh(tmp_path: pathlib.Path) -> None:
    generate.generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "engine" / "proto").glob("*_pb2*.py")}
    committed = {p.name: p.read_bytes() for p in generate.HERE.glob("*_pb2*.py")}
    assert fresh, "protoc produced nothing"
    stale = sorted(n for n in fresh if committed.get(n) != fresh[n])
    extra = sorted(set(committed) - set(fresh))
    assert not stale and not extra, (
        f"stale: {stale}, without a .proto: {extra}; run `python -m engine.proto.generate`"
    )
