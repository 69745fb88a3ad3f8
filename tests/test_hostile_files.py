"""Fail safe: no damaged or hostile tool file, and no damaged file on disk, ever turns into a PASS.

Every hostile file below is imported over a station's working tool through the command line
(``--replace``): it must be refused with one line saying what to do, leave the station's tools
byte for byte as they were, and leave the tool judging real photos exactly as before. An import
killed at any moment leaves either the old tool or the new one, whole.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from core.cli import main
from core.engine.exchange import export_tool
from core.engine.inference import TrainedModel
from core.errors import InspectorError
from core.store.datasets import MAX_IMAGE_PIXELS, decode_photo, load_folder
from core.store.tools import STALE_SAVE_S, ToolStore
from tests.conftest import load_sample
from tests.hostile import add_listed, blank_png, digest, manifest_bomb, members_of, pack, patch_member

ROOT = Path(__file__).resolve().parents[1]
HEAD = "model/head.safetensors"
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                max_size=3),
                    max_leaves=6)
# What each field of a tool's configuration is in a sound file (bool is not a number here).
FIELD_TYPES = {"name": (str,), "kind": (str,), "classes": (list,), "roi": (dict,), "profile": (str,),
               "threshold": (int, float), "smoothing": (int,), "tta": (dict,), "allow_flips": (bool,),
               "camera": (str,), "enabled": (bool,), "active_version": (str, type(None)), "schema": (int,)}


def of_type(value: object, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def cli(*argv: str) -> tuple[int, list[str]]:
    """Run the command line in this process: its exit code and the lines it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue().splitlines()


def assert_one_line_refusal(code: int, lines: list[str]) -> str:
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines[:5]
    assert len(lines[0]) < 600 and "Traceback" not in lines[0], lines[0][:1000]
    return lines[0]


@pytest.fixture(scope="module")
def photos():
    return load_sample("casting", 2, seed=50)


@pytest.fixture(scope="module")
def tool_file(trained_workspace, tmp_path_factory, photos) -> Path:
    """The trained casting tool as a real tool file, with one good and one defect photo."""
    tool = ToolStore(trained_workspace).get("casting")
    file = export_tool(tool, tmp_path_factory.mktemp("file") / "casting.inspector")
    members = members_of(file)
    for name, image in (("good", photos.images[0]), ("defect", photos.images[-1])):
        add_listed(members, f"images/{name}/{name}.png", cv2.imencode(".png", image)[1].tobytes())
    return pack(members, file, zipfile.ZIP_DEFLATED)


@pytest.fixture
def station(casting_tool, photos):
    """A station judging with the casting tool, and how it judges the photos before any import."""
    return casting_tool.folder.parent, judged(ToolStore(), photos)


def judged(store: ToolStore, photos) -> tuple[float, np.ndarray]:
    tool = store.get("casting")
    scores = TrainedModel(tool).defect_scores(photos.images)
    assert np.isfinite(scores).all()
    return tool.config.threshold, scores


def assert_refused_and_unchanged(file: Path, tools: Path) -> str:
    before = digest(tools)
    line = assert_one_line_refusal(*cli("import", str(file), "--replace"))
    assert digest(tools) == before
    return line


# ------------------------------------------------------------------ generated hostile files

@FUZZ
@given(data=st.data())
def test_damaged_bytes_are_refused_or_judge_exactly_as_before(tool_file, station, photos, data):
    tools, before = station
    raw = bytearray(tool_file.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    file = tool_file.with_name("damaged.inspector")
    file.write_bytes(bytes(raw))
    snapshot = digest(tools)
    code, lines = cli("import", str(file), "--replace")
    if code == 0:  # the damage hit nothing that matters (a time stamp): the same tool, judging alike
        threshold, scores = judged(ToolStore(), photos)
        assert threshold == before[0] and np.allclose(scores, before[1], atol=1e-6)
    else:
        assert_one_line_refusal(code, lines)
        assert digest(tools) == snapshot


def wrong_type(types: tuple[type, ...]):
    return JSON.filter(lambda value: not of_type(value, types))


@FUZZ
@given(data=st.data())
def test_fields_of_the_wrong_type_are_refused(tool_file, station, photos, data):
    tools, before = station
    members = members_of(tool_file)
    manifest = json.loads(members["manifest.json"])
    where = data.draw(st.sampled_from(["tool field", "manifest", "listing", "checksum", "size"]))
    if where == "tool field":
        field = data.draw(st.sampled_from(sorted(FIELD_TYPES)))
        manifest["tool"][field] = data.draw(wrong_type(FIELD_TYPES[field]), label=field)
    elif where == "manifest":
        key = data.draw(st.sampled_from(["tool", "files", "format_version"]))
        manifest[key] = data.draw(wrong_type((int,) if key == "format_version" else (dict,)), label=key)
    else:
        entry = data.draw(st.sampled_from(sorted(manifest["files"])))
        if where == "listing":
            manifest["files"][entry] = data.draw(wrong_type((dict,)))
        else:
            manifest["files"][entry]["sha256" if where == "checksum" else "size"] = data.draw(
                wrong_type((str,) if where == "checksum" else (int,)))
    members["manifest.json"] = json.dumps(manifest).encode()
    assert_refused_and_unchanged(pack(members, tool_file.with_name("typed.inspector")), tools)
    assert judged(ToolStore(), photos)[0] == before[0]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@FUZZ
@given(depth=st.integers(2, 200_000), where=st.sampled_from(["manifest", "tool", "roi", "files", "meta"]))
def test_deeply_nested_json_is_refused(tool_file, station, depth, where):
    tools, _ = station
    members = members_of(tool_file)
    manifest = members["manifest.json"].decode()
    if where == "manifest":
        members["manifest.json"] = nested(depth).encode()
    elif where == "meta":
        add_listed(members, "model/meta.json", nested(depth).encode())
    else:
        key = {"tool": '"tool": ', "roi": '"roi": ', "files": '"files": '}[where]
        members["manifest.json"] = manifest.replace(key, key + nested(depth)[:depth] + "0"
                                                    + nested(depth)[depth:] + ", \"x\": ", 1).encode()
    assert_refused_and_unchanged(pack(members, tool_file.with_name("nested.inspector")), tools)


def head_of(members: dict[str, bytes]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    data = members[HEAD]
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    return dict(load_tensors(data)), header.get("__metadata__", {})


BAD_NUMBERS = st.sampled_from(["nan", "inf", "-inf", "", "1e999", "[1]", "\"1\"", "one", "0x10"])
BAD_METADATA = {
    "classes": st.sampled_from(['["good"]', '["good", "good"]', '["defect", "scratch"]', '"good"',
                                '{"good": 1}', "[1, 2]", "not json", '["good", 3]']),
    "last_channels": st.integers(-5, 5000).map(str) | BAD_NUMBERS,
    "cam_scale": st.sampled_from(["0", "-1", "-0.5"]) | BAD_NUMBERS,
    "patch_bias": BAD_NUMBERS,
    "patch_top": st.sampled_from(["-1", "1.5", "100000"]) | BAD_NUMBERS,
}


@st.composite
def damaged_heads(draw, tensors: dict[str, np.ndarray], meta: dict[str, str]):
    """A head file broken in one way: a value that is not finite, a wrong shape or type, an array
    missing or unknown, a metadata field of the wrong kind."""
    tensors, meta = {k: v.copy() for k, v in tensors.items()}, dict(meta)
    name = draw(st.sampled_from(sorted(tensors)))
    how = draw(st.sampled_from(["not finite", "shape", "dtype", "missing", "unknown", "metadata"]))
    if how == "not finite":
        flat = tensors[name].reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif how == "shape":
        array = tensors[name]
        tensors[name] = draw(st.sampled_from([array[..., :-1], np.concatenate([array, array[..., :1]], -1),
                                              array.reshape(1, -1), array.reshape(-1)[None].T]))
        if tensors[name].shape == array.shape:
            tensors[name] = array[..., :-1]
    elif how == "dtype":
        tensors[name] = tensors[name].astype(draw(st.sampled_from([np.float64, np.float16, np.int32,
                                                                   np.uint8])))
    elif how == "missing":
        del tensors[name]
    elif how == "unknown":
        tensors[draw(st.text("abcxyz_", min_size=1, max_size=8).filter(lambda n: n not in tensors))] = \
            np.zeros(3, np.float32)
    else:
        key = draw(st.sampled_from(sorted(BAD_METADATA)))
        meta[key] = draw(BAD_METADATA[key].filter(lambda value: value != meta.get(key)))
    return save_tensors({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta)


@FUZZ
@given(data=st.data())
def test_hostile_model_arrays_are_refused_and_change_no_verdict(tool_file, station, photos, data):
    tools, before = station
    members = members_of(tool_file)
    add_listed(members, HEAD, data.draw(damaged_heads(*head_of(members))))
    line = assert_refused_and_unchanged(pack(members, tool_file.with_name("head.inspector")), tools)
    assert "head.safetensors" in line or "model" in line
    threshold, scores = judged(ToolStore(), photos)
    assert threshold == before[0] and np.array_equal(scores, before[1])


def test_a_model_that_overflows_or_does_not_fit_the_network_is_refused_by_its_test_run(tool_file, station):
    """Arrays each sound can still make NaN scores (which never FAIL) or fail on every frame: the
    version is run on test images before the import is accepted."""
    tools, _ = station
    members = members_of(tool_file)
    tensors, meta = head_of(members)
    overflowing = dict(tensors, weight=np.stack([np.full_like(tensors["weight"][0], -3e38),
                                                 np.full_like(tensors["weight"][0], 3e38)]))
    add_listed(members, HEAD, save_tensors(overflowing, metadata=meta))
    line = assert_refused_and_unchanged(pack(members, tool_file.with_name("nan.inspector")), tools)
    assert "scores on test images are not numbers" in line
    mid = tensors["patch_weight"].shape[0] + 8  # a head made for a wider network
    features = int(meta["last_channels"]) + 2 * mid
    wider = {"mean": np.zeros(features, np.float32), "std": np.ones(features, np.float32),
             "weight": np.zeros((2, features), np.float32), "bias": tensors["bias"],
             "patch_weight": np.zeros(mid, np.float32)}
    add_listed(members, HEAD, save_tensors(wider, metadata=meta))
    line = assert_refused_and_unchanged(pack(members, tool_file.with_name("wide.inspector")), tools)
    assert "does not run on this station" in line


# ------------------------------------------------------------------ hand-made zip and JSON tricks

def deflated(members: dict[str, bytes], path: Path) -> bytes:
    return pack(members, path, zipfile.ZIP_DEFLATED).read_bytes()


def trick(name: str, tool_file: Path, tmp: Path) -> Path:
    members = members_of(tool_file)
    target = tmp / f"{name}.inspector"
    if name == "encrypted":
        target.write_bytes(patch_member(deflated(members, target), HEAD, flags=0x1))
    elif name == "deflate64":
        target.write_bytes(patch_member(deflated(members, target), HEAD, method=9))
    elif name == "lzma":
        pack(members, target, zipfile.ZIP_LZMA)
    elif name == "huge declared size":
        target.write_bytes(patch_member(deflated(members, target), HEAD, size=2**30))
    elif name == "size smaller than the data":
        target.write_bytes(patch_member(deflated(members, target), HEAD, size=len(members[HEAD]) // 2))
    elif name == "manifest bomb":
        manifest_bomb(target, 32 * 2**20)
    elif name == "manifest lying about its size":
        manifest_bomb(target, 32 * 2**20).write_bytes(patch_member(target.read_bytes(), "manifest.json",
                                                                   size=4096))
    elif name == "twice the same member":
        with pytest.warns(UserWarning, match="Duplicate name"):
            with zipfile.ZipFile(pack(members, target), "a") as archive:
                archive.writestr(HEAD, b"\0" * 64)
    elif name == "a 5 MB tool name":
        manifest = json.loads(members["manifest.json"])
        manifest["tool"]["name"] = "x" * 5_000_000
        members["manifest.json"] = json.dumps(manifest).encode()
        pack(members, target)  # stored: deflated, 5 MB of one letter is refused as a bomb first
    elif name == "a 5 MB unknown field":
        manifest = json.loads(members["manifest.json"])
        manifest["tool"]["y" * 5_000_000] = 1
        members["manifest.json"] = json.dumps(manifest).encode()
        pack(members, target)
    elif name == "a number of 5000 digits":
        members["manifest.json"] = members["manifest.json"].replace(b'"threshold": ', b'"threshold": '
                                                                    + b"9" * 5000 + b", \"t\": ", 1)
        pack(members, target)
    elif name == "an image over the pixel limit":
        add_listed(members, "images/good/huge.png", blank_png(7500, 7000))
        pack(members, target)
    elif name == "not a zip":
        target.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))
    elif name == "symbolic link":
        pack(members, target)
        with zipfile.ZipFile(target, "a") as archive:
            link = zipfile.ZipInfo("images/good/link.png")
            link.external_attr = 0o120777 << 16
            archive.writestr(link, "/etc/passwd")
    return target


@pytest.mark.parametrize("name, says", [
    ("encrypted", "encrypted"), ("deflate64", "compressed with method 9"),
    ("lzma", "compressed with method 14"), ("huge declared size", "too large"),
    ("size smaller than the data", "cannot be unpacked"), ("manifest bomb", "manifest.json' is too large"),
    ("manifest lying about its size", "cannot be unpacked"), ("twice the same member", "twice"),
    ("a 5 MB tool name", "is not allowed"), ("a 5 MB unknown field", "unknown field"),
    ("a number of 5000 digits", "not valid JSON"), ("an image over the pixel limit", "megapixels"),
    ("not a zip", "not a Shopfloor Inspector tool file"), ("symbolic link", "symbolic link"),
])
def test_zip_and_json_tricks_are_refused_in_one_short_line(tool_file, station, photos, tmp_path, name, says):
    tools, before = station
    line = assert_refused_and_unchanged(trick(name, tool_file, tmp_path), tools)
    assert says in line and len(line) < 400
    threshold, scores = judged(ToolStore(), photos)
    assert threshold == before[0] and np.array_equal(scores, before[1])


def test_a_photo_over_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path, photos):
    huge = blank_png(7500, 7000)  # 52.5 megapixels: 150 KB on disk, 158 MB decoded
    with pytest.raises(InspectorError, match=f"more than {MAX_IMAGE_PIXELS // 10**6} megapixels"):
        decode_photo(huge, "huge.png")
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "huge.png").write_bytes(huge)
    cv2.imwrite(str(tmp_path / "good" / "part.png"), photos.images[0])
    loaded = load_folder(tmp_path, ("good",))
    assert [p.name for p in loaded.paths] == ["part.png"] and [p.name for p in loaded.skipped] == ["huge.png"]


# ------------------------------------------------------------------ damaged files on disk

def break_on_disk(tool_folder: Path, what: str) -> None:
    version = tool_folder / "versions" / json.loads((tool_folder / "tool.json").read_text())["active_version"]
    config = json.loads((tool_folder / "tool.json").read_text())
    if what == "tool.json not JSON":
        (tool_folder / "tool.json").write_bytes(b"\x00\xff{garbage")
    elif what == "tool.json wrong type":
        (tool_folder / "tool.json").write_text(json.dumps({**config, "threshold": "high"}))
    elif what == "tool.json nested":
        text = json.dumps({**config, "roi": "N"})
        (tool_folder / "tool.json").write_text(text.replace('"N"', nested(100_000)))
    elif what == "meta.json not JSON":
        (version / "meta.json").write_bytes(b"{\"id\": ")
    elif what == "meta.json wrong type":
        meta = json.loads((version / "meta.json").read_text())
        (version / "meta.json").write_text(json.dumps({**meta, "input": {"height": "192", "width": 192}}))
    elif what == "weights not safetensors":
        (version / "head.safetensors").write_bytes(os.urandom(4096))
    elif what == "weights with NaN":
        data = (version / "head.safetensors").read_bytes()
        tensors, meta = head_of({HEAD: data})
        tensors["bias"][0] = np.nan
        (version / "head.safetensors").write_bytes(save_tensors(tensors, metadata=meta))
    elif what == "version folder missing":
        for path in version.iterdir():
            path.unlink()
        version.rmdir()


@pytest.mark.parametrize("what", ["tool.json not JSON", "tool.json wrong type", "tool.json nested",
                                  "meta.json not JSON", "meta.json wrong type", "weights not safetensors",
                                  "weights with NaN", "version folder missing"])
def test_a_damaged_file_on_disk_gives_one_line_not_a_verdict(casting_tool, photos, tmp_path, what):
    photo = tmp_path / "part.png"
    cv2.imwrite(str(photo), photos.images[-1])
    break_on_disk(casting_tool.folder, what)
    line = assert_one_line_refusal(*cli("predict", "--tool", "casting", str(photo)))
    assert "retrain" in line or "restore" in line or "re-import" in line or "no model version" in line


def test_a_damaged_onnx_cache_is_rebuilt(workspace, photos):
    from core.engine.backbones import get_profile
    from core.engine.preprocessing import InputShape
    from core.engine.runtime import FeatureExtractor, _graph_tag, get_extractor

    profile = get_profile("fast")
    cached = workspace / "cache" / f"fast-{_graph_tag(profile, InputShape(192, 192))}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x08\x07" + os.urandom(1000))  # a cut write, a disk error
    rebuilt = FeatureExtractor(profile).images(photos.images)
    assert cached.stat().st_size > 1_000_000
    np.testing.assert_allclose(rebuilt.mid, get_extractor(profile).images(photos.images).mid, atol=1e-4)


# ------------------------------------------------------------------ interrupted operations

def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_opening_the_store_finishes_interrupted_operations(casting_tool):
    tools, whole = casting_tool.folder.parent, digest(casting_tool.folder)
    ToolStore(tools.parent).create("other")
    pid = dead_pid()
    # killed between the two renames of a replace: the old tool aside, the new one staged
    casting_tool.folder.rename(tools / f".trash-casting-{pid}-0000aaaa")
    (tools / f".import-casting-{pid}-0000bbbb" / "images").mkdir(parents=True)
    # a replace whose new tool landed but whose old one was not deleted yet
    (tools / f".trash-other-{pid}-0000cccc" / "versions").mkdir(parents=True)
    # a staging folder of this (running) process: still in use, left alone
    live = tools / f".import-casting-{os.getpid()}-0000dddd"
    live.mkdir()
    stale, fresh = tools / ".line.json.abc123.tmp", tools / ".tool.json.def456.tmp"
    for temporary in (stale, fresh):
        temporary.write_bytes(b"half a save")
    os.utime(stale, (time.time() - STALE_SAVE_S - 60,) * 2)

    store = ToolStore(tools.parent)
    assert store.names() == ["casting", "other"] and digest(store.get("casting").folder) == whole
    assert sorted(p.name for p in tools.iterdir() if p.name.startswith(".")) == [live.name, fresh.name]


def test_a_replace_that_fails_puts_the_old_tool_back(casting_tool, tmp_path):
    store, whole = ToolStore(), digest(casting_tool.folder)
    with pytest.raises(FileNotFoundError):
        store.install(tmp_path / "never staged", "casting")
    assert digest(store.get("casting").folder) == whole
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


def run_import(file: Path, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", "import", str(file), "--replace"], cwd=ROOT,
                            env={**os.environ, "INSPECTOR_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def installed(home: Path) -> tuple[str, str]:
    """The tool as the store opens it: its configuration and every file of it."""
    tool = ToolStore(home).get("casting")
    return json.dumps(tool.config.to_json()), digest(tool.folder)


def test_import_replace_killed_at_random_moments_leaves_one_whole_tool(tool_file, workspace, photos,
                                                                       tmp_path):
    from core.engine.exchange import import_tool
    from core.engine.runtime import FeatureExtractor

    members = members_of(tool_file)
    manifest = json.loads(members["manifest.json"])
    manifest["tool"]["threshold"] = 0.61
    members["manifest.json"] = json.dumps(manifest).encode()
    files = [tool_file, pack(members, tmp_path / "new.inspector", zipfile.ZIP_DEFLATED)]
    import_tool(files[0], ToolStore(workspace))
    states = [installed(workspace)]
    FeatureExtractor(TrainedModel(ToolStore(workspace).get("casting")).profile)  # the station's cache
    start = time.perf_counter()
    finished = run_import(files[1], workspace)
    assert finished.wait(timeout=300) == 0, finished.stderr.read().decode()[-2000:]
    took = time.perf_counter() - start
    states.append(installed(workspace))
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for kill in range(2):
        running = run_import(files[kill % 2], workspace)
        time.sleep(rng.uniform(0.4, 1.1) * took)
        running.kill()
        running.wait()
        state = installed(workspace)
        assert state in states, f"seed {seed}, kill {kill}: the tool is neither the old nor the new one"
        assert not [p for p in (workspace / "tools").iterdir() if p.name.startswith(".")], f"seed {seed}"
        threshold, scores = judged(ToolStore(workspace), photos)
        assert threshold in (0.61, json.loads(states[0][0])["threshold"])
