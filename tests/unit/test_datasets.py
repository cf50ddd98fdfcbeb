"""Real data sets from files and uploads: readers read back exactly, bad files are refused whole with one message.

Every file here is written by the test itself (known pixels and labels): nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from harness import zip_of
from PIL import Image

from resnet_viz.data import DataConfig, load_dataset
from resnet_viz.datasets import registry
from resnet_viz.datasets.base import DatasetError, to_inputs
from resnet_viz.datasets.cifar import RECORD
from resnet_viz.datasets.idx import parse_idx
from resnet_viz.datasets.uploads import Upload, images_from_zip, points_from_csv, read_upload
from resnet_viz.models import ConfigError
from resnet_viz.options import UploadLimits
from resnet_viz.store import RunStore, run_key
from resnet_viz.training import TrainConfig, train_models


@pytest.fixture
def data_dir(tmp_path):
    registry.set_folder(tmp_path / "datasets")
    yield tmp_path / "datasets"
    registry.set_folder(None)


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _mnist_files(folder: Path, n: int = 30, gz: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        raw = _idx(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_read_back_exactly(data_dir, gz):
    images, labels = _mnist_files(data_dir / "mnist", gz=gz)
    assert registry.present("mnist") and not registry.present("cifar10")
    read = registry.read_file_set("mnist", 100, 0)  # 100 asked, 30 there: all of them, in file order
    assert np.array_equal(read.images[..., 0], images) and np.array_equal(read.labels, labels)
    grey = to_inputs(read.images, 28, "grey")
    assert grey.shape == (30, 1, 28, 28) and np.array_equal(grey[:, 0], images.astype(np.float32) / 255)
    rgb = to_inputs(read.images, 28, "rgb")
    assert rgb.shape == (30, 3, 28, 28) and np.array_equal(rgb[:, 2], grey[:, 0])


def test_fashion_mnist_under_its_other_folder_name_trains(data_dir):
    _mnist_files(data_dir / "fashion-mnist", n=40)
    cfg = DataConfig(name="fashion_mnist", input_size=8, color="rgb")
    assert cfg.validate().model_fields() == {"family": "cnn", "in_channels": 3, "input_size": 8, "num_classes": 10}
    ds = load_dataset(cfg)
    assert ds.x_train.shape[1:] == (3, 8, 8) and ds.classes[9] == "Ankle boot" and len(ds.y_train) == 28
    _, history = train_models({"A": cfg_model()}, TrainConfig(epochs=1, batch_size=16, warmup_steps=0), cfg)
    assert len(history.records) == 2


def cfg_model():
    from resnet_viz.models import ModelConfig

    return ModelConfig(depth=8, width=4)


def test_idx_wrong_magic_truncated_and_padded_files_are_refused():
    good = _idx(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"unknown IDX magic 0x00000903"):
        parse_idx(bytes([0, 0, 0x09, 3]) + good[4:], 3, "f")
    with pytest.raises(DatasetError, match=r"unknown IDX magic 0x00000801"):
        parse_idx(_idx(np.zeros(3, np.uint8)), 3, "f")  # a label file where images belong
    with pytest.raises(DatasetError, match=r"f: truncated: the header gives \(3, 4, 4\)"):
        parse_idx(good[:-1], 3, "f")
    with pytest.raises(DatasetError, match="longer than its header says"):
        parse_idx(good + b"\0", 3, "f")
    with pytest.raises(DatasetError, match="shorter than an IDX header"):
        parse_idx(good[:6], 3, "f")


def test_a_damaged_gzip_and_missing_files_are_named(data_dir):
    folder = data_dir / "mnist"
    _mnist_files(folder, gz=True)
    raw = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz: cannot read"):
        registry.read_file_set("mnist", 100, 0)
    with pytest.raises(ConfigError, match=r"cifar10: no folder cifar10/ in the server's data-set folder") as error:
        load_dataset(DataConfig(name="cifar10"))
    assert "put cifar-10-batches-bin/" in str(error.value)
    # Pages show these messages to students: the server's own folders stay out of them.
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    (folder / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as missing:
        registry.read_file_set("mnist", 100, 0)
    for text in (str(error.value), str(missing.value), registry.where_to_put("cifar10")):
        assert str(data_dir) not in text, text


def _cifar_records(n: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    rng = np.random.default_rng(2)
    planes = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)  # R, G, B planes as stored
    labels = (np.arange(n) * 3 % 10).astype(np.uint8)
    raw = b"".join(bytes([labels[i]]) + planes[i].tobytes() for i in range(n))
    return planes, labels, raw


def test_cifar10_binary_batches_read_back_exactly(data_dir):
    planes, labels, raw = _cifar_records(25)
    folder = data_dir / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    (folder / "data_batch_1.bin").write_bytes(raw[: 12 * RECORD])
    (folder / "data_batch_2.bin").write_bytes(raw[12 * RECORD :])
    read = registry.read_file_set("cifar10", 100, 0)
    assert np.array_equal(read.labels, labels) and read.classes[3] == "cat"
    assert np.array_equal(read.images, planes.transpose(0, 2, 3, 1))  # (N, H, W, RGB)
    assert read.images[4, 7, 9, 1] == planes[4, 1, 7, 9]  # green value of image 4 at row 7, column 9
    grey = to_inputs(read.images, 32, "grey")  # BT.601 luma
    expected = (planes[0].astype(np.float32) / 255 * np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]).sum(0)
    assert np.allclose(grey[0, 0], expected, atol=1e-6)
    ds = load_dataset(DataConfig(name="cifar10", input_size=16, color="rgb"))
    assert ds.x_train.shape[1:] == (3, 16, 16) and ds.num_classes == 10


def test_cifar10_truncated_or_foreign_batches_are_refused(data_dir):
    _, _, raw = _cifar_records(3)
    folder = data_dir / "cifar10"
    folder.mkdir(parents=True)
    (folder / "data_batch_1.bin").write_bytes(raw[:-7])
    with pytest.raises(DatasetError, match="truncated: 9,212 bytes is not a whole number of 3,073-byte records"):
        registry.read_file_set("cifar10", 100, 0)
    (folder / "data_batch_1.bin").write_bytes(bytes([42]) + raw[1:])  # CIFAR-100 has labels up to 99
    with pytest.raises(DatasetError, match="record 0 has label byte 42"):
        registry.read_file_set("cifar10", 100, 0)


class _Trap:
    """Unpickling this creates a file: the test checks that no such file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("layout", ["python-version folder", "renamed to .bin"])
def test_the_pickled_python_version_is_refused_without_being_unpickled(data_dir, tmp_path, monkeypatch, layout):
    marker = tmp_path / "unpickled"
    blob = pickle.dumps({"data": _Trap(marker), "labels": [1, 2]}, protocol=2)
    if layout == "python-version folder":
        path = data_dir / "cifar10" / "cifar-10-batches-py" / "data_batch_1"
    else:
        path = data_dir / "cifar10" / "cifar-10-batches-bin" / "data_batch_1.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(blob)

    def refuse(*_args, **_kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    with pytest.raises(DatasetError, match="python version is never unpickled here; download the binary version"):
        load_dataset(DataConfig(name="cifar10", n_samples=101))
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# Uploads


def _csv(rows: int = 60, classes: tuple[str, ...] = ("blue", "red")) -> bytes:
    lines = ["x,y,label"] + [f"{i * 0.5},{-i},{classes[i % len(classes)]}" for i in range(rows)]
    return "\n".join(lines).encode()


def test_a_good_csv_loads_exactly_and_is_content_addressed(tmp_path):
    up = points_from_csv(_csv(), "dir/My points.csv")
    assert up.name == "My points" and up.kind == "points" and up.classes == ("blue", "red") and up.counts == (30, 30)
    assert up.x[7].tolist() == [3.5, -7.0] and up.y[7] == 1
    assert points_from_csv(_csv(), "other.csv").digest == up.digest  # the name is not content
    numeric = points_from_csv(_csv(classes=("10", "2", "1")), "n.csv")
    assert numeric.classes == ("1", "2", "10")  # numeric labels sort as numbers
    shuffled = b"label,y,x,comment\n" + b"\n".join(f"c{i % 2},{i},{-i},note".encode() for i in range(30))
    assert points_from_csv(shuffled, "s.csv").x[3].tolist() == [-3.0, 3.0]
    store = RunStore(tmp_path)
    digest = store.put_dataset(up)
    assert store.put_dataset(points_from_csv(_csv(), "again.csv")) == digest
    [info] = store.list_datasets()
    assert (info.digest, info.name, info.kind, info.classes, info.counts) == (
        digest,
        "My points",
        "points",
        ("blue", "red"),
        (30, 30),
    )
    back = store.get_dataset(digest)
    assert np.array_equal(back.x, up.x) and np.array_equal(back.y, up.y)


LIMITS = UploadLimits(
    csv_bytes=4000, rows=100, zip_bytes=60_000, images=40, pixels=64 * 64, classes=3, image_bytes=3000
)
BAD_CSV = [
    (b"x,y,class\n1,2,a\n", "missing column 'label': the header row must name x, y and label"),
    (_csv(classes=("only",)), "only one class ('only'): a classifier needs at least two labels"),
    (_csv().replace(b"1.5,-3,red", b"nan,-3,red"), "row 5: x is 'nan' (NaN, infinite or too long)"),
    (_csv().replace(b"1.5,-3,red", b"1.5,abc,red"), "row 5: y is not a number ('abc')"),
    (_csv().replace(b"1.5,-3,red", b"1.5,-3,"), "row 5: the label must be 1 to 64 characters"),
    (_csv(rows=5), "only 5 points: at least 20 are needed"),
    (_csv(rows=101), "too many rows: more than 100 points"),
    (_csv(rows=60, classes=tuple("abcd")), "4 classes, more than the 3 allowed"),
    (_csv(classes=("a" * 60, "b" * 60)), "too large: 4,178 bytes, a CSV may have 4,000"),
    (b"\xff\xfe" + _csv(), "not UTF-8 text"),
    (b"", "the file is empty"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_CSV, ids=[m[:24] for _, m in BAD_CSV])
def test_each_bad_csv_is_refused_with_its_message_and_nothing_is_stored(tmp_path, raw, message):
    store = RunStore(tmp_path)
    with pytest.raises(DatasetError) as caught:
        store.put_dataset(read_upload(raw, "points.csv", LIMITS))
    assert message in str(caught.value) and str(caught.value).startswith("upload: ")
    assert store.list_datasets() == []


def _png(color, size=(40, 30), mode="RGB", fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def _pets(n: int = 12, root: str = "pets/") -> dict[str, bytes]:
    members = {f"{root}cats/{i}.png": _png((255, 0, 0)) for i in range(n)}
    members |= {f"{root}dogs/{i}.jpg": _png((0, 0, 255), size=(20, 50), fmt="JPEG") for i in range(n)}
    members[f"{root}dogs/grey.png"] = _png(128, mode="L")
    members["__MACOSX/pets/._x.png"] = b"resource fork"  # macOS adds these: skipped
    return members


def test_a_good_zip_of_class_folders_loads_resized_and_trains(tmp_path):
    up = images_from_zip(zip_of(_pets()), "pets.zip")
    assert up.kind == "images" and up.classes == ("cats", "dogs") and up.counts == (12, 13)
    assert up.x.shape == (25, 32, 32, 3) and (up.x[0] == [255, 0, 0]).all()  # a solid red PNG stays red
    assert (up.x[up.y == 1][-1] == 128).all()  # "dogs/grey.png" sorts last among the dogs: grey to RGB
    assert images_from_zip(zip_of(_pets(root="")), "flat.zip").digest == up.digest  # no top folder: same data
    store = RunStore(tmp_path)
    registry.use_store(store)
    digest = store.put_dataset(up)
    cfg = DataConfig(name="upload", upload=digest, input_size=16, color="rgb")
    assert cfg.validate().model_fields() == {"family": "cnn", "in_channels": 3, "input_size": 16, "num_classes": 2}
    ds = load_dataset(cfg)
    assert ds.x_train.shape[1:] == (3, 16, 16) and ds.classes == ("cats", "dogs")
    trainer, history = train_models({"A": cfg_model()}, TrainConfig(epochs=1, batch_size=8, warmup_steps=0), cfg)
    assert trainer.states["A"].status == "finished" and len(history.records) == 2  # 17 training images
    other = images_from_zip(zip_of(_pets(n=11)), "pets.zip")
    assert run_key({"A": cfg_model()}, TrainConfig(), cfg) != run_key(
        {"A": cfg_model()},
        TrainConfig(),
        DataConfig(name="upload", upload=store.put_dataset(other), input_size=16, color="rgb"),
    )


def test_uploaded_points_train_an_mlp_and_old_run_keys_are_unchanged(tmp_path):
    store = RunStore(tmp_path)
    registry.use_store(store)
    digest = store.put_dataset(points_from_csv(_csv(rows=80, classes=("a", "b", "c")), "p.csv"))
    cfg = DataConfig(name="upload", upload=digest)
    assert cfg.validate().model_fields() == {"family": "mlp", "in_channels": 2, "input_size": 8, "num_classes": 3}
    ds = load_dataset(cfg)
    assert abs(float(ds.x_train.mean())) < 1e-5  # standardised with the training split's statistics
    # A run key of built-in data does not see the new fields at their defaults (stored runs keep their keys).
    from resnet_viz.store import _canonical, _config_dict

    assert "color" in _canonical(_config_dict({}, TrainConfig(), DataConfig()))
    assert run_key({}, TrainConfig(), DataConfig()) == run_key({}, TrainConfig(), DataConfig(color="grey"))


def test_deleting_an_upload_removes_the_runs_trained_on_it_and_the_same_file_brings_it_back(tmp_path):
    store = RunStore(tmp_path)
    registry.use_store(store)
    up = points_from_csv(_csv(rows=40), "p.csv")
    digest = store.put_dataset(up)
    cfg = DataConfig(name="upload", upload=digest)
    train = TrainConfig(epochs=1, batch_size=16, warmup_steps=0)
    key = store.save(*train_models({"A": cfg_model()}, train, cfg))
    other = store.save(*train_models({"A": cfg_model()}, train, DataConfig(name="moons", n_samples=100)))
    store.put_analysis(key, "landscape", {"grid": 3}, {"z": [1.0]})
    assert store.runs_using_dataset(digest) == 1 and store.runs_using_dataset("f" * 64) == 0
    assert store.delete_dataset(digest) and not store.delete_dataset(digest)
    assert store.list_datasets() == [] and store.get_dataset(digest) is None
    assert [r.key for r in store.list_runs()] == [other]  # its run went with it (its config names the data)
    assert store.get_analysis(key, "landscape", {"grid": 3}) is None
    with pytest.raises(DatasetError, match="no stored data set has content hash"):
        registry.info(digest)  # the cached listing went too: the lab no longer offers it
    assert store.put_dataset(points_from_csv(_csv(rows=40), "again.csv")) == digest  # same content, same entry
    assert registry.info(digest).size == 40 and load_dataset(cfg).classes == up.classes


def test_an_unknown_content_hash_is_named():
    with pytest.raises(ConfigError, match=r"upload: no stored data set has content hash 0123456789ab"):
        DataConfig(name="upload", upload="0123456789ab" + "0" * 52).validate()
    with pytest.raises(ConfigError, match="upload: must be the 64-digit hex content hash"):
        DataConfig(name="upload", upload="../etc").validate()


def _big_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")  # 1 bit per pixel: a few kB however many pixels
    return buffer.getvalue()


def _noise_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


BAD_ZIP = [
    ({**_pets(), "../evil.png": _png(0)}, None, "unsafe path '../evil.png'"),
    ({**_pets(), "/abs/evil.png": _png(0)}, None, "unsafe path"),
    (_pets(), "pets/cats/link.png", "is a symbolic link"),
    ({f"cats/{i}.png": _png(0) for i in range(25)}, None, "only one class ('cats'): a classifier needs at least two"),
    ({**_pets(), "pets/cats/bad.png": b"\x89PNG\r\n\x1a\nnot really"}, None, "'pets/cats/bad.png': unreadable image"),
    (  # Pillow's message names its in-memory file; the student sees what is wrong, not an object address
        {**_pets(), "pets/cats/junk.png": b"junk"},
        None,
        "'pets/cats/junk.png': unreadable image (UnidentifiedImageError: cannot identify image file)",
    ),
    ({**_pets(), "pets/cats/huge.png": _big_png(65)}, None, "'pets/cats/huge.png': 65x65 pixels, more than the 4,096"),
    ({**_pets(), "pets/cats/a.gif": b"GIF89a"}, None, "only PNG and JPEG images"),
    ({**_pets(), "pets/cats/deep/a.png": _png(0)}, None, "images must be in one folder per class"),
    ({f"c{i % 4}/{i}.png": _png(0) for i in range(24)}, None, "4 classes, more than the 3 allowed"),
    ({**_pets(n=20)}, None, "too many images: 41, a zip may hold 40"),
    ({f"c{i % 2}/{i}.png": _png(0) for i in range(6)}, None, "only 6 images: at least 20 are needed"),
    ({**_pets(), "pets/cats/noise.png": _noise_png()}, None, "'pets/cats/noise.png': too large ("),
]


@pytest.mark.parametrize(("members", "link", "message"), BAD_ZIP, ids=[m[:24] for *_, m in BAD_ZIP])
def test_each_bad_zip_is_refused_with_its_message_and_nothing_is_stored(tmp_path, members, link, message):
    store = RunStore(tmp_path)
    with pytest.raises(DatasetError) as caught:
        store.put_dataset(read_upload(zip_of(members, link=link), "pets.zip", LIMITS))
    assert message in str(caught.value), str(caught.value)
    assert store.list_datasets() == []


def test_all_images_of_a_zip_together_are_capped_too():
    with pytest.raises(DatasetError, match="too large: more than 2,000 bytes of images unpacked"):
        images_from_zip(zip_of(_pets()), "pets.zip", UploadLimits(unpacked_bytes=2000))


def test_not_a_zip_and_an_unknown_kind_of_file_are_named():
    with pytest.raises(DatasetError, match="not a zip file"):
        read_upload(b"PK\x03\x04 nope", "a.zip")
    with pytest.raises(DatasetError, match=r"a .csv of points \(x, y, label\) or a .zip of image folders"):
        read_upload(b"", "a.txt")


def _raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip written byte by byte: (name, stored bytes, method, declared size, crc) per member."""
    local, central = b"", b""
    for name, data, method, size, crc in members:
        nb = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(nb), 0) + nb
        local += data
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                0,
                method,
                0,
                0,
                crc,
                len(data),
                size,
                len(nb),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + nb
        )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    return local + central + end


def _gigabyte_of_zeros() -> bytes:
    """A raw deflate stream that inflates to 1 GiB: one fully flushed MiB block repeated (about 1 MB in all)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(2**20)) + packer.flush(zlib.Z_FULL_FLUSH)
    return block * 1024 + packer.flush()


@pytest.mark.parametrize("declared", [2**30, 1000], ids=["honest size", "lying size"])
def test_a_gigabyte_zip_bomb_member_is_refused_with_bounded_memory(tmp_path, declared):
    good = [
        (f"c{i % 2}/{i:02}.png", data, 0, len(data), zlib.crc32(data))
        for i, data in enumerate([_png((i, 0, 0)) for i in range(24)])
    ]
    raw = _raw_zip([("c0/00bomb.png", _gigabyte_of_zeros(), 8, declared, 0), *good])
    assert len(raw) < 2 * 2**20
    store = RunStore(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError) as caught:
            store.put_dataset(read_upload(raw, "bomb.zip"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "'c0/00bomb.png'" in str(caught.value) and peak < 24 * 2**20, (str(caught.value), peak)
    assert store.list_datasets() == []


def test_a_stored_data_set_round_trips_through_safetensors_and_refuses_forgeries():
    up = points_from_csv(_csv(), "p.csv")
    blob = up.to_safetensors()
    back = Upload.from_safetensors(blob, "file")
    assert back.digest == up.digest and back.name == "p"
    with pytest.raises(DatasetError, match="not a data set file"):
        Upload.from_safetensors(b"\x80\x04garbage", "file")
    forged = Upload("p", "points", ("a",), up.x, np.zeros(len(up.y), np.int64))
    with pytest.raises(DatasetError, match="needs 2 to 20 distinct class names"):
        Upload.from_safetensors(forged.to_safetensors(), "file")


def test_digits_are_scikit_learns_read_without_importing_it():
    """The server and every training worker load the digits; importing scikit-learn cost 2.5 s each."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from resnet_viz.data import _digits_table

    images, target = _digits_table()
    expected = load_digits()
    assert np.array_equal(images, expected.images) and np.array_equal(target, expected.target)
    code = "import sys; from resnet_viz.data import *; load_dataset(DataConfig()); print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
