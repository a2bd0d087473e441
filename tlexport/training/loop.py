"""Training runs, the public side: `train` starts a run in a new run folder, `resume` continues
one from its checkpoint. Both hold the folder (rank 0, the only writer, takes its lock before
judging what it holds), stop on Ctrl-C or SIGTERM with the way to resume, and run a Session."""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

from ..errors import TlexportError, UsageError, WeightsError, first_line
from ..run import RunDir, RunError, check_labels, check_outside
from . import distributed as D
from .checkpoint import run_meta
from .config import RESUMABLE, TrainConfig, _coerce, check_value
from .history import EpochStats, Progress, TrainResult, as_progress  # noqa: F401 (the API's names)
from .inputs import default_workers, make_loaders  # noqa: F401 (the benchmarks' names)
from .session import Session
from .signals import TrainingInterrupted, signal_number, stop_on_signals


def default_run_dir(cfg: TrainConfig) -> Path:
    if cfg.out:
        return Path(cfg.out).expanduser()
    name = cfg.name or f"{cfg.arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path("runs") / name


def check_apart(data: str | Path, out: Path) -> None:
    """Refuse a run folder inside the data folder (it would become one of its class folders and
    break every later scan) and a data folder inside the run folder or inside another run, before
    anything is created."""
    check_outside(out, data)
    data_path, out_path = Path(data).expanduser().resolve(), Path(out).expanduser().resolve()
    if out_path in data_path.parents:
        raise UsageError(f"--data {data} is inside --out {out}; keep the images and the run folder apart")
    for folder in (data_path, *data_path.parents):
        if RunDir(folder).looks_like_run():
            raise UsageError(f"--data {data} is inside the run folder {folder}; point --data at the image folder")


def check_new_run(cfg: TrainConfig, run_dir: Path, overwrite: bool = False) -> None:
    """What a launcher can check before it starts the workers: the folders apart and, when the
    run folder exists, what it holds (under its lock, so a live run is reported as such)."""
    check_apart(cfg.data, run_dir)
    folder = RunDir(run_dir)
    if folder.path.exists():
        with folder.writing(create=False):
            folder.check_new(overwrite)


@contextlib.contextmanager
def _held(folder: RunDir, judge, create: bool = True):
    """Rank 0 (the only writer) holds the folder for the block and runs `judge` under its lock;
    in a process group every rank hears rank 0's verdict, so all of them fail alike."""
    with contextlib.ExitStack() as stack:
        problem = None
        if D.env_info().rank == 0:  # torchrun's RANK: valid before the process group is joined
            try:
                stack.enter_context(folder.writing(create=create))
                judge()
            except TlexportError as e:
                problem = e
        problem = D.broadcast_object(problem)
        if problem is not None:
            raise problem
        yield


def interrupted(folder: RunDir, exc: BaseException) -> TrainingInterrupted:
    """The error for a run stopped by Ctrl-C or SIGTERM: what is saved and how to go on."""
    signum = signal_number(exc)
    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    if folder.has_checkpoint():
        how = f"its last finished epoch is saved: tlexport train --resume {folder} continues it"
    elif folder.meta_file.is_file():
        how = f"before its first checkpoint: tlexport train --resume {folder} starts it again from epoch 1"
    else:
        how = "before the run started; nothing was written"
    return TrainingInterrupted(f"{what} {how}" if how.startswith("before") else f"{what}; {how}", signum)


def train(cfg: TrainConfig, progress: Progress | bool | Callable[[str], None] | None = None,
          overwrite: bool = False) -> TrainResult:
    """Fine-tune `cfg.arch` on `cfg.data` and write a run directory.

    Args:
        cfg: all options (see TrainConfig).
        progress: True prints one line per step and epoch on stderr; a callable gets those lines;
            a `Progress` gets every callback (the CLI's bars); None or False: silent.
        overwrite: replace a run already in the folder (its files are removed once the new run's
            data and model are ready; other files stay).
    Returns:
        TrainResult with the run directory, best val accuracy and per-epoch history.
    Raises:
        FolderLocked: another process is writing the run folder.
        TrainingInterrupted: Ctrl-C or SIGTERM stopped it (exit code 130 / 143).
    """
    cfg.validate()
    progress = as_progress(progress)
    folder = RunDir(default_run_dir(cfg))
    with stop_on_signals():
        try:
            D.setup(cfg.device, cfg.dist_timeout)  # under torchrun: join the other ranks first
            folder = RunDir(D.broadcast_object(folder.path))  # rank 0's (the default name has the time)
            check_apart(cfg.data, folder.path)
            with _held(folder, lambda: folder.check_new(overwrite)):
                session = Session(cfg, folder, progress)  # scans and builds before any run file is written
                D.barrier()  # every rank checked the folder before rank 0 writes into it
                if D.is_main():
                    if overwrite:
                        folder.remove_run_files()
                    session.write_start_files()
                return session.loop()
        except KeyboardInterrupt as e:
            raise interrupted(folder, e) from None


def resume(run_dir: Path | str, epochs: int | None = None, progress: Progress | bool | Callable | None = None,
           device: str | None = None, workers: int | None = None, dist_timeout: float | None = None) -> TrainResult:
    """Continue a run from its checkpoint.pt with the options stored in run.json, on the split
    recorded in split.json (files added or removed since are reported in `notes`, never mixed in).
    A run stopped before its first checkpoint starts again from scratch with its stored options.

    Args:
        epochs: a new total number of epochs (to extend a finished run); default the stored one.
        progress: as for train.
        device, workers, dist_timeout: where, with how many loader processes and how patiently
            (distributed) to continue (default: stored); none of them changes the run's results.
    Raises:
        RunError: the folder is missing, not a run, or holds a damaged file.
        FolderLocked, TrainingInterrupted: as for train.
    """
    folder = RunDir(run_dir)
    progress = as_progress(progress)
    given = dict(epochs=epochs, device=device, workers=workers, dist_timeout=dist_timeout)
    changes = {k: v for k, v in given.items() if v is not None and k in RESUMABLE}
    for name, value in changes.items():  # bad usage is told before the folder is even read
        check_value(TrainConfig, name, value)
    with stop_on_signals():
        try:
            with _held(folder, folder.require, create=False):
                return _resume(folder, progress, changes)
        except KeyboardInterrupt as e:
            raise interrupted(folder, e) from None


def _resume(folder: RunDir, progress: Progress, changes: dict) -> TrainResult:
    meta = folder.read_meta()
    cfg = _stored_config(meta, folder, changes)
    _check_world_size(meta, folder, cfg)
    ckpt = folder.read_checkpoint()
    session = Session(cfg, folder, progress, pretrained=ckpt is None, recorded=_recorded_split(folder, meta, cfg))
    if ckpt is None:
        progress.message(f"{folder} has no checkpoint yet: starting it again from epoch 1")
        if D.is_main():
            session.write_start_files()
        return session.loop()
    weights = meta.get("weights", {})
    session.trainable.source.kind, session.trainable.source.file = weights.get("source", "none"), weights.get("file")
    try:
        session.resume_from(ckpt)
    except (RuntimeError, ValueError, KeyError) as e:  # torch's "Error(s) in loading state_dict", shapes
        raise WeightsError(f"{folder.checkpoint_file} does not match {folder.meta_file.name} "
                           f"({first_line(e)})") from None
    done = session.history
    if done.stopper.stopped:
        raise UsageError(f"{folder} stopped early at epoch {done.stopper.stopped_epoch} "
                         f"(--patience {cfg.patience}); there is nothing to resume")
    if done.epoch >= cfg.epochs:
        raise UsageError(f"{folder} already finished {done.epoch} epoch(s); pass --epochs N (> {done.epoch}) to train on")
    progress.message(f"resuming {folder} at epoch {done.epoch + 1}/{cfg.epochs}")
    if D.is_main():
        # split.json and run.json describe the files this run now trains on, and its device.
        folder.write_split(session.inputs.scanned.split_record())
        folder.write_meta(run_meta(session))
    D.barrier()
    return session.loop()


def _stored_config(meta: dict, folder: RunDir, changes: dict) -> TrainConfig:
    """The run's TrainConfig from run.json's options (each converted to its field's type; a
    damaged value is a RunError naming it), with the resumable `changes` applied."""
    options = meta.get("options")
    if not isinstance(options, dict):
        raise RunError(f"{folder.meta_file} has no 'options' to resume with")
    types = {f.name: f.type for f in fields(TrainConfig)}
    try:
        values = {k: _coerce(folder.meta_file, k, types[k], v) for k, v in options.items() if k in types}
    except UsageError as e:
        raise RunError(f"damaged: {e}") from None
    if "data" not in values:
        raise RunError(f"{folder.meta_file} has no 'data' option to resume with")
    cfg = TrainConfig(**{**values, **changes, "out": str(folder.path)})
    cfg.validate()
    if "arch" in values and meta["arch"] != cfg.arch:  # the record and its options disagree: one of them was edited
        raise RunError(f"{folder.meta_file} is damaged: its arch {meta['arch']!r} does not match its options' "
                       f"arch {cfg.arch!r}")
    return cfg


def _recorded_split(folder: RunDir, meta: dict, cfg: TrainConfig) -> tuple | None:
    """(split.json, classes, data root) to resume on, or None (no split recorded: scan)."""
    record = folder.read_split()
    if record is None:
        return None
    check_labels(record, len(meta["classes"]), folder.split_file)  # as eval and export check it
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    root = data.get("root") or record["root"] or cfg.data
    return record, meta["classes"], root


def _check_world_size(meta: dict, folder: RunDir, cfg: TrainConfig) -> None:
    """The schedule counts steps per epoch, which depend on the number of processes: a run
    resumes with the world size it was started with."""
    D.setup(cfg.device, cfg.dist_timeout)
    stored = meta.get("world_size", 1)
    if stored != D.world_size():
        how = f"--nproc {stored} (or torchrun with {stored} processes in all)" if stored > 1 else "one process"
        raise UsageError(f"{folder} was trained with {stored} process(es), this job has "
                         f"{D.world_size()}; resume it with {how}")
