"""``streamshard demo`` as a user runs it: end to end on a small stream, and Ctrl-C."""

import os
import signal
import subprocess
import time

import pytest

from tests.cli_helpers import SCRIPT, streamshard

pytestmark = [pytest.mark.flink, pytest.mark.kafka]


def session_processes(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()[1:] if int(line.split()[1]) == sid]


def test_demo_end_to_end_on_a_small_stream(tmp_path):
    out = streamshard(
        "demo", "--events", "3000", "--requests", "500", "--out", str(tmp_path), timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "served predictions    500 of 500" in out.stdout
    assert "prequential AUC" in out.stdout and "broker stopped" in out.stdout
    assert (tmp_path / "report" / "index.html").is_file()
    assert list((tmp_path / "models").glob("ctr-v*/manifest.json"))


def test_ctrl_c_leaves_no_process_behind(tmp_path):
    demo = subprocess.Popen(
        [SCRIPT, "demo", "--events", "200000", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        for line in demo.stdout:
            if "training:" in line:
                break
        deadline = time.monotonic() + 120
        while not any("java" in p for p in session_processes(demo.pid)):
            assert time.monotonic() < deadline, "the training job's JVM never started"
            time.sleep(0.5)
        time.sleep(3)  # into the job, not just its JVM's start
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        demo.wait(timeout=120)
        deadline = time.monotonic() + 60
        while session_processes(demo.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert session_processes(demo.pid) == []
        assert demo.returncode != 0
    finally:
        if demo.poll() is None or session_processes(demo.pid):
            os.killpg(demo.pid, signal.SIGKILL)
