"""Atomic writes: every file and folder this library writes appears complete or not at all.

Nothing here writes to a target path directly. A writer gets a temporary path in the SAME
directory as the target (so the final move is a rename on one file system), writes there, and
only when it returns normally is the result flushed to disk and moved into place. A failure
part way (an exception, a full disk) removes the temporary and leaves the previous file or
folder exactly as it was. A process killed mid-write (SIGKILL, power loss) cannot clean up: it
may leave a temporary named ``.<target name>.tmp-<random>[suffix]`` (or, for a folder swap,
``.<target name>.old-<random>``) beside the target. Such leftovers are never read by this
library and are safe to delete.

Files (`atomic_path`): write the temp file, fsync it, ``os.replace`` it onto the target (atomic
on POSIX and Windows), fsync the directory (where the OS allows). Folders (`atomic_directory`):
see its docstring for the swap sequence.

Keras ``.keras`` saving goes through `save_keras_model`, which `DistilBertTaskModel.save` and
`DistilBERT.save` call, keeping Keras' signature and its ``overwrite`` prompt.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_directory", "atomic_path", "check_file_target", "move_file_into_place", "save_keras_model"]

_TEMP_MARK = ".tmp-"
_OLD_MARK = ".old-"
# File suffixes Keras' `Model.save` writes as one file (it picks the format from the suffix).
_KERAS_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")


def _sibling(target: Path, mark: str, suffix: str = "") -> Path:
    return target.with_name(f".{target.name}{mark}{secrets.token_hex(4)}{suffix}")


def _fsync_path(path: Path, directory: bool = False) -> None:
    """Flush ``path`` to disk; a directory only where the OS lets one open it (not on Windows)."""
    flags = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if directory else os.O_RDONLY
    try:
        descriptor = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(descriptor)
    except OSError as error:
        # Some file systems cannot fsync a directory (EINVAL); a file's fsync error is real.
        if not directory or error.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(descriptor)


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            _fsync_path(Path(directory) / name)
        _fsync_path(Path(directory), directory=True)


def _resolve_target(target: str | os.PathLike) -> Path:
    """``target``, or where it points when it is a symbolic link.

    Writing through the link updates the file or folder it names (as ``open(target, "w")`` would);
    renaming onto the link itself would replace the link by a copy and leave the file it names stale.
    """
    target = Path(target)
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def check_file_target(target: str | os.PathLike) -> Path:
    """The path `atomic_path` will write for ``target``, or an error saying why no file can go there.

    Cheap and side-effect free, so a long job (training) can call it before it starts instead of
    failing at the end: a directory at the target, or a file where a parent folder must be, is refused.
    """
    target = _resolve_target(target)
    if target.is_dir():
        raise IsADirectoryError(
            f"Cannot write the file {os.fspath(target)!r}: a directory is in the way. Choose another path "
            "or remove the directory."
        )
    _check_parents(target)
    return target


def _check_parents(target: Path) -> None:
    blocking = next((parent for parent in target.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(
            f"Cannot write {os.fspath(target)!r}: {os.fspath(blocking)!r} is a file, not a folder. Choose another "
            "path (the folder part of the path must be a folder or not exist)."
        )


def _make_parent(target: Path) -> None:
    """Create ``target``'s missing parent folders; a file where a folder must be is a clear error."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        _check_parents(target)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """A temporary file path beside ``target``; moved onto ``target`` when the block ends normally.

    The temporary file exists (empty, created with the umask's permissions) when the block
    starts; the block writes it (``open(tmp, "w")``, a library's ``save(tmp)``...). Its name
    ends in ``suffix`` (default: the target's suffix, so ``.keras`` savers accept it). When
    the block raises, the temporary is deleted and ``target`` is untouched. Parent folders
    are created as needed. A leftover ``.<name>.tmp-<random>`` file (after a kill) is safe to delete.
    """
    target = check_file_target(target)
    _make_parent(target)
    while True:
        temp = _sibling(target, _TEMP_MARK, target.suffix if suffix is None else suffix)
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield temp
        _replace_file(temp, target)
    except BaseException:
        _remove(temp)
        raise
    _fsync_path(target.parent, directory=True)


def move_file_into_place(temp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move a finished file written beside ``target`` (same folder) onto it, the way `atomic_path` ends.

    For a writer that must keep its temporary under a fixed name (one a later run finds again, as
    ``predict --output`` does for ``--resume``): it is flushed to disk, takes the permissions of the
    file it replaces, and is renamed over it; on a failure ``target`` is left as it was.
    """
    target = check_file_target(target)
    _replace_file(Path(temp), target)
    _fsync_path(target.parent, directory=True)


def _replace_file(temp: Path, target: Path) -> None:
    if target.is_file():  # a replaced file keeps its permissions
        os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
    _fsync_path(temp)
    os.replace(temp, target)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, keep_other_entries: bool = False) -> Iterator[Path]:
    """A new, empty temporary folder beside ``target``; swapped in for ``target`` when the block ends normally.

    The sequence, chosen so that at every instant a complete folder (old or new) is at
    ``target`` or recoverable beside it:

    1. The block writes everything into ``.<name>.tmp-<random>`` (a sibling, same file system).
       With ``keep_other_entries``, entries of the existing ``target`` that the block did not
       write are then hard-linked (copied where links fail) into it, so a save into a folder
       that also holds, say, a tokenizer or a README keeps them. Every file and folder is fsynced.
       A failure up to here deletes the temporary; ``target`` was never touched.
    2. If ``target`` does not exist: rename the temporary to ``target``. Done.
    3. Otherwise rename ``target`` to ``.<name>.old-<random>``, then the temporary to
       ``target``, fsync the parent, and delete the old folder. If the second rename fails,
       the old folder is renamed back. A kill between the two renames leaves no ``target``
       but both complete folders beside it: ``.<name>.old-*`` is the previous one and
       ``.<name>.tmp-*`` the new one; rename either to ``target``. A kill after the second
       rename leaves a ``.<name>.old-*`` folder that is safe to delete.

    A folder that holds the working directory (``save_pretrained(".")``) cannot be renamed away
    from under the process: with ``keep_other_entries`` each written entry is moved into it with
    its own ``os.replace`` instead (every file atomic, the set of files not), and without it the
    save is refused.
    """
    target = Path(os.path.abspath(_resolve_target(target)))
    holds_working_directory = target.is_dir() and Path.cwd().is_relative_to(target.resolve())
    if holds_working_directory and not keep_other_entries:
        raise IsADirectoryError(
            f"Cannot replace the folder {os.fspath(target)!r}: it holds the current working directory. "
            "Write to a subfolder instead (for example 'serving/1')."
        )
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(
            f"Cannot write the folder {os.fspath(target)!r}: a file is in the way. Choose another path or "
            "remove the file."
        )
    _make_parent(target)
    while True:
        temp = _sibling(target, _TEMP_MARK)
        try:
            temp.mkdir()
            break
        except FileExistsError:
            continue
    try:
        yield temp
        if keep_other_entries and target.is_dir() and not holds_working_directory:
            _carry_over(target, temp)
        _fsync_tree(temp)
        if holds_working_directory:
            _move_entries_into(temp, target)
            _remove(temp)
        else:
            _swap_in(temp, target)
    except BaseException:
        _remove(temp)
        raise


def _move_entries_into(source: Path, target: Path) -> None:
    """Move every entry of ``source`` into ``target`` by ``os.replace``, merging into existing subfolders."""
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and destination.is_dir() and not destination.is_symlink():
            _move_entries_into(entry, destination)
        else:
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            os.replace(entry, destination)
    _fsync_path(target, directory=True)


def _carry_over(old: Path, new: Path) -> None:
    for entry in old.iterdir():
        destination = new / entry.name
        if destination.exists() or destination.is_symlink():
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), destination)
        elif entry.is_dir():
            shutil.copytree(entry, destination, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, destination)


def _link_or_copy(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _swap_in(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        if not any(target.iterdir()):
            target.rmdir()
        else:
            old = _sibling(target, _OLD_MARK)
            os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    _fsync_path(target.parent, directory=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_keras_model(
    save: Callable[..., Any], filepath: Any, overwrite: bool = True, zipped: bool | None = None, **kwargs: Any
) -> Any:
    """Run Keras' ``Model.save`` (``save``, bound to the model) so that ``filepath`` is replaced atomically.

    Same arguments and ``overwrite`` behaviour as ``keras.Model.save``: with ``overwrite=False``
    and an existing target, Keras' own prompt asks first. ``.keras``/``.h5`` files go through
    `atomic_path` (the temporary keeps the suffix Keras picks the format by), ``zipped=False``
    folders through `atomic_directory`. File objects, ``hf://`` paths and paths Keras refuses
    (a wrong suffix) go to Keras unchanged.
    """
    if isinstance(filepath, io.IOBase) or str(filepath).startswith("hf://"):
        return save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
    target = Path(filepath)
    as_directory = zipped is False
    if (target.suffix == ".keras") == as_directory or (not as_directory and target.suffix not in _KERAS_FILE_SUFFIXES):
        return save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)  # Keras raises its own error
    if target.exists() and not overwrite:
        from keras.src.utils.io_utils import ask_to_proceed_with_overwrite

        if not ask_to_proceed_with_overwrite(os.fspath(filepath)):
            return None
    with atomic_directory(target) if as_directory else atomic_path(target) as temp:
        return save(temp, overwrite=True, zipped=zipped, **kwargs)
