"""`--dynamic-size`: every artifact whose height and width are left free is run at sizes other
than the crop (taller, wider, larger) and compared with torch-eager on the same images, with its
precision's gates; parity has already checked it at the crop size. The sizes are recorded in the
manifest, a failure fails the export like any verification."""

from __future__ import annotations

import numpy as np

from ..errors import ExportError
from ..formats import registry
from ..tables import artifacts as table

MAX_IMAGES = 32


def sizes_for(crop: int) -> list[tuple[int, int]]:
    """(height, width) checked besides the crop: one taller and one wider, neither square."""
    return [(crop + 16, crop + 40), (2 * crop, crop)]


def inputs(run, height: int, width: int) -> tuple[np.ndarray, list[str]]:
    """Val images (random ones when there are none) resized to height x width with Pillow and
    normalised: what an app feeding that size would pass."""
    from PIL import Image

    from ..data.images import BadImage

    pre, arrays, names = run.preprocess, [], []
    for path, _ in run.samples("val")[:MAX_IMAGES]:
        try:
            img = pre.load(path).resize((width, height), Image.BILINEAR)
        except BadImage:
            continue
        arrays.append(pre.normalize(np.asarray(img)).transpose(2, 0, 1))
        names.append(path.name)
    if not arrays:
        rng = np.random.default_rng(0)
        arrays = list(rng.standard_normal((8, 3, height, width)).astype(np.float32))
        names = [f"random-{i}" for i in range(8)]
    return np.stack(arrays).astype(np.float32), names


def _free(a) -> bool:
    return a.role == table.MODEL and registry.get(a.format).dynamic_size


def verify_sizes(artifacts, folder, run) -> list[list[int]]:
    """Check every free-size artifact at `sizes_for(crop)`; record per artifact in
    `a.verification["sizes"]`.

    Returns:
        the sizes checked, for the manifest's verification summary.
    Raises:
        ExportError: an artifact failed at some size (naming it and the size).
    """
    from ..runtimes import for_artifact, reference_runtime
    from ..verify.compare import Images, compare, gates_for

    checked = sizes_for(run.preprocess.crop)
    free = [a for a in artifacts if _free(a)]
    with reference_runtime(run.dir) as ref_rt:
        for h, w in checked:
            x, names = inputs(run, h, w)
            ref = ref_rt.run(x)
            for a in free:
                with for_artifact(folder / a.file) as rt:
                    res = compare(ref, rt.run(x), Images(names), a.precision, gates_for(a.precision), classes=run.classes)
                row = {"size": [h, w], "passed": bool(res.passed), "max_abs": res.max_abs,
                       "top1_agreement": (res.top1_agreement or 0.0) / 100}
                (a.verification or {}).setdefault("sizes", []).append(row)
                if not res.passed:
                    a.verified = False
                    raise ExportError(f"--dynamic-size: {a.file} disagrees with PyTorch at {h}x{w} "
                                      f"({'; '.join(res.failures)}); nothing written")
    return [[h, w] for h, w in checked]
