"""The training job's graph: one Python step per parser, worker, shard and evaluator, and
none that PyFlink adds on its own (``key_by``'s key step, ``get_side_output``'s identity
map): each would take every record through the bridge and two pickles once more, and a
chain with two Python steps holds two interpreter thread states on one thread."""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.flink]

PLAN = """
import json
from connectors.config import KafkaConfig
from flink_jobs.env import make_env
from flink_jobs.train import TrainConfig, build
cfg = TrainConfig(kafka=KafkaConfig("127.0.0.1:9"))
env = make_env(cfg.flink)
build(env, cfg)
print(env.get_execution_plan())
"""


def test_the_training_job_has_no_python_step_pyflink_adds():
    out = subprocess.run([sys.executable, "-c", PLAN], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads(out.stdout[out.stdout.index("{") :])
    steps = [node["contents"] for node in plan["nodes"]]
    # not the SQL steps of the Kafka sources, not the sinks: the Python steps
    python = [
        s for s in steps if not s.startswith(("[", "TableToDataSteam")) and "-sink: " not in s
    ]
    assert sorted(python) == ["evaluator", "fan-out-updates", "parse", "shard", "worker"], steps
