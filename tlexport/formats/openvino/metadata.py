"""OpenVINO IR metadata: the JSON at rt_info `tlexport/metadata` of the IR's XML, read with the
standard library (no openvino needed)."""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError, first_line
from ...fileio import parse_json

IR_RT_INFO = ("tlexport", "metadata")  # rt_info path of the JSON in an OpenVINO IR


def read(path: Path) -> dict:
    """The JSON at rt_info `tlexport/metadata` ({} when absent). The model-level rt_info is a
    direct child of the root `<net>`; layers have their own, not read."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
        node = root.find("rt_info/" + "/".join(IR_RT_INFO))
        meta = parse_json(node.get("value") or "", f"{path}: rt_info tlexport/metadata") if node is not None else {}
        return meta if isinstance(meta, dict) else {}
    except (ET.ParseError, ValueError, TypeError, OSError) as e:
        raise UsageError(f"{path} is not a readable OpenVINO IR ({first_line(e)})") from None
