"""Shared test set-up: headless MuJoCo, loopback Ray, small helpers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "disable")
os.environ.setdefault("BEX_NODE_IP", "127.0.0.1")  # every embedded-Ray listener on loopback

import pytest

BEX = str(Path(sys.executable).with_name("bex"))


@pytest.fixture(scope="session")
def ray_session():
    """An embedded Ray for the whole session (loopback, 2 CPUs); tests mark themselves ``ray``."""
    import ray

    from bex.cluster.runtime import init_ray

    init_ray(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
