"""The GPU path on the strict stand-in: a training step stays on the device, and host arrays
that slip into device code are caught."""
import numpy as np
import pytest

import minigrad
import optim
from minigrad import backend
from minigrad import functional as F
from minigrad.testing import fake_gpu
from swin import swin_mini


@pytest.fixture
def stand_in_gpu(monkeypatch):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    minigrad.manual_seed(0)


def tiny_swin():
    return swin_mini(img_size=32, embed_dim=8, num_heads=(1, 1, 2, 2), num_classes=5)


def test_training_step_makes_no_host_device_transfer(stand_in_gpu):
    model = tiny_swin().to("gpu")
    optimizer = optim.AdamW(optim.weight_decay_groups(model, 0.05), lr=1e-3)
    schedule = optim.lr_scheduler.WarmupCosineLR(optimizer, total_steps=10, warmup_steps=2)
    images = backend.to_device(np.random.rand(2, 3, 32, 32).astype(np.float32), "gpu")
    labels = backend.to_device(np.array([1, 3]), "gpu")
    before = fake_gpu.transfer_count.count
    for _ in range(2):
        loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        schedule.step()
    assert fake_gpu.transfer_count.count == before
    loss.item()  # what a progress bar reads once per logging interval
    assert fake_gpu.transfer_count.count == before + 1


def test_a_host_array_in_a_swin_op_is_caught(stand_in_gpu):
    model = tiny_swin().to("gpu")
    block = model.layers[0].blocks[1]
    block.attn_mask = backend.asnumpy(block.attn_mask)  # the bug: a mask left on the host
    images = backend.to_device(np.random.rand(1, 3, 32, 32).astype(np.float32), "gpu")
    with pytest.raises(RuntimeError, match="'cpu' and 'gpu'"):
        model(images)

