"""Your own data in the app: upload a CSV of points or a zip of image folders; the data sets to choose from.

Uploads are open to students as well as the teacher: every limit of `options.UPLOADS` bounds what one
file may cost (bytes, rows, images, pixels, classes), an upload adds one content-hashed entry and
never changes or removes anyone's runs, and the same data uploaded twice is one entry. A refused
file shows one message naming the problem, and nothing of it is stored. Only a teacher deletes a data
set, after a confirmation that says how many stored runs trained on it go with it. Names and class names come
from the user: they are shown as literal text, cut to a line.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from resnet_viz.data import DATASETS, FILE_DATASETS, GRAPH_DATASETS, SEQUENCE_DATASETS, UPLOAD, DataConfig
from resnet_viz.datasets import registry
from resnet_viz.datasets.base import DatasetError
from resnet_viz.datasets.registry import UploadInfo
from resnet_viz.datasets.uploads import read_upload
from resnet_viz.options import UPLOADS
from resnet_viz.store import StoreError

from .roles import confirm_button, is_teacher, teacher_only
from .store import run_store
from .text import one_line, safe_text

FILE_HELP = {
    "mnist": "MNIST handwritten digits from your files, 10 classes",
    "fashion_mnist": "Fashion-MNIST clothing from your files, 10 classes",
    "cifar10": "CIFAR-10 photos from your files (binary version), 10 classes",
}
DONE_KEY = "data.upload.done"  # the id of the last uploaded file handled (each file is read once)
NAME_KEY = "lab.data.name"  # the lab form's dataset choice: a dataset name, or an upload's content hash


def stored_datasets() -> list[UploadInfo]:
    """The uploads in the server's store (none when the store cannot be read: the lab says why elsewhere)."""
    try:
        return run_store().list_datasets()
    except StoreError:
        return []


def describe(info: UploadInfo) -> str:
    """One line for a choice list: name, kind, size, classes (user text made one plain line)."""
    name, _ = one_line(info.name, 40)
    return f"{name} · {info.kind}, {info.size:,} examples, {len(info.classes)} classes · {info.digest[:8]}"


def dataset_options(current: DataConfig, sequences_and_graphs: bool = True) -> dict[str, str]:
    """Choice value -> label for the lab's dataset box: built-in sets, file sets found, uploads (by hash).

    A file set stays listed while it is the current choice even when its files are gone: training it then
    says which files are missing and where they go. Without `sequences_and_graphs`, the sets of the
    Transformer and GCN families are left out (the depth study's grid and recipe are for CNNs and MLPs).
    """
    left_out = () if sequences_and_graphs else SEQUENCE_DATASETS + GRAPH_DATASETS
    options = {name: name for name in DATASETS if name not in left_out}
    for name in FILE_DATASETS:
        if registry.present(name) or current.name == name:
            options[name] = f"{name}: {FILE_HELP[name]}"
    for info in stored_datasets():
        options[info.digest] = f"upload: {describe(info)}"
    return options


def choice_value(cfg: DataConfig) -> str:
    """The dataset box's value for a config: the dataset name, or an upload's content hash."""
    return cfg.upload if cfg.name == UPLOAD else cfg.name


def from_choice(value: str) -> dict[str, str]:
    """The DataConfig fields a dataset box value sets."""
    return {"name": UPLOAD, "upload": value} if value not in DATASETS + FILE_DATASETS else {"name": value, "upload": ""}


def handle_upload(raw: bytes, filename: str) -> tuple[UploadInfo, str]:
    """Read, check and store one uploaded file: the stored entry and what to tell the user (markdown, the
    names in it quoted by `safe_text`). Raises DatasetError or StoreError and stores nothing then.

    The store keys a data set by its content: the same data under another name is the entry stored first,
    and the message names that entry (the list below it shows no other)."""
    upload = read_upload(raw, filename)
    info, store = UploadInfo.of(upload), run_store()
    earlier = store.dataset_info(info.digest)
    store.put_dataset(upload)
    if earlier is None:
        return info, f"Stored {safe_text(info.name, 60)} and chose it as the lab's dataset."
    return earlier, f"The same data is already stored as {safe_text(earlier.name, 60)}: chose it as the lab's dataset."


def upload_panel() -> None:
    """The uploader, what happened to the last file, and the stored data sets with their classes and counts."""
    st.caption(
        f"A **CSV** with columns x, y, label (2-D points for MLPs; up to {UPLOADS.rows:,} rows), or a **zip** with "
        f"one folder of PNG/JPEG images per class (up to {UPLOADS.images:,} images, {UPLOADS.classes} classes). "
        "Images are kept at 32x32 and resized to the image size you choose. Stored data sets can be chosen as the "
        "lab's dataset."
    )
    file = st.file_uploader(
        "CSV of points or zip of image folders",
        type=["csv", "zip"],
        key="data.upload",
        max_upload_size=math.ceil(max(UPLOADS.zip_bytes, UPLOADS.csv_bytes) / 2**20),
    )
    if file is not None and st.session_state.get(DONE_KEY) != file.file_id:
        st.session_state[DONE_KEY] = file.file_id
        try:
            info, done = handle_upload(file.getvalue(), file.name)
        except (DatasetError, StoreError) as err:
            st.session_state["data.upload.result"] = ("error", f"{file.name}: {err}")
        else:
            st.session_state[NAME_KEY] = info.digest  # choose it in the lab form (drawn after this panel)
            st.session_state["data.upload.result"] = ("ok", done)
    kind, message = st.session_state.get("data.upload.result", (None, ""))
    if kind == "error":
        st.error("The file was not stored: " + safe_text(message, 400))
    elif kind == "ok":
        st.success(message)  # its names are quoted already (`handle_upload`); the rest is ours, shown as text
    infos = stored_datasets()
    if infos:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "name": one_line(i.name, 40)[0],
                        "kind": i.kind,
                        "examples": i.size,
                        "classes": ", ".join(
                            f"{one_line(c, 24)[0]} ({n})" for c, n in zip(i.classes, i.counts, strict=True)
                        )[:300],
                        "hash": i.digest[:12],
                    }
                    for i in infos
                ]
            ),
            hide_index=True,
        )
    delete_section(infos)
    for name in FILE_DATASETS:
        if not registry.present(name):
            st.caption(f"To use {name}: " + safe_text(registry.where_to_put(name), 300))


def delete_section(infos: list[UploadInfo]) -> None:
    """A teacher deletes one stored data set and the stored runs trained on it, after a confirmation."""
    kind, message = st.session_state.pop("data.delete.message", (None, ""))
    if kind:
        (st.error if kind == "error" else st.success)(message)
    if not infos:
        return
    if not is_teacher():
        teacher_only("delete uploaded data sets")
        return
    by_digest = {i.digest: i for i in infos}
    pick, button = st.columns([4, 1], vertical_alignment="bottom")
    digest = pick.selectbox(
        "Data set to delete", list(by_digest), key="data.delete.pick", format_func=lambda d: describe(by_digest[d])
    )
    name, _ = one_line(by_digest[digest].name, 40)

    def question() -> str:  # counted when the confirmation shows, not on every rerun of the lab
        try:
            used = f"the {run_store().runs_using_dataset(digest)}"
        except StoreError:
            used = "every"
        return (
            f"Delete the data set {safe_text(name)} and {used} stored run(s) trained on it, for everyone on "
            "this server? It cannot be undone (uploading the same file again brings the data set back, not the runs)."
        )

    if confirm_button("Delete", "data.delete", question, button, icon=":material/delete:"):
        try:
            removed = run_store().delete_dataset(digest)
        except StoreError as err:
            st.session_state["data.delete.message"] = ("error", "Could not delete: " + safe_text(err, 200))
        else:
            done = f"Deleted {safe_text(name)} and the runs trained on it." if removed else "Already gone."
            st.session_state["data.delete.message"] = ("ok", done)
        st.rerun()
