"""What the two-process (gloo) tests share: a free local port, the process-group start and the two processes' run."""
import os
import socket

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    "A TCP port on 127.0.0.1 that is free now."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world: int, port: int):
    "Set the environment torchrun gives process `rank` of `world` on `port`."
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))


def init_gloo(rank: int, world: int, port: int):
    "Join a CPU process group of `world` processes on `port`."
    torchrun_env(rank, world, port)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def run_two_ranks(worker, *args) -> dict:
    "Run `worker(rank, 2, port, *args, result)` as ranks 0 and 1 of a fresh port; what they put into `result`, a shared dict."
    with mp.Manager() as manager:
        result = manager.dict()
        mp.spawn(worker, args=(2, free_port(), *args, result), nprocs=2, join=True)
        return dict(result)
