"""In-memory datasets, deterministic, nothing downloaded.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 real images, 10 classes), optionally
  upscaled so receptive fields have room to grow.
- ``shapes``: generated grayscale images of simple shapes at random positions, sizes and noise,
  each with its ground-truth mask (attribution localisation scores against it).
- ``spirals``, ``moons``, ``circles``, ``xor``: 2-D point sets for MLPs.
- ``sort``: sequences of digits to sort, token by token (Transformers).
- ``sbm``: small graphs from a stochastic block model with noisy node features; each node's class is its
  community (GCNs).
- ``mnist``, ``fashion_mnist``, ``cifar10``: a subset of the real data sets, read from files the user put
  in the data folder (`datasets.registry`), at the chosen size, grey or RGB.
- ``upload``: a data set uploaded in the app (2-D points or images), named by its content hash.

Splits are fixed (70/15/15) by `DataConfig.data_seed`; the training seed only shuffles batches.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .models import ConfigError
from .options import OPTIONS, OptionError

IMAGE_DATASETS = ("digits", "shapes", "corners")
POINT_DATASETS = ("spirals", "moons", "circles", "xor")
SEQUENCE_DATASETS = ("sort",)  # token sequences: Transformers
GRAPH_DATASETS = ("sbm",)  # graphs, one class per node: GCNs
DATASETS = IMAGE_DATASETS + POINT_DATASETS + SEQUENCE_DATASETS + GRAPH_DATASETS  # built in: always there
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10")  # read from files the user has (datasets/registry.py)
UPLOAD = "upload"  # an uploaded data set, named by DataConfig.upload (its content hash)
ALL_DATASETS = DATASETS + FILE_DATASETS + (UPLOAD,)
SHAPE_CLASSES = ("square", "disk", "triangle", "cross")
CORNER_CLASSES = ("different", "same")  # corners: are the two marks the same shape?
VOCAB = 10  # sort: the tokens are the digits 0-9
COMMUNITIES = 4  # sbm: communities per graph (the node classes)


@dataclass(frozen=True)
class DataConfig:
    """Which data, at what size and noise. Validated by `validate()`."""

    name: str = "digits"  # one of DATASETS
    input_size: int = 8  # image side (8 keeps digits native, larger upsamples), sequence length, or graph nodes
    noise: float = 0.1  # pixel noise std (shapes), point jitter (2-D sets) or node-feature noise (sbm)
    n_samples: int = 2000  # generated examples (images, points, sequences, graphs); the subset of MNIST/CIFAR
    data_seed: int = 0  # fixes the generated data, the file subset and the train/val/test split
    color: str = "grey"  # "grey" (1 channel) or "rgb" (3): MNIST, CIFAR-10 and uploaded images
    upload: str = ""  # content hash of the uploaded data set (name "upload"); empty otherwise

    def validate(self) -> DataConfig:
        checks = [
            ("dataset", self.name),
            ("noise", self.noise),
            ("n_samples", self.n_samples),
            ("color", self.color),
            ("upload", self.upload),
            ("input_size", self.input_size),
        ]
        for name, value in checks:
            if name == "input_size" and not self.is_image and self.name not in SEQUENCE_DATASETS + GRAPH_DATASETS:
                continue  # after "upload": an upload's kind decides
            try:
                OPTIONS[name].check(value)
            except OptionError as err:
                raise ConfigError(name, f"{err.problem}; got {value!r}") from None
            if name == "upload" and (self.name == UPLOAD) != bool(self.upload):
                raise ConfigError("upload", "a content hash goes with dataset upload, and only with it")
        return self

    def upload_info(self):  # -> datasets.registry.UploadInfo
        """The uploaded data set this config names (its listing: kind, classes); DatasetError if unknown."""
        from .datasets import registry  # imported here: the registry's readers import the training stack

        OPTIONS["upload"].check(self.upload)
        return registry.info(self.upload)

    @property
    def is_image(self) -> bool:
        if self.name == UPLOAD:
            return self.upload_info().kind == "images"
        return self.name in IMAGE_DATASETS or self.name in FILE_DATASETS

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def model_fields(self) -> dict[str, object]:
        """The ModelConfig fields this data decides (known without loading it)."""
        classes = {"digits": 10, "shapes": len(SHAPE_CLASSES), **dict.fromkeys(FILE_DATASETS, 10)}.get(self.name, 2)
        if self.name == UPLOAD:
            classes = len(self.upload_info().classes)
        if self.is_image:
            channels = 3 if self.color == "rgb" and self.name not in IMAGE_DATASETS else 1
            return {"family": "cnn", "in_channels": channels, "input_size": self.input_size, "num_classes": classes}
        if self.name in SEQUENCE_DATASETS:
            return {"family": "transformer", "in_channels": VOCAB, "input_size": self.input_size, "num_classes": VOCAB}
        if self.name in GRAPH_DATASETS:
            size = self.input_size
            return {"family": "gcn", "in_channels": COMMUNITIES, "input_size": size, "num_classes": COMMUNITIES}
        return {"family": "mlp", "in_channels": 2, "input_size": 8, "num_classes": classes}


@dataclass(frozen=True)
class Dataset:
    """Tensors of one dataset, split (shapes below)."""

    config: DataConfig
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    masks_test: torch.Tensor | None = None  # (N, H, W) bool ground truth, shapes only
    # Images are (N, C, H, W) float32, points (N, 2); sequences (N, L) int64 tokens with (N, L) targets;
    # graphs (N, nodes, nodes + features) float32 with (N, nodes) targets.

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.x_train.shape[-1]) if self.x_train.dim() == 4 else 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def family(self) -> str:
        return str(self.config.model_fields()["family"])

    def model_fields(self) -> dict[str, object]:
        """The ModelConfig fields that the data decides."""
        return self.config.model_fields()


def _split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_test = n_val = round(0.15 * n)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def _digits_file() -> Path:
    """scikit-learn's digits table, found without importing scikit-learn (2.5 s of CPU per process)."""
    spec = importlib.util.find_spec("sklearn")  # a top-level package is located, not executed
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("the digits ship with scikit-learn: pip install -r requirements.txt")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


@lru_cache(maxsize=1)
def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) with values 0-16, labels): what `sklearn.datasets.load_digits` returns."""
    table = np.loadtxt(_digits_file(), delimiter=",", dtype=np.float32)
    table.flags.writeable = False
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def _digits(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    images, target = _digits_table()
    x = (images / 16.0)[:, None]
    if cfg.input_size != 8:
        x = F.interpolate(torch.from_numpy(x), size=cfg.input_size, mode="bilinear", align_corners=False).numpy()
    return x, target.copy(), None, tuple(str(i) for i in range(10))


def _shapes(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Shapes of random size and position on a dark noisy canvas; the mask marks the shape's pixels."""
    rng = np.random.default_rng(cfg.data_seed)
    s = cfg.input_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    n = cfg.n_samples
    labels = np.arange(n) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    masks = np.zeros((n, s, s), dtype=bool)
    for i, label in enumerate(labels):
        r = rng.uniform(0.18, 0.32) * s  # half-size of the shape
        cx, cy = rng.uniform(r + 0.5, s - r - 0.5, size=2)
        dx, dy = xx - cx, yy - cy
        name = SHAPE_CLASSES[label]
        if name == "square":
            m = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
        elif name == "disk":
            m = dx**2 + dy**2 <= r**2
        elif name == "triangle":  # apex up, base down
            m = (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
        else:  # cross: two bars
            bar = max(r * 0.3, 0.6)
            m = ((np.abs(dx) <= bar) & (np.abs(dy) <= r)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= r))
        masks[i] = m
    intensity = rng.uniform(0.6, 1.0, size=(n, 1, 1)).astype(np.float32)
    x = masks * intensity + rng.normal(0.0, cfg.noise, size=masks.shape).astype(np.float32)
    return x[:, None].astype(np.float32), labels.astype(np.int64), masks, SHAPE_CLASSES


def _corners(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """A global-reasoning task: a mark in the top-left and one in the bottom-right corner, each a square or
    a cross; the label says whether they are the same shape. Each mark alone is independent of the label
    (shapes and labels are drawn 50/50), so a unit must see both corners to do better than chance."""
    rng = np.random.default_rng(cfg.data_seed)
    s, n = cfg.input_size, cfg.n_samples
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    r = max(1.5, 0.12 * s)  # half-size of a mark
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    first = rng.integers(0, 2, size=n)
    second = np.where(labels == 1, first, 1 - first)
    masks = np.zeros((n, s, s), dtype=bool)
    for i in range(n):
        for kind, (cy, cx) in ((first[i], (r + 0.5, r + 0.5)), (second[i], (s - r - 0.5, s - r - 0.5))):
            cy, cx = cy + rng.uniform(0, 1), cx - rng.uniform(0, 1)  # jitter within the corner
            dx, dy = np.abs(xx - cx), np.abs(yy - cy)
            bar = max(r * 0.35, 0.6)
            cross = ((dx <= bar) & (dy <= r)) | ((dy <= bar) & (dx <= r))
            masks[i] |= ((dx <= r) & (dy <= r)) if kind == 0 else cross
    intensity = rng.uniform(0.6, 1.0, size=(n, 1, 1)).astype(np.float32)
    x = masks * intensity + rng.normal(0.0, cfg.noise, size=masks.shape).astype(np.float32)
    return x[:, None].astype(np.float32), labels.astype(np.int64), masks, CORNER_CLASSES


def _points(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    rng = np.random.default_rng(cfg.data_seed)
    n = cfg.n_samples
    y = np.arange(n) % 2
    if cfg.name == "spirals":  # two interleaved arms, 1.5 turns each
        t = rng.uniform(0.0, 1.0, n) ** 0.5 * 3 * math.pi
        angle = t + y * math.pi
        pts = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) / (3 * math.pi) * 2
    elif cfg.name == "moons":
        t = rng.uniform(0.0, math.pi, n)
        pts = np.where(
            y[:, None] == 0,
            np.stack([np.cos(t), np.sin(t)], 1),
            np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1),
        ) - np.array([0.5, 0.25])
    elif cfg.name == "circles":
        t = rng.uniform(0.0, 2 * math.pi, n)
        radius = np.where(y == 0, 1.0, 0.5)
        pts = np.stack([radius * np.cos(t), radius * np.sin(t)], 1)
    else:  # xor: quadrants
        pts = rng.uniform(-1.0, 1.0, (n, 2))
        y = ((pts[:, 0] > 0) ^ (pts[:, 1] > 0)).astype(np.int64)
    pts = pts + rng.normal(0.0, cfg.noise * 0.5, pts.shape)
    return pts.astype(np.float32), y.astype(np.int64), None, ("class 0", "class 1")


def _sort(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    """Sequences of `input_size` random digits; the target at position i is the i-th smallest digit.

    Every output token depends on every input token (how many digits are smaller), so a model must
    compare positions: what self-attention does and an MLP per position cannot."""
    rng = np.random.default_rng(cfg.data_seed)
    x = rng.integers(0, VOCAB, size=(cfg.n_samples, cfg.input_size))
    return x, np.sort(x, axis=1), None, tuple(str(i) for i in range(VOCAB))


def _sbm(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    """`n_samples` graphs of `input_size` nodes from a stochastic block model (Holland et al. 1983).

    Nodes fall into COMMUNITIES equal communities; two nodes are linked with a probability that gives each
    node about 3 neighbours in its own community and 1 outside. A node's features are its community's
    one-hot vector plus Gaussian noise of std 1 + 2 x `noise`: too noisy to classify alone, so a model
    must average over neighbours, which is what graph convolutions do (and overdo, with depth).
    """
    rng = np.random.default_rng(cfg.data_seed)
    n, size, k = cfg.n_samples, cfg.input_size, COMMUNITIES
    labels = np.tile(np.arange(size) % k, (n, 1))
    labels = rng.permuted(labels, axis=1)
    same = labels[:, :, None] == labels[:, None, :]
    per_community = size / k
    p_in, p_out = min(1.0, 3.0 / max(per_community - 1, 1)), min(1.0, 1.0 / (size - per_community))
    upper = np.triu(rng.random((n, size, size)) < np.where(same, p_in, p_out), k=1)
    adjacency = (upper | upper.transpose(0, 2, 1)).astype(np.float32)
    features = np.eye(k, dtype=np.float32)[labels] + rng.normal(0.0, 1.0 + 2.0 * cfg.noise, (n, size, k))
    x = np.concatenate([adjacency, features.astype(np.float32)], axis=2)
    return x, labels.astype(np.int64), None, tuple(f"community {i + 1}" for i in range(k))


def _file_set(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    """`n_samples` training examples of MNIST, Fashion-MNIST or CIFAR-10 from the data folder's files."""
    from .datasets import registry
    from .datasets.base import to_inputs

    data = registry.read_file_set(cfg.name, cfg.n_samples, cfg.data_seed)
    return to_inputs(data.images, cfg.input_size, cfg.color), data.labels, None, data.classes


def _uploaded(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, None, tuple[str, ...]]:
    """An uploaded data set: its points, or its images at the chosen size and colour."""
    from .datasets import registry
    from .datasets.base import to_inputs

    data = registry.upload(cfg.upload)
    x = to_inputs(data.x, cfg.input_size, cfg.color) if data.kind == "images" else data.x.astype(np.float32)
    return x, data.y.astype(np.int64), None, data.classes


@lru_cache(maxsize=16)
def load_dataset(cfg: DataConfig) -> Dataset:
    """Load or generate a dataset (cached: tensors are shared read-only by every run)."""
    cfg.validate()
    makers = {"digits": _digits, "shapes": _shapes, "corners": _corners, "sort": _sort, "sbm": _sbm, UPLOAD: _uploaded}
    maker = makers.get(cfg.name, _file_set if cfg.name in FILE_DATASETS else _points)
    x, y, masks, classes = maker(cfg)
    train, val, test = _split(len(y), np.random.default_rng(cfg.data_seed + 1))
    if cfg.is_image:  # standardise with training-set statistics
        mean, std = float(x[train].mean()), float(x[train].std()) + 1e-8
        x = (x - mean) / std
    elif cfg.name == UPLOAD:  # uploaded points come at any scale: standardise each coordinate
        x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-8)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
    return Dataset(
        config=cfg,
        x_train=xt[train],
        y_train=yt[train],
        x_val=xt[val],
        y_val=yt[val],
        x_test=xt[test],
        y_test=yt[test],
        classes=classes,
        masks_test=torch.from_numpy(masks[test]) if masks is not None else None,
    )
