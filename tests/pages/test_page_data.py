"""AppTest: upload a CSV of points and a zip of image folders in the lab, train on them, take the Python home."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from harness import open_page, plotly_figures, points_csv, run_to_the_end
from PIL import Image
from streamlit.testing.v1 import AppTest

from resnet_viz.datasets.registry import UploadInfo
from resnet_viz.datasets.uploads import read_upload
from resnet_viz.ui.session import SESSION_KEY
from resnet_viz.ui.store import run_store

APP = str(Path(__file__).resolve().parents[2] / "app.py")
OPENED: list[AppTest] = []


@pytest.fixture(autouse=True)
def leave_runs():
    """Each AppTest is one viewer of the run service: it leaves its runs when the test ends."""
    yield
    for at in OPENED:
        if SESSION_KEY in at.session_state:
            at.session_state[SESSION_KEY].close()
    OPENED.clear()


def _lab(params: dict[str, str]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    OPENED.append(at)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("pages/lab.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def images_zip(per_class: int = 12) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(per_class):
                png = io.BytesIO()
                Image.new("RGB", (24 + i, 24), colour).save(png, "PNG")
                archive.writestr(f"colours/{cls}/{i}.png", png.getvalue())
    return buffer.getvalue()


def _upload(at: AppTest, name: str, data: bytes) -> None:
    at.file_uploader(key="data.upload").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]


def _train(at: AppTest):
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = at.session_state[SESSION_KEY].lab
    run.join(120)
    assert run.status == "finished", run.view().message
    at.run()  # redraw from the finished run (timers do not run in AppTest)
    assert not at.exception, [e.value for e in at.exception]
    return run


@pytest.mark.parametrize(
    ("filename", "make", "params", "shape"),
    [
        ("my points.csv", points_csv, {"a.width": "8", "epochs": "1"}, (2,)),
        ("colours.zip", images_zip, {"a.depth": "8", "a.width": "8", "epochs": "1"}, (3, 16, 16)),
    ],
    ids=["csv", "zip"],
)
def test_an_upload_is_stored_chosen_trained_on_and_named_in_its_python(filename, make, params, shape):
    at = _lab(params)
    _upload(at, filename, make())
    [info] = run_store().list_datasets()
    assert any("chose it as the lab's dataset" in s.value for s in at.success)
    assert at.selectbox(key="lab.data.name").value == info.digest
    assert at.query_params["dataset"] == "upload" and at.query_params["upload"] == info.digest  # shareable
    if info.kind == "images":
        at.radio(key="lab.data.color").set_value("rgb").run()
        at.select_slider(key="lab.data.input_size").set_value(16).run()
    run = _train(at)
    assert run.trainer.dataset.x_train.shape[1:] == shape and run.trainer.dataset.classes == info.classes
    figures = plotly_figures(at)
    assert figures and "loss" in figures[0].layout.title.text.lower()
    if info.kind == "points":  # two classes of 2-D points: the decision boundaries are drawn as for built-in sets
        assert any("Decision boundary" in (f.layout.title.text or "") for f in figures)
    scripts = [c.value for c in at.code if "Trainer(models, train, data)" in c.value]
    assert len(scripts) == 1 and f"upload={info.digest!r}" in scripts[0]
    labels = [b.label for b in at.get("download_button")]
    assert {"Download script", "Download data", "Download model (zip)"} <= set(labels)
    listing = at.dataframe[0].value
    assert listing["examples"].tolist() == [info.size] and listing["hash"].tolist() == [info.digest[:12]]


def test_the_same_data_under_another_name_is_the_entry_stored_first_and_says_so():
    at = _lab({})
    _upload(at, "north south.csv", points_csv())
    [first] = run_store().list_datasets()
    assert [s.value for s in at.success] == [f"Stored `{first.name}` and chose it as the lab's dataset."]
    _upload(at, "renamed.csv", points_csv())
    assert run_store().list_datasets() == [first]  # keyed by content: one entry, under its first name
    assert [s.value for s in at.success] == [
        f"The same data is already stored as `{first.name}`: chose it as the lab's dataset."
    ]
    assert at.selectbox(key="lab.data.name").value == first.digest


def test_a_bad_upload_says_what_is_wrong_stores_nothing_and_the_lab_stays_usable():
    at = _lab({})
    _upload(at, "points.csv", b"x,y,class\n1,2,a\n")
    assert any("missing column 'label'" in e.value for e in at.error)
    assert run_store().list_datasets() == []
    assert at.selectbox(key="lab.data.name").value == "digits"
    _upload(at, "<b>bad</b>.zip", b"not a zip")
    message = next(e.value for e in at.error if "not a zip file" in e.value)
    assert "`" in message and "<b>bad</b>" in message  # the file name is shown literally, as inline code
    assert run_store().list_datasets() == []


def test_an_upload_is_a_dataset_of_the_depth_study_sweep():
    """Issue 13: an upload is usable in every page; the depth study's sweep lists and trains on it."""
    upload = read_upload(points_csv(), "hemispheres.csv")
    run_store().put_dataset(upload)
    at = open_page("pages/depth_study.py")
    box = at.selectbox(key="depth.dataset")
    assert any("upload: hemispheres" in option for option in box.options), box.options
    box.set_value(UploadInfo.of(upload).digest).run()
    assert "2-D point data trains MLPs" in " ".join(c.value for c in at.caption)
    at.multiselect(key="depth.depths").set_value([4])
    at.number_input(key="depth.epochs").set_value(1).run()
    run_to_the_end(at, "Run", "depth_sweep", 120)
    table = at.dataframe[-1].value
    assert len(table) == 1 and set(table.dataset) == {"upload"}


def test_a_teacher_deletes_an_upload_after_a_confirmation_and_a_student_cannot(monkeypatch):
    at = _lab({"a.width": "8"})
    _upload(at, "north.csv", points_csv())
    [info] = run_store().list_datasets()
    delete = next(b for b in at.button if b.key == "data.delete")
    delete.click().run()
    assert any("Delete the data set `north` and the 0 stored run(s)" in w.value for w in at.warning)
    assert run_store().list_datasets() == [info]  # nothing happens on the first click
    next(b for b in at.button if b.label == "Yes, delete").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert run_store().list_datasets() == []
    assert any("Deleted `north`" in s.value for s in at.success)
    assert at.selectbox(key="lab.data.name").value == "digits"  # the lab no longer offers it
    assert "upload" not in at.query_params  # nor does its link

    monkeypatch.setenv("RESNET_VIZ_TEACHER_PASSPHRASE", "a long teacher passphrase")
    run_store().put_dataset(read_upload(points_csv(), "south.csv"))
    student = _lab({})
    assert not any(b.key == "data.delete" for b in student.button)
    assert any("A teacher can delete uploaded data sets" in c.value for c in student.caption)
