"""The HR camera -> LR camera transform: a 3x3 matrix, its parameters, and its JSON file.

Coordinates are pixel coordinates ``(x, y)`` (column, row) with pixel centres at integers, as
everywhere in napari-xfusion. A :class:`CameraTransform` maps a point of the HR camera's image
to the point of the LR camera's image that sees the same place of the sample.

Parameters (``from_params`` / ``params``) compose as ``T(q) = shift + R(rotation) @ L @ F(q)``:

- ``F`` mirrors the HR image: ``flip_x`` maps ``x -> -x`` (or ``W - 1 - x`` when ``hr_shape``
  is known, i.e. the image is mirrored in place, as an image viewer's "flip" does), ``flip_y``
  likewise for rows;
- ``L = [[scale, scale * shear], [0, scale * aspect]]``: ``scale`` is LR pixels per HR pixel
  (HR pixel size / LR pixel size, e.g. 1.31 / 3.82 = 0.343), ``aspect`` and ``shear`` are 1 and
  0 for a similarity;
- ``R`` rotates by ``rotation_deg`` (counter-clockwise in (x, y); clockwise on screen, where y
  points down);
- ``shift`` is where the (mirrored) HR image's pixel (0, 0) lands in the LR image.

A mirror in x plus a half turn is a mirror in y: :meth:`CameraTransform.params` picks, of the
two equivalent descriptions, the one with ``|rotation_deg| <= 90``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xfusion.core.io import write_text_atomic

__all__ = ["TRANSFORM_FORMAT", "TRANSFORM_VERSION", "CameraTransform", "RegistrationError"]

TRANSFORM_FORMAT = "napari-xfusion camera transform"
"""The ``format`` field of a transform file (JSON, written by :meth:`CameraTransform.save`)."""

TRANSFORM_VERSION = 1
"""The ``version`` field written; files of a newer version are refused."""


class RegistrationError(ValueError):
    """Camera registration failed, is too poor to fuse, or a transform file is invalid.

    Attributes
    ----------
    path : pathlib.Path or None
        The transform file concerned, if any (also named in the message).
    field : str or None
        The offending field of that file, if any (also named in the message).
    """

    def __init__(self, message: str, *, path: os.PathLike | str | None = None,
                 field: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.field = field


def _flip_matrix(flip_x: bool, flip_y: bool, hr_shape: tuple[int, int] | None) -> np.ndarray:
    """3x3 mirror of HR coordinates (in place when ``hr_shape`` is known)."""
    f = np.eye(3)
    if flip_x:
        f[0, 0] = -1.0
        f[0, 2] = 0.0 if hr_shape is None else hr_shape[1] - 1.0
    if flip_y:
        f[1, 1] = -1.0
        f[1, 2] = 0.0 if hr_shape is None else hr_shape[0] - 1.0
    return f


def _check_hr_shape(hr_shape: Any) -> tuple[int, int] | None:
    if hr_shape is None:
        return None
    try:
        h, w = (int(v) for v in hr_shape)
        ok = h >= 1 and w >= 1 and (h, w) == tuple(float(v) for v in hr_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"hr_shape must be two integers (H, W) >= 1, got {hr_shape!r}")
    return h, w


def _check_matrix(matrix: Any) -> np.ndarray:
    """A finite, invertible affine 3x3 float64 matrix (read-only copy) or ValueError."""
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"expected a 3x3 matrix of numbers, got {matrix!r}") from exc
    if m.shape == (2, 3):
        m = np.vstack([m, [0.0, 0.0, 1.0]])
    if m.shape != (3, 3):
        raise ValueError(f"expected a 3x3 (or 2x3) matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("the matrix holds non-finite values")
    if not np.allclose(m[2], [0.0, 0.0, 1.0], atol=1e-12):
        raise ValueError(f"the matrix must be affine (last row 0 0 1), got last row {m[2]}")
    det = float(np.linalg.det(m[:2, :2]))
    if not abs(det) > 1e-12:
        raise ValueError(f"the matrix is not invertible (determinant {det:g})")
    m[2] = (0.0, 0.0, 1.0)
    m.setflags(write=False)
    return m


@dataclass(frozen=True, eq=False)
class CameraTransform:
    """Affine map of HR-camera pixel coordinates ``(x, y)`` to LR-camera pixel coordinates.

    Parameters
    ----------
    matrix : array-like, shape (3, 3) (or (2, 3))
        Homogeneous matrix, float64: ``[x_lr, y_lr, 1] = matrix @ [x_hr, y_hr, 1]``.
    hr_shape : (int, int), optional
        HR image size (H, W): flips in :meth:`params` are then read as in-place mirrors of the
        image (see the module docstring). Not needed to apply the transform.
    """

    matrix: np.ndarray
    hr_shape: tuple[int, int] | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "matrix", _check_matrix(self.matrix))
        object.__setattr__(self, "hr_shape", _check_hr_shape(self.hr_shape))

    # -- parameters --------------------------------------------------------------------------
    @classmethod
    def from_params(
        cls,
        scale: float,
        rotation_deg: float = 0.0,
        shift_xy: tuple[float, float] = (0.0, 0.0),
        flip_x: bool = False,
        flip_y: bool = False,
        hr_shape: tuple[int, int] | None = None,
        *,
        shear: float = 0.0,
        aspect: float = 1.0,
    ) -> CameraTransform:
        """Build ``T(q) = shift + R(rotation) @ L(scale, aspect, shear) @ F(q)`` (module docstring).

        Parameters
        ----------
        scale : float
            LR pixels per HR pixel along HR x (> 0), e.g. 1.31 / 3.82 for the paper's cameras.
        rotation_deg : float
            Rotation, degrees, counter-clockwise in (x, y) coordinates.
        shift_xy : (float, float)
            LR position (x, y) of the (mirrored) HR image's pixel (0, 0), LR pixels.
        flip_x, flip_y : bool
            The HR image is mirrored left-right / top-bottom relative to the LR image.
        hr_shape : (int, int), optional
            HR image size (H, W): mirrors are then in place (``x -> W - 1 - x``).
        shear, aspect : float
            Affine extras: x-shear and the y/x scale ratio (> 0); 0 and 1 for a similarity.
        """
        values = (scale, rotation_deg, shear, aspect, *shift_xy)
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"transform parameters must be finite, got {values}")
        if not (scale > 0 and aspect > 0):
            raise ValueError(f"scale and aspect must be > 0, got scale={scale}, aspect={aspect}")
        hr_shape = _check_hr_shape(hr_shape)
        c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
        lin = np.array([[c, -s], [s, c]]) @ np.array(
            [[scale, scale * shear], [0.0, scale * aspect]]
        )
        m = np.eye(3)
        m[:2, :2] = lin
        m[:2, 2] = (float(shift_xy[0]), float(shift_xy[1]))
        return cls(m @ _flip_matrix(bool(flip_x), bool(flip_y), hr_shape), hr_shape)

    def params(self) -> dict[str, Any]:
        """The parameters of :meth:`from_params` that rebuild this matrix.

        Returns
        -------
        dict
            ``scale``, ``rotation_deg`` (in (-90, 90] where a description with a flip allows
            it), ``shift_xy`` (tuple), ``flip_x``, ``flip_y`` (bool), ``shear``, ``aspect``.
        """
        m = self.matrix
        mirrored = np.linalg.det(m[:2, :2]) < 0
        best: dict[str, Any] | None = None
        for flips in [(True, False), (False, True)] if mirrored else [(False, False), (True, True)]:
            g = m @ np.linalg.inv(_flip_matrix(*flips, self.hr_shape))
            lin = g[:2, :2]
            # lin = R @ [[sx, k], [0, sy]]: the first column is R's first column times sx.
            sx = math.hypot(lin[0, 0], lin[1, 0])
            theta = math.atan2(lin[1, 0], lin[0, 0])
            c, s = math.cos(theta), math.sin(theta)
            upper = np.array([[c, s], [-s, c]]) @ lin
            p = {
                "scale": sx,
                "rotation_deg": math.degrees(theta),
                "shift_xy": (float(g[0, 2]), float(g[1, 2])),
                "flip_x": flips[0],
                "flip_y": flips[1],
                "shear": float(upper[0, 1] / sx),
                "aspect": float(upper[1, 1] / sx),
            }
            if best is None or abs(p["rotation_deg"]) < abs(best["rotation_deg"]) - 1e-9:
                best = p
        assert best is not None
        return best

    @property
    def scale(self) -> float:
        """Mean linear scale, LR pixels per HR pixel (sqrt of |det|)."""
        return math.sqrt(abs(float(np.linalg.det(self.matrix[:2, :2]))))

    # -- use ---------------------------------------------------------------------------------
    def apply(self, points_xy: np.ndarray) -> np.ndarray:
        """Map HR points to LR points.

        Parameters
        ----------
        points_xy : array-like, shape (N, 2) or (2,)
            HR pixel coordinates (x, y).

        Returns
        -------
        numpy.ndarray, float64, same shape
            LR pixel coordinates (x, y).
        """
        p = np.asarray(points_xy, dtype=np.float64)
        if p.shape[-1] != 2:
            raise ValueError(f"points must have shape (N, 2) as (x, y), got shape {p.shape}")
        return p @ self.matrix[:2, :2].T + self.matrix[:2, 2]

    def inverse(self) -> CameraTransform:
        """The LR -> HR map (its ``hr_shape`` is None: it is not an HR -> LR transform)."""
        return CameraTransform(np.linalg.inv(self.matrix))

    def compose(self, other: CameraTransform) -> CameraTransform:
        """``self after other``: the matrix product ``self.matrix @ other.matrix``."""
        return CameraTransform(self.matrix @ other.matrix, other.hr_shape)

    def allclose(self, other: CameraTransform, atol: float = 1e-9) -> bool:
        """Whether the two matrices agree within ``atol``."""
        return bool(np.allclose(self.matrix, other.matrix, rtol=0.0, atol=atol))

    def __repr__(self) -> str:
        p = self.params()
        flips = "".join(n for n, f in (("x", p["flip_x"]), ("y", p["flip_y"])) if f) or "none"
        return (
            f"CameraTransform(scale={p['scale']:.5f}, rotation_deg={p['rotation_deg']:.3f}, "
            f"shift_xy=({p['shift_xy'][0]:.2f}, {p['shift_xy'][1]:.2f}), flip={flips}, "
            f"shear={p['shear']:.4f}, aspect={p['aspect']:.4f})"
        )

    # -- file --------------------------------------------------------------------------------
    def to_dict(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready description: format, version, matrix, hr_shape, params (for reading).

        ``info`` (JSON-ready) is stored as is under ``"info"`` (e.g. residual, model, source).
        """
        p = self.params()
        d: dict[str, Any] = {
            "format": TRANSFORM_FORMAT,
            "version": TRANSFORM_VERSION,
            "maps": "HR camera pixel (x, y) -> LR camera pixel (x, y); pixel centres at integers",
            "matrix": [[float(v) for v in row] for row in self.matrix],
            "hr_shape": None if self.hr_shape is None else list(self.hr_shape),
            "params": {**p, "shift_xy": list(p["shift_xy"])},
        }
        if info:
            d["info"] = info
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "transform") -> CameraTransform:
        """Rebuild from :meth:`to_dict`; ``RegistrationError`` naming ``source`` and the field."""

        def bad(field_name: str, why: str) -> RegistrationError:
            return RegistrationError(f"{source}: field '{field_name}': {why}", field=field_name)

        if not isinstance(data, dict):
            raise bad("<top level>", f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != TRANSFORM_FORMAT:
            raise bad("format", f"expected {TRANSFORM_FORMAT!r}, got {data.get('format')!r}"
                      " (not a camera transform file)")  # fmt: skip
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise bad("version", f"expected an integer >= 1, got {version!r}")
        if version > TRANSFORM_VERSION:
            raise bad("version", f"version {version} is newer than this napari-xfusion reads "
                      f"({TRANSFORM_VERSION}); update napari-xfusion")  # fmt: skip
        if "matrix" not in data:
            raise bad("matrix", "missing")
        try:
            matrix = _check_matrix(data["matrix"])
        except ValueError as exc:
            raise bad("matrix", str(exc)) from None
        try:
            hr_shape = _check_hr_shape(data.get("hr_shape"))
        except ValueError as exc:
            raise bad("hr_shape", str(exc)) from None
        return cls(matrix, hr_shape)

    def save(self, path: str | os.PathLike[str], info: dict[str, Any] | None = None) -> Path:
        """Write the JSON transform file atomically (never half a file); returns the path."""
        return write_text_atomic(path, json.dumps(self.to_dict(info), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CameraTransform:
        """Read a transform file; ``RegistrationError`` names the file (and the field)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RegistrationError(f"{path}: transform file not found", path=path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistrationError(
                f"{path}: cannot read transform file: {exc}", path=path
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistrationError(f"{path}: not valid JSON ({exc})", path=path) from None
        try:
            return cls.from_dict(data, source=str(path))
        except RegistrationError as exc:
            exc.path = path
            raise
