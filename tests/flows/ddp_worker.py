"""Run by ``torchrun`` in test_distributed.py: one DDP (gloo) backward pass on this rank's shard.

Usage: ``torchrun --nproc-per-node 2 ddp_worker.py STATE BATCH OUT``. Rank ``r`` takes the ``r``-th
equal slice of the batch, draws its noise channels from a generator seeded ``100 + r``, computes the
model's training objective, and back-propagates through DistributedDataParallel; rank 0 saves the
(averaged) gradients to ``OUT``.
"""

import gc
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from flows.model import ConditionalGlow, ModelConfig
from flows.objectives import objective


def main(state_path: str, batch_path: str, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    saved = torch.load(state_path)
    model = ConditionalGlow(ModelConfig.from_dict(saved["config"])).double()
    model.load_state_dict(saved["model"])
    x, labels = torch.load(batch_path)
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    network = DistributedDataParallel(model)
    output = network(x[shard], torch.Generator().manual_seed(100 + rank))
    loss = objective(
        model.config.objective,
        output.class_log_likelihoods,
        output.logits,
        labels[shard],
        model.num_dims,
    )
    loss.backward()
    if rank == 0:
        torch.save({name: p.grad for name, p in model.named_parameters()}, out_path)
    # Release DDP and the autograd graph (they hold gloo work and tensors) before tearing the
    # process group down, and let no rank close its connections while the other still uses them:
    # otherwise gloo's threads can abort the process at interpreter shutdown.
    del network, output, loss
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
