"""Keypoint specifications: the single source of keypoint names, flip pairs, skeleton, sigmas and parts.

A spec lives in a YAML file (the packaged ones are ``sar/specs/<name>.yaml``) with these fields:

``name``            str, the dataset / spec name.
``keypoint_names``  list of K unique strings.
``skeleton``        list of ``[i, j]`` 0-based links (``i != j``, both in ``[0, K)``).
``sigmas``          list of K positive OKS sigmas, or ``null`` (no OKS metric, e.g. Human3.6M).
``joint_weights``   list of K non-negative loss weights (optional, default all 1).
``upper_body_ids``  / ``lower_body_ids``: disjoint lists of keypoint ids (optional, default empty).
``parts``           mapping part name -> list of keypoint ids (optional, default ``{"body": all ids}``).
``colors``          one ``[r, g, b]`` (0-255) per skeleton link, for drawing (optional, default grey).
``flip_pairs_extra`` list of ``[name_a, name_b]`` mirror pairs for keypoints whose names carry no side
                    (optional; e.g. the 68 face landmarks ``face-0`` ... ``face-67`` of COCO-WholeBody).
``source`` / ``notes`` free text, ignored.

Flip pairs are never written in the YAML: they are *derived* from the keypoint names by this rule.

1. A name is split into tokens at the separators ``_``, ``-``, ``.`` and spaces (``"l_hip"`` ->
   ``["l", "hip"]``, ``"hand_left_tip"`` -> ``["hand", "left", "tip"]``).
2. A token is a *side token* when, ignoring case, it is ``left`` / ``right`` / ``l`` / ``r``, or starts with
   ``left`` / ``right`` followed by a letter (camel case or fused words: ``leftEye``, ``lefthand``).
   So prefixes (``left_``, ``l_``), infixes (``_left_``) and suffixes (``_l``) are all recognised.
3. A name with exactly one side token is *sided*; its mirror name swaps that token's side word
   (``left`` <-> ``right``, ``l`` <-> ``r``) keeping the original letter case and everything else.
   A name with more than one side token is ambiguous and rejected.
4. Every sided name must have its mirror name in the spec (otherwise: error). Unsided names map to
   themselves, unless listed in ``flip_pairs_extra``, which may only pair unsided names, each at most once.

The result is validated as an involution: ``flip_indices[flip_indices[k]] == k`` for every ``k``.
Malformed specs raise ``ValueError`` naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = [
    "KeypointSpec",
    "available_specs",
    "derive_flip_indices",
    "load_spec",
    "mirror_name",
    "spec_from_dict",
]

_SEPARATORS = re.compile(r"([_\-. ]+)")
_SIDE_SWAP = {"left": "right", "right": "left", "l": "r", "r": "l"}
_FUSED_SIDE = re.compile(r"^(left|right)(?=[a-z])", re.IGNORECASE)
_DEFAULT_COLOR = (128, 128, 128)
_KNOWN_KEYS = frozenset(
    {
        "name",
        "keypoint_names",
        "skeleton",
        "sigmas",
        "joint_weights",
        "upper_body_ids",
        "lower_body_ids",
        "parts",
        "colors",
        "flip_pairs_extra",
        "source",
        "notes",
    }
)


# --------------------------------------------------------------------------------------------------------
# Flip derivation from names
# --------------------------------------------------------------------------------------------------------
def _match_case(word: str, like: str) -> str:
    """Return ``word`` spelled with the letter case of ``like`` (``"Left"`` -> ``"Right"``)."""
    if like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _swap_side_token(token: str) -> str | None:
    """The mirrored token, or None if ``token`` carries no side."""
    lower = token.lower()
    if lower in _SIDE_SWAP:
        return _match_case(_SIDE_SWAP[lower], token)
    match = _FUSED_SIDE.match(token)
    if match is not None:
        side = match.group(1)
        return _match_case(_SIDE_SWAP[side.lower()], side) + token[len(side) :]
    return None


def mirror_name(name: str) -> str | None:
    """Mirror a keypoint name by the side rule of this module, or None when the name carries no side.

    Raises ``ValueError`` when the name holds more than one side token (e.g. ``"left_to_right"``).
    """
    pieces = _SEPARATORS.split(name)  # tokens at even positions, separators at odd positions
    sided = [(i, swapped) for i, piece in enumerate(pieces[::2]) if (swapped := _swap_side_token(piece))]
    if not sided:
        return None
    if len(sided) > 1:
        raise ValueError(f"keypoint name {name!r} has more than one side token; the side is ambiguous")
    token_index, swapped = sided[0]
    pieces[2 * token_index] = swapped
    return "".join(pieces)


def derive_flip_indices(
    keypoint_names: Sequence[str], flip_pairs_extra: Sequence[Sequence[str]] = ()
) -> tuple[int, ...]:
    """Derive the flip permutation from keypoint names (plus explicit pairs for unsided names).

    Raises ``ValueError`` (without a file name; callers add it) when a sided name has no partner, an
    extra pair is malformed, or the result is not an involution.
    """
    index = {name: k for k, name in enumerate(keypoint_names)}
    if len(index) != len(keypoint_names):
        raise ValueError("keypoint_names contains duplicates")
    flip = list(range(len(keypoint_names)))
    for k, name in enumerate(keypoint_names):
        partner = mirror_name(name)
        if partner is None:
            continue
        if partner not in index:
            raise ValueError(f"keypoint {name!r} looks sided but its mirror {partner!r} is not in the spec")
        flip[k] = index[partner]

    seen: set[str] = set()
    for pair in flip_pairs_extra:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"flip_pairs_extra entries must be [name_a, name_b], got {pair!r}")
        a, b = pair
        if a == b:
            raise ValueError(f"flip_pairs_extra pairs {a!r} with itself")
        for name in (a, b):
            if name not in index:
                raise ValueError(f"flip_pairs_extra names unknown keypoint {name!r}")
            if mirror_name(name) is not None:
                raise ValueError(
                    f"flip_pairs_extra lists {name!r}, whose name carries a side: its partner is derived"
                )
            if name in seen:
                raise ValueError(f"flip_pairs_extra lists {name!r} more than once")
            seen.add(name)
        flip[index[a]], flip[index[b]] = index[b], index[a]

    _check_involution(flip, keypoint_names)
    return tuple(flip)


def _check_involution(flip: Sequence[int], names: Sequence[str]) -> None:
    num = len(names)
    if sorted(flip) != list(range(num)):
        raise ValueError(f"flip_indices is not a permutation of 0..{num - 1}")
    for k, j in enumerate(flip):
        if flip[j] != k:
            raise ValueError(f"flip is not an involution: {names[k]!r} -> {names[j]!r} -> {names[flip[j]]!r}")


# --------------------------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------------------------
def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class KeypointSpec:
    """Immutable description of a keypoint set (see the module docstring for the YAML form).

    The constructor normalises types (tuples, read-only numpy arrays) and validates every invariant, so a
    spec built in code is as trustworthy as a loaded one. Equality compares all fields by value.
    """

    name: str
    keypoint_names: tuple[str, ...]
    flip_indices: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    sigmas: np.ndarray | None
    joint_weights: np.ndarray
    upper_body_ids: tuple[int, ...] = ()
    lower_body_ids: tuple[int, ...] = ()
    parts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "keypoint_names", tuple(str(n) for n in self.keypoint_names))
        num = len(self.keypoint_names)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("spec name must be a non-empty string")
        if num == 0:
            raise ValueError("keypoint_names is empty")
        if len(set(self.keypoint_names)) != num:
            raise ValueError("keypoint_names contains duplicates")

        flip = tuple(int(j) for j in self.flip_indices)
        if len(flip) != num:
            raise ValueError(f"flip_indices has {len(flip)} entries, expected K={num}")
        _check_involution(flip, self.keypoint_names)
        set_(self, "flip_indices", flip)
        pairs = tuple(sorted((int(min(a, b)), int(max(a, b))) for a, b in self.flip_pairs))
        expected_pairs = tuple((k, j) for k, j in enumerate(flip) if k < j)
        if pairs != expected_pairs:
            raise ValueError(f"flip_pairs {pairs} do not match flip_indices (expected {expected_pairs})")
        set_(self, "flip_pairs", pairs)

        skeleton = tuple((int(a), int(b)) for a, b in self.skeleton)
        for a, b in skeleton:
            if not (0 <= a < num and 0 <= b < num) or a == b:
                raise ValueError(f"skeleton link ({a}, {b}) is out of range [0, {num}) or degenerate")
        set_(self, "skeleton", skeleton)

        if self.sigmas is not None:
            sigmas = np.asarray(self.sigmas, dtype=np.float64).copy()
            if sigmas.shape != (num,):
                raise ValueError(f"sigmas has shape {sigmas.shape}, expected ({num},)")
            if not np.all(np.isfinite(sigmas) & (sigmas > 0)):
                raise ValueError("sigmas must be finite and > 0")
            set_(self, "sigmas", _readonly(sigmas))

        weights = np.asarray(self.joint_weights, dtype=np.float32).copy()
        if weights.shape != (num,):
            raise ValueError(f"joint_weights has shape {weights.shape}, expected ({num},)")
        if not np.all(np.isfinite(weights) & (weights >= 0)):
            raise ValueError("joint_weights must be finite and >= 0")
        set_(self, "joint_weights", _readonly(weights))

        upper = self._ids("upper_body_ids", self.upper_body_ids, num)
        lower = self._ids("lower_body_ids", self.lower_body_ids, num)
        if set(upper) & set(lower):
            raise ValueError(f"upper_body_ids and lower_body_ids overlap: {sorted(set(upper) & set(lower))}")
        set_(self, "upper_body_ids", upper)
        set_(self, "lower_body_ids", lower)

        parts = dict(self.parts) if self.parts else {"body": tuple(range(num))}
        set_(self, "parts", {str(p): self._ids(f"parts.{p}", ids, num) for p, ids in parts.items()})

        colors = np.asarray(self.colors if len(self.colors) else [_DEFAULT_COLOR] * len(skeleton))
        colors = colors.reshape(-1, 3) if colors.size else np.zeros((0, 3))
        if colors.shape != (len(skeleton), 3):
            raise ValueError(f"colors has shape {colors.shape}, expected ({len(skeleton)}, 3): one per link")
        if not np.all((colors >= 0) & (colors <= 255) & (colors == np.round(colors))):
            raise ValueError("colors must be integer RGB values in [0, 255]")
        set_(self, "colors", _readonly(colors.astype(np.uint8)))

    @staticmethod
    def _ids(what: str, ids: Sequence[int], num: int) -> tuple[int, ...]:
        out = tuple(int(i) for i in ids)
        if any(not 0 <= i < num for i in out):
            raise ValueError(
                f"{what} has ids out of range [0, {num}): {[i for i in out if not 0 <= i < num]}"
            )
        if len(set(out)) != len(out):
            raise ValueError(f"{what} has duplicate ids")
        return out

    @property
    def num_keypoints(self) -> int:
        """K, the number of keypoints."""
        return len(self.keypoint_names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeypointSpec):
            return NotImplemented
        same_sigmas = (self.sigmas is None and other.sigmas is None) or (
            self.sigmas is not None and other.sigmas is not None and np.array_equal(self.sigmas, other.sigmas)
        )
        return (
            self.name == other.name
            and self.keypoint_names == other.keypoint_names
            and self.flip_indices == other.flip_indices
            and self.skeleton == other.skeleton
            and same_sigmas
            and np.array_equal(self.joint_weights, other.joint_weights)
            and self.upper_body_ids == other.upper_body_ids
            and self.lower_body_ids == other.lower_body_ids
            and self.parts == other.parts
            and np.array_equal(self.colors, other.colors)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.keypoint_names, self.flip_indices, self.skeleton))

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-serialisable dict that :func:`spec_from_dict` turns back into an equal spec."""
        extra = [
            [self.keypoint_names[a], self.keypoint_names[b]]
            for a, b in self.flip_pairs
            if mirror_name(self.keypoint_names[a]) is None
        ]
        out: dict[str, Any] = {
            "name": self.name,
            "keypoint_names": list(self.keypoint_names),
            "skeleton": [list(link) for link in self.skeleton],
            "sigmas": None if self.sigmas is None else [float(s) for s in self.sigmas],
            "joint_weights": [float(w) for w in self.joint_weights],
            "upper_body_ids": list(self.upper_body_ids),
            "lower_body_ids": list(self.lower_body_ids),
            "parts": {p: list(ids) for p, ids in self.parts.items()},
            "colors": self.colors.tolist(),
        }
        if extra:
            out["flip_pairs_extra"] = extra
        return out


# --------------------------------------------------------------------------------------------------------
# Parsing and loading
# --------------------------------------------------------------------------------------------------------
def _as_list(data: Mapping[str, Any], key: str, default: Any = None) -> list[Any]:
    value = data.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} must be a list, got {type(value).__name__}")  # noqa: TRY004
    return value


def spec_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> KeypointSpec:
    """Build and validate a :class:`KeypointSpec` from its YAML form; errors name ``source``."""
    try:
        if not isinstance(data, Mapping):
            raise ValueError(f"a spec must be a mapping, got {type(data).__name__}")  # noqa: TRY004
        if "flip_pairs" in data or "flip_indices" in data:
            raise ValueError(
                "flip pairs are derived from keypoint names; list only unsided pairs in flip_pairs_extra"
            )
        unknown = sorted(set(data) - _KNOWN_KEYS)
        if unknown:
            raise ValueError(f"unknown fields {unknown}; allowed: {sorted(_KNOWN_KEYS)}")
        for key in ("name", "keypoint_names", "skeleton"):
            if key not in data:
                raise ValueError(f"missing required field {key!r}")
        names = _as_list(data, "keypoint_names")
        if not all(isinstance(n, str) and n for n in names):
            raise ValueError("keypoint_names must be non-empty strings")
        num = len(names)
        skeleton = _as_list(data, "skeleton")
        for link in skeleton:
            if not isinstance(link, list) or len(link) != 2 or not all(isinstance(i, int) for i in link):
                raise ValueError(f"skeleton links must be [i, j] integer pairs, got {link!r}")
        sigmas = data.get("sigmas")
        if sigmas is not None:
            sigmas = _as_list(data, "sigmas")
            if len(sigmas) != num:
                raise ValueError(f"sigmas has {len(sigmas)} entries, expected K={num}")
        weights = _as_list(data, "joint_weights", [1.0] * num)
        if len(weights) != num:
            raise ValueError(f"joint_weights has {len(weights)} entries, expected K={num}")
        parts = data.get("parts") or {}
        if not isinstance(parts, Mapping):
            raise ValueError("field 'parts' must be a mapping part name -> list of ids")  # noqa: TRY004
        colors = _as_list(data, "colors", [])
        if colors and len(colors) != len(skeleton):
            raise ValueError(f"colors has {len(colors)} entries, expected one per link ({len(skeleton)})")
        flip = derive_flip_indices(names, _as_list(data, "flip_pairs_extra", []))
        return KeypointSpec(
            name=str(data["name"]),
            keypoint_names=tuple(names),
            flip_indices=flip,
            flip_pairs=tuple((k, j) for k, j in enumerate(flip) if k < j),
            skeleton=tuple(tuple(link) for link in skeleton),
            sigmas=None if sigmas is None else np.asarray(sigmas, dtype=np.float64),
            joint_weights=np.asarray(weights, dtype=np.float32),
            upper_body_ids=tuple(_as_list(data, "upper_body_ids", [])),
            lower_body_ids=tuple(_as_list(data, "lower_body_ids", [])),
            parts={str(p): tuple(ids) for p, ids in parts.items()},
            colors=np.asarray(colors, dtype=np.int64).reshape(-1, 3) if colors else np.zeros((0, 3)),
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"invalid keypoint spec {source}: {err}") from err


def _packaged_specs() -> Any:
    return resources.files("sar") / "specs"


def available_specs() -> list[str]:
    """Names of the specs shipped with the package (``sar/specs/*.yaml``)."""
    return sorted(p.name[: -len(".yaml")] for p in _packaged_specs().iterdir() if p.name.endswith(".yaml"))


def load_spec(name_or_path: str | Path) -> KeypointSpec:
    """Load a spec by packaged name (``"coco"`` -> ``sar/specs/coco.yaml``) or by YAML file path."""
    text_path = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text_path.endswith((".yaml", ".yml")) or "/" in text_path
    if is_path:
        path = Path(text_path).expanduser()
        if not path.is_file():
            raise ValueError(f"keypoint spec file {path} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        resource = _packaged_specs() / f"{text_path}.yaml"
        if not resource.is_file():
            raise ValueError(f"unknown keypoint spec {text_path!r}; packaged specs: {available_specs()}")
        text, source = resource.read_text(encoding="utf-8"), str(resource)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"invalid keypoint spec {source}: not valid YAML ({err})") from err
    return spec_from_dict(data, source=source)
