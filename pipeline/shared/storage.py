"""Local paths and ``s3://``-style URIs alike, through pyarrow filesystems: checkpoints, supernets, result files.

Local files are written beside their target under a temporary name and renamed into place; on object
stores a single PUT is atomic already, so the bytes are uploaded in one stream.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs

from pipeline.shared.errors import UserError


def is_uri(path: str) -> bool:
    return "://" in path


def filesystem(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem holding ``path`` and the path inside it."""
    if is_uri(path):
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), path


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_bytes(target: str, data: bytes) -> None:
    if is_uri(target):
        fs, path = filesystem(target)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    target_path = Path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target_path.name}.tmp-", dir=target_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        share_like_open(tmp)
        os.replace(tmp, target_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_bytes(source: str) -> bytes:
    if is_uri(source):
        fs, path = filesystem(source)
        with fs.open_input_stream(path) as f:
            return f.read()
    return Path(source).read_bytes()


def write_json(target: str, value: Any) -> None:
    """``value`` as indented JSON at ``target`` (local: written whole or not at all)."""
    write_bytes(target, (json.dumps(value, indent=2) + "\n").encode("utf-8"))


def read_json(source: str) -> Any | None:
    """The JSON at ``source``, or None when there is no file."""
    try:
        return json.loads(read_bytes(source).decode("utf-8"))
    except (FileNotFoundError, OSError):
        return None


def exists(path: str) -> bool:
    """Whether a file is at ``path`` (local or URI)."""
    if not is_uri(path):
        return Path(path).is_file()
    fs, inner = filesystem(path)
    return fs.get_file_info(inner).type == pyarrow.fs.FileType.File


def remove(path: str) -> None:
    """Delete the file at ``path`` (local or URI) if it is there."""
    if not is_uri(path):
        Path(path).unlink(missing_ok=True)
        return
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type == pyarrow.fs.FileType.File:
        fs.delete_file(inner)


def copy_directory(source: str, target: str) -> None:
    """Copy a directory tree between local paths and URIs (exported supernets and models on object storage)."""
    pyarrow.fs.copy_files(source, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # files and directories this tool writes get the modes a plain open()/mkdir() would give


def share_like_open(path: str | Path, directory: bool = False) -> None:
    """Give a file made by ``mkstemp`` (0600) or a directory made by ``mkdtemp`` (0700) the mode the user's
    umask gives new files (0644) and directories (0755), so results on shared storage are readable by others."""
    os.chmod(path, (0o777 if directory else 0o666) & ~UMASK)


def resolve_storage(storage: str | None) -> str:
    """A run storage root, checked before anything starts: local paths become absolute (Ray requires it) and
    must be a directory this process can write (or creatable); URIs (s3://, gs://, ...) must be reachable."""
    storage = storage or "runs"
    if is_uri(storage):
        check_reachable(storage, "storage")
        return storage
    root = Path(storage).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise UserError(f"storage {storage!r} is a file, not a directory")
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"storage {storage!r}: {str(existing)!r} is not writable")
    return str(root)


PROBE_CONNECT_S = 5.0  # the quick look at object storage: an endpoint that refuses fails at once, one that
PROBE_ANSWER_S = 10.0  # accepts but does not answer within this long fails then (the SDK's own default: ~100 s)


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type's name when it has no message): what one-line errors quote."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quick(fs: pyarrow.fs.FileSystem) -> pyarrow.fs.FileSystem:
    """``fs`` for one quick look: an S3 filesystem makes a single attempt with short timeouts (its default,
    three attempts with backoff and the SDK's timeouts, takes minutes to give up on an endpoint that does not
    answer); other filesystems as they are. The options ``from_uri`` resolved (endpoint, region, credentials)
    are kept: they are what its pickled form carries."""
    s3 = getattr(pyarrow.fs, "S3FileSystem", None)
    if s3 is None or not isinstance(fs, s3):
        return fs
    options = dict(fs.__reduce__()[1][0])
    if not (options.get("proxy_options") or {}).get("scheme"):
        options.pop("proxy_options", None)  # no proxy: its empty form is not a valid argument
    options.update(
        connect_timeout=PROBE_CONNECT_S,
        request_timeout=PROBE_ANSWER_S,
        retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=1),
    )
    return s3(**options)


def check_reachable(uri: str, what: str) -> pyarrow.fs.FileInfo:
    """What is at ``uri``, looked at once and quickly, before any work needs it: storage that cannot be
    reached is one line naming ``what``, the URI and the cause within seconds, not a traceback after the
    SDK's retries."""
    try:
        fs, path = filesystem(uri)
        return _quick(fs).get_file_info(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {uri!r} cannot be reached: {first_line(exc)}") from None


def check_output_file(target: str, what: str) -> None:
    """Refuse, before the work that ends in writing it, a local file ``target`` that could not be written:
    a directory in its place, a file where a directory must be, or a directory this process cannot create
    files in (read-only permissions or a read-only filesystem: a file is made there and removed)."""
    path = Path(target).expanduser()
    if path.is_dir():
        raise UserError(f"{what} {target!r} is a directory; give the path of a file to write")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # missing directories are created when the file is written
    if not existing.is_dir():
        raise UserError(f"{what} {target!r}: {str(existing)!r} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=existing)
    except OSError as exc:
        raise UserError(f"{what} {target!r} cannot be written: {exc.strerror or first_line(exc)}") from None
    os.close(fd)
    os.unlink(probe)


def absolute(path: str) -> str:
    """A local path the user gave, made absolute on the driver (workers and trials run in directories of their
    own); a URI as it is."""
    return path if is_uri(path) else str(Path(path).expanduser().resolve())


def safe_run_name(name: str) -> str:
    """A run name stays inside the storage root: relative, no '..' and no empty parts."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in name:
        raise UserError(f"name {name!r}: a run name must stay inside the storage root (no '..', '.' or leading '/')")
    return name


def write_directory_to(target: str, write: Callable[[Path], object]) -> str:
    """Make directory ``target`` with ``write(path)``: in place on local disk (``write`` must be atomic there),
    or into a temporary directory that is then uploaded when ``target`` is a URI. Returns ``target``."""
    if not is_uri(target):
        write(Path(target))
        return target
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / target.rstrip("/").rsplit("/", 1)[-1]
        write(local)
        copy_directory(str(local), target)
    return target


LOCK_FILE = ".driver.lock"  # in a run directory while a driver uses it: host:pid of that driver


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LEASE_S = 120.0  # an object-store lock whose holder has not renewed it for this long is taken over
RENEW_EVERY_S = 30.0


@contextmanager
def run_lock(run_path: str, what: str) -> Iterator[None]:
    """Hold run directory ``run_path`` for this driver: a second driver on the same run is refused at once,
    naming the holder. On local storage the lock is an exclusively created file, and one left by a process that
    is gone (same host) is taken over. Object stores have no exclusive create, so there the lock is a lease:
    the holder renews it every ``RENEW_EVERY_S`` seconds, a lease not renewed for ``LEASE_S`` seconds (its
    driver died) is taken over, and a driver that wrote its lease at the same moment as another reads back
    which one stands."""
    if is_uri(run_path):
        with _lease(run_path, what):
            yield
        return
    path = Path(run_path) / LOCK_FILE
    created = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # the deepest first
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~UMASK)
            break
        except FileExistsError:
            holder = path.read_text(encoding="utf-8").strip() if path.exists() else ""
            if _gone(holder):
                path.unlink(missing_ok=True)  # its driver is gone: take the run over
                continue
            raise UserError(
                f"{what} {run_path!r} is in use by another driver ({holder or 'unknown'}); wait for it to finish, "
                f"or delete {str(path)!r} if that process is gone"
            ) from None
    else:
        raise UserError(f"{what} {run_path!r}: could not take {str(path)!r}")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(me + "\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        for directory in created:  # a run refused before it wrote anything leaves no empty directory behind
            try:
                directory.rmdir()  # only an empty one goes
            except OSError:
                break


def check_free(run_path: str, what: str) -> None:
    """Refuse at once a run that another driver holds, before anything is checked, loaded or printed (``run_lock``
    takes the run later, when the work starts)."""
    if is_uri(run_path):
        held = _read_lease(join(run_path, LOCK_FILE))
        if held is not None and time.time() - held.get("renewed", 0) < LEASE_S and not _gone(held.get("holder", "")):
            raise UserError(f"{what} {run_path!r} is in use by another driver ({held.get('holder', 'unknown')})")
        return
    path = Path(run_path) / LOCK_FILE
    try:
        holder = path.read_text(encoding="utf-8").strip()
    except OSError:
        return  # no lock (or none readable): run_lock decides when the work starts
    if not _gone(holder):
        raise UserError(
            f"{what} {run_path!r} is in use by another driver ({holder or 'unknown'}); wait for it to finish, "
            f"or delete {str(path)!r} if that process is gone"
        )


def _gone(holder: str) -> bool:
    """True when ``holder`` (host:pid) is a process of this host that no longer runs."""
    host, _, pid = holder.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _read_lease(target: str) -> dict | None:
    try:
        return json.loads(read_bytes(target).decode("utf-8"))
    except (OSError, ValueError):
        return None


@contextmanager
def _lease(run_path: str, what: str) -> Iterator[None]:
    target = join(run_path, LOCK_FILE)
    mine = {"holder": f"{socket.gethostname()}:{os.getpid()}", "token": uuid.uuid4().hex}
    held = _read_lease(target)
    if held is not None and time.time() - held.get("renewed", 0) < LEASE_S and not _gone(held.get("holder", "")):
        raise UserError(
            f"{what} {run_path!r} is in use by another driver ({held.get('holder', 'unknown')}, lease renewed "
            f"{time.time() - held.get('renewed', 0):.0f} s ago); wait for it to finish (a lease not renewed for "
            f"{LEASE_S:.0f} s is taken over)"
        )
    write_bytes(target, json.dumps({**mine, "renewed": time.time()}).encode("utf-8"))
    time.sleep(0.2)  # another driver writing at the same moment: the object that stands decides
    standing = _read_lease(target)
    if standing is None or standing.get("token") != mine["token"]:
        holder = standing.get("holder", "unknown") if standing else "unknown"
        raise UserError(f"{what} {run_path!r} is in use by another driver ({holder}), which took it at the same time")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW_EVERY_S):
            current = _read_lease(target)
            if current is not None and current.get("token") != mine["token"]:
                return  # taken over (this driver stalled past its lease): never write over the new holder
            write_bytes(target, json.dumps({**mine, "renewed": time.time()}).encode("utf-8"))

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        current = _read_lease(target)
        if current is not None and current.get("token") == mine["token"]:
            fs, path = filesystem(target)
            fs.delete_file(path)
