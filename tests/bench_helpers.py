"""Fixtures the bench and device tests share: one small deployed model (zip → convert with
baselines → host bench), made once per session from the conftest's small trained models."""

from __future__ import annotations

import pytest

ELF_AARCH64_HEADER = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + (2).to_bytes(2, "little")
                      + (183).to_bytes(2, "little") + bytes(44))


@pytest.fixture(scope="session")
def deployed(tmp_path_factory, small_models, fmnist):
    from mtz_mobile.pipeline import deploy

    out = tmp_path_factory.mktemp("deploy") / "out"
    result = deploy(small_models, out, data={"a": fmnist, "b": fmnist}, runs=3, progress=False,
                    retrain_iterations=0, calibration_samples=500)
    return result


@pytest.fixture
def arm64_binary(tmp_path):
    """A file with an aarch64 ELF header: what the bench checks before pushing benchmark_model."""
    path = tmp_path / "benchmark_model"
    path.write_bytes(ELF_AARCH64_HEADER + b"\0" * 64)
    return path
