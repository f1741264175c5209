"""Small file-system helpers: atomic writes and content hashes.

Every artifact is written to a temporary sibling and renamed into place, so an interrupted run
never leaves a half-written folder where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from asc_deploy.errors import UserError

# A full disk or quota: the user can fix it, so it is a UserError naming the output.
SPACE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def _naming_full_disk(dest: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in SPACE_ERRORS:
            raise
        raise UserError(
            f"cannot write {dest}: {exc.strerror}; free space there or choose another output "
            "folder (-o); nothing was written"
        ) from exc


@contextlib.contextmanager
def atomic_dir(dest: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes `dest` only if the block finishes.

    The temporary's name carries this host and process id, so the next start removes what a
    killed process (SIGKILL, power loss) left behind.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"output {dest} is an existing file, not a folder; choose a folder path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{_owner_tag()}-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result should look like mkdir's
    try:
        with _naming_full_disk(dest):
            yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(dest)
        # Move the old folder aside first so dest is never missing and never half-replaced.
        trash = dest.with_name(f".{dest.name}.old-{_owner_tag()}")
        shutil.rmtree(trash, ignore_errors=True)
        dest.rename(trash)
        tmp.rename(dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        tmp.rename(dest)


@contextlib.contextmanager
def staged_files(dest: str | Path, last: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `dest` whose files move into `dest` only if the
    block finishes, the file named `last` after all others.

    A full disk fails while the files are staged, leaving `dest` as it was (moves within one
    file system need no space). Unlike atomic_dir, files in `dest` the block does not write
    (a user's own, an earlier report's plots) are kept.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"output {dest} is an existing file, not a folder; choose a folder path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{_owner_tag()}-", dir=dest.parent))
    try:
        with _naming_full_disk(dest):
            yield tmp
        files = sorted((p for p in tmp.rglob("*") if p.is_file()), key=lambda p: p.name == last)
        for path in files:
            target = dest / path.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner_tag() -> str:
    return f"{_host_tag()}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(dest: str | Path) -> list[Path]:
    """Delete `.NAME.tmp-*` / `.NAME.old-*` siblings of `dest` left by dead processes of this host.

    Returns what was removed. Temporaries of live processes, of other hosts (a shared file
    system) and of the old unnamed format are left alone.
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    pattern = re.compile(
        rf"^\.{re.escape(dest.name)}\.(?:tmp|old)-(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)(?:-|$)"
    )
    removed = []
    for entry in dest.parent.iterdir():
        match = pattern.match(entry.name)
        if not match or match["host"] != _host_tag() or _process_alive(int(match["pid"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


LOCK_FILE = ".asc-deploy.lock"


@contextlib.contextmanager
def exclusive_folder(folder: str | Path, what: str = "asc-deploy run") -> Iterator[Path]:
    """Hold `folder` for this process; UserError if another live process holds it.

    An flock on `folder/.asc-deploy.lock` (which names the holder's pid): the kernel releases it
    when the holder exits, however it exits, so a killed run never blocks the next one.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"another {what} (pid {holder}) is using {folder}; wait for it to finish or "
                "choose another output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield folder
        finally:
            handle.seek(0)
            handle.truncate()


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(dest: str | Path) -> None:
    """UserError unless `dest` (a folder, created later) can be written; checked before any work.

    Tries what atomic_dir will do (create a folder beside `dest`), so read-only mounts and
    permissions are caught for root too, where os.access always says yes.
    """
    dest = Path(dest)
    where = _nearest_existing(dest.parent if dest.parent != dest else dest)
    if not where.is_dir():
        raise UserError(
            f"cannot write {dest}: {where} is a file, not a folder; choose another path"
        )
    targets = [where] + ([dest] if dest.is_dir() else [])
    for folder in targets:
        try:
            tempfile.TemporaryDirectory(prefix=".asc-write-check-", dir=folder).cleanup()
        except OSError as exc:
            raise UserError(
                f"cannot write {dest}: {folder} is not writable ({exc.strerror}); "
                "choose a writable output folder"
            ) from None


def check_output_file(path: str | Path) -> None:
    """UserError, before any work, unless a file can be written (atomically) at `path`."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output {path} is a folder; name a file, e.g. {path / 'bench.json'}")
    check_writable(path)


def has_marker(folder: Path, marker: str, **fields: Any) -> bool:
    """Whether `folder` holds `marker` (and, for a JSON marker, `fields` with those values)."""
    path = folder / marker
    if not path.is_file():
        return False
    if not fields:
        return True
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and all(data.get(k) == v for k, v in fields.items())


def check_output_folder(
    dest: str | Path,
    is_previous_output: Callable[[Path], bool],
    what: str,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
) -> None:
    """Refuse, before any work, an output that would lose data or cannot be written.

    Always refused: `dest` equal to, inside or containing one of `inputs`; `dest` an existing
    file. Refused without `overwrite`: a non-empty folder that `is_previous_output` does not
    recognise as an earlier output of the same verb (`what` names it in the message).
    """
    dest = Path(dest)
    target = dest.resolve()
    for source in inputs:
        source_path = Path(source)
        if not source_path.exists():
            continue  # a hub id, not a folder
        resolved = source_path.resolve()
        if target == resolved or resolved in target.parents or target in resolved.parents:
            relation = (
                "is"
                if target == resolved
                else "is inside"
                if resolved in target.parents
                else "contains"
            )
            raise UserError(
                f"output {dest} {relation} the input {source}; choose a separate output folder"
            )
    if dest.exists() and not dest.is_dir():
        raise UserError(f"output {dest} is an existing file, not a folder; choose a folder path")
    check_writable(dest)
    if overwrite or not dest.is_dir() or not any(_visible(dest)):
        return
    if not is_previous_output(dest):
        raise UserError(
            f"output {dest} is not empty and is not a previous {what} output; pass --overwrite "
            "to replace it, or choose a new folder"
        )


def _visible(folder: Path) -> Iterator[Path]:
    return (p for p in folder.iterdir() if not p.name.startswith("."))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with _naming_full_disk(path), os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; match a normal open()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(
        path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"
    )


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    """Stable hash of a JSON-serialisable value (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def hash_folder(path: str | Path) -> str:
    """Hash of every file's relative name and content under `path` (hidden files skipped)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(root)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def utc_now() -> str:
    """This moment in UTC, as records write it (2026-11-26T16:40:00Z)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
