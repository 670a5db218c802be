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

**Rows-only decoding** (``rows=`` of :meth:`EncodedImage.decode`, :func:`rows_for_warp`). A sequential JPEG is
coded in rows of MCUs from the top down, so a decoder told that the image is shorter (the frame header's height,
patched in a copy of the bytes) stops after the rows a crop reads and skips the entropy decoding, IDCT and colour
conversion of the rest. The decoded rows keep their pixels to the bit, all but the last: fancy 4:2:0 upsampling
reads the chroma row below, which a shortened image replicates instead, so the new height is one row more than
the warp reads, rounded up to whole MCU rows. ``tests/test_decode.py`` checks crops against the full decode's on
every sample image and on 4:4:4 / 4:2:2 / 4:2:0 / restart-marker files. Progressive and arithmetic-coded JPEGs
(all scans are needed), non-JPEGs and crops that reach the bottom decode whole. Rows above a crop are still
decoded: the entropy-coded data has no entry point in the middle.

Errors: a missing file raises ``FileNotFoundError``, an unreadable, truncated or undecodable one
:class:`~sar.data.image_check.ImageReadError` (an ``OSError``); both name the file and the image id.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np

try:
    import simplejpeg
except ImportError:  # a declared dependency; an image without it (an offline GPU box) decodes with OpenCV: same pixels
    simplejpeg = None

from sar.data import transforms as T
from sar.data.image_check import ImageReadError, jpeg_frame_header, truncation_problem

__all__ = ["REDUCTIONS", "EncodedImage", "image_size", "jpeg_frame", "read_image", "reduction_for",
           "reduction_matrix", "rows_for_warp"]

#: The DCT reductions used (libjpeg also offers N/8 for other N; powers of two keep the pixel grid aligned).
REDUCTIONS: tuple[int, ...] = (1, 2, 4, 8)
_JPEG_SOI = (0xFF, 0xD8)
#: Frame headers of sequential Huffman-coded JPEGs (baseline, extended): scan data in MCU rows, top to bottom.
_SEQUENTIAL_SOF = (0xC0, 0xC1)


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


def jpeg_frame(data: np.ndarray) -> tuple[int, int, int] | None:
    """For a sequential Huffman-coded JPEG (SOF0 / SOF1): (byte offset of the frame header's height field, the
    height, the height of an MCU row in pixels); None for any other file (progressive, arithmetic, lossless,
    not a JPEG, an unparsable header)."""
    if not _is_jpeg(data):
        return None
    found = jpeg_frame_header(io.BytesIO(data.tobytes()))
    if isinstance(found, str):
        return None
    code, start, length = found
    if code not in _SEQUENTIAL_SOF or length < 6 or start + length > data.size:
        return None
    frame = data[start:start + length].tobytes()  # precision, height, width, components, 3 bytes per component
    height, components = (frame[1] << 8) | frame[2], frame[5]
    if height == 0 or components == 0 or length < 6 + 3 * components:
        return None
    v_max = max(frame[7 + 3 * c] & 0x0F for c in range(components))
    return start + 1, height, 8 * max(1, v_max)


def rows_for_warp(inverse: np.ndarray, output_size: tuple[int, int] | list[int], reduction: int = 1) -> int:
    """How many full-size image rows from the top a bilinear ``cv2.warpAffine`` to ``output_size = (w, h)``
    reads, when it runs on the 1/``reduction`` decode (through :func:`reduction_matrix`); ``inverse``: the warp's
    inverse, output pixels -> full-size image pixels (the ``inv_warp`` every loader stores). The lowest source row
    its corners sample, + 1 for the bilinear neighbour, + 1 for OpenCV's fixed-point coordinates, in whole reduced
    rows; at least one row."""
    w, h = int(output_size[0]), int(output_size[1])
    corners = np.array([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]])
    y_max = float(T.transform_points(corners, inverse)[:, 1].max())
    r = int(reduction)
    reduced = (y_max - (r - 1) / 2.0) / r
    return max(1, (math.floor(reduced) + 3) * r)


def _shortened(data: np.ndarray, rows: int | None) -> tuple[np.ndarray, int | None]:
    """``data`` with its frame height cut to the whole MCU rows that hold ``rows + 1`` full-size rows (module
    docstring), and the new height; ``data`` itself and None when that saves no MCU row or is not possible."""
    if rows is None:
        return data, None
    frame = jpeg_frame(data)
    if frame is None:
        return data, None
    offset, height, mcu = frame
    new_height = -(-(int(rows) + 1) // mcu) * mcu  # one spare row at least: the last row may change
    if new_height >= height:
        return data, None
    out = data.copy()
    out[offset] = new_height >> 8
    out[offset + 1] = new_height & 0xFF
    return out, new_height


def _decode(data: np.ndarray, where: str, reduction: int = 1,
            size: tuple[int, int] | None = None, rows: int | None = None) -> tuple[np.ndarray, int]:
    """Decode ``data`` (reduced by ``reduction`` when it is a JPEG of full ``size`` (width, height), read from its
    header by the caller; only its top ``rows`` full-size rows, and as many more as a whole MCU row needs, when
    ``rows`` is given and the file allows it); returns the pixels and the reduction used."""
    if _is_jpeg(data):
        short, new_height = _shortened(data, rows)
        if new_height is not None:
            try:
                if reduction > 1 and size is not None:
                    want = (math.ceil(new_height / reduction), math.ceil(size[0] / reduction))
                    image = simplejpeg.decode_jpeg(short, colorspace="BGR", strict=False, min_height=want[0],
                                                   min_width=want[1])
                    if image.shape[:2] == want:
                        return image, reduction
                image = simplejpeg.decode_jpeg(short, colorspace="BGR", strict=False)
                if image.shape[0] == new_height:
                    return image, 1
            except ValueError:
                pass  # libjpeg-turbo refuses it: decode the file as it is
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

    def decode(self, pixels_per_output: float = 1.0, max_factor: int = 8,
               rows: int | None = None) -> tuple[np.ndarray, int]:
        """The pixels (BGR uint8 HxWx3) and the reduction r used (1: full size); map a warp of full-size
        coordinates through :func:`reduction_matrix` ``(r)`` to apply it to these pixels. ``rows``: only the
        top ``rows`` full-size rows are needed (:func:`rows_for_warp`); the image may then come back shorter
        than the file's (module docstring, rows-only decoding), with those rows unchanged."""
        r = reduction_for(pixels_per_output, max_factor)
        size = self.size if r > 1 else None  # the header, read once (a non-JPEG is decoded by `size`)
        if self._full is not None:
            return self._full, 1
        return _decode(self.data, self.where, r, size, rows)

    def decode_for_warp(self, inverse: np.ndarray, output_size: tuple[int, int], pixels_per_output: float = 1.0,
                        max_factor: int = 8, rows_only: bool = True) -> tuple[np.ndarray, int]:
        """:meth:`decode` for a warp to ``output_size`` (w, h) whose inverse (output -> full-size image pixels) is
        ``inverse``: reduced by the largest r the crop allows, and only the rows the warp reads when
        ``rows_only``."""
        r = reduction_for(pixels_per_output, max_factor)
        return self.decode(pixels_per_output, max_factor, rows_for_warp(inverse, output_size, r) if rows_only else None)


def read_image(path: str, image_id: int | None = None) -> np.ndarray:
    """Decode an image at full size as BGR uint8 HxWx3.

    The file is read once and decoded from memory, after the tail check of :mod:`sar.data.image_check` (a JPEG
    without its end-of-image marker, a PNG without IEND): libjpeg would decode a truncated JPEG into a half-grey
    image with a bare warning. Setup checks every image up front, so an error here means the file changed after
    that check."""
    return EncodedImage(path, image_id).decode()[0]
