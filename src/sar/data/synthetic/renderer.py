"""The renderer: a scene of sampled figures (:mod:`sar.data.synthetic.figure`) rasterised into one image with
its COCO person annotations (:func:`render_image`), and whole splits rendered to files (:func:`render_split`).

Scene: a textured background (gradient, smooth colour noise, stripes), clutter drawn behind people
(random shapes and limb-like distractor sticks), the people (in order), then occluders (textured
rectangles, ellipses, blobs and bars placed over keypoints), then sensor noise and blur.

Occlusion rule
--------------
Every drawn thing (person or occluder) gets an increasing *layer* number and writes it into a layer map
where its silhouette covers the image. A keypoint of person ``i`` is occluded (``v=1``) iff the layer
at its (rounded) pixel is greater than person ``i``'s layer, i.e. a later-drawn person or occluder
covers it (self-occlusion by the person's own limbs is not counted, ears behind the head are).
Keypoints outside the image (``x`` not in ``[0, w-1]`` or ``y`` not in ``[0, h-1]``) get ``v=0`` and
are written as ``0, 0``; otherwise ``v=2``. Coordinates are exact floats (pixel-centre convention).

Annotation fields: ``bbox`` is the tight box of the person's full rendered silhouette (amodal, i.e.
including the parts later covered by others) clipped to the image, ``area`` is that silhouette's pixel
area in the image, ``segmentation`` its polygon(s), ``num_keypoints`` the count of ``v > 0``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sar.data.synthetic.config import SyntheticConfig, image_rng
from sar.data.synthetic.figure import NUM_KPTS, Person, sample_person
from sar.data.synthetic.shapes import (
    Shape,
    capsule,
    ellipse,
    new_shape,
    rand_colour,
    shaded_limb,
    skin_colour,
)

__all__ = ["render_image", "render_split"]

_SHIFT = 4  # fixed-point bits for sub-pixel polygon drawing
_SHIFT_SCALE = float(1 << _SHIFT)


# ------------------------------------------------------------------------------------------ raster helpers
@lru_cache(maxsize=8)
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx, yy


def _upsample(small: np.ndarray, w: int, h: int) -> np.ndarray:
    """Smooth upsampling: bicubic to <= 4x, then bilinear (bicubic alone is slow for large factors)."""
    sh, sw = small.shape[:2]
    if w > 4 * sw or h > 4 * sh:
        small = cv2.resize(small, (min(w, 4 * sw), min(h, 4 * sh)), interpolation=cv2.INTER_CUBIC)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1]-ish of shape (h, w), feature size ~``cell`` pixels."""
    gw, gh = max(2, int(w / cell) + 2), max(2, int(h / cell) + 2)
    return _upsample(rng.uniform(-1, 1, (gh, gw)).astype(np.float32), w, h)


@lru_cache(maxsize=4)
def _noise_bank(w: int, h: int) -> np.ndarray:
    """Fixed standard-normal noise (h+64, w+64, 3); random crops of it are the sensor noise (fast)."""
    return np.random.default_rng(20240611).standard_normal((h + 64, w + 64, 3), dtype=np.float32)


# ------------------------------------------------------------------------------------------ the scene
def _composite(img: np.ndarray, layers: np.ndarray, layer: int, shape: Shape,
               tex: tuple[float, float, float, float], rng: np.random.Generator
               ) -> tuple[np.ndarray, int, int] | None:
    """Draw ``shape`` into ``img`` (float32 BGR) and ``layers``; return (silhouette ROI mask, x0, y0).

    Polygons are rasterised as labels (1..n, later ones on top) into a map of the shape's ROI; labels are
    then turned into colours x (1 + stripe_amp * stripes + noise_amp * smooth noise) with lookup tables.
    """
    h, w = layers.shape
    n = len(shape.polys)
    if not 0 < n < 256:
        raise ValueError(f"a shape needs 1..255 polygons, got {n}")
    sizes = np.cumsum([len(p) for p in shape.polys])[:-1]
    allpts = np.concatenate(shape.polys)
    x0, y0 = np.floor(allpts.min(0) - 1).astype(int)
    x1, y1 = np.ceil(allpts.max(0) + 2).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    rw, rh = x1 - x0, y1 - y0
    labels = np.zeros((rh, rw), np.uint8)
    fixed = np.round((allpts - np.array([x0, y0], float)) * _SHIFT_SCALE).astype(np.int32)
    for i, pts in enumerate(np.split(fixed, sizes)):
        cv2.fillPoly(labels, [pts], i + 1, cv2.LINE_8, _SHIFT)
    mask = labels > 0
    if not mask.any():
        return None
    lut = np.zeros((256, 1, 3), np.float32)
    lut[1:n + 1, 0] = np.clip(np.stack(shape.colours), 0, 255)
    amps = np.zeros((256, 1, 2), np.float32)
    amps[1:n + 1, 0, 0] = shape.stripe_amp
    amps[1:n + 1, 0, 1] = shape.noise_amp
    colour = cv2.LUT(cv2.merge([labels, labels, labels]), lut)
    amp = cv2.LUT(cv2.merge([labels, labels]), amps)
    freq, ang, phase, cell = tex
    xx, yy = _grid(w, h)
    stripes = np.sin((xx[y0:y1, x0:x1] * math.cos(ang) + yy[y0:y1, x0:x1] * math.sin(ang))
                     * np.float32(freq * 2 * math.pi) + np.float32(phase))
    mod = 1.0 + amp[..., 0] * stripes + amp[..., 1] * _smooth_noise(rng, rw, rh, cell)
    colour *= mod[..., None]
    np.copyto(img[y0:y1, x0:x1], colour, where=mask[..., None])
    layers[y0:y1, x0:x1][mask] = layer
    return mask, x0, y0


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradient + smooth colour blobs (+ stripes, + fine texture), float32 BGR."""
    xx, yy = _grid(w, h)
    gh, gw = int(rng.integers(2, 9)), int(rng.integers(2, 9))
    ang = rng.uniform(0, 2 * math.pi)
    gy, gx = np.mgrid[0:gh, 0:gw]
    g = gx / max(1, gw - 1) * math.cos(ang) + gy / max(1, gh - 1) * math.sin(ang)
    g = (g - g.min()) / max(1e-6, float(g.max() - g.min()))
    c0 = rand_colour(rng, sat=(0, 0.7), val=(0.1, 0.95))
    c1 = rand_colour(rng, sat=(0, 0.7), val=(0.1, 0.95))
    small = c0 + g[..., None] * (c1 - c0) + rng.uniform(-1, 1, (gh, gw, 3)) * rng.uniform(10, 60)
    img = _upsample(small.astype(np.float32), w, h)
    if rng.uniform() < 0.45:
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 40)
        st = np.sin((xx * math.cos(a) + yy * math.sin(a)) * np.float32(2 * math.pi / period))
        if rng.uniform() < 0.5:
            st = np.sign(st)
        img += st[..., None] * ((rand_colour(rng) - 128) * rng.uniform(0.1, 0.4)).astype(np.float32)
    if rng.uniform() < 0.5:  # fine texture
        fine = _smooth_noise(rng, w, h, rng.uniform(1.5, 4)) * np.float32(rng.uniform(5, 25))
        img += fine[..., None]
    return img


def _clutter(img: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig) -> None:
    """Random shapes and limb-like sticks drawn into the background (never occlude people)."""
    h, w = img.shape[:2]
    size = min(w, h)
    for _ in range(int(rng.poisson(cfg.clutter * 12))):
        kind = rng.uniform()
        col = tuple(float(c) for c in (rand_colour(rng) if rng.uniform() < 0.8 else skin_colour(rng)))
        c = rng.uniform([0, 0], [w, h])
        r = size * rng.uniform(0.02, 0.15)
        if kind < 0.2:
            cv2.circle(img, (int(c[0]), int(c[1])), int(r), col, -1, cv2.LINE_AA)
        elif kind < 0.4:
            rect = ((float(c[0]), float(c[1])), (2 * r, r * rng.uniform(0.3, 2)), rng.uniform(0, 180))
            box = cv2.boxPoints(rect)
            cv2.fillPoly(img, [np.round(box).astype(np.int32)], col, cv2.LINE_AA)
        elif kind < 0.55:
            n = int(rng.integers(3, 7))
            pts = c + rng.uniform(-r, r, (n, 2))
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], col, cv2.LINE_AA)
        elif kind < 0.7:
            p1 = c + rng.uniform(-3 * r, 3 * r, 2)
            thick = int(rng.integers(1, 4))
            cv2.line(img, (int(c[0]), int(c[1])), (int(p1[0]), int(p1[1])), col, thick, cv2.LINE_AA)
        else:  # limb-like distractor: one or two shaded tapered segments
            shape = new_shape()
            p0 = c
            ang = rng.uniform(0, 2 * math.pi)
            rad = size * rng.uniform(0.012, 0.04)
            colour = np.asarray(col, np.float32)
            for _seg in range(int(rng.integers(1, 3))):
                length = size * rng.uniform(0.08, 0.25)
                p1 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
                shaded_limb(shape, p0, p1, rad, rad * rng.uniform(0.6, 1.0), colour, 0.0, 0.1,
                            np.array([-0.6, -0.8]))
                p0, ang, rad = p1, ang + rng.uniform(-2.0, 2.0), rad * 0.8
            for poly, colr in zip(shape.polys, shape.colours):
                pts = np.round(poly * _SHIFT_SCALE).astype(np.int32)
                fill = tuple(float(v) for v in np.clip(colr, 0, 255))
                cv2.fillPoly(img, [pts], fill, cv2.LINE_8, shift=_SHIFT)


def _occluder_shape(rng: np.random.Generator, centre: np.ndarray, size: float, w: int, h: int) -> Shape:
    """An occluder: a rotated rectangle, an ellipse, a star-shaped blob or a bar crossing the image."""
    shape = new_shape()
    colour = rand_colour(rng) if rng.uniform() < 0.85 else skin_colour(rng)
    stripe = rng.uniform(0.1, 0.4) if rng.uniform() < 0.5 else 0.0
    noise = rng.uniform(0.05, 0.3)
    kind = rng.uniform()
    if kind < 0.35:  # rotated rectangle
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (size, size * rng.uniform(0.3, 1.5)),
                             rng.uniform(0, 180)))
        shape.add(box.astype(float), colour, stripe, noise)
    elif kind < 0.6:
        shape.add(ellipse(centre, size / 2, size / 2 * rng.uniform(0.4, 1.0), rng.uniform(0, math.pi)),
                  colour, stripe, noise)
    elif kind < 0.85:  # star-shaped blob
        n = int(rng.integers(6, 11))
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = size / 2 * rng.uniform(0.5, 1.0, n)
        shape.add(centre + np.stack([rad * np.cos(t), rad * np.sin(t)], 1), colour, stripe, noise)
    else:  # long bar crossing the image (pole, railing)
        ang = rng.uniform(0, math.pi)
        d = np.array([math.cos(ang), math.sin(ang)]) * (w + h)
        shape.add(capsule(centre - d, centre + d, size * 0.15, size * 0.15), colour, stripe, noise)
    return shape


def _place(rng: np.random.Generator, cfg: SyntheticConfig, person: Person,
           placed: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Pelvis position for ``person`` given the (pelvis, box size) of already placed people."""
    w, h = cfg.image_size
    pts = np.concatenate(person.shape.polys)
    lo, hi = pts.min(0), pts.max(0)
    size = hi - lo
    slack = cfg.truncation * size
    low = -lo - slack
    high = np.array([w, h], float) - hi + slack
    mid = (low + high) / 2
    low, high = np.minimum(low, mid), np.maximum(high, mid)
    if placed and rng.uniform() < cfg.overlap:
        anchor, a_size = placed[int(rng.integers(len(placed)))]
        sign = 1.0 if rng.uniform() < 0.5 else -1.0
        off = np.array([sign * rng.uniform(0.15, 0.6) * max(size[0], a_size[0]),
                        rng.uniform(-0.2, 0.2) * max(size[1], a_size[1])])
        return np.clip(anchor + off, low, high)
    return rng.uniform(low, high)


def _label_points(points: np.ndarray, self_hidden: np.ndarray, layers: np.ndarray, layer: int) -> np.ndarray:
    """(N, 3) ``x, y, v`` of image-px points by the occlusion rule of the module docstring."""
    h, w = layers.shape
    out = np.zeros((len(points), 3))
    inside = (points[:, 0] >= 0) & (points[:, 0] <= w - 1) & (points[:, 1] >= 0) & (points[:, 1] <= h - 1)
    if inside.any():
        xi, yi = np.round(points[inside]).astype(int).T
        occluded = (layers[yi, xi] > layer) | self_hidden[inside]
        out[inside, :2] = points[inside]
        out[inside, 2] = np.where(occluded, 1, 2)
    return out


def render_image(cfg: SyntheticConfig, rng: np.random.Generator,
                 extra: bool = False) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Render one image. Returns (uint8 BGR image, person annotations without ids).

    With ``extra=True`` each annotation also carries ``_extra`` ((NUM_EXTRA, 3) ``x, y, v`` of
    :data:`EXTRA_NAMES`, same visibility rule) and ``_head_box`` (``[x1, y1, x2, y2]`` of the drawn head
    ellipse, not clipped) for the other formats' writers; the image is the same either way.
    """
    w, h = cfg.image_size
    img = _background(rng, w, h)
    _clutter(img, rng, cfg)
    layers = np.zeros((h, w), np.uint8)
    n_people = int(rng.integers(cfg.min_people, cfg.max_people + 1))
    people: list[Person] = []
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    renders: list[tuple[np.ndarray, int, int] | None] = []
    person_layer: list[int] = []
    layer = 0
    for _ in range(n_people):
        hp = rng.uniform(*cfg.person_height) * h
        person = sample_person(rng, cfg, hp)
        pos = _place(rng, cfg, person, placed)
        pts = np.concatenate(person.shape.polys)
        placed.append((pos, pts.max(0) - pts.min(0)))
        person.keypoints = person.keypoints + pos
        person.extra, person.head_poly = person.extra + pos, person.head_poly + pos
        person.shape.translate(pos)
        layer += 1
        renders.append(_composite(img, layers, layer, person.shape, person.texture, rng))
        people.append(person)
        person_layer.append(layer)
    # occluders over keypoints of random people
    n_occ = int(rng.poisson(cfg.occlusion * 2.0)) if rng.uniform() < cfg.occlusion else 0
    for _ in range(n_occ):
        target = people[int(rng.integers(len(people)))]
        k = int(rng.integers(NUM_KPTS))
        size = target.height_px * rng.uniform(0.1, 0.35)
        centre = target.keypoints[k] + rng.uniform(-0.5, 0.5, 2) * size
        shape = _occluder_shape(rng, centre, size, w, h)
        tex = (rng.uniform(0.05, 0.3), rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi),
               rng.uniform(3, 15))
        layer += 1
        _composite(img, layers, layer, shape, tex, rng)
    crowd = _crowd_region(img, layers, layer, rng, cfg) if cfg.crowd > 0 and rng.uniform() < cfg.crowd else None
    if crowd is not None:
        layer = crowd[1]
    # sensor: blur + noise (a random crop of a fixed noise bank)
    if cfg.noise > 0:
        if rng.uniform() < 0.4:
            img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.4, 1.0) * cfg.noise)
        sigma = rng.uniform(0, 6) * cfg.noise
        if sigma > 0.5:
            ox, oy = rng.integers(0, 64, 2)
            img += _noise_bank(w, h)[oy:oy + h, ox:ox + w] * np.float32(sigma)
    out = cv2.convertScaleAbs(img)  # saturating round to uint8

    anns: list[dict[str, Any]] = []
    for person, rend, lay in zip(people, renders, person_layer):
        if rend is None:
            continue
        mask, x0, y0 = rend
        xs, ys = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
        bx0, by0, bx1, by1 = xs[0] + x0, ys[0] + y0, xs[-1] + x0, ys[-1] + y0
        kps = np.zeros((NUM_KPTS, 3))
        for k, (x, y) in enumerate(person.keypoints):
            if 0.0 <= x <= w - 1 and 0.0 <= y <= h - 1:
                occluded = layers[round(y), round(x)] > lay or person.self_hidden[k]
                kps[k] = (x, y, 1 if occluded else 2)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        seg = []
        for cnt in contours:
            cnt = cv2.approxPolyDP(cnt, 1.0, True).reshape(-1, 2) + np.array([x0, y0])
            if len(cnt) >= 3:
                seg.append([float(v) for v in cnt.reshape(-1)])
        anns.append({
            "bbox": [float(bx0), float(by0), float(bx1 - bx0 + 1), float(by1 - by0 + 1)],
            "area": float(mask.sum()),
            "segmentation": seg,
            "keypoints": [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(kps.reshape(-1))],
            "num_keypoints": int((kps[:, 2] > 0).sum()),
            "iscrowd": 0,
            "category_id": 1,
        })
        if extra:
            anns[-1]["_extra"] = _label_points(person.extra, person.extra_hidden, layers, lay)
            anns[-1]["_head_box"] = [*person.head_poly.min(0).tolist(), *person.head_poly.max(0).tolist()]
    if crowd is not None:
        anns.append(_crowd_annotation(crowd[0]))
    return out, anns


def _crowd_region(img: np.ndarray, layers: np.ndarray, layer: int, rng: np.random.Generator,
                  cfg: SyntheticConfig) -> tuple[np.ndarray, int] | None:
    """Draw a dense group of 5-9 small people (height 8-14 % of the image) in a random region on top of the scene;
    return (their union mask over the image, the last layer used), None when nothing landed in the image. Like a
    COCO crowd, the group is one ``iscrowd`` annotation without keypoints (:func:`_crowd_annotation`)."""
    h, w = layers.shape
    size = np.array([rng.uniform(0.25, 0.4) * w, rng.uniform(0.15, 0.25) * h])
    origin = rng.uniform([0.0, 0.0], [w - size[0], h - size[1]])
    union = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(5, 10))):
        person = sample_person(rng, cfg, rng.uniform(0.08, 0.14) * h)
        pts = np.concatenate(person.shape.polys)
        person.shape.translate(origin + rng.uniform(0, 1, 2) * size - pts.min(0))
        layer += 1
        rend = _composite(img, layers, layer, person.shape, person.texture, rng)
        if rend is not None:
            mask, x0, y0 = rend
            union[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]] |= mask.astype(bool)
    return (union, layer) if union.any() else None


def _crowd_annotation(union: np.ndarray) -> dict[str, Any]:
    """The ``iscrowd: 1`` annotation of a crowd region: its union mask as polygons, no keypoints."""
    contours, _ = cv2.findContours(union.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    seg = [[float(v) for v in c.reshape(-1)] for c in (cv2.approxPolyDP(c, 1.0, True) for c in contours)
           if len(c) >= 3]
    ys, xs = np.nonzero(union)
    return {"bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
            "area": float(union.sum()), "segmentation": seg, "keypoints": [0] * (3 * NUM_KPTS), "num_keypoints": 0,
            "iscrowd": 1, "category_id": 1}


# ------------------------------------------------------------------------------------------ splits
def _render_to_file(args: tuple[Any, ...]) -> list[dict[str, Any]]:
    cfg_d, stream, index, path, *rest = args
    cfg = SyntheticConfig(**cfg_d)
    img, anns = render_image(cfg, image_rng(cfg.seed, stream, index), extra=bool(rest and rest[0]))
    if not cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
        raise OSError(f"could not write {path}")
    return anns


def _worker_init() -> None:
    cv2.setNumThreads(1)


def render_split(cfg: SyntheticConfig, stream: int, paths: Sequence[Path | str], num_workers: int | None = None,
                 extra: bool = False) -> list[list[dict[str, Any]]]:
    """Render image ``i`` of rng stream ``stream`` to ``paths[i]`` for every i; return each image's annotations.

    Parallel (spawned processes) when ``num_workers > 1`` and there are at least 64 images; the output does not
    depend on ``num_workers``.
    """
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    cfg_d = cfg.to_dict()
    tasks = [(cfg_d, stream, i, str(p), extra) for i, p in enumerate(paths)]
    if num_workers > 1 and len(tasks) >= 64:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_worker_init) as ex:
            chunk = max(1, min(64, len(tasks) // (4 * num_workers)))
            return list(ex.map(_render_to_file, tasks, chunksize=chunk))
    return [_render_to_file(t) for t in tasks]
