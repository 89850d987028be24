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
        ["generate", "--requests", "5", "--malformed", "0.1"],
        ["serve", "--ingest-window", "0"],
        ["serve", "--max-request-age", "0"],
        ["serve", "--max-wait", "0"],
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


@pytest.mark.parametrize(
    "args, says",
    [
        (["--bogus"], "unrecognized option --bogus"),
        (["--debug", "--bogus", "tail"], "unrecognized option --bogus"),
        (["demo", "--events", "0"], "--events must be >= 1000"),
        (["demo", "--events", "-1"], "--events must be >= 1000"),
        (["demo", "--requests", "0"], "--requests must be >= 100"),
        (["cluster", "start", "--taskmanagers", "0"], "--taskmanagers must be >= 1"),
        (["cluster", "start", "--slots", "-1"], "--slots must be >= 1"),
        (["cluster", "start", "--rest-port", "70000"], "--rest-port must be a port"),
        (["export", "--model", "/nonexistent", "--out", "x.joblib"], "no such directory"),
        (["submit", "train", "--jobmanager", "127.0.0.1:1"], "no Flink REST API at"),
        (["submit", "train", "--jobmanager", "nohostport"], "--jobmanager must be HOST:PORT"),
        (["serve", "--hash-bits", "40"], "hash bits must be an integer in [1, 30], got 40"),
        (["topics", "list", "--kafka-property", "security.protocol=NOPE"],
         "security.protocol must be one of"),
    ],
)  # fmt: skip
def test_user_errors_name_their_cause_in_one_line(args, says, tmp_path):
    out = streamshard(*args, env={"STREAMSHARD_HOME": str(tmp_path / "home")}, timeout=60)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert says in out.stderr and "Traceback" not in out.stderr
    # nothing was started: no broker, no cluster
    assert not (tmp_path / "home" / "broker.json").exists()
    assert not list((tmp_path / "home").glob("cluster/pid/*.pid"))


def test_export_to_a_missing_folder_is_one_line(tmp_path):
    import numpy as np

    from operators.snapshot import Snapshot, save

    model = save(Snapshot("ctr", 4, 1, np.zeros(2**4 + 1)), tmp_path)
    out = streamshard("export", "--model", str(model), "--out", str(tmp_path / "no" / "x.joblib"))
    assert out.returncode == 2 and "no such directory" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_debug_is_accepted_after_the_command():
    out = streamshard("export", "--model", "/nonexistent", "--out", "x", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr  # --debug shows the traceback


def test_cluster_stop_without_a_cluster_says_so(tmp_path):
    out = streamshard("cluster", "stop", env={"STREAMSHARD_HOME": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == "no cluster was running", out


@pytest.mark.parametrize(
    "command, shown",
    [("train", ["--batch-size BATCH_SIZE", "(default 1000)", "--shards SHARDS", "(default 4)"]),
     ("generate", ["--seed SEED", "(default 42)"]),
     ("serve", ["--max-pending", "(default 10000)"])],
)  # fmt: skip
def test_help_shows_defaults(command, shown):
    text = " ".join(streamshard(command, "--help").stdout.split())
    for piece in shown:
        assert " ".join(piece.split()) in text, piece
    assert "(default None)" not in text and "(default False)" not in text


@pytest.mark.kafka
@pytest.mark.flink
def test_a_bad_flink_option_is_named_before_the_job_starts(kafka, topic_name):
    from connectors.admin import create_topics

    create_topics(kafka, [topic_name])
    out = streamshard("train", "--bootstrap-servers", kafka.bootstrap_servers, "--input-topic",
                      topic_name, "--max-events", "10", "--flink-option",
                      "taskmanager.memory.segment-size=banana", timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--flink-option taskmanager.memory.segment-size=banana" in out.stderr
