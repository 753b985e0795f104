"""How an image file becomes the pixels a model of evo sees: decode, orient, convert, resize.

Part of evo's portable model code (see ``dna.portable``): evo decodes the images of a user
dataset with these functions, and ``evo best --export`` copies this module verbatim into
every export, so a user applies exactly the training preprocessing to new images. It needs
the standard library and, to decode files, Pillow (imported when an image is decoded, so
that an export that only evaluates arrays runs with torch alone).

The steps, for a file's bytes and a :class:`Preprocessing`:

1. decode with Pillow (JPEG files are decoded at the smallest reduced scale that still
   covers the target size: Pillow's ``draft``);
2. turn by the EXIF orientation (photos from phones are stored sideways);
3. convert to ``RGB`` (3 channels; transparency is dropped) or ``L`` (1 channel, grey);
4. resize to ``size`` x ``size`` with bilinear filtering (antialiased when shrinking):
   ``crop`` keeps the centre at the aspect ratio (the shorter side becomes ``size``),
   ``square`` scales the whole image; ``size`` None keeps the decoded size.

The result is the raw pixel bytes in height, width, channel order (uint8, 0..255).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
RESIZE_MODES = ("crop", "square")
COLOR_MODES = ("rgb", "grayscale")
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# An image with more pixels than this is refused before it is decoded (a decompression bomb
# would otherwise take the memory of a whole worker); far above any photograph's 50 MP.
MAX_PIXELS = 64 * 2**20


class ImageProblem(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, not an image, too large)."""


@dataclass(frozen=True)
class Preprocessing:
    """What every image goes through: ``color`` (``rgb``/``grayscale``), ``size`` (pixels of
    each side; None: keep), ``resize`` (``crop``/``square``). ``to_dict`` is how model.json
    and the data cache record it."""

    color: str
    size: int | None
    resize: str = "crop"

    def __post_init__(self) -> None:
        if self.color not in COLOR_MODES:
            raise ValueError(f"color must be one of {', '.join(COLOR_MODES)}, got {self.color!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int)
                                      or not 1 <= self.size <= 65536):
            raise ValueError(f"size must be a whole number of pixels, got {self.size!r}")

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    def to_dict(self) -> dict:
        """Plain data: ``color``, ``size``, ``resize``, and the fixed steps in words."""
        return {"color": self.color, "size": self.size, "resize": self.resize,
                "steps": "Pillow decode (JPEG draft), EXIF orientation, convert, bilinear resize"}

    @classmethod
    def from_dict(cls, d: object) -> "Preprocessing":
        """Inverse of :meth:`to_dict`; ValueError for anything else."""
        if not isinstance(d, dict):
            raise ValueError("preprocessing must be an object")
        return cls(color=d.get("color"), size=d.get("size"), resize=d.get("resize", "crop"))


def is_image_name(name: str) -> bool:
    """True for a file name with an image suffix evo decodes (not hidden files)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImageProblem("decoding image files needs Pillow: pip install pillow") from None
    return Image, ImageOps


def open_image(data: bytes):
    """The Pillow image of a file's bytes, header read, pixels not yet decoded.

    ImageProblem when the bytes are not an image Pillow knows, or it has more than
    :data:`MAX_PIXELS` pixels.
    """
    Image, _ = _pil()
    try:
        img = Image.open(io.BytesIO(data))
        width, height = img.size
    except Exception as exc:  # Pillow raises many types for bad headers
        raise ImageProblem(_reason(exc)) from None
    if width * height > MAX_PIXELS:
        raise ImageProblem(f"{width} x {height} pixels is more than evo decodes ({MAX_PIXELS:,})")
    if width < 1 or height < 1:
        raise ImageProblem(f"empty image ({width} x {height})")
    return img


def image_facts(data: bytes) -> tuple[int, int, bool]:
    """``(width, height, grayscale)`` from the header alone (EXIF orientation applied)."""
    img = open_image(data)
    width, height = img.size
    try:
        if int(img.getexif().get(0x0112, 1)) in (5, 6, 7, 8):  # turned by 90 degrees
            width, height = height, width
    except Exception:  # a broken EXIF block only loses the orientation
        pass
    return width, height, img.mode in GRAY_MODES


def preprocess_image(data: bytes, prep: Preprocessing) -> tuple[bytes, tuple[int, int, int]]:
    """The pixels of the image file ``data`` after ``prep``: ``(bytes, (C, H, W))``, the bytes
    in height, width, channel order. ImageProblem (one line) when it cannot be decoded."""
    img = open_image(data)
    if prep.size is not None and img.format == "JPEG":
        try:   # decode at a reduced scale that still covers the size
            img.draft("RGB" if prep.color == "rgb" else "L", (prep.size, prep.size))
        except Exception as exc:
            raise ImageProblem(_reason(exc)) from None
    return preprocess_pil(img, prep)


def preprocess_pil(img, prep: Preprocessing) -> tuple[bytes, tuple[int, int, int]]:
    """Steps 2-4 of the module's docstring for a Pillow image (e.g. one made from an array):
    ``(bytes, (C, H, W))`` as :func:`preprocess_image`."""
    Image, ImageOps = _pil()
    mode = "RGB" if prep.color == "rgb" else "L"
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode != mode:
            if img.mode.startswith("I") or img.mode == "F":   # 16-bit and float greys
                img = _to_8bit(img)
            elif img.mode == "P" or img.mode.endswith("A"):   # palette and alpha: via RGBA, alpha dropped
                img = img.convert("RGBA")
            img = img.convert(mode)
        if prep.size is not None and img.size != (prep.size, prep.size):
            box = (prep.size, prep.size)
            if prep.resize == "crop":
                img = ImageOps.fit(img, box, method=Image.Resampling.BILINEAR)
            else:
                img = img.resize(box, Image.Resampling.BILINEAR)
        pixels = img.tobytes()
    except ImageProblem:
        raise
    except Exception as exc:  # truncated data, broken chunks, decoder errors
        raise ImageProblem(_reason(exc)) from None
    width, height = img.size
    return pixels, (1 if mode == "L" else 3, height, width)


def _to_8bit(img):
    """A 16-bit (0..65535) or float (0..1) grey image as 8-bit grey (0..255)."""
    scale = 255.0 if img.mode == "F" else 1.0 / 257.0
    return img.convert("F").point(lambda v: v * scale).convert("L")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text:
        return name
    return text if name in ("OSError", "ImageProblem", "UnidentifiedImageError") else f"{name}: {text}"
