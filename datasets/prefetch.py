"""Batches on the device: pixels cross as uint8, are normalised where they arrive, and the next
batch's copy runs while the model computes on this one.

``train_transform`` and ``eval_transform`` end in uint8 pixels, so a DataLoader's batches are
``(B, 3, H, W)`` uint8: a quarter of float32's bytes in its read-ahead queue and on the bus.
``PrefetchLoader`` moves each batch to the device and turns it there into the float32 the model
takes, ``((x / 255) - mean) / std``, in one kernel (``minigrad.kernels.normalize_pixels``) that
rounds step by step as ``ToArray`` then ``Normalize`` do: the numbers are bit for bit those of
normalising each image on the host.

On a GPU the copy overlaps the computation, as in timm's PrefetchLoader:

1. the batch is copied into page-locked (pinned) host memory, which the GPU's copy engine reads
   by itself; from ordinary (pageable) memory CUDA first stages it, the host waiting;
2. its copy to the device is queued on a stream of its own, non-blocking (it does not wait for
   the default stream's work), and an event marks the copy's end;
3. the next batch is read and its copy queued before this one is handed out, so that copy runs
   while the model computes on this one;
4. the computing stream waits for the event (the GPU waits, not the host), then normalises.

Two pinned buffers take turns, one refilled only once the copy that read it has ended. A batch's
device memory is taken from the pool in the computing stream's order, and its copy queued after
all the work queued there so far: memory the pool hands out again is never written while a
kernel may still read it.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy

from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize
from minigrad import backend, kernels


def normalize_pixels(pixels: Any, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Any:
    """uint8 pixels ``(..., C, H, W)``, on any device, as float32 ``((x / 255) - mean) / std`` on
    that device: what ``ToArray`` then ``Normalize`` give, bit for bit."""
    if pixels.dtype != numpy.uint8:
        raise TypeError(f"normalize_pixels takes uint8 pixels (PILToArray's), got {pixels.dtype}; "
                        "float images in [0, 1] (ToArray's) are normalised by Normalize")
    return _normalized(pixels, *_statistics(Normalize(mean, std), backend.device_of(pixels)))


def _statistics(normalize: Normalize, device: str) -> Any:
    """``normalize``'s mean and std, each ``(C, 1, 1)``, on ``device`` in one copy."""
    return backend.to_device(numpy.stack([normalize.mean, normalize.std]), device)


def _normalized(pixels: Any, mean: Any, std: Any) -> Any:
    if pixels.ndim < 3 or pixels.shape[-3] != len(mean):
        raise ValueError(f"pixels of shape {pixels.shape} do not have the {len(mean)} channels of mean and std "
                         "on axis -3")
    return kernels.normalize_pixels(pixels, mean, std)


class PrefetchLoader:
    """``loader``'s batches on ``device`` as ``(images, labels)``: images float32 ``(B, C, H, W)``,
    normalised there from uint8 pixels (a batch of floats is taken as prepared already and moved as
    it is), labels int64. On a GPU the next batch's copy runs during this one's step.

        for images, labels in PrefetchLoader(DataLoader(train, 32, shuffle=True), "gpu"):
            loss = F.cross_entropy(model(minigrad.tensor(images)), labels)
    """

    def __init__(self, loader: Iterable, device: str | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        self.loader, self.device = loader, backend.normalize_device(device)
        self.normalize = Normalize(mean, std)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        mean, std = _statistics(self.normalize, self.device)  # on a GPU, one upload a pass
        batches = iter(self.loader) if self.device == "cpu" else self._copied_ahead()
        for images, labels in batches:
            yield (images if images.dtype != numpy.uint8 else _normalized(images, mean, std)), labels

    def _copied_ahead(self) -> Iterator[tuple[Any, Any]]:
        """The loader's batches on the GPU, each ready to compute on when it is handed out, the next
        one's copy already under way."""
        cupy = backend.array_module_for("gpu")
        copy_stream = cupy.cuda.Stream(non_blocking=True)
        buffers = (_PinnedBatch(cupy), _PinnedBatch(cupy))
        arriving = None
        try:
            for number, batch in enumerate(self.loader):
                queued = buffers[number % 2].copy_to_device(batch, copy_stream)
                if arriving is not None:
                    yield _arrived(cupy, *arriving)
                arriving = queued
            if arriving is not None:
                yield _arrived(cupy, *arriving)
        finally:  # also when the consumer stops early: no copy outlives the memory it reads and writes
            copy_stream.synchronize()


def _arrived(cupy, arrays: list, copied) -> tuple[Any, Any]:
    """``arrays`` once the computing stream has waited for their copy's end (``copied``)."""
    cupy.cuda.get_current_stream().wait_event(copied)
    images, labels = arrays
    return images, labels


class _PinnedBatch:
    """Page-locked host memory for the arrays of one batch, kept from batch to batch and refilled
    only once the copy that last read it has ended."""

    def __init__(self, cupy):
        self.cupy = cupy
        self.memory: list[numpy.ndarray] = []  # one uint8 block per array of the batch, grown as needed
        self.copied = None  # the event that ends the last copy from it

    def copy_to_device(self, arrays: Sequence[numpy.ndarray], stream) -> tuple[list, Any]:
        """Start copying ``arrays`` to the device on ``stream``: the device arrays they will be in,
        and the event of the copy's end."""
        if self.copied is not None:
            self.copied.synchronize()
        computing = self.cupy.cuda.get_current_stream()
        host = [self._staged(index, numpy.asarray(array)) for index, array in enumerate(arrays)]
        device = [self.cupy.empty(array.shape, array.dtype) for array in host]  # in the computing stream's order
        stream.wait_event(computing.record())
        for target, source in zip(device, host):
            target.set(source, stream=stream)
        self.copied = stream.record()
        return device, self.copied

    def _staged(self, index: int, array: numpy.ndarray) -> numpy.ndarray:
        """``array`` copied into block ``index`` of this batch's pinned memory."""
        if index == len(self.memory):
            self.memory.append(numpy.empty(0, numpy.uint8))
        if self.memory[index].nbytes < array.nbytes:
            size = array.nbytes
            self.memory[index] = numpy.ndarray(size, numpy.uint8, buffer=self.cupy.cuda.alloc_pinned_memory(size))
        staged = self.memory[index][:array.nbytes].view(array.dtype).reshape(array.shape)
        staged[...] = array
        return staged
