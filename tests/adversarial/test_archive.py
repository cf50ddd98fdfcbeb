"""Reading an uploaded zip or folder: caps before bytes, no traversal, no links, no bombs."""

from __future__ import annotations

import os
import zipfile

import pytest
from harness import zip_of

from resnet_viz.archive import MAX_MEMBERS, ArchiveError, FolderMembers, ZipMembers, zip_folder


def test_folder_round_trips_through_a_zip(tmp_path):
    folder = tmp_path / "resnet-viz-run-abc"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    (folder / "records.json").write_text("[1, 2]")
    members = ZipMembers(zip_folder(folder), "run.zip")
    assert members.read("manifest.json", 2) == b"{}" and members.read("records.json", 6) == b"[1, 2]"
    flat = ZipMembers(zip_of({"manifest.json": b"{}"}))  # a zip of the files themselves works too
    assert flat.read("manifest.json", 10) == b"{}"


@pytest.mark.parametrize(
    ("members", "link", "problem"),
    [
        ({"../evil/manifest.json": b"{}"}, None, "unsafe path"),
        ({"/etc/manifest.json": b"{}"}, None, "unsafe path"),
        ({"run\\..\\manifest.json": b"{}"}, None, "unsafe path"),
        ({"run/manifest.json": b"{}"}, "run/records.json", "symbolic link"),
        ({"a/manifest.json": b"{}", "b/records.json": b"[]"}, None, "several folders"),
        ({"a/b/manifest.json": b"{}"}, None, "nested too deep"),
        ({"a/manifest.json": b"{}", "manifest.json": b"{}"}, None, "appears twice"),
        ({f"run/{i}.json": b"" for i in range(MAX_MEMBERS + 1)}, None, f"more than {MAX_MEMBERS} files"),
    ],
)
def test_unsafe_zips_are_refused_before_anything_is_read(members, link, problem):
    with pytest.raises(ArchiveError, match=problem):
        ZipMembers(zip_of(members, link=link))


def test_only_stored_or_deflated_members_and_no_garbage():
    with pytest.raises(ArchiveError, match="compression method"):
        ZipMembers(zip_of({"manifest.json": b"{}"}, method=zipfile.ZIP_BZIP2))
    with pytest.raises(ArchiveError, match="not a zip file"):
        ZipMembers(b"PK\x03\x04 not really a zip")


def test_a_member_over_its_cap_is_refused_after_at_most_one_chunk():
    members = ZipMembers(zip_of({"records.json": b"0.0," * 2**20}))  # 4 MiB in a few kB
    with pytest.raises(ArchiveError, match="more than a run of this config can need"):
        members.read("records.json", 1000)
    with pytest.raises(ArchiveError, match="missing"):
        members.read("summary.json", 1000)


def test_a_member_bigger_than_it_claims_is_cut_at_the_cap():
    data = bytearray(zip_of({"records.json": b"0.0," * 2**18}))
    members = ZipMembers(bytes(data))
    members._members["records.json"].file_size = 10  # the central directory lies about the size
    with pytest.raises(ArchiveError):
        members.read("records.json", 100)


def test_folder_members_are_size_checked_and_links_refused(tmp_path):
    (tmp_path / "records.json").write_bytes(b"x" * 100)
    os.symlink("/etc/hostname", tmp_path / "manifest.json")
    members = FolderMembers(tmp_path)
    with pytest.raises(ArchiveError, match="100 bytes, more than"):
        members.read("records.json", 99)
    assert members.read("records.json", 100) == b"x" * 100
    with pytest.raises(ArchiveError, match="links are refused"):
        members.read("manifest.json", 100)
    with pytest.raises(ArchiveError, match="not a folder"):
        FolderMembers(tmp_path / "records.json")
