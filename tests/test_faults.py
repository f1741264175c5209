"""Faults: a process SIGKILLed while writing an artifact leaves nothing that outlives the next run.

The kill lands inside `atomic_dir`, after the graph is written into the hidden temporary folder
and before it is renamed into place: the worst moment, with the most left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import tiny_model, write_tiny_tokenizer
from deploy_helpers import classification_features

from asc_deploy.deploy.export import export_artifact
from asc_deploy.deploy.quantize import quantize_artifact
from asc_deploy.fsutil import atomic_dir, read_json, remove_stale_temporaries

TESTS = Path(__file__).resolve().parent

# Run in a child process: build the artifact, but SIGKILL ourselves at validation time.
_KILLED_BUILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from deploy_helpers import classification_features
from asc_deploy.deploy import validation
from asc_deploy.deploy.export import export_artifact
from asc_deploy.deploy.quantize import quantize_artifact

validation.check = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if {verb!r} == "export":
    export_artifact({model!r}, {dest!r}, "classification", classification_features({model!r}))
else:
    quantize_artifact({parent!r}, {dest!r}, "dynamic", isa="avx2")
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("faults")
    folder = root / "model"
    tiny_model("bert").save_pretrained(folder)
    AutoTokenizer.from_pretrained(write_tiny_tokenizer(root / "tok")).save_pretrained(folder)
    return folder


def _build(verb: str, model: Path, dest: Path, parent: Path | None = None) -> dict:
    if verb == "export":
        return export_artifact(model, dest, "classification", classification_features(model))
    return quantize_artifact(parent, dest, "dynamic", isa="avx2")


def _kill_while_building(verb: str, model: Path, dest: Path, parent: Path | None) -> None:
    script = _KILLED_BUILD.format(
        tests=str(TESTS), verb=verb, model=str(model), dest=str(dest), parent=str(parent)
    )
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _content_hashes(manifest: dict) -> dict:
    # sample_inputs.npz is a zip whose entries carry the time they were written.
    return {k: v for k, v in manifest["files"].items() if k != "sample_inputs.npz"}


@pytest.mark.parametrize("verb", ["export", "quantize"])
def test_sigkill_mid_build_then_rerun(verb, model, tmp_path):
    reference_parent = tmp_path / "reference" / "fp32"
    reference = _build("export", model, reference_parent)
    if verb == "quantize":
        reference = _build("quantize", model, tmp_path / "reference" / "int8", reference_parent)

    dest = tmp_path / "run" / ("fp32" if verb == "export" else "int8")
    _kill_while_building(verb, model, dest, reference_parent)
    left = _temporaries(dest.parent)
    assert len(left) == 1 and left[0].startswith(f".{dest.name}.tmp-"), left
    assert any((dest.parent / left[0]).iterdir())  # the half-built graph is in there
    assert not dest.exists()

    rebuilt = _build(verb, model, dest, reference_parent)
    assert _temporaries(dest.parent) == []
    assert rebuilt["inputs_hash"] == reference["inputs_hash"]
    assert _content_hashes(read_json(dest / "manifest.json")) == _content_hashes(reference)


def test_temporaries_of_live_processes_and_other_hosts_stay(tmp_path):
    dest = tmp_path / "artifact"
    mine = tmp_path / f".artifact.tmp-{_host()}-{os.getpid()}-abc"
    other_host = tmp_path / f".artifact.tmp-00000000-{_dead_pid()}-abc"
    dead = tmp_path / f".artifact.tmp-{_host()}-{_dead_pid()}-abc"
    dead_trash = tmp_path / f".artifact.old-{_host()}-{_dead_pid()}"
    unrelated = tmp_path / f".other.tmp-{_host()}-{_dead_pid()}-abc"
    for folder in (mine, other_host, dead, dead_trash, unrelated):
        folder.mkdir()
    removed = remove_stale_temporaries(dest)
    assert sorted(removed) == sorted([dead, dead_trash])
    assert _temporaries(tmp_path) == sorted(p.name for p in (mine, other_host, unrelated))


def test_a_failed_block_leaves_nothing_and_keeps_the_previous_folder(tmp_path):
    dest = tmp_path / "artifact"
    dest.mkdir()
    (dest / "old.txt").write_text("previous")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert _temporaries(tmp_path) == []
    assert [p.name for p in dest.iterdir()] == ["old.txt"]


def _host() -> str:
    from asc_deploy.fsutil import _host_tag

    return _host_tag()


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    return int(child.stdout)


_HOLDER = """
import sys
from asc_deploy.fsutil import exclusive_folder
with exclusive_folder(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


def test_a_second_run_on_one_output_folder_is_refused_until_the_first_dies(tmp_path):
    from asc_deploy.errors import UserError
    from asc_deploy.fsutil import exclusive_folder

    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = pytest.raises(UserError, match=f"pid {holder.pid}\\) is using")
        with refused, exclusive_folder(tmp_path):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel still drops the lock
        holder.wait()
    with exclusive_folder(tmp_path) as held:
        assert held == tmp_path
