"""Reading image files into correct RGB, and telling broken files apart. Torch-free."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# Pillow's own default limit; bigger images are treated as decompression bombs and skipped.
# Checked from the header before decoding, without touching Pillow's global setting.
MAX_PIXELS = 89_478_485


class BadImage(Exception):
    """A file that is not a usable image; the message is the reason shown to the user."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_rgb(path: Path | str, check_size=None):
    """Open an image file as an 8-bit RGB PIL image.

    EXIF orientation is applied; grayscale, palette, alpha, CMYK and 16-bit images are converted
    properly (alpha composited on white, 16-bit scaled rather than clipped).

    Args:
        check_size: optional callable(width, height) raising BadImage, called with the header's
            size before decoding (`Preprocess.check_size` bounds the work of the later resize).
    Raises:
        BadImage: empty, truncated, corrupt, not an image, a decompression bomb, or refused by
            `check_size`.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise BadImage(f"decompression bomb ({im.width}x{im.height} pixels)")
                if check_size is not None:
                    check_size(im.width, im.height)
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb(im)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage(f"decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise BadImage("not an image") from None
    except OSError as e:
        text = str(e)
        reason = "truncated" if "truncated" in text.lower() else f"corrupt ({text})"
        raise BadImage(reason) from None
    except (ValueError, SyntaxError, IndexError, EOFError, MemoryError) as e:
        raise BadImage(f"corrupt ({type(e).__name__}: {e})") from None


def to_rgb(im):
    """Any PIL mode -> 8-bit RGB."""
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit range -> 8-bit range
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def iter_image_files(paths) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image files."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                f for f in sorted(p.rglob("*"))
                if f.is_file() and is_image_file(f) and not _hidden(f.relative_to(p))
            )
        else:
            out.append(p)
    return out


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)
