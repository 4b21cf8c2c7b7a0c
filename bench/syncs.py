"""Count the operators of a computation that read data back to the host: each one is a synchronisation on a GPU.

    with HostSyncs() as syncs:
        loss(logits, embeddings, labels)["total"].backward()
    syncs.total, syncs.counts          # e.g. 5, {"nonzero": 4, "item": 1}

Runs on any device, the CPU included: a `TorchDispatchMode` sees every aten operator, and the ones
listed in `SYNCING` (or an indexing by a bool mask, which calls `nonzero`) are those whose CUDA kernels
wait for the device, either to size their output (`nonzero`, `unique`, `masked_select`, bool
indexing), to read their input's range (`bincount`, `histc`), or to hand a value to Python
(`item`, `bool(t)`, `int(t)`, `tolist`, all `_local_scalar_dense`).
"""
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNCING = {"nonzero": "nonzero", "nonzero_static": None, "bincount": "bincount", "histc": "histc",
           "_local_scalar_dense": "item", "is_nonzero": "item", "equal": "item",
           "unique": "unique", "_unique": "unique", "_unique2": "unique", "unique_dim": "unique",
           "unique_consecutive": "unique", "masked_select": "masked_select",
           "repeat_interleave": "repeat_interleave", "multinomial": None}


class HostSyncs(TorchDispatchMode):
    "Counts host-syncing operators by kind while active; `total` is their sum."
    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        kind = SYNCING.get(name)
        if name == "repeat_interleave" and kwargs.get("output_size") is not None: kind = None
        if name in ("index", "index_put", "index_put_", "_index_put_impl_") and len(args) > 1:
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
                kind = "bool_mask_index"
        if kind: self.counts[kind] += 1
        return func(*args, **kwargs)

    @property
    def total(self): return sum(self.counts.values())
