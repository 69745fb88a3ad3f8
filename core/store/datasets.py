"""A tool's dataset: photos stored per class, and the checks that run before training.

A photo's file name says where it came from: frames saved from the station's camera (``add_image``:
a snapshot or its ROI) carry ``CAMERA_TAG``, photos uploaded from elsewhere (``add_file``) do not,
so ``core.engine.framing`` can tell captured photos from uploaded ones (``from_camera``).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Protocol

import cv2
import numpy as np
from PIL import Image

from core.engine.kinds import get_kind
from core.engine.preprocessing import crop_roi
from core.errors import InspectorError
from core.security.access import CONFIGURE, require
from core.store.tools import ROI
from core.store.workspace import atomic_write_bytes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_IMAGES_PER_CLASS = 5
MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # one uploaded photo, or one photo inside a zip
MAX_ZIP_BYTES = 1024 * 1024 * 1024  # all the photos of one uploaded zip, uncompressed
MAX_IMAGE_PIXELS = 50_000_000  # 150 MB decoded; a 1.2 MB PNG can declare 400 megapixels (1.2 GB)
CAMERA_TAG = "cam"  # in the name of a photo saved from the camera: <time>-cam-<hash>.png


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file as 3-channel BGR, or None if it is unreadable."""
    data = np.fromfile(str(path), dtype=np.uint8)
    return decode_image(data.tobytes()) if data.size else None


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode an image file as 3-channel BGR, or None if it is unreadable or its header declares
    more than ``MAX_IMAGE_PIXELS`` (checked before decoding anything)."""
    pixels = image_pixels(data)
    if pixels is None or pixels > MAX_IMAGE_PIXELS:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image if image is not None and image.size else None


def image_pixels(data: bytes) -> float | None:
    """The pixel count an image file's header declares (Pillow reads only the header), infinite
    past Pillow's own bomb limit, None if it is not an image file Pillow knows."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        return float("inf")
    except Exception:  # noqa: BLE001 - Pillow raises many kinds of error on a file it cannot read
        return None
    return width * height


def decode_photo(data: bytes, filename: str, outcome: str = "nothing was added") -> np.ndarray:
    """A photo file's image, once it is known complete and readable; else ``InspectorError``
    naming the file, what is wrong and ``outcome`` (what became of it)."""
    if (image_pixels(data) or 0) > MAX_IMAGE_PIXELS:
        raise InspectorError(f"'{filename}' has more than {MAX_IMAGE_PIXELS // 10**6} megapixels: "
                             f"resize it first; {outcome}")
    if is_truncated(data):
        raise InspectorError(f"'{filename}' is incomplete: the file ends before the image does "
                             f"(a broken download or copy). Copy it again; {outcome}")
    image = decode_image(data)
    if image is None:
        raise InspectorError(f"'{filename}' is not a readable image (PNG, JPEG, BMP, TIFF "
                             f"or WebP): {outcome}")
    return image


def is_truncated(data: bytes) -> bool:
    """Whether an image file ends before its image does (a broken download or copy).

    OpenCV 4 decodes such a JPEG without complaint, the missing part a flat grey: trained on, it
    teaches the model that grey bands are normal. Pillow reads to the end and says so. Formats
    Pillow cannot read are left to OpenCV's verdict.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except OSError as exc:
        return "truncated" in str(exc)  # Pillow: "image file is truncated (N bytes not processed)"
    except Exception:  # noqa: BLE001 - any other Pillow failure: OpenCV decides
        return False
    return False


def from_camera(path: Path) -> bool:
    """Whether a photo was saved from the station's camera (``ToolDataset.add_image``)."""
    parts = path.stem.split("-")
    return len(parts) == 5 and parts[3] == CAMERA_TAG


RETAKE_GAP_S = 1.5  # camera photos of one class this close in time show the same part (a burst)
# ... unless they look different: the mean absolute grey-level difference of two photos shrunk
# to 32x32 px. Measured on casting parts through a webcam's codec: re-takes of one part 0.1,
# two parts in turn under the same ROI (a burst on a moving conveyor) 15 or more.
RETAKE_DIFFERENCE = 6.0


def capture_time(path: Path) -> datetime | None:
    """When a camera photo was saved (from its name), or None for an uploaded photo."""
    if not from_camera(path):
        return None
    try:
        return datetime.strptime("-".join(path.stem.split("-")[:3]), "%Y%m%d-%H%M%S-%f")
    except ValueError:
        return None


def retake_groups(paths: list[Path], images: list[np.ndarray] | None = None) -> np.ndarray:
    """A group number per photo: camera photos of one class saved within ``RETAKE_GAP_S`` of the
    previous one (a burst, or snapshots of a part that did not move) share a group; every other
    photo is its own. Validation keeps a group together, since re-takes of one part would
    otherwise be judged by a model that has seen the part. With the photos (``images``, as
    ``paths``), a photo that looks unlike the previous one (``RETAKE_DIFFERENCE``) starts a
    group of its own: a burst on a moving conveyor photographs one part after another."""
    groups = np.arange(len(paths))
    stamped = sorted((t, Path(p).parent.name, i) for i, p in enumerate(paths)
                     if (t := capture_time(Path(p))) is not None)
    for (t0, c0, i0), (t1, c1, i1) in zip(stamped, stamped[1:]):
        if c0 == c1 and (t1 - t0).total_seconds() <= RETAKE_GAP_S and (
                images is None or _difference(images[i0], images[i1]) < RETAKE_DIFFERENCE):
            groups[i1] = groups[i0]
    return groups


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two BGR photos shrunk to 32x32 px."""
    def small(image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(np.abs(small(a) - small(b)).mean())


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def photo_key(path: Path) -> str:
    """How a version's metadata names a photo it was trained on: ``<class>/<file>``, the same
    wherever the tool's folder lives (a copied or imported tool keeps its records)."""
    return f"{path.parent.name}/{path.name}"


@dataclass
class LoadedImages:
    """Decoded images with their class index, and the files that could not be read."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def retakes(self) -> np.ndarray | None:
        """Re-take groups of the photos (see ``retake_groups``), or None for images without files."""
        return retake_groups(self.paths, self.images) if len(self.paths) == len(self.images) else None

    def skipped_report(self) -> str:
        if not self.skipped:
            return ""
        names = ", ".join(str(p) for p in self.skipped[:10])
        more = f" and {len(self.skipped) - 10} more" if len(self.skipped) > 10 else ""
        return (f"skipped {len(self.skipped)} unreadable image(s): {names}{more}; "
                "delete or replace them")


def load_folder(root: Path, classes: tuple[str, ...] | list[str]) -> LoadedImages:
    """Load ``root/<class>/*`` for the given classes, skipping files that do not decode."""
    loaded = LoadedImages()
    for index, name in enumerate(classes):
        for path in image_files(root / name):
            image = read_image(path)
            if image is None:
                loaded.skipped.append(path)
                continue
            loaded.images.append(image)
            loaded.labels.append(index)
            loaded.paths.append(path)
    return loaded


def check_trainable(counts: dict[str, int], minimum: int = MIN_IMAGES_PER_CLASS,
                    kind: str = "classifier") -> None:
    """Refuse to train a tool of ``kind`` on too few images, with what to capture next (each kind
    says what it needs: ``Kind.check_photos``)."""
    get_kind(kind).check_photos(counts, minimum)


class Frames(Protocol):
    """The latest camera frames (``core.station.live.FrameHolder``)."""

    count: int

    def wait_new(self, after: int, timeout: float = 2.0) -> np.ndarray | None: ...


class ToolDataset:
    """The images of one tool, one folder per class."""

    def __init__(self, root: Path, classes: tuple[str, ...]):
        self.root = root
        self.classes = classes

    def _class_dir(self, name: str) -> Path:
        if name not in self.classes:
            known = ", ".join(f"'{c}'" for c in self.classes)
            raise InspectorError(f"unknown class '{name}': this tool's classes are {known}")
        return self.root / name

    def counts(self) -> dict[str, int]:
        return {c: len(image_files(self.root / c)) for c in self.classes}

    def files(self, name: str | None = None) -> list[Path]:
        names = [name] if name else list(self.classes)
        return [p for c in names for p in image_files(self._class_dir(c))]

    def add_image(self, name: str, image: np.ndarray, needs: str = CONFIGURE) -> Path:
        """Store a camera frame (a snapshot or its ROI) as a lossless PNG in a class. ``needs``:
        the permission it takes (INSPECT for an operator's correction of a verdict on the line,
        ``core.station.line_learning.ReviewQueue.correct``)."""
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise InspectorError("could not encode the image to store it")
        return self._store(name, encoded.tobytes(), ".png", CAMERA_TAG, needs)

    def capture(self, frames: Frames, name: str, roi: ROI, count: int = 1, interval_s: float = 0.0,
                progress: Callable[[int, int], None] | None = None) -> list[Path]:
        """Save the ROI crop of ``count`` camera frames, ``interval_s`` apart, into class ``name``.

        The first is the latest frame, each next one a frame that arrived after it. The crop is
        exactly what live inspection judges with that ROI. A camera silent for 2 s stops the
        burst with a clear error; the photos saved before stay. ``progress(done, count)`` is
        called after each photo.
        """
        self._class_dir(name)
        saved: list[Path] = []
        seen = frames.count - 1
        for i in range(count):
            if i:
                time.sleep(interval_s)
            frame = frames.wait_new(seen)
            if frame is None:
                kept = f"; the {len(saved)} photo(s) taken before are kept" if saved else ""
                raise InspectorError("no picture from the camera for 2 s: press START under the "
                                     f"video (or check the cable){kept}")
            seen = frames.count
            saved.append(self.add_image(name, crop_roi(frame, roi)))
            if progress is not None:
                progress(i + 1, count)
        return saved

    def add_file(self, name: str, data: bytes, filename: str = "upload") -> Path:
        """Store an uploaded photo as it is, after checking it is complete and decodes."""
        decode_photo(data, filename)
        suffix = Path(filename).suffix.lower()
        return self._store(name, data, suffix if suffix in IMAGE_SUFFIXES else ".png")

    def add_upload(self, filename: str, data: bytes, *, name: str) -> tuple[int, list[str]]:
        """Add an uploaded photo, or every photo of an uploaded zip, to class ``name``.

        In a zip, folders, hidden members (``.*``, ``__MACOSX``) and files that are not images
        are skipped; members with an absolute path or ``..`` are refused, as are photos over
        ``MAX_UPLOAD_BYTES``, members past ``MAX_ZIP_BYTES`` in all and files that do not
        decode. Returns how many photos were added and one message per refusal (an unknown
        class raises ``InspectorError``).
        """
        self._class_dir(name)  # an unknown class is refused before anything is read
        too_large = f"is larger than {MAX_UPLOAD_BYTES // 2**20} MB: skipped"
        if not filename.lower().endswith(".zip"):
            if len(data) > MAX_UPLOAD_BYTES:
                return 0, [f"'{filename}' {too_large}"]
            try:
                self.add_file(name, data, filename)
            except InspectorError as exc:
                return 0, [str(exc)]
            return 1, []
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            return 0, [f"'{filename}' is not a readable zip file: nothing was added"]
        added, problems, total = 0, [], 0
        with archive:
            for info in archive.infolist():
                path = PurePosixPath(info.filename.replace("\\", "/"))
                where = f"'{info.filename}' in '{filename}'"
                if path.is_absolute() or ".." in path.parts or PureWindowsPath(info.filename).drive:
                    problems.append(f"{where} has an unsafe path: skipped")
                    continue
                if (info.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES
                        or any(part.startswith((".", "__MACOSX")) for part in path.parts)):
                    continue
                if info.file_size > MAX_UPLOAD_BYTES:
                    problems.append(f"{where} {too_large}")
                    continue
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    problems.append(f"'{filename}' holds more than {MAX_ZIP_BYTES // 2**30} GB of "
                                    f"photos: {info.filename} and the photos after it were skipped")
                    break
                try:
                    content = archive.read(info)
                except Exception as exc:  # noqa: BLE001 - damaged, encrypted or unsupported
                    problems.append(f"{where} could not be unpacked ({exc}): skipped")
                    continue
                try:
                    self.add_file(name, content, path.name)
                    added += 1
                except InspectorError as exc:
                    problems.append(str(exc))
        return added, problems

    def find_copy(self, data: bytes) -> Path | None:
        """The tool's photo with exactly these bytes, if any (a stored photo's name ends with the
        start of its SHA-1, see ``_store``)."""
        digest = hashlib.sha1(data).hexdigest()[:8]
        for path in self.files():
            if path.stem.endswith(digest) and path.read_bytes() == data:
                return path
        return None

    def _store(self, name: str, data: bytes, suffix: str, tag: str = "",
               needs: str = CONFIGURE) -> Path:
        require(needs)  # every photo added goes through here
        # Time to the microsecond keeps a burst of identical frames as separate photos.
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        digest = hashlib.sha1(data).hexdigest()[:8]
        path = self._class_dir(name) / f"{stamp}-{tag + '-' if tag else ''}{digest}{suffix}"
        atomic_write_bytes(path, data)
        return path

    def _own(self, path: Path) -> Path:
        path = Path(path).resolve()
        if path.parent.parent != self.root.resolve() or path.parent.name not in self.classes:
            raise InspectorError(f"{path} is not an image of this tool")
        return path

    def move(self, paths: list[Path], name: str) -> list[Path]:
        """Relabel images by moving them to another class."""
        require(CONFIGURE)
        target = self._class_dir(name)
        target.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.move(str(self._own(p)), target / Path(p).name)) for p in paths]

    def delete(self, paths: list[Path]) -> None:
        require(CONFIGURE)
        for path in paths:
            self._own(path).unlink(missing_ok=True)

    def load(self) -> LoadedImages:
        return load_folder(self.root, self.classes)
