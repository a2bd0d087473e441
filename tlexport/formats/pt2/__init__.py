"""`.pt2`: a torch.export ExportedProgram (TorchScript's successor)."""

from ..spec import File, FormatSpec

SPEC = FormatSpec(
    name="pt2", package=__name__, suffix=".pt2", runs_code=True, in_all=True,
    description="torch.export ExportedProgram",
    files=(File("fp32", "model.pt2"),),
    runtimes=(("pt2", "cpu"), ("pt2", "cuda")),
    provides=("pt2",),
    dynamic_size=True,
)
