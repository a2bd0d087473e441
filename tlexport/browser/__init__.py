"""Headless Chromium as a place to run models: find the browser and onnxruntime-web's files, serve
a page and its files on 127.0.0.1, and drive the page over a binary HTTP channel (float32 in,
float32 out, timings measured inside the page).

Torch-free and free of other tlexport floors: the browser runtime (`tlexport.formats.web.runtime`)
and the web format's builder both stand on it.
"""

from .chromium import chromium_path, missing_reason
from .ortweb import ORT_WEB_VERSION, find_dist
from .session import PageSession

__all__ = ["ORT_WEB_VERSION", "PageSession", "chromium_path", "find_dist", "missing_reason"]
