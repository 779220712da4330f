"""Host-to-device transfer of image batches and the loader's worker count."""

import numpy as np
import pytest
import torch

from xferlab.embeddings.extractor import EmbeddingExtractor, resolve_workers
from xferlab.embeddings.transfer import StagedCopies

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="StagedCopies copies into CUDA memory; this machine has no CUDA device")


def test_auto_workers_follow_the_cores_and_the_blocks():
    assert resolve_workers("auto", on_cpu=True, blocks=100, cores=16) == 0  # the forward uses every core
    assert resolve_workers("auto", on_cpu=False, blocks=100, cores=16) == 14
    assert resolve_workers("auto", on_cpu=False, blocks=100, cores=64) == 62
    assert resolve_workers("auto", on_cpu=False, blocks=3, cores=16) == 3  # no idle readers
    assert resolve_workers("auto", on_cpu=False, blocks=100, cores=2) == 1
    assert resolve_workers("auto", on_cpu=False, blocks=100, cores=64, ranks=8) == 6  # each rank its share
    assert resolve_workers("auto", on_cpu=False, blocks=16, cores=64, ranks=8) == 2  # 2 blocks per rank
    assert resolve_workers(5, on_cpu=False, blocks=2, cores=16) == 5  # asked for: kept
    assert resolve_workers("auto", on_cpu=False) >= 1
    with pytest.raises(ValueError, match="extract.num_workers=-1"):
        resolve_workers(-1, on_cpu=False)


def test_staged_copies_refuse_a_device_other_than_cuda():
    with pytest.raises(ValueError, match="CUDA device, not cpu"):
        StagedCopies("cpu")


def test_on_the_cpu_batches_pass_unchanged():
    extractor = EmbeddingExtractor(torch.nn.Identity(), None, None)
    rows, images = torch.arange(4), torch.arange(32, dtype=torch.int16).view(4, 2, 2, 2)
    out_rows, out_images = extractor.transfer_batch_to_device((rows, images), torch.device("cpu"), 0)
    assert torch.equal(out_rows, rows) and torch.equal(out_images, images) and extractor._copies is None


@needs_cuda
def test_staged_copies_deliver_every_batch_unchanged_while_buffers_are_reused():
    copies = StagedCopies("cuda", slots=2)
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.integers(-2**15, 2**15, size=(n, 2, 8, 8)).astype(np.int16)) for n in (5, 3, 5, 4, 1)]
    outs = [copies(b) for b in batches]  # more batches than slots, smaller and larger ones
    for batch, out in zip(batches, outs):
        assert out.device.type == "cuda" and out.dtype == batch.dtype
        assert torch.equal(out.cpu(), batch)
    assert all(b is not None and b.is_pinned() for b in copies.buffers)
