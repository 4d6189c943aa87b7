"""``conun ledger`` end to end on digits: init, request, apply, status, verify, and its errors."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from conun.cli import main
from conun.workflows.training import TrainedModel


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_ledger_commands_end_to_end(tmp_path: Path, digits_run: tuple[Path, TrainedModel]) -> None:
    ledger = str(tmp_path / "ledger")
    code, output = invoke("ledger", "init", ledger, "--checkpoint", str(digits_run[0]))
    assert code == 0 and "version 0" in output, output

    code, output = invoke("ledger", "request", ledger, "--forget-class", "5", "--reference", "T-9")
    assert (code, output.strip()) == (0, "1")
    held_out = set(digits_run[1].meta.validation)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(str(i) for i in range(300, 340) if i not in held_out))
    code, output = invoke("ledger", "request", ledger, "--forget-ids", str(ids_file))
    assert (code, output.strip()) == (0, "2")
    code, output = invoke("ledger", "request", ledger, "--forget-ids", str(ids_file))
    assert code == 2 and "already requested: request 2" in output

    code, output = invoke("ledger", "apply", ledger, "--quiet", "--set", "seed=1")
    assert code == 0, output
    assert "version 1 (from 0) honours requests 1" in output
    assert "version 2 (from 1) honours requests 2" in output

    code, output = invoke("ledger", "status", ledger)
    assert code == 0 and "T-9" in output and output.count("applied") == 2

    code, output = invoke("ledger", "verify", ledger, "--version", "2")
    assert code == 0 and "verifies" in output, output

    checkpoint = Path(ledger) / "versions/1/checkpoint.safetensors"
    data = bytearray(checkpoint.read_bytes())
    data[-10] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    code, output = invoke("ledger", "verify", ledger, "--hashes-only")
    assert code == 1
    assert f"FAILED: {checkpoint}" in output and "does not verify" in output


def test_ledger_errors_are_one_line(tmp_path: Path) -> None:
    code, output = invoke("ledger", "status", str(tmp_path / "nowhere"))
    assert code == 2 and "no ledger at" in output
    assert not (tmp_path / "nowhere").exists()
    code, output = invoke("ledger", "init", str(tmp_path / "l"), "--checkpoint", str(tmp_path))
    assert code == 2 and "no checkpoint at" in output
    code, output = invoke("--help")
    assert "ledger" in output
