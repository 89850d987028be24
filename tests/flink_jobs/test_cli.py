"""The command line's contract: help for everything, one-line errors, exit status 2."""

from pathlib import Path

import pytest

from flink_jobs.cli import build_parser
from tests.cli_helpers import streamshard

COMMANDS = [
    "broker",
    "topics",
    "generate",
    "validate",
    "train",
    "snapshot",
    "export",
    "tail",
    "demo",
]


def test_top_level_help_lists_every_command_with_one_line():
    out = streamshard("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert any(line.strip().startswith(command + " ") for line in out.stdout.splitlines())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    # in-process: argparse exits 0 after printing help
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--events", "10", "--bogus"],
        ["generate", "--events", "many"],
        ["validate", "--parallelism", "x"],
        ["nosuchcommand"],
        ["tail"],
    ],
)
def test_bad_flags_give_one_line_and_status_2(args):
    out = streamshard(*args)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "--events", "-1"],
        ["generate", "--events", "5", "--malformed", "2"],
        ["validate", "--stop-at-offsets", "0:5"],
        ["validate", "--start", "yesterday"],
        ["train", "--ingest-window", "0"],
        ["train", "--max-in-flight", "0"],
    ],
)
def test_bad_values_give_one_line_and_status_2(args):
    out = streamshard(*args)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr


def test_submit_keeps_secrets_off_the_command_line(tmp_path):
    props = tmp_path / "k.properties"
    props.write_text('sasl.jaas.config=x password="s3cret";\n')
    out = streamshard(
        "submit", "validate", "--jobmanager", "127.0.0.1:1", "--",
        "--kafka-property", "sasl.jaas.config=x password=\"s3cret\";",
    )  # fmt: skip
    assert out.returncode == 2 and "--kafka-properties-file" in out.stderr, out.stderr
    assert "s3cret" not in out.stderr + out.stdout and "Traceback" not in out.stderr
    from flink_jobs.cluster import checked_job_args

    # a relative properties file is passed on by its absolute path
    args = checked_job_args(["--kafka-properties-file", "k.properties", "-n", "2"])
    assert args[1] == str((Path.cwd() / "k.properties").resolve()) and args[2:] == ["-n", "2"]
