"""The command line: help, config errors, time parsing, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trafficguard.cli import EXIT_OK, EXIT_USAGE, main, parse_time_ns

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_commands_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for word in ("replay", "query", "check-config", "exit status", "--config"):
        assert word in out


def test_replay_help_documents_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    out = capsys.readouterr().out
    for opt in (
        "--fast",
        "--speed",
        "--store",
        "--jsonl",
        "--metrics",
        "--keep-serving",
        "byte offset",
    ):
        assert opt in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert "usage:" in capsys.readouterr().out


def test_check_config_accepts_shipped_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "config" / "trafficguard.yaml")]) == EXIT_OK
    assert "configuration is valid" in capsys.readouterr().out


def test_check_config_names_key_path_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "flow:\n  idle_timeout_s:\n    tcp: -5\n  max_flowz: 10\nmetrics:\n  listen: nope\n"
    )
    assert main(["check-config", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "$.flow.idle_timeout_s.tcp" in err and "greater than 0" in err
    assert "$.flow.max_flowz: unknown key" in err
    assert "$.metrics.listen" in err


def test_check_config_reports_yaml_syntax_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("flow:\n  max_flows: [1, 2\n")
    assert main(["check-config", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid YAML" in err and "line" in err


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_replay_rejects_bad_config_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: {sqlite: {synchronous: sometimes}}\n")
    code = main(["--config", str(bad), "replay", "--no-metrics", str(tmp_path / "x.pcap")])
    assert code == EXIT_USAGE
    assert "$.store.sqlite.synchronous" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        ("1763888400", 1763888400 * 10**9),
        ("1763888400.5", 1763888400_500_000_000),
        ("2025-11-23T09:00:00Z", 1763888400 * 10**9),
        ("2025-11-23T09:00:00", 1763888400 * 10**9),
        ("15m", (1763888400 - 900) * 10**9),
        ("2h", (1763888400 - 7200) * 10**9),
    ],
)
def test_parse_time(text: str, expected_ns: int) -> None:
    assert parse_time_ns(text, now=1763888400.0) == expected_ns


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time_ns("yesterday-ish")


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trafficguard", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert proc.stdout.startswith("trafficguard ")
