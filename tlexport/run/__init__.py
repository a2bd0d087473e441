"""The run folder `tlexport train` writes, with one owner: the names of its files (layout)
and RunDir: reading (validated, one error per problem), writing (atomic), the lock and the judgement of what a folder holds. Training, resume, eval, load_run and
finding an export's run all go through here. Torch is imported only where a checkpoint is read or
written."""

from .folder import RunDir, RunError, check_labels, check_outside, made_dirs
from .layout import RUN_JSON

__all__ = ["RUN_JSON", "RunDir", "RunError", "check_labels", "check_outside", "made_dirs"]
