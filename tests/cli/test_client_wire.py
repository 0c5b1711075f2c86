"""$RAFTNODE_CLIENT_WIRE picks the client port's gRPC server; a typo is a flag error."""
import pytest

from engine.cli import main as cli_main
from engine.cli.flags import FlagError


@pytest.mark.parametrize("value, wire", [(None, "h2"), ("", "h2"), ("grpc", "grpc"), (" H2 ", "h2"), ("h2", "h2")])
def test_client_wire_values(monkeypatch, value, wire):
    if value is None:
        monkeypatch.delenv(cli_main.CLIENT_WIRE_ENV, raising=False)
    else:
        monkeypatch.setenv(cli_main.CLIENT_WIRE_ENV, value)
    assert cli_main.client_wire() == wire


def test_a_bad_client_wire_stops_raftnode_before_it_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(cli_main.CLIENT_WIRE_ENV, "http3")
    with pytest.raises(FlagError, match="http3"):
        cli_main.client_wire()
    code = cli_main.run_member(["--name", "n1", "--data-dir", str(tmp_path / "d")])
    assert code == 2
    assert "RAFTNODE_CLIENT_WIRE must be one of h2, grpc, not 'http3'" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()   # refused before the data dir was made
