"""What every reader shares: its error, labelled images as uint8, and images to model inputs."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..models import ConfigError

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as Pillow's convert("L")


class DatasetError(ConfigError):
    """A data file or upload that cannot be used; the message names the file and the problem."""

    def __init__(self, message: str, field: str = "dataset") -> None:
        super().__init__(field, message)


@dataclass(frozen=True)
class LabeledImages:
    """Images as stored: (N, H, W, C) uint8 with C 1 or 3, labels (N,) int64, class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def subset(self, n: int, seed: int) -> LabeledImages:
        """`n` examples drawn without replacement by `seed` (all of them when there are fewer), in file order."""
        if n >= len(self.labels):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.labels), size=n, replace=False))
        return LabeledImages(self.images[keep], self.labels[keep], self.classes)


def to_inputs(images: np.ndarray, size: int, color: str) -> np.ndarray:
    """uint8 (N, H, W, C) images as float32 (N, C', size, size) in [0, 1]: C' is 1 for "grey", 3 for "rgb".

    Grey images become RGB by repeating the channel; RGB images become grey by BT.601 luma. Resizing is
    bilinear with antialiasing, so shrinking averages pixels instead of dropping them.
    """
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float() / 255.0
    if color == "grey" and x.shape[1] == 3:
        x = (x * torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif color == "rgb" and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.contiguous().numpy()


def read_capped(path: Path, cap: int, where: str) -> bytes:
    """A file's bytes (gunzipped when it ends in .gz), refused past `cap` bytes without reading further."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                raw = stream.read(cap + 1)
        else:
            size = path.stat().st_size
            if size > cap:
                raise DatasetError(f"{where}: {size:,} bytes, more than the {cap:,} a data file of this kind may have")
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DatasetError(f"{where}: cannot read ({type(exc).__name__}: {exc})") from exc
    if len(raw) > cap:
        raise DatasetError(f"{where}: more than {cap:,} bytes unpacked; not a data file of this kind")
    return raw
