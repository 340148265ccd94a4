"""Retraining across two worker processes on loopback ports (tf.distribute.MultiWorkerMirroredStrategy,
configured by TF_CONFIG), against the same zip in one process, and a worker dying mid-run.

All five processes (a healthy pair, the single-process reference, a pair whose worker 1 dies)
start at once: each spends most of its time starting TensorFlow, which they then share the CPUs for.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtz_mobile.errors import MTZError

JOB = Path(__file__).with_name("multi_worker_job.py")
TIMEOUT_S = 300   # every process, from the start of all (six start TensorFlow at once on 2 cores); a hang fails the test, not the suite
DIE_AFTER = 5     # worker 1 of the dying pair leaves after this many steps of the first retraining


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:   # held open together, so the n ports differ
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


class Job:
    def __init__(self, root: Path, name: str, models, env: dict, command: list[str] | None = None):
        self.result, self.log = root / f"{name}.json", root / f"{name}.log"
        full = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | env
        command = command or [str(JOB), *map(str, models), str(self.result)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, *command], stdout=log, stderr=subprocess.STDOUT, env=full)
        self.ended = None

    def wait(self, deadline: float) -> int:
        try:
            rc = self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.log.stem} still running after {TIMEOUT_S} s:\n{self.output()[-3000:]}")
        self.ended = self.ended or time.monotonic()
        return rc

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def data(self) -> dict:
        return json.loads(self.result.read_text())


@pytest.fixture(scope="module")
def jobs(small_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_worker")
    healthy, dying = _free_ports(2), _free_ports(2)
    started = {
        "w0": Job(root, "w0", small_models, {"TF_CONFIG": _tf_config(healthy, 0)}),
        "w1": Job(root, "w1", small_models, {"TF_CONFIG": _tf_config(healthy, 1)}),
        "single": Job(root, "single", small_models, {}),
        "d0": Job(root, "d0", small_models, {"TF_CONFIG": _tf_config(dying, 0)}),
        "d1": Job(root, "d1", small_models, {"TF_CONFIG": _tf_config(dying, 1), "MTZ_JOB_DIE_AFTER": str(DIE_AFTER)}),
        # the command line, one worker: the strategy must exist before the CLI reads the models
        "cli": Job(root, "cli", small_models, {"TF_CONFIG": _tf_config(_free_ports(1), 0)},
                   ["-m", "mtz_mobile.cli", "zip", *map(str, small_models), "--out", str(root / "cli_zip"),
                    "--strategy", "multi-worker", "--retrain-iterations", "3", "--retrain-schedule", "layer",
                    "--calibration-samples", "300",
                    "--quiet"]),
    }
    deadline = time.monotonic() + TIMEOUT_S
    yield started, deadline
    for job in started.values():
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def test_two_workers_retrain_like_one_process(jobs):
    started, deadline = jobs
    for name in ("w0", "w1", "single"):
        assert started[name].wait(deadline) == 0, started[name].output()[-3000:]
    chief, other, single = (started[n].data() for n in ("w0", "w1", "single"))
    assert [layer["replicas"] for layer in chief["retrain"]] == [2, 2]
    assert [layer["replicas"] for layer in single["retrain"]] == [1, 1]
    for layer in chief["retrain"]:   # retraining trains: every task's loss falls in every call
        for t, first in layer["loss_first"].items():
            assert layer["loss_last"][t] < first, layer
    # the same global batches from the same seed: the same steps, to float rounding
    assert other["errors"] == chief["errors"]
    for t, error in single["errors"].items():
        assert abs(chief["errors"][t] - error) <= 0.02, (chief["errors"], single["errors"])
    import numpy as np

    np.testing.assert_allclose(chief["outputs"], single["outputs"], atol=1e-3)


def test_the_command_line_retrains_with_the_multi_worker_strategy(jobs):
    started, deadline = jobs
    cli = started["cli"]
    assert cli.wait(deadline) == 0, cli.output()[-3000:]
    plan = json.loads((cli.result.parent / "cli_zip" / "plan.json").read_text())
    assert plan["settings"]["retrain"]["strategy"] == "multi-worker"
    assert all(layer["retrain"]["iterations"] == 3 for layer in plan["layers"])


def test_a_dying_worker_ends_the_job_with_an_error(jobs):
    started, deadline = jobs
    dead, chief = started["d1"], started["d0"]
    assert dead.wait(deadline) == 1, dead.output()[-3000:]
    assert f"worker dies after {DIE_AFTER} steps" in dead.output()
    rc = chief.wait(deadline)
    out = chief.output()
    assert rc == 2, out[-3000:]
    assert f"multi-worker retraining failed at step {DIE_AFTER + 1} of 20" in out, out[-3000:]
    assert "restart all workers" in out
    # the survivor learns of it from its next collective, well before the collective timeout
    assert chief.ended - dead.ended < 30, chief.ended - dead.ended


@pytest.mark.parametrize("tf_config, says", [
    (None, "needs TF_CONFIG"),
    ("{not json", "TF_CONFIG is malformed"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG is malformed"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', "index 0..0"),
    ('{"cluster": {"chief": ["h:1"], "worker": ["h:2"]}, "task": {"type": "chief", "index": 0}}', "only 'worker'"),
])
def test_multi_worker_refuses_a_missing_or_malformed_tf_config(monkeypatch, tf_config, says):
    from mtz_mobile.zipper.retrain import make_strategy

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(MTZError, match=says) as err:
        make_strategy("multi-worker")   # refused before TensorFlow is asked for anything
    assert "README" in str(err.value) and "\n" not in str(err.value)
