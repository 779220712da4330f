"""Moving image batches from the host to a CUDA device while the previous batch is computed.

`StagedCopies` keeps a few pinned (page-locked) host buffers and reuses them: a batch is copied
into the next free buffer and sent to the device on a side stream, so the copy overlaps the
forward pass still running on the compute stream, and no pinned memory is allocated per batch.
The compute stream waits for the copy before it reads the batch; a buffer is refilled only once
its previous copy has finished. Pixels are not changed, only moved.
"""

from __future__ import annotations

import torch


class StagedCopies:
    """Host tensors -> `device` (a CUDA device) through `slots` reused pinned buffers."""

    def __init__(self, device: torch.device | str, slots: int = 3):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"StagedCopies moves batches to a CUDA device, not {self.device}; "
                             "on other devices move tensors with .to(device)")
        if slots < 2:
            raise ValueError(f"StagedCopies needs at least 2 slots to overlap copies with compute, got {slots}")
        self.stream = torch.cuda.Stream(device=self.device)
        self.buffers: list[torch.Tensor | None] = [None] * slots
        self.done: list[torch.cuda.Event | None] = [None] * slots
        self.next = 0

    def __call__(self, host: torch.Tensor) -> torch.Tensor:
        """`host` on the device. Returns before the copy ends; work queued afterwards on the
        current stream waits for it."""
        slot = self.next
        self.next = (slot + 1) % len(self.buffers)
        if self.done[slot] is not None:
            self.done[slot].synchronize()  # the buffer's last copy has left it
        buffer = self.buffers[slot]
        nbytes = host.numel() * host.element_size()
        if buffer is None or buffer.numel() < nbytes:
            buffer = self.buffers[slot] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        staged = buffer[:nbytes].view(host.dtype).view(host.shape)
        staged.copy_(host)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):
            out = staged.to(self.device, non_blocking=True)
            event = self.done[slot] = torch.cuda.Event()
            event.record(self.stream)
        compute.wait_stream(self.stream)
        out.record_stream(compute)  # allocated on the side stream, used and freed on the compute stream
        return out
