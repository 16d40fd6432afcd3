"""The spool directory's ownership rules: one exclusive lock per file, adoption of the files
whose lock is free, oldest first, and quarantine that keeps the damaged file for inspection."""

from __future__ import annotations

import pathlib

from trackline.spool import ownership
from trackline.spool.ownership import FileLock


def orphan(directory: pathlib.Path, token: str, *, lock_file: bool = True) -> pathlib.Path:
    """A spool file (and, unless told otherwise, its lock file) with nobody holding the lock."""
    data = directory / f"spool-{token}.sqlite"
    data.write_bytes(b"")
    if lock_file:
        (directory / f"spool-{token}.lock").touch()
    return data


def test_a_held_lock_cannot_be_taken_and_a_released_one_can(tmp_path: pathlib.Path) -> None:
    """While one owner holds a file's lock nobody else gets it; once it lets go, others can."""
    path, lock = ownership.create_own(str(tmp_path))
    assert path.endswith(".sqlite")
    assert FileLock.take(lock.path, create_new=False) is None
    lock.release(unlink=False)
    again = FileLock.take(lock.path, create_new=False)
    assert again is not None
    again.release(unlink=True)
    assert not pathlib.Path(lock.path).exists()


def test_adoption_takes_free_files_oldest_first_and_skips_held_ones(
    tmp_path: pathlib.Path,
) -> None:
    """Orphans come back sorted by their creation time; a file whose owner lives is left."""
    newer = orphan(tmp_path, "00000000000000000002-2-bbbbbbbb")
    older = orphan(tmp_path, "00000000000000000001-1-aaaaaaaa", lock_file=False)
    _, held = ownership.create_own(str(tmp_path))
    (tmp_path / pathlib.Path(ownership.data_path(held.path)).name).touch()
    adopted = ownership.adopt_orphans(str(tmp_path))
    try:
        assert [path for path, _ in adopted] == [str(older), str(newer)]
        assert all(FileLock.take(lock.path, create_new=False) is None for _, lock in adopted)
    finally:
        for _, lock in adopted:
            lock.release(unlink=False)
        held.release(unlink=True)


def test_a_lock_file_without_its_spool_file_is_removed(tmp_path: pathlib.Path) -> None:
    """A lock left by an exit interrupted between deleting the file and its lock goes away."""
    (tmp_path / "spool-00000000000000000001-1-aaaaaaaa.lock").touch()
    assert ownership.adopt_orphans(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_holds_no_orphans(tmp_path: pathlib.Path) -> None:
    """A spool directory that does not exist yet is simply empty."""
    assert ownership.adopt_orphans(str(tmp_path / "nowhere")) == []


def test_quarantine_moves_the_file_and_its_side_files(tmp_path: pathlib.Path) -> None:
    """The damaged file, its WAL and its shared-memory file move together into quarantine/."""
    data = orphan(tmp_path, "00000000000000000001-1-aaaaaaaa")
    for suffix in ("-wal", "-shm"):
        pathlib.Path(f"{data}{suffix}").write_bytes(b"x")
    target = ownership.quarantine(str(data))
    assert target == str(tmp_path / "quarantine" / data.name)
    assert sorted(path.name for path in (tmp_path / "quarantine").iterdir()) == [
        data.name,
        f"{data.name}-shm",
        f"{data.name}-wal",
    ]
    assert not data.exists()
