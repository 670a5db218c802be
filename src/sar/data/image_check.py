"""Up-front image checks: every image a split references exists, has a readable header and is complete.

Run by :meth:`sar.data.datamodule.TopDownDataModule.setup` on the train set and every val set, before the first
training step, and by ``sar.predict`` on its inputs. One file costs a ``stat``, a read of its header and a read of
its last bytes (no decoding): thousands of files per second, spread over a thread pool (network file systems).

Rules (:func:`check_image` returns the problem as text, ``None`` for a good file):

* missing, not a regular file, empty, or unreadable (permissions, I/O error): a problem;
* JPEG (``FF D8 FF``): the markers up to the frame header (SOF) must parse and give a non-zero size, and the
  file's last 4 KiB must hold the end-of-image marker ``FF D9`` (after the last start-of-scan ``FF DA`` when one
  is there). Compressed scan data never holds ``FF D9`` (JPEG stuffs every ``FF`` byte in it), so a file cut
  inside its scan data fails, while bytes some cameras append after the marker (and zero / whitespace padding)
  are accepted. A truncated JPEG otherwise decodes with a bare libjpeg warning ("Premature end of JPEG file", no
  file named) into a half-grey image that would be trained on;
* PNG: the signature and the ``IHDR`` chunk (non-zero size) must be there, and the file must end with the ``IEND``
  chunk (same padding allowed);
* other formats (BMP, TIFF, WebP, ...): OpenCV must recognise the signature and, when Pillow is installed and
  knows the format, ``PIL.Image.open`` (header only) must succeed with a non-zero size;
* anything else is "not an image".

:func:`check_record_images` applies this to instance records and raises :class:`ImageCheckError` naming how many
images are bad, the first few of them with their image id, the annotation file that references them and the
problem. :func:`truncation_problem` is the in-memory tail check the loader (``read_image``) repeats on every read,
for a file that changed after the check.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = [
    "ImageCheckError",
    "ImageReadError",
    "check_image",
    "check_record_images",
    "find_bad_images",
    "jpeg_frame_header",
    "truncation_problem",
]

PathLike = str | os.PathLike[str]

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
JPEG_SOS = b"\xff\xda"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PADDING = b"\x00 \t\r\n"
_TAIL = 4096  # bytes read from the end of a file per step
_HEADER = 64
#: JPEG frame headers (SOF0..SOF15 less DHT C4, JPG C8 and DAC CC): they carry the image size.
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: How many bad files an error lists by name.
MAX_LISTED = 5


class ImageCheckError(ValueError):
    """Images referenced by a split are missing, unreadable or truncated (raised before training)."""


class ImageReadError(OSError):
    """An image could not be read or decoded when a sample was built (it changed after the up-front check)."""


def _pil_image() -> Any:
    """``PIL.Image`` when Pillow is installed (an optional dependency), else None."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def _tail_problem(tail: bytes, kind: str) -> str | None:
    """The truncation problem of a file whose last non-padding bytes are ``tail`` (``kind``: jpeg | png)."""
    if kind == "jpeg" and tail.rfind(JPEG_EOI) <= tail.rfind(JPEG_SOS):
        return "truncated JPEG: no end-of-image marker FF D9 after the image data"
    if kind == "png" and not tail.endswith(PNG_IEND):
        return "truncated PNG: the file does not end with the IEND chunk"
    return None


def truncation_problem(data: Any) -> str | None:
    """The tail check on a whole file in memory (bytes or a uint8 array): a JPEG without its end-of-image marker or
    a PNG without its IEND chunk is truncated; other formats are not checked here (None)."""
    head = bytes(data[:8])
    kind = "jpeg" if head.startswith(JPEG_SOI) else "png" if head.startswith(PNG_SIGNATURE) else None
    if kind is None:
        return None
    end = len(data)
    while end > 0 and data[end - 1] in _PADDING:
        end -= 1
    return _tail_problem(bytes(data[max(0, end - _TAIL):end]), kind)


def _read_tail(handle: Any, size: int) -> bytes:
    """The last bytes of the file before any trailing padding (up to ``_TAIL`` bytes; fewer near the start)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL)
        handle.seek(start)
        block = handle.read(end - start).rstrip(_PADDING)
        if block:
            return block
        end = start
    return b""


def jpeg_frame_header(handle: Any) -> tuple[int, int, int] | str:
    """Walk a JPEG's markers from byte 2 (after SOI) to its frame header (SOF): ``(marker code, byte offset of
    the header's contents after its length field, their length)``, with ``handle`` left at that offset, or the
    problem as text. Shared by the up-front check and the loader's rows-only decoding (``sar.data.decode``)."""
    handle.seek(2)
    while True:
        byte = handle.read(1)
        if not byte:
            return "unreadable JPEG header: the file ends before the frame header"
        if byte != b"\xff":
            return "unreadable JPEG header: no marker where one is expected"
        marker = handle.read(1)
        while marker == b"\xff":  # fill bytes
            marker = handle.read(1)
        if not marker:
            return "unreadable JPEG header: the file ends before the frame header"
        code = marker[0]
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # markers without a length
            continue
        if code in (0xD9, 0xDA):
            return "unreadable JPEG header: no frame header (SOF) before the image data"
        raw = handle.read(2)
        if len(raw) < 2:
            return "unreadable JPEG header: the file ends before the frame header"
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            return f"unreadable JPEG header: marker FF {code:02X} has length {length}"
        if code in JPEG_SOF:
            return code, handle.tell(), length - 2
        handle.seek(length - 2, os.SEEK_CUR)


def _jpeg_header_problem(handle: Any) -> str | None:
    """The problem of a JPEG's markers up to its frame header, or None for a frame of non-zero size."""
    found = jpeg_frame_header(handle)
    if isinstance(found, str):
        return found
    frame = handle.read(5)
    if len(frame) < 5:
        return "unreadable JPEG header: the frame header is cut"
    _, height, width = struct.unpack(">BHH", frame)
    if width == 0 or height == 0:
        return f"unreadable JPEG header: image size {width}x{height}"
    return None


def _png_header_problem(header: bytes) -> str | None:
    if len(header) < 24 or header[12:16] != b"IHDR":
        return "unreadable PNG header: no IHDR chunk after the signature"
    width, height = struct.unpack(">II", header[16:24])
    if width == 0 or height == 0:
        return f"unreadable PNG header: image size {width}x{height}"
    return None


def _other_format_problem(path: str) -> str | None:
    import cv2

    if not cv2.haveImageReader(path):
        return "not an image: the file signature matches no image format OpenCV can decode"
    image_module = _pil_image()
    if image_module is None:
        return None
    try:
        with image_module.open(path) as image:  # lazy: reads the header only
            width, height = image.size
    except image_module.UnidentifiedImageError:
        return None  # a format OpenCV decodes but Pillow does not know
    except Exception as err:  # noqa: BLE001 - any header failure is reported with the file
        return f"unreadable image header ({type(err).__name__}: {err})"
    if width <= 0 or height <= 0:
        return f"unreadable image header: image size {width}x{height}"
    return None


def check_image(path: PathLike) -> str | None:
    """The problem of one image file as a short text (see the module docstring), or None when it is good."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except OSError as err:
        return f"unreadable ({type(err).__name__}: {err.strerror or err})"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with open(path, "rb") as handle:
            header = handle.read(_HEADER)
            if header.startswith(JPEG_SOI):
                return _jpeg_header_problem(handle) or _tail_problem(_read_tail(handle, info.st_size), "jpeg")
            if header.startswith(PNG_SIGNATURE):
                return _png_header_problem(header) or _tail_problem(_read_tail(handle, info.st_size), "png")
    except OSError as err:
        return f"unreadable ({type(err).__name__}: {err.strerror or err})"
    return _other_format_problem(path)


def find_bad_images(paths: Iterable[PathLike], workers: int | None = None) -> dict[str, str]:
    """``{path: problem}`` for the bad files among ``paths`` (duplicates checked once), in input order."""
    unique = list(dict.fromkeys(os.fspath(p) for p in paths))
    if workers is None:
        workers = min(8, 2 * (os.cpu_count() or 1))  # I/O-bound on network file systems
    if workers <= 1 or len(unique) < 64:
        problems = [check_image(p) for p in unique]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-check") as pool:
            problems = list(pool.map(check_image, unique, chunksize=64))
    return {p: problem for p, problem in zip(unique, problems) if problem is not None}


def check_record_images(sources: Sequence[tuple[str, Sequence[Mapping[str, Any]]]],
                        max_listed: int = MAX_LISTED) -> int:
    """Check every distinct ``image_path`` of the records of each ``(source, records)``; ``source`` names where
    the records come from (e.g. ``"train set <annotation file>"``). Returns the number of distinct images checked;
    raises :class:`ImageCheckError` naming the count of bad images and the first ``max_listed`` of them (file,
    image id, source, problem)."""
    where: dict[str, tuple[Any, str]] = {}
    for source, records in sources:
        for record in records:
            where.setdefault(str(record["image_path"]), (record.get("image_id"), source))
    bad = find_bad_images(where)
    if bad:
        lines = [f"  {path} (image_id {where[path][0]}, {where[path][1]}): {problem}"
                 for path, problem in list(bad.items())[:max_listed]]
        if len(bad) > max_listed:
            lines.append(f"  ... and {len(bad) - max_listed} more")
        raise ImageCheckError(
            f"{len(bad)} of {len(where)} images are missing, unreadable or truncated (checked before training; "
            "fix or remove them, or drop their annotations):\n" + "\n".join(lines)
        )
    return len(where)

