"""Key-value databases of Datum records (Caffe's ``db::DB``): LMDB and LevelDB.

Reading walks a cursor in key order and wraps to the first record at the end (Caffe's
``DataLayer::Next``).  LMDB uses the ``lmdb`` package; LevelDB the optional ``plyvel``.
An LMDB without ``lock.mdb`` (e.g. a read-only fixture) is opened without locking rather
than creating one.  Writing builds the database in a temporary sibling folder and
renames it into place when complete, so a crash never leaves half a database under the
final name.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from netdef.errors import DataError, Loc

__all__ = ["detect_backend", "open_cursor", "DBWriter", "iterate_records"]

_LMDB_MAP_START = 1 << 26


def detect_backend(path: Path) -> str | None:
    """``"lmdb"``/``"leveldb"`` from the files in ``path``, or None if it looks like neither."""
    if (path / "data.mdb").exists() or path.is_file():
        return "lmdb"
    if (path / "CURRENT").exists():
        return "leveldb"
    return None


def _plyvel(path: str) -> Any:
    try:
        import plyvel  # type: ignore[import-not-found]
    except ImportError:
        raise DataError("reading or writing LevelDB needs the optional 'plyvel' package",
                        loc=Loc(path), hint="pip install plyvel (or netdef[leveldb]), or "
                                            "convert the data to LMDB (backend: LMDB)") from None
    return plyvel


def _open_lmdb(path: Path) -> Any:
    """Open an LMDB read-only; lock-free when there is no (writable) ``lock.mdb``."""
    import lmdb

    lock = (path / "lock.mdb").exists() if path.is_dir() else True
    last: Exception | None = None
    for use_lock in ((True, False) if lock else (False,)):
        try:
            return lmdb.open(str(path), readonly=True, lock=use_lock, subdir=path.is_dir(),
                             readahead=False, max_readers=512)
        except lmdb.Error as e:
            last = e
    raise DataError(f"cannot open LMDB: {last}", loc=Loc(str(path)),
                    hint="is it an LMDB folder (data.mdb)? set backend: LEVELDB for LevelDB")


class Cursor:
    """A wrapping cursor over one database's values, in key order."""

    def __init__(self, path: Path, backend: str) -> None:
        self.path = str(path)
        self.backend = backend
        if backend == "lmdb":
            self._env = _open_lmdb(path)
            self._txn = self._env.begin(buffers=False)
            self._cur = self._txn.cursor()
            self._valid = self._cur.first()
        elif backend == "leveldb":
            plyvel = _plyvel(self.path)
            try:
                self._db = plyvel.DB(self.path, create_if_missing=False)
            except Exception as e:
                raise DataError(f"cannot open LevelDB: {e}", loc=Loc(self.path)) from None
            self._it = self._db.raw_iterator()
            self._it.seek_to_first()
            self._valid = self._it.valid()
        else:
            raise DataError(f"unknown database backend '{backend}'", hint="LMDB or LEVELDB")
        if not self._valid:
            raise DataError("the database holds no records", loc=Loc(self.path))

    def value(self) -> bytes:
        """The current record's serialized Datum."""
        return self._cur.value() if self.backend == "lmdb" else self._it.value()

    def advance(self) -> bool:
        """Move to the next record; at the end start again. True if it wrapped."""
        if self.backend == "lmdb":
            if self._cur.next():
                return False
            self._cur.first()
        else:
            self._it.next()
            if self._it.valid():
                return False
            self._it.seek_to_first()
        return True

    def close(self) -> None:
        if self.backend == "lmdb":
            self._txn.abort()
            self._env.close()
        else:
            self._db.close()


def open_cursor(path: Path, backend: str) -> Cursor:
    """A :class:`Cursor` on an existing database."""
    return Cursor(path, backend)


def iterate_records(path: Path, backend: str) -> Iterator[tuple[bytes, bytes]]:
    """Every ``(key, value)`` once, in cursor order (compute_image_mean's walk)."""
    if backend == "lmdb":
        env = _open_lmdb(path)
        try:
            with env.begin(buffers=False) as txn:
                yield from txn.cursor()
        finally:
            env.close()
    else:
        plyvel = _plyvel(str(path))
        db = plyvel.DB(str(path), create_if_missing=False)
        try:
            yield from db.iterator()
        finally:
            db.close()


class DBWriter:
    """Write a new database atomically: records go to a temp folder renamed at ``close``.

    Like Caffe's ``db::NEW`` the target must not exist yet.
    """

    def __init__(self, path: str | os.PathLike[str], backend: str = "lmdb", *,
                 commit_every: int = 1000) -> None:
        self.path = Path(path)
        self.backend = backend.lower()
        if self.path.exists():
            raise DataError("the output database already exists", loc=Loc(str(self.path)),
                            hint="remove it first (Caffe's tools refuse to overwrite too)")
        if self.backend not in ("lmdb", "leveldb"):
            raise DataError(f"unknown backend '{backend}'", hint="lmdb or leveldb")
        plyvel = _plyvel(str(self.path)) if self.backend == "leveldb" else None
        parent = self.path.parent if str(self.path.parent) else Path(".")
        parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=parent))
        self._pending: list[tuple[bytes, bytes]] = []
        self._every = commit_every
        self.count = 0
        if self.backend == "lmdb":
            import lmdb

            self._map = _LMDB_MAP_START
            self._env = lmdb.open(str(self._tmp), map_size=self._map, subdir=True)
        else:
            self._db = plyvel.DB(str(self._tmp), create_if_missing=True, error_if_exists=True)

    def put(self, key: bytes, value: bytes) -> None:
        self._pending.append((key, value))
        self.count += 1
        if len(self._pending) >= self._every:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self.backend == "lmdb":
            import lmdb

            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        for k, v in self._pending:
                            txn.put(k, v)
                    break
                except lmdb.MapFullError:  # grow the map and redo the transaction
                    self._map *= 2
                    self._env.set_mapsize(self._map)
        else:
            with self._db.write_batch() as wb:
                for k, v in self._pending:
                    wb.put(k, v)
        self._pending.clear()

    def close(self) -> None:
        """Commit the rest and move the database into place."""
        self._flush()
        if self.backend == "lmdb":
            self._env.close()
        else:
            self._db.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self._tmp, 0o777 & ~umask)  # mkdtemp made it private
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop everything written so far."""
        try:
            if self.backend == "lmdb":
                self._env.close()
            else:
                self._db.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "DBWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
