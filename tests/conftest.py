"""Shared fixtures. Every test gets its own cache directory, so no test sees another's cache."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SYNTHETIC = """
loader = "synthetic"
description = "tiny CREMA-D-like data for fast tests"
classes = 3
train_size = 60
test_size = 30
seed = 0
[audio]
reliability = 0.6
[visual]
reliability = 0.9
image_size = 16
[defaults]
encoder = "small"
epochs = 2
early_epochs = 1
batch_size = 16
lr = 0.01
subset = 1.0
"""


# Two test modules train DDP against one process (test_distributed, test_methods_contract): an
# encoder without BatchNorm computes the same function in both.
FLAT = "flat-test"


def register_flat_encoder() -> None:
    """The small encoder's layout with GroupNorm (per sample) in place of BatchNorm (per batch), so
    DDP and one process compute the same function."""
    from torch import nn

    from pdmp_cli.models.encoders import ENCODERS, register_encoder
    from pdmp_cli.models.encoders._frames import FrameFolding

    if FLAT in ENCODERS:
        return

    @register_encoder(FLAT)
    def build(in_channels: int) -> nn.Module:
        net = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1, bias=False), nn.GroupNorm(2, 8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(),
        )  # fmt: skip
        return FrameFolding(net, out_dim=32)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PDMP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(autouse=True)
def _one_job_unless_asked(monkeypatch):
    # --jobs defaults to the free cores: tests that want processes pass jobs themselves, the rest
    # train in the test's own process (a spawned worker re-imports torch: seconds each)
    monkeypatch.setattr("pdmp_cli.pool.free_cores", lambda: 1)


@pytest.fixture
def tiny_manifest(tmp_path) -> Path:
    """A 90-clip, 3-class synthetic dataset manifest (loads in well under a second)."""
    p = tmp_path / "tiny.toml"
    p.write_text(TINY_SYNTHETIC)
    return p


def pytest_configure(config):
    # Every test trains tiny models: one intra-op thread is as fast as two on this project's
    # 2-core machines and never oversubscribes when other processes (DDP ranks, a busy CI
    # host) compete for the cores. Set once here instead of in each test module.
    import torch

    torch.set_num_threads(1)
