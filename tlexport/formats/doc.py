"""docs/formats.md, generated from the format registry:

    python -m tlexport.formats.doc > docs/formats.md

tests/test_formats.py renders it again and fails when the committed file differs, so the table
cannot drift from the specs. Torch-free: it reads the specs only.
"""

from __future__ import annotations

import sys

from . import registry
from .spec import BAKED, CALIB_METHODS, DEVICES, FormatSpec

HEADER = """# Export formats

Generated from the format registry (`tlexport/formats/registry.py`) by
`python -m tlexport.formats.doc > docs/formats.md`; the test suite fails when this page is stale,
so edit the specs (`tlexport/formats/<name>/__init__.py`), not this page. Adding a format:
[adding-a-format.md](adding-a-format.md).
"""

INT8_TEXT = """## int8

`--int8-fallback` and `--calib-method` mean one thing for every format that quantizes
([int8.md](int8.md)). A node list a format cannot honour is refused before any work (exit 2); a
`--calib-method` given for every format that one format cannot honour fails that format's int8
alone (one line naming the per-format form), and is refused up front only when no requested
format can honour it.

- `--int8-fallback none`: every quantizable layer int8.
- `--int8-fallback NODE,...`: exactly those layers stay float (`stem` and `head` name the first
  convolution and the classifier; other names are the format's own: ONNX node names, ExecuTorch
  module names). Refused by a format without per-layer fallback.
- `--int8-fallback auto` (the default of most architectures), the same recovery path for every
  format: every layer int8 with each calibration method the format honours in turn (its default
  first) until the int8 gate holds on the gate images (the run's val split, never the calibration
  images; the same images, reference and measurement as export's verification); then the fewest
  layers, in the format's order of likely sensitivity, stay float until it holds (prefixes of 1,
  2, 4, ... then bisection), calibrated with the method that came closest. ONNX ranks every
  Conv/Gemm/MatMul by the signal-to-quantization-noise ratio it loses; ExecuTorch tries stem, then
  stem and head. Where the gate cannot be reached, that format's int8 fails (unless
  `--no-verify`). A format without per-layer fallback stops after its methods.
- `--calib-method METHOD` or `FORMAT=METHOD,...`: how activation ranges are estimated from the
  calibration images. `minmax` takes the observed min and max (onnxruntime's MinMax calibrator;
  PT2E's MinMaxObserver; NNCF's MINMAX); `percentile` and `entropy` are onnxruntime's histogram
  calibrators. Without the option each format uses its default below (then its others under
  `auto`), and the manifest's `int8.calibration` records what was used and tried.
- The formats converted from ONNX (`built from onnx`) reuse the int8 ONNX file: same calibration,
  same float layers, same record. Except OpenVINO IR where `nncf` is installed (the `openvino`
  extra) and the method is `minmax` or not given: NNCF quantizes the fp32 IR under the same
  policy, gated on OpenVINO, because the converted QDQ graph runs slower than fp32 on
  depthwise/hardswish networks ([int8-speed.md](int8-speed.md)).
- Export times the verified files each CPU runtime can run against each other at batch 1 on the
  exporting machine: the manifest's `fastest` names the fastest file per runtime (each artifact's
  `speed` holds its median), and an int8 file that is not faster than fp32 there is said in one line.
  Every int8 record counts its `quantized` / `total` layers and its `size_ratio` and `speedup`
  against fp32; a file neither 2x smaller nor 1.2x faster is published with a one-line warning.
"""

FOLDERS_TEXT = """## Artifacts that are folders

A format whose spec says `folder=True` exports a folder (a CoreML `.mlpackage`, an ncnn or web
folder). It is listed, verified, published and removed like a file: its manifest `size` is the sum
of its files, its `sha256` is the sha256 of one line per file, in sorted order of relative POSIX
paths, `<path>\\0<sha256 of the file>\\n` (a link: `<path>\\0-> <target>\\n`, never followed), and a
re-export replaces it whole (the old folder is renamed aside, the new one renamed in). `tlexport
predict FOLDER` runs a folder with such a suffix as the model itself.
"""


def _cell(values) -> str:
    values = list(values)
    return ", ".join(values) if values else "-"


def _runtimes(spec: FormatSpec) -> str:
    return _cell(f"{name} ({device})" for name, device in spec.runtimes)


def _formats_table() -> list[str]:
    rows = ["| format | artifact | precisions | runtimes (device) | runs code | needs | in `--format core` | built from |",
            "|---|---|---|---|---|---|---|---|"]
    for s in registry.FORMATS.values():
        artifact = f"`{s.suffix}` {'folder' if s.folder else 'file'}"
        # the extra's command, or the fuller one a package needs (ExecuTorch goes in without its deps)
        needs = _cell(f"`{c}`" for c in ([r.pip for r in s.needs if "&&" in r.pip][:1] or [s.install] if s.needs else []))
        rows.append(f"| `{s.name}` | {artifact} | {_cell(s.precisions)} | {_runtimes(s)} | "
                    f"{'yes' if s.runs_code else 'no'} | {needs} | {'yes' if s.in_all else 'no'} | {s.built_from or '-'} |")
    return rows


def _files_table() -> list[str]:
    rows = ["| format | precision | file | companions | notes |", "|---|---|---|---|---|"]
    for s in registry.FORMATS.values():
        for f in s.files:
            notes = [n for n, on in (("one decoded uint8 image in, the whole preprocessing inside", f.role == BAKED),
                                     ("`--device cuda` only", f.cuda_only)) if on]
            rows.append(f"| `{s.name}` | {f.precision} | `{f.name}` | {_cell(f'`{c}`' for c in f.companions)} | "
                        f"{_cell(notes)} |")
    return rows


def _int8_table() -> list[str]:
    rows = ["| format | `--calib-method` honoured | default calibration | per-layer fallback |", "|---|---|---|---|"]
    for s in registry.FORMATS.values():
        if s.int8:
            methods = _cell(s.int8.calib_methods) if s.int8.calib_methods != CALIB_METHODS else "all"
            per_layer = "yes" if s.int8.per_layer else f"no ({s.int8.why})"
            rows.append(f"| `{s.name}` | {methods} | {s.int8.default_method} | {per_layer} |")
    return rows


def _runtime_table() -> list[str]:
    rows = ["| runtime (`--runtimes`) | device | runs | provided by |", "|---|---|---|---|"]
    seen = {}
    for s in registry.FORMATS.values():
        for name, device in s.runtimes:
            seen.setdefault((name, device), []).append(s.name)
    owner = {n: s.name for s in registry.FORMATS.values() for n in s.provides}
    order = list(owner)
    for (name, device), fmts in sorted(seen.items(), key=lambda kv: (order.index(kv[0][0]), DEVICES.index(kv[0][1]))):
        rows.append(f"| `{name}` | {device} | {_cell(f'`{f}`' for f in fmts)} | `{owner[name]}` |")
    return rows


def _description(spec: FormatSpec) -> str:
    missing = "; ".join(f"{p}: {why}" for p, why in spec.not_offered)
    return f"- `{spec.name}`: {spec.description}" + (f". Not offered: {missing}." if missing else "")


def _usage() -> list[str]:
    """"In an app": what an app needs to use each format that says so."""
    specs = [s for s in registry.FORMATS.values() if s.usage]
    if not specs:
        return []
    out = ["## In an app", ""]
    for s in specs:
        out += [f"### `{s.name}`", "", s.usage.strip(), ""]
    return out


def render() -> str:
    """The whole page."""
    out = [HEADER, "## Formats", "", *_formats_table(), ""]
    out += ["Descriptions:", ""] + [_description(s) for s in registry.FORMATS.values()] + [""]
    out += ["## Files in an export folder", "", *_files_table(), ""]
    out += ["## Runtimes", "", "`torch-eager` (the run's weights in PyTorch) is the reference every artifact is "
            "compared with.", "", *_runtime_table(), ""]
    out += [INT8_TEXT, *_int8_table(), "", FOLDERS_TEXT, *_usage()]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
