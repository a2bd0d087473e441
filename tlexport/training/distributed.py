"""Data-parallel training across processes (torchrun), in the shape of torchvision's
references/classification/utils.py: set up from torchrun's environment variables, know whether
this process is the main one (the only writer), barriers, reductions, a sharded sampler, and the
one-machine launcher behind `tlexport train --nproc N`.

Without torchrun's variables every helper is a no-op for a single process, so the training loop
calls them unconditionally. Torch is imported inside functions (the package stays cheap to import).

BatchNorm stays per-rank BatchNorm (no SyncBatchNorm): torch's SyncBatchNorm runs on GPUs only
(it raises for CPU tensors in training), and fine-tuning batches per rank (16-64 images) give
statistics as good as one process's. DDP broadcasts rank 0's running statistics with every
forward, and validation takes rank 0's (sync_module), so what is saved is what was measured.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from ..errors import TlexportError, UsageError, first_line

# Set by `--nproc`'s launcher for its workers: they report errors through torchelastic's error
# file (the launcher prints one line for the whole job) instead of each printing its own.
LAUNCHED_ENV = "TLEXPORT_LAUNCHED"
# Where the main worker leaves its TrainResult (JSON) for the launcher to print.
RESULT_FILE_ENV = "TLEXPORT_RESULT_FILE"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None


def env_info() -> DistInfo:
    """Rank and world size from torchrun's variables (a single process without them)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def is_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """The process that writes the run folder and prints (rank 0; the only one without torchrun)."""
    return rank() == 0


def setup(device_spec: str, timeout_s: float):
    """init_distributed_mode: join the process group when torchrun started this process.

    gloo on CPU, NCCL on CUDA (each process takes the GPU of its LOCAL_RANK). `timeout_s` bounds
    every collective, so when a peer dies the others raise instead of waiting forever.
    Returns the torch.device this process trains on.
    """
    import torch
    import torch.distributed as dist

    from .torchutil import resolve_device

    info = env_info()
    device = resolve_device(device_spec)
    if info.world_size <= 1:
        return device
    if device.type == "cuda":  # every call of a rank answers its own GPU, the first one selects it
        device = torch.device("cuda", info.local_rank)
    if is_initialized():
        return device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # The launcher sends SIGTERM to the survivors when a rank dies: while the run trains,
    # training.signals turns it into a stop that finishes the epoch's files (and nothing else
    # handles it, so a SIGTERM during interpreter shutdown ends the process silently).
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)
    return device


def cleanup() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if is_initialized():
        dist.barrier()


def broadcast_object(obj):
    """rank 0's `obj` on every rank (a choice that must be the same everywhere)."""
    import torch.distributed as dist

    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj) -> list:
    import torch.distributed as dist

    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device) -> list[float]:
    """Element-wise sum of `values` over all ranks."""
    import torch
    import torch.distributed as dist

    if not is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def reduce_epoch(loss: float, acc: float, rate: float, device) -> tuple[float, float, float]:
    """An epoch's train metrics over all ranks: mean loss and accuracy (every rank saw the same
    number of batches), summed images/s (the job's throughput)."""
    n = world_size()
    if n == 1:
        return loss, acc, rate
    loss_sum, acc_sum, rate_sum = all_reduce_sum([loss, acc, rate], device)
    return loss_sum / n, acc_sum / n, rate_sum


def sync_module(module, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (BatchNorm statistics) to every rank."""
    import torch.distributed as dist

    if not is_initialized():
        return
    tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
    for t in tensors:
        dist.broadcast(t.data, src=0)


def wrap(module, device):
    """DistributedDataParallel around `module` in a process group, else `module` itself. DDP
    registers the parameters that require gradients when it is built, so the loop wraps again
    whenever the trainable set changes (frozen head stage -> full fine-tuning)."""
    if not is_initialized():
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def reseed_rank(seed: int, epoch: int) -> None:
    """Different augmentation randomness on every rank, reproducible per (seed, rank, epoch).
    A single process keeps its own RNG stream (and so its results) unchanged."""
    import torch

    if world_size() > 1:
        torch.manual_seed(seed * 1_000_003 + rank() * 10_007 + epoch)


# ---- the sampler --------------------------------------------------------------------------------
class EpochSampler:
    """DistributedSampler with tlexport's seeded order: epoch e shuffles with seed*1000+e (the
    order a single process has always used, so a resumed run sees the same batches), then every
    rank takes every world_size-th index. For training the order is padded by repeating its start
    so all ranks run the same number of steps (DDP needs that); for evaluation it is not padded.
    With `weights` (one per item) the epoch's order is n draws with replacement in proportion to
    them (--balanced-sampler), seeded and split across the ranks the same way.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, pad: bool = True,
                 rank_: int | None = None, world: int | None = None, weights=None):
        self.n, self.seed, self.shuffle, self.pad = n, seed, shuffle, pad
        self.weights = None if weights is None else list(weights)
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        if self.weights is not None and self.n:
            w = torch.tensor(self.weights, dtype=torch.double)
            order = torch.multinomial(w, self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.world > 1 and self.pad and self.n:
            total = len(self) * self.world
            order = (order * (total // self.n + 1))[:total]
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self.order())

    def __len__(self) -> int:
        if self.world <= 1:
            return self.n
        if self.pad:
            return (self.n + self.world - 1) // self.world
        return len(range(self.rank, self.n, self.world))


# ---- worker side of `--nproc`: errors and the result --------------------------------------------
def launched() -> bool:
    return os.environ.get(LAUNCHED_ENV) == "1"


def report_worker_error(message: str) -> None:
    """Leave a one-line message where torchelastic's agent looks for a worker's root cause."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        Path(path).write_text(json.dumps({"message": message, "timestamp": str(int(time.time()))}))


def write_result(result_dict: dict) -> None:
    """The main worker hands its TrainResult to the launcher (a file the launcher owns)."""
    path = os.environ.get(RESULT_FILE_ENV)
    if path and is_main():
        from ..fileio import write_json

        write_json(path, result_dict)


# ---- launcher side of `--nproc` ------------------------------------------------------------------
class WorkerFailed(TlexportError):
    """A worker process of a distributed job failed or died."""


def launch(nproc: int, cli_args: list[str]) -> dict:
    """Run `tlexport train CLI_ARGS` in `nproc` processes on this machine through torchrun's own
    elastic launcher (standalone rendezvous, no restarts), in this process.

    The CPU threads of the job (OMP_NUM_THREADS, else every core) are shared among the workers.
    Returns the main worker's TrainResult as a dict; raises WorkerFailed with one line naming the
    failed rank when any worker fails (torchelastic then stops the others).
    """
    import tempfile

    import torch.distributed.run as torchrun

    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    budget = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    # The workers run this very tlexport (not whichever a `-m tlexport` would find from their cwd).
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); from tlexport.cli import main; main()"
    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                "--monitor-interval=0.2", "--no-python", sys.executable, "-c", code,
                                "train", *cli_args])
    with tempfile.TemporaryDirectory(prefix="tlexport-launch-") as tmp:
        result_file = Path(tmp) / "result.json"
        env = {LAUNCHED_ENV: "1", RESULT_FILE_ENV: str(result_file),
               "OMP_NUM_THREADS": str(max(1, budget // nproc))}
        with _environ(env), _quiet_torchelastic():
            _run_elastic(torchrun, args)
        if not result_file.is_file():
            raise WorkerFailed("the workers ended without a result")
        return json.loads(result_file.read_text())


class LauncherStopped(TlexportError):
    """The launcher itself got SIGINT or SIGTERM; torchelastic stopped the workers (each finishes
    the files of its epoch first)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


def _run_elastic(torchrun, args) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        torchrun.run(args)
    except ChildFailedError as e:
        failed = WorkerFailed(describe_failure(e.failures))
        if root_cause(e.failures)[1].exitcode == UsageError.exit_code:  # the workers' bad usage is the job's
            failed.exit_code = UsageError.exit_code
        raise failed from None
    except SignalException as e:  # torchelastic's agent turns the signal into this, after stopping the workers
        raise LauncherStopped(int(e.sigval)) from None


def describe_failure(failures: dict) -> str:
    """One line for the root cause among torchelastic's ProcessFailures (global rank -> failure).

    A rank killed by a signal other than SIGTERM (SIGKILL, out-of-memory, SIGSEGV) is the cause:
    the others then fail on the broken connection or get the agent's SIGTERM. Otherwise the
    earliest failure that left a message, else the earliest.
    """
    r, f = root_cause(failures)
    if f.exitcode < 0:
        return f"rank {r} died ({f.signal_name()})"
    if _has_message(f):
        return f"rank {r}: {first_line(Exception(f.message), 300)}"
    return f"rank {r} failed with exit code {f.exitcode}"


def root_cause(failures: dict) -> tuple:
    """(rank, failure) of the root cause among torchelastic's failures (see describe_failure)."""
    def killed(f):
        return f.exitcode < 0 and f.signal_name() != "SIGTERM"

    ordered = sorted(failures.items(), key=lambda kv: (kv[1].timestamp, kv[0]))
    for test in (killed, _has_message, lambda f: True):
        picked = [(r, f) for r, f in ordered if test(f)]
        if picked:
            return picked[0]
    raise ValueError("no failure")


def _has_message(f) -> bool:
    """A worker's own one line (a signal's death has torch's made-up message)."""
    return (f.exitcode > 0 and isinstance(f.message, str) and bool(f.message)
            and not f.message.startswith("To enable traceback"))


class _environ:
    """Set environment variables for the workers, restoring the caller's afterwards."""

    def __init__(self, values: dict):
        self.values, self.saved = values, {}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in self.values}
        os.environ.update(self.values)

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _quiet_torchelastic:
    """torchelastic logs its agent's life (and every failure, as a table) to stderr through torch's
    handler on the torch.distributed logger; the launcher reports a failure as one line instead,
    so that logger has no handler and does not propagate while the job runs."""

    def __enter__(self):
        import logging

        self.logger = logging.getLogger("torch.distributed")
        self.saved = self.logger.handlers[:], self.logger.propagate
        self.logger.handlers = [logging.NullHandler()]
        self.logger.propagate = False

    def __exit__(self, *exc):
        self.logger.handlers, self.logger.propagate = self.saved
