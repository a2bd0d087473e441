"""How an image file becomes model input: the one definition, used by training, evaluation,
export calibration and verification, parity, predict and the example apps.

- Decoding: every mode becomes 8-bit RGB the same way (alpha composited on white, palette
  transparency honoured, 16-bit scaled rather than clipped, CMYK and grayscale converted), EXIF
  orientation applied, broken files told apart with a reason.
- Reduced decoding: a JPEG is decoded at the smallest of libjpeg's DCT scales (1/8, 1/4, 1/2, 1)
  whose shorter side still reaches what the caller needs (`min_side`: the resize target), so a
  12-megapixel photo headed for a 256-pixel resize is decoded at 1/8 size. Other formats are
  decoded as they are.
- The torch-free eval preprocessing: shorter-side resize (Pillow's antialiased filters), centre
  crop, scale to [0, 1], mean/std.

Self-contained on purpose: Pillow, numpy and the standard library only, no other tlexport import.
An app imports it from an installed tlexport (`from tlexport.data import images`), or copies this
one file next to itself, and gets the pixels tlexport trained and verified with.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

# Bump when a change here changes decoded pixels: the training image cache keys include it.
DECODE_VERSION = 2
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# Pillow's own default limit; bigger images are treated as decompression bombs and skipped.
# Checked from the header before decoding, without touching Pillow's global setting.
MAX_PIXELS = 89_478_485
# Upper bound on an image's size after the shorter-side resize: 16 Mpixels (48 MB of RGB), or a
# 4:1 image at the resize target when that is larger. A legal but extreme shape (a 1x20000
# strip: 140 bytes of PNG) would otherwise ask for gigabytes.
MAX_RESIZED_PIXELS = 16 * 1024 * 1024
MAX_ASPECT = 4
# False decodes every JPEG at full size (benchmarks/decode_accuracy.py compares the two).
DCT_SCALING = True
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
_ORIENTATION = 0x0112


class BadImage(Exception):
    """A file that is not a usable image; the message is the reason shown to the user."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def iter_image_files(paths) -> list[Path]:
    """Expand files and folders (recursively, sorted, hidden files and folders left out) into
    image files; a file named explicitly is kept whatever its suffix."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(f for f in sorted(p.rglob("*"))
                       if f.is_file() and is_image_file(f) and not _hidden(f.relative_to(p)))
        else:
            out.append(p)
    return out


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


# ---- decoding -------------------------------------------------------------------------------------
def open_rgb(source, min_side: int | None = None, check_size=None):
    """Decode an image file into an 8-bit RGB PIL image, EXIF orientation applied.

    Args:
        source: a path, or the file's bytes.
        min_side: the shorter side the caller needs (the resize target). A JPEG is decoded at the
            smallest DCT scale whose shorter side is still >= min_side (Pillow's `draft`: scale
            s in 8, 4, 2, 1 with s <= min(width, height) // min_side). Asking for a square of
            min_side makes the choice independent of the EXIF rotation, which swaps the sides
            only after decoding. None: full size.
        check_size: optional callable(width, height) raising BadImage, called with the header's
            size before decoding (`check_resize` bounds the work of the later resize).
    Raises:
        BadImage: empty, truncated, corrupt, not an image, a decompression bomb, or refused by
            `check_size`. A file that cannot be read (gone, no permission) too.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        stream = io.BytesIO(source)
    else:
        try:
            stream = open(source, "rb")
        except OSError as e:
            raise BadImage(file_error(e)) from None
    try:
        with stream, warnings.catch_warnings():
            if stream.seek(0, io.SEEK_END) == 0:
                raise BadImage("empty file")
            stream.seek(0)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream) as im:
                return _decode(im, min_side, check_size)
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
    except (ValueError, SyntaxError, IndexError, EOFError, MemoryError, KeyError, TypeError) as e:
        raise BadImage(f"corrupt ({type(e).__name__}: {e})") from None


def file_error(e: OSError) -> str:
    """The reason shown for a file that cannot be opened at all."""
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, PermissionError):
        return "permission denied"
    return f"cannot read ({e.strerror or type(e).__name__})"


def _decode(im, min_side, check_size):
    from PIL import ImageOps

    if im.width * im.height > MAX_PIXELS:
        raise BadImage(f"decompression bomb ({im.width}x{im.height} pixels)")
    if check_size is not None:
        check_size(im.width, im.height)
    if min_side and DCT_SCALING and im.format in ("JPEG", "MPO"):
        im.draft(im.mode, (min_side, min_side))
    im.load()
    return to_rgb(ImageOps.exif_transpose(im))


def to_rgb(im):
    """Any PIL mode -> 8-bit RGB: alpha (also a transparent colour key or palette entry)
    composited on white; 16-bit and 32-bit integer values scaled to 8 bits (I;16 always, I when
    above 255); CMYK, YCbCr, grayscale and the rest through Pillow's conversion."""
    from PIL import Image

    keyed = "transparency" in im.info and im.mode in ("L", "RGB", "P")
    if keyed or (im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA"):
        im = im.convert("RGBA")
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0  # 16-bit range -> 8-bit range
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


# ---- eval preprocessing (torch-free) ----------------------------------------------------------------
def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(w, h) after resizing the shorter side to `short`, computed as torchvision does."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def check_resize(width: int, height: int, resize: int) -> None:
    """Refuse an image whose shorter-side resize would exceed max(MAX_RESIZED_PIXELS,
    MAX_ASPECT x resize²), from its size alone.

    Raises:
        BadImage: naming both sizes.
    """
    if width < 1 or height < 1:
        raise BadImage(f"empty image ({width}x{height} pixels)")
    w, h = resized_size(width, height, resize)
    limit = max(MAX_RESIZED_PIXELS, MAX_ASPECT * resize * resize)
    if w * h > limit:
        raise BadImage(f"extreme aspect ratio: {width}x{height} pixels would be resized to {w}x{h} "
                       f"(limit {limit} pixels)")


def pil_filter(interpolation: str):
    from PIL import Image

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, not {interpolation!r}")
    return {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[interpolation]


def resize_crop(img, resize: int, crop: int, interpolation: str = "bilinear") -> np.ndarray:
    """PIL RGB image -> uint8 HWC array: shorter side resized to `resize` (Pillow's antialiased
    filter), then torchvision's CenterCrop (offsets rounded; padded with zeros when smaller)."""
    check_resize(*img.size, resize)
    w, h = resized_size(*img.size, resize)
    if (w, h) != img.size:
        img = img.resize((w, h), pil_filter(interpolation))
    arr = np.asarray(img, dtype=np.uint8)
    if arr.shape[0] < crop or arr.shape[1] < crop:
        ph, pw = max(crop - arr.shape[0], 0), max(crop - arr.shape[1], 0)
        arr = np.pad(arr, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    top = int(round((arr.shape[0] - crop) / 2.0))
    left = int(round((arr.shape[1] - crop) / 2.0))
    return np.ascontiguousarray(arr[top : top + crop, left : left + crop])


def normalize(hwc_uint8: np.ndarray, mean, std) -> np.ndarray:
    """uint8 HWC (or NHWC) -> float32, scaled to [0, 1] and normalised per channel."""
    x = hwc_uint8.astype(np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def load_crop(source, pre: dict) -> np.ndarray:
    """A file -> the uint8 HWC crop tlexport feeds a model with baked-in normalisation.

    Args:
        pre: the preprocessing dict embedded in every tlexport artifact (resize, crop,
            interpolation; mean and std unused here).
    """
    resize = pre["resize"]
    img = open_rgb(source, min_side=resize, check_size=lambda w, h: check_resize(w, h, resize))
    return resize_crop(img, resize, pre["crop"], pre.get("interpolation", "bilinear"))


def load_input(source, pre: dict) -> np.ndarray:
    """A file -> the float32 CHW array `tlexport predict` feeds the model (decode at the resize
    target, resize, centre crop, normalise), from an artifact's preprocessing dict."""
    return normalize(load_crop(source, pre), pre["mean"], pre["std"]).transpose(2, 0, 1)


def load_rgb(path: Path | str, check_size=None):
    """The whole image at full size (`open_rgb` without a target)."""
    return open_rgb(path, None, check_size)
