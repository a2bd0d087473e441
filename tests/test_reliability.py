"""Reliability, fourth round (issue 27): what the OS refuses (full disks, file-size limits,
read-only folders, names too long), report paths that are devices, FIFOs or links, the cache
beside the data, non-finite numbers, run files that disagree, special files given to predict,
large confusion matrices, class names that break label files, and children outliving the
command. Everything through the real entry point; processes are awaited by condition, never by
sleeping."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_fake_run
from tlexport.cli import cli

ROOT = Path(__file__).resolve().parents[1]
LONG = "a" * 300  # one component longer than any Linux filesystem's 255 bytes
CLASSES = ["circle", "square", "triangle"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(r, *words, code=None):
    """A non-zero exit (or `code`) ending in exactly one error line, `Error: ...`, naming every
    word (progress lines of the work done before may precede it)."""
    assert r.exit_code != 0 if code is None else r.exit_code == code, (r.exit_code, r.output)
    lines = r.output.strip().splitlines()
    assert lines[-1].startswith("Error:") and sum("Error" in ln for ln in lines) == 1, r.output
    assert "Traceback" not in r.output and "unexpected" not in r.output, r.output
    for w in words:
        assert w in lines[-1], (w, r.output)
    return lines[-1]


def tlexport(*args, env=None, **kw):
    """`python -m tlexport ARGS` in a fresh process, this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tlexport", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def onnx_export(fake_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "e"
    r = invoke("export", fake_run, "--out", out, "--format", "onnx", "--no-verify")
    assert r.exit_code == 0, r.output
    return out


@contextlib.contextmanager
def tmpfs(where: Path, size: str):
    """A tmpfs of `size` mounted at `where` (root only; the test is skipped where mounting is
    not allowed)."""
    where.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> None:
    """Write until the filesystem is full."""
    with open(folder / "filler", "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)


# ---- 1. one mapping for every OS error -----------------------------------------------------------
def _long_path_commands(run, export, data):
    return [
        ("train", "--data", LONG, "--out", "o", "--weights", "none"),
        ("train", "--data", data, "--out", f"{LONG}/r", "--weights", "none"),
        ("eval", run, "--data", LONG),
        ("eval", run, "--out", LONG),
        ("eval", LONG),
        ("predict", f"{LONG}.onnx", data),
        ("predict", export / "model.onnx", f"{LONG}.png"),
        ("export", run, "--out", LONG, "--format", "onnx"),
        ("export", LONG),
        ("parity", LONG),
        ("parity", export, "--json", LONG),
        ("parity", export, "--data", LONG),
        ("bench", LONG),
        ("bench", export, "--markdown", f"{LONG}/x.md"),
        ("lr-find", "--data", LONG),
    ]


def test_a_name_too_long_is_one_line_and_exit_2_in_every_command(fake_run, onnx_export, tiny_data, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in _long_path_commands(fake_run, onnx_export, tiny_data):
        r = invoke(*args)
        assert r.exit_code == 2, (args[:2], r.output)
        line = r.output.strip().splitlines()[-1]
        assert line.startswith("Error:") and "Traceback" not in r.output and "unexpected" not in r.output, r.output
        assert LONG[:50] in line, (args[:2], line)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing created by any of them


def test_a_full_disk_during_export_eval_and_train_leaves_nothing(fake_run, tiny_data, tmp_path):
    with tmpfs(tmp_path / "small", "300k") as small:
        r = invoke("export", fake_run, "--out", small / "exports" / "e1", "--format", "onnx", "--no-verify")
        one_line_error(r, "model.onnx", "no space left on the device (ENOSPC)", code=1)
        assert list(small.iterdir()) == []  # no staging, no lock, no new folders (item 2)
        fill(small)
        r = invoke("eval", fake_run, "--out", small / "ev")
        one_line_error(r, "confusion.png", "no space left", code=1)
        r = invoke("train", "--data", tiny_data, "--out", small / "runs" / "r1", "--weights", "none",
                   "--epochs", "1", "--image-size", "32", "--workers", "0")
        one_line_error(r, "runs/r1", "no space left", code=1)
        assert sorted(p.name for p in small.iterdir()) == ["filler"]  # no lock, no runs/ left behind


def test_a_read_only_folder_is_one_line(fake_run, tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as ro:
        (ro / "ev").mkdir()
        (ro / "keep.txt").write_text("mine")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        one_line_error(invoke("eval", fake_run, "--out", ro / "ev"), "confusion.png",
                       "read-only filesystem (EROFS)", code=1)
        one_line_error(invoke("export", fake_run, "--out", ro / "ev", "--format", "onnx"), "ev",
                       "read-only filesystem", code=1)
        assert sorted(p.name for p in ro.iterdir()) == ["ev", "keep.txt"] and not any((ro / "ev").iterdir())


def test_a_file_size_limit_is_one_line_and_leaves_no_partial_file(fake_run, tmp_path):
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        from tlexport.cli import main
        sys.argv = ["tlexport", "export", {str(fake_run)!r}, "--out", {str(out)!r}, "--format", "onnx", "--no-verify"]
        main()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and "model.onnx" in last and "file too large" in last and "EFBIG" in last
    assert "Traceback" not in done.stderr and not out.exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EIO])
def test_a_cleanup_error_never_masks_the_first(fake_run, tmp_path, monkeypatch, code):
    """The write fails (each cause named), then removing the temporary fails too: the line says
    the first error, and the old report is untouched."""
    import pathlib

    import tlexport.fileio as fileio

    def failing(f, data):
        f.write(data[:10])
        raise OSError(code, os.strerror(code))

    def unlink(self, missing_ok=False):
        raise PermissionError(errno.EPERM, "cleanup refused", str(self))

    monkeypatch.setattr(fileio, "_write", failing)
    monkeypatch.setattr(pathlib.Path, "unlink", unlink)
    out = tmp_path / "ev"
    out.mkdir()
    (out / "confusion.png").write_text("old")
    r = invoke("eval", fake_run, "--out", out, "--json")
    one_line_error(r, "confusion.png", errno.errorcode[code], code=1)
    assert "cleanup refused" not in r.output and (out / "confusion.png").read_text() == "old"


# ---- 3. report paths: through devices, FIFOs and links ---------------------------------------------
def parity_json(export, target):
    return invoke("parity", export, "--runtimes", "onnxruntime", "--max-images", 2, "--json", target)


def test_a_report_goes_through_a_fifo_and_a_link_without_replacing_them(onnx_export, tmp_path):
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    one_line_error(parity_json(onnx_export, fifo), "FIFO", "nothing is reading it", code=1)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader exists before the report is written
    try:
        r = parity_json(onnx_export, fifo)
        assert r.exit_code == 0, r.output
        assert json.loads(os.read(reader, 1 << 20))["passed"] is True
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert parity_json(onnx_export, link).exit_code == 0
    assert link.is_symlink() and json.loads(target.read_text())["passed"] is True
    dangling = tmp_path / "new.json"
    dangling.symlink_to(tmp_path / "made-by-the-report.json")
    assert parity_json(onnx_export, dangling).exit_code == 0
    assert dangling.is_symlink() and (tmp_path / "made-by-the-report.json").is_file()


def test_a_report_to_a_character_device_stays_a_device(onnx_export, tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs root")
    for option in ("--json", "--markdown"):
        r = invoke("parity", onnx_export, "--runtimes", "onnxruntime", "--max-images", 2, option, null)
        assert r.exit_code == 0, r.output
        assert stat.S_ISCHR(os.lstat(null).st_mode)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s"))
    try:
        r = parity_json(onnx_export, tmp_path / "s")
        assert r.exit_code == 2 and "socket" in r.output, r.output
    finally:
        sock.close()


def test_eval_out_files_that_are_links_stay_links(fake_run, tmp_path):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "eval.json").symlink_to("/dev/null")
    (tmp_path / "kept.png").write_bytes(b"old")
    (out / "confusion.png").symlink_to(tmp_path / "kept.png")
    r = invoke("eval", fake_run, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    assert (out / "eval.json").is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert (out / "confusion.png").is_symlink() and (tmp_path / "kept.png").read_bytes()[:4] == b"\x89PNG"


def test_a_link_to_stdout_prints_and_stays_a_link(onnx_export, tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to("/proc/self/fd/1")
    done = tlexport("parity", onnx_export, "--runtimes", "onnxruntime", "--max-images", 2, "--quiet",
                    "--json", link)
    assert done.returncode == 0, done.stderr
    assert '"passed": true' in done.stdout and link.is_symlink()


# ---- 4. the cache beside the data ---------------------------------------------------------------------
def test_the_cache_refuses_the_data_folder_and_clear_spares_what_it_did_not_write(tiny_data, tmp_path,
                                                                                   monkeypatch):
    proj = tmp_path / "proj"
    shutil.copytree(tiny_data, proj / "images")
    before = sorted(str(p.relative_to(proj)) for p in proj.rglob("*"))
    args = ["train", "--out", tmp_path / "r", "--weights", "none", "--epochs", "1", "--image-size", "32"]
    for cache, data in ((proj, proj / "images"), (proj / "images", proj / "images"),
                        (proj / "images" / "train" / ".cache", proj / "images"), (tmp_path, proj / "images")):
        monkeypatch.setenv("TLEXPORT_CACHE_DIR", str(cache))
        r = invoke(*args, "--data", data)
        one_line_error(r, "TLEXPORT_CACHE_DIR", code=2)
    monkeypatch.setenv("TLEXPORT_CACHE_DIR", str(proj))
    r = invoke("cache", "--clear")
    assert r.exit_code == 0 and "left" in r.output and "images" in r.output, r.output
    assert sorted(str(p.relative_to(proj)) for p in proj.rglob("*")) == before  # the dataset is whole
    assert not (tmp_path / "r").exists()


def test_cache_clear_removes_only_marked_folders(tiny_data, tmp_path, monkeypatch):
    from tlexport.data.cache import MARKER

    cache = tmp_path / "cache"
    monkeypatch.setenv("TLEXPORT_CACHE_DIR", str(cache))
    r = invoke("train", "--data", tiny_data, "--out", tmp_path / "r", "--weights", "none", "--epochs", "1",
               "--image-size", "32", "--batch-size", "8", "--workers", "0")
    assert r.exit_code == 0, r.output
    assert (cache / "images" / MARKER).is_file() and (cache / "scan" / MARKER).is_file()
    (cache / "mine").mkdir()
    (cache / "mine" / "notes.txt").write_text("keep")
    r = invoke("cache", "--clear", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["image_entries"] > 0 and json.loads(r.output)["kept"] == []
    assert sorted(p.name for p in cache.iterdir()) == ["mine"]


# ---- 5. non-finite numbers ------------------------------------------------------------------------------
def _float_options():
    """(command name, option) of every option of every command whose value is a float: read from
    the commands themselves, so a new float option is covered without editing this test."""
    import click

    from tlexport.cli.policies import Number
    from tlexport.cli.trainopts import FiniteFloat

    found = []
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and (isinstance(param.type, (Number, FiniteFloat))
                                                    or param.type is click.FLOAT
                                                    or isinstance(param.type, click.FloatRange)):
                found.append((name, param.opts[0]))
    return found


def test_every_float_option_refuses_nan_and_infinities(tiny_data, tmp_path):
    found = _float_options()
    assert {("train", "--lr"), ("train", "--momentum"), ("train", "--crop-scale"), ("train", "--warmup-epochs"),
            ("lr-find", "--start-lr"), ("parity", "--atol"), ("bench", "--duration")} <= set(found), found
    arguments = {"train": ("--data", tiny_data, "--out", tmp_path / "r"), "lr-find": ("--data", tiny_data),
                 "eval": (tmp_path,), "parity": (tmp_path,), "bench": (tmp_path,), "export": (tmp_path,),
                 "quickstart": ("--out", tmp_path / "q")}
    for command, flag in found:
        for value in ("nan", "inf", "-inf", "NaN"):
            r = invoke(command, *arguments.get(command, ()), flag, value)
            assert r.exit_code == 2 and flag in r.output and "finite" in r.output, (command, flag, value, r.output)
    assert not (tmp_path / "r").exists() and not (tmp_path / "q").exists()


@pytest.mark.parametrize("text,name", [("lr: .nan\n", "c.yaml"), ("momentum: .inf\n", "c.yml"),
                                       ('{"crop_scale": NaN}', "c.json"), ('{"warmup_epochs": Infinity}', "c.json")])
def test_a_config_file_refuses_non_finite_values(tiny_data, tmp_path, text, name):
    config = tmp_path / name
    config.write_text(text)
    r = invoke("train", "--data", tiny_data, "--out", tmp_path / "r", "--config", config)
    key = text.strip("{").split(":")[0].strip().strip('"')
    one_line_error(r, name, key, "finite", code=2)


def test_a_resumed_run_with_a_non_finite_stored_option_is_refused(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    meta = json.loads((run / "run.json").read_text())
    meta["options"]["lr"] = float("nan")
    (run / "run.json").write_text(json.dumps(meta))  # Python writes NaN
    r = invoke("train", "--resume", run, "--epochs", "3")
    one_line_error(r, "lr", "finite")


# ---- 6. run files that disagree -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    r = invoke("train", "--data", tiny_data, "--out", out, "--arch", "resnet18", "--weights", "none", "--epochs", "2",
               "--image-size", "32", "--batch-size", "8", "--workers", "0", "--max-steps", "1")
    assert r.exit_code == 0, r.output
    return out


def _edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("where", ["both", "record"])
def test_resume_with_another_arch_in_run_json_says_it_does_not_match(trained, tmp_path, where):
    run = tmp_path / "run"
    shutil.copytree(trained, run)

    def change(meta):
        meta["arch"] = "mobilenet_v3_small"
        if where == "both":
            meta["options"]["arch"] = "mobilenet_v3_small"

    _edit_json(run / "run.json", change)
    r = invoke("train", "--resume", run, "--epochs", "3")
    one_line_error(r, "does not match", "run.json", code=1)
    for command in (("eval", run), ("export", run, "--out", tmp_path / "e", "--format", "onnx")):
        one_line_error(invoke(*command), "does not match", "run.json", code=1)


def test_a_split_label_out_of_range_is_refused_by_eval_export_and_resume(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _edit_json(run / "split.json", lambda s: s["val"][0].__setitem__(1, 7))
    for command in (("eval", run), ("train", "--resume", run, "--epochs", "3"), ("eval", run, "--json")):
        one_line_error(invoke(*command), "split.json", "label 7", "does not match run.json", code=1)


def test_predict_names_the_model_when_its_crop_disagrees_with_its_graph(onnx_export, tiny_data, tmp_path):
    import onnx

    model = onnx.load(str(onnx_export / "model.onnx"))
    for prop in model.metadata_props:
        if prop.key == "tlexport.preprocess":
            pre = json.loads(prop.value)
            pre.update(crop=40, resize=46)  # the graph takes 48 x 48
            prop.value = json.dumps(pre)
    tampered = tmp_path / "model.onnx"
    onnx.save(model, str(tampered))
    r = invoke("predict", tampered, tiny_data / "val")
    one_line_error(r, str(tampered), "40x40", code=1)


# ---- 7. special files and Ctrl-C ----------------------------------------------------------------------
def test_predict_refuses_special_and_missing_images_without_blocking(onnx_export, tiny_data, tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.png"))
    good = next((tiny_data / "val" / "circle").iterdir())
    try:
        for image, words in ((fifo, "FIFO"), (Path("/dev/zero"), "device"), (tmp_path / "s.png", "socket"),
                             (tmp_path / "missing.png", "does not exist")):
            # in a fresh process with a bound on the wait: a blocked read would fail this, not hang the suite
            done = tlexport("predict", onnx_export / "model.onnx", good, image)
            assert done.returncode == 2, done.stderr
            last = done.stderr.strip().splitlines()[-1]
            assert last.startswith("Error:") and str(image) in last and words in last, last
            assert done.stdout == ""  # refused before anything is classified: no empty table
    finally:
        sock.close()


def test_ctrl_c_ends_predict_while_a_decode_is_stuck(onnx_export, tiny_data):
    """A decode that never returns (a hung network mount): Ctrl-C ends the command with 130; the
    stuck worker does not keep the process alive. The signal is sent once the worker reports
    that it is stuck (no sleeps)."""
    code = textwrap.dedent(f"""
        import sys, threading
        import tlexport.data.preprocess as pp
        def stuck(self, *a, **k):
            sys.stdout.write("STUCK\\n"); sys.stdout.flush()
            threading.Event().wait()
        pp.Preprocess.load = stuck
        from tlexport.cli import main
        sys.argv = ["tlexport", "predict", {str(onnx_export / "model.onnx")!r}, {str(tiny_data / "val")!r},
                    "--workers", "2"]
        main()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "STUCK\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # a bound, not a timing: a hang fails here
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and "interrupted" in err, err


# ---- 8. large confusion matrices -----------------------------------------------------------------------
def _many_classes(root: Path, n: int) -> Path:
    from PIL import Image

    for split in ("train", "val"):
        for c in range(n):
            folder = root / split / f"c{c:03d}"
            folder.mkdir(parents=True)
            Image.new("RGB", (40, 40), (c * 5 % 256, c * 11 % 256, 90)).save(folder / "a.png")
    return root


def test_eval_of_many_classes_draws_no_text_per_cell(tmp_path, monkeypatch):
    import matplotlib.axes

    data = _many_classes(tmp_path / "data", 60)
    run = write_fake_run(tmp_path / "run", data, [f"c{c:03d}" for c in range(60)], crop=32)
    texts = []
    real = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda self, *a, **k: texts.append(a) or real(self, *a, **k))
    r = invoke("eval", run, "--json")
    assert r.exit_code == 0, r.output
    assert len(texts) < 10 and (run / "eval" / "confusion.png").stat().st_size > 0
    assert json.loads(r.output)["images"] == 60


def test_small_confusion_digits_contrast_with_their_cells(fake_run, tmp_path, monkeypatch):
    import matplotlib.axes

    seen = []
    real = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, **k: seen.append((int(s), k.get("color"))) or real(self, x, y, s, **k))
    r = invoke("eval", fake_run, "--out", tmp_path / "ev", "--json")
    assert r.exit_code == 0, r.output
    counts = [v for v, _ in seen]
    top, low = max(counts), min(counts)
    assert top > low and len(seen) == 9
    assert all(c == "white" for v, c in seen if v == top) and all(c == "black" for v, c in seen if v == low)


# ---- 9. class names with control characters ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "bell\x07", "line\u2028sep"])
def test_a_class_name_with_a_control_character_is_refused_by_the_scan(tiny_data, tmp_path, name):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for split in ("train", "val"):
        (data / split / "square").rename(data / split / name)
    r = invoke("train", "--data", data, "--out", tmp_path / "r", "--weights", "none", "--epochs", "1")
    one_line_error(r, "class folder", "control character", code=1)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("fmt", ["onnx", "triton", "ncnn", "web", "torchscript"])
def test_no_format_gets_a_label_file_from_a_tampered_class_name(fake_run, tmp_path, fmt):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    _edit_json(run / "run.json", lambda m: m["classes"].__setitem__(2, "tri\nangle"))
    r = invoke("export", run, "--out", tmp_path / "e", "--format", fmt, "--no-verify")
    one_line_error(r, "run.json", "control character", code=1)
    assert not (tmp_path / "e").exists()


# ---- 10. no child outlives the command ------------------------------------------------------------------------
def _marked(mark: str, but: int) -> list[tuple[int, bytes]]:
    """(pid, program) of every process whose environment carries the marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == but:
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"TLEXPORT_TEST_MARK={mark}".encode() in env:
                found.append((int(pid), Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]))
        except OSError:
            pass
    return found


def _wait_for(condition, what: str, bound: float = 300):
    """Poll `condition` until it holds; the bound only turns a hang into a failure."""
    import time

    end = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < end, f"{what} never happened"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def web_export(fake_run, tmp_path_factory):
    from tlexport.browser import chromium

    if chromium.missing_reason():
        pytest.skip(chromium.missing_reason())
    modules = ROOT / "tests" / "browser"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLEXPORT_ORT_WEB", str(modules))
        out = tmp_path_factory.mktemp("web") / "e"
        r = invoke("export", fake_run, "--out", out, "--format", "web", "--no-verify")
        if r.exit_code != 0 and "onnxruntime-web" in r.output:
            pytest.skip("onnxruntime-web is not installed in tests/browser")
        assert r.exit_code == 0, r.output
    alone = out.parent / "alone"  # the browser model without its run: no torch-eager cell first
    alone.mkdir()
    shutil.copytree(out / "model.web", alone / "model.web")
    return alone


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_no_browser_process_outlives_bench(web_export, sig):
    mark = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TLEXPORT_TEST_MARK": mark,
           "TLEXPORT_ORT_WEB": str(ROOT / "tests" / "browser")}
    proc = subprocess.Popen([sys.executable, "-m", "tlexport", "bench", web_export, "--runtimes", "browser",
                             "--iters", "1000000", "--warmup", "1"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        browsers = lambda: [p for p, exe in _marked(mark, proc.pid) if b"chrom" in exe]  # noqa: E731
        _wait_for(lambda: len(browsers()) >= 3 or proc.poll() is not None, "Chromium and its helpers starting")
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGSTOP)  # frozen: the bench cannot end on its own before the signal lands
        os.kill(proc.pid, sig)
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        _wait_for(lambda: not _marked(mark, proc.pid), "every child ending", bound=30)
    finally:
        for pid, _ in _marked(mark, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    assert proc.returncode == (-sig if sig == signal.SIGKILL else 128 + sig), err
    if sig != signal.SIGKILL:
        assert err.strip().splitlines()[-1].startswith("Error:"), err


def test_worker_pools_never_fork_a_multithreaded_process(monkeypatch):
    import threading
    import types

    from tlexport import procs

    assert procs.pool_context().get_start_method() == ("fork" if procs.fork_safe() else "forkserver")
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        assert not procs.fork_safe() and procs.pool_context().get_start_method() == "forkserver"
    finally:
        release.set()
        worker.join()
    monkeypatch.setitem(sys.modules, "jax", types.ModuleType("jax"))  # what a tflite export loads
    assert not procs.fork_safe() and procs.pool_context().get_start_method() == "forkserver"


CHILD_OF_A_JAX_PROCESS = r"""
import os, subprocess, sys, types
if sys.argv[2] == "jax":
    sys.modules["jax"] = types.ModuleType("jax")  # what a tflite export loads before the browser or pnnx starts
os.register_at_fork(before=lambda: open(sys.argv[1], "w").close())  # JAX's warning hangs on this hook
from tlexport.procs import dying_with_us
argv, guard = dying_with_us(["sleep", "600"])
child = subprocess.Popen(argv, preexec_fn=guard)
print(child.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("loaded", ["jax", "nothing"])
def test_a_child_dies_with_us_without_a_fork_after_jax(tmp_path, loaded):
    """The parent-death signal holds when JAX (or another fork-unsafe library) is loaded, and then
    nothing forks this process to set it (no at-fork hook runs): the launcher sets it on itself."""
    import time

    marker = tmp_path / "forked"
    parent = subprocess.Popen([sys.executable, "-c", CHILD_OF_A_JAX_PROCESS, str(marker), loaded],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":  # the launcher has exec'd
            assert time.monotonic() < deadline, "the launcher never became the program"
            time.sleep(0.02)
        assert marker.exists() == (loaded == "nothing")
        parent.kill()  # SIGKILL: no Python code of ours runs after this
        parent.wait()
        while _alive(pid):
            assert time.monotonic() < deadline + 60, "the child outlived its parent's SIGKILL"
            time.sleep(0.02)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if _alive(pid := locals().get("pid", 0)):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return False
    return pid > 0 and "\nState:\tZ" not in status
