"""Image decoding for every loader: full size, or reduced by libjpeg's DCT scaling when the crop allows it.

JPEG files are decoded by libjpeg-turbo through simplejpeg (BGR, the same accurate integer IDCT and fancy
upsampling as OpenCV's bundled libjpeg-turbo, so the pixels are identical to ``cv2.imdecode``'s, measured on
every sample image in ../shared/data; it skips OpenCV's extra header pass and is faster: BENCHMARKS.md, `peer` block). Other
formats (PNG, BMP, ...) and JPEGs libjpeg-turbo cannot turn into BGR (CMYK) go through ``cv2.imdecode``.
EXIF orientation is ignored everywhere: annotations refer to the stored pixels.

**Reduced decoding** (:meth:`EncodedImage.decode`). A top-down crop of a large person maps many image pixels
onto one crop pixel (``f`` image pixels per crop pixel). libjpeg can then decode at 1/r of the size (r = 2, 4,
8) directly from the DCT coefficients, which costs far less than a full decode followed by the warp. r is the
largest power of two with ``r <= f`` (and ``r <= max_factor``), so the warp still never enlarges the decoded
image: the crop differs from the full-size decode's only by interpolation noise (the DCT-scaled pixel is a
smoothed r x r block where bilinear sampling of the full image picks 4 pixels; tests bound the difference).
Pixel ``(i, j)`` of a 1/r decode covers full-size pixels ``[r i, r i + r)``, so its centre lies at
``r i + (r - 1) / 2`` in full-size coordinates (:func:`reduction_matrix`); keypoints, boxes and the stored
inverse warp stay in full-size coordinates.

Errors: a missing file raises ``FileNotFoundError``, an unreadable, truncated or undecodable one
:class:`~sar.data.image_check.ImageReadError` (an ``OSError``); both name the file and the image id.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

try:
    import simplejpeg
except ImportError:  # a declared dependency; an image without it (an offline GPU box) decodes with OpenCV: same pixels
    simplejpeg = None

from sar.data.image_check import ImageReadError, truncation_problem

__all__ = ["REDUCTIONS", "EncodedImage", "image_size", "read_image", "reduction_for", "reduction_matrix"]

#: The DCT reductions used (libjpeg also offers N/8 for other N; powers of two keep the pixel grid aligned).
REDUCTIONS: tuple[int, ...] = (1, 2, 4, 8)
_JPEG_SOI = (0xFF, 0xD8)


def _read_bytes(path: str, where: str) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"cannot read {where}: the file does not exist") from err
    except OSError as err:
        raise ImageReadError(f"cannot read {where}: {type(err).__name__}: {err}") from err
    if data.size == 0:
        raise ImageReadError(f"cannot read {where}: empty file (0 bytes)")
    problem = truncation_problem(data)
    if problem:
        raise ImageReadError(f"cannot read {where}: {problem}")
    return data


def _is_jpeg(data: np.ndarray) -> bool:
    return simplejpeg is not None and data.size > 2 and int(data[0]) == _JPEG_SOI[0] and int(data[1]) == _JPEG_SOI[1]


def reduction_for(pixels_per_output: float, max_factor: int = 8) -> int:
    """The largest r of :data:`REDUCTIONS` with ``r <= pixels_per_output`` and ``r <= max_factor`` (at least 1)."""
    best = 1
    for r in REDUCTIONS:
        if r <= pixels_per_output + 1e-9 and r <= max_factor:
            best = r
    return best


def reduction_matrix(r: int) -> np.ndarray:
    """The affine ``(2, 3)`` map from the pixel coordinates of a 1/r decode to full-size pixel coordinates."""
    offset = (r - 1) / 2.0
    return np.array([[r, 0.0, offset], [0.0, r, offset]])


def image_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a JPEG's header without decoding it; None for other formats or a bad header."""
    if not _is_jpeg(data):
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return int(width), int(height)


def _decode(data: np.ndarray, where: str, reduction: int = 1,
            size: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """Decode ``data`` (reduced by ``reduction`` when it is a JPEG of full ``size`` (width, height), read from its
    header by the caller); returns the pixels and the reduction used."""
    if _is_jpeg(data):
        try:
            if reduction > 1 and size is not None:
                width, height = size
                want = (math.ceil(height / reduction), math.ceil(width / reduction))
                image = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False, min_height=want[0],
                                               min_width=want[1])
                if image.shape[:2] == want:
                    return image, reduction
            # strict=False: a JPEG with recoverable corrupt data decodes as OpenCV decodes it (libjpeg's warning)
            return simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False), 1
        except ValueError:
            pass  # not decodable to BGR by libjpeg-turbo (CMYK, broken header): OpenCV decides
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageReadError(f"cannot read {where}: OpenCV cannot decode it (not an image, or corrupt)")
    return image, 1


class EncodedImage:
    """An image file read into memory (checked for truncation), decoded on demand.

    ``size`` is (width, height): from the JPEG header without decoding, else from a full decode (kept for the
    next :meth:`decode`). :meth:`decode` gives the pixels at full size, or reduced by libjpeg's DCT scaling for a
    crop that maps ``pixels_per_output`` image pixels onto one output pixel (:func:`reduction_for`)."""

    def __init__(self, path: str, image_id: int | None = None) -> None:
        self.where = f"image {path!r} (image_id={image_id})"
        self.data = _read_bytes(path, self.where)
        self._full: np.ndarray | None = None
        self._size: tuple[int, int] | None = None  # read on first use: a full-size decode never needs it

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            self._size = image_size(self.data)
        if self._size is None:  # not a JPEG (or no readable header): decode, and keep the pixels
            self._full = _decode(self.data, self.where)[0]
            self._size = (self._full.shape[1], self._full.shape[0])
        return self._size

    def decode(self, pixels_per_output: float = 1.0, max_factor: int = 8) -> tuple[np.ndarray, int]:
        """The pixels (BGR uint8 HxWx3) and the reduction r used (1: full size); map a warp of full-size
        coordinates through :func:`reduction_matrix` ``(r)`` to apply it to these pixels."""
        r = reduction_for(pixels_per_output, max_factor)
        size = self.size if r > 1 else None  # the header, read once (a non-JPEG is decoded by `size`)
        if self._full is not None:
            return self._full, 1
        return _decode(self.data, self.where, r, size)


def read_image(path: str, image_id: int | None = None) -> np.ndarray:
    """Decode an image at full size as BGR uint8 HxWx3.

    The file is read once and decoded from memory, after the tail check of :mod:`sar.data.image_check` (a JPEG
    without its end-of-image marker, a PNG without IEND): libjpeg would decode a truncated JPEG into a half-grey
    image with a bare warning. Setup checks every image up front, so an error here means the file changed after
    that check."""
    return EncodedImage(path, image_id).decode()[0]
