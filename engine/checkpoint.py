"""Checkpoints: the journal's replay saved after a record, so a restart replays only the rest.

Why: the engine's state is the replay of its journal (:mod:`engine.recovery`).
Without checkpoints a restart reads every record since the journal began, and
the time it takes grows with every trading day the engine has seen. A
checkpoint is the state of a :class:`~engine.recovery.Replay` after one
record: a restart loads the newest usable one and replays the journal from
the record after it, and reaches the state a replay of the whole journal
reaches (the tests compare the two, field by field).

Who writes them. The engine, after each trading-day roll, in a child process
(``[journal] checkpoint``, on by default): the child builds a pipeline from
the same configuration, loads the newest checkpoint, replays the journal up
to the roll's record and saves the result. Being a replay, not a copy of the
live engine's memory, a checkpoint cannot hold anything a restart would not
have computed itself; the engine's event loop does none of the work. And by
hand, ``kronos-exec journal checkpoint --config FILE``, on a running engine's
journal or a stopped one's.

The file. ``<journal dir>/checkpoints/<seq, 20 digits>.ckpt``: a fixed header
(magic, format, the record's seq, the record's chain hash, the payload's
length and SHA-256) and the payload, the replay's state pickled (its msgspec
structs as msgpack bytes: ``engine.recovery._StatePickler``). Written
under a temporary name, synced, renamed, and the directory synced: a crash
leaves the whole file or none. The record's chain hash binds it to this
journal: one copied from another journal, or left from a journal that was
replaced, names a record whose hash differs, and is skipped.

Reading. :func:`load_newest` tries the checkpoints newest first and skips,
with a warning, one that is unreadable, damaged, of another format or
another journal, or whose state does not fit the configuration (risk refuses
its accounts or instruments); with none usable, the whole journal is
replayed. A checkpoint never stops the engine from starting.

Trust. The payload is pickled Python, loaded as it is: the journal directory
must be writable only by the engine's user, as the journal itself must. Its
SHA-256 finds damage, not an edit (anyone can recompute it), and the journal's
hash chain does not cover it: :func:`check_against_journal` (``kronos-exec
journal verify --config``) holds each checkpoint to the journal's replay.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from engine.journal import (HASH_SIZE, IDENTITY_FILE, JournalReader, Record, keep_identity,
                            list_segments, sync_dir, write_durably)
from engine.recovery import Replay, check_whole

log = logging.getLogger(__name__)

MAGIC = b"KRXCKPT\x00"
#: The file's layout. The payload's (what ``Replay.save`` pickles) is checked apart, by
#: :data:`LAYOUT`: a checkpoint of another format or layout is skipped (the journal is
#: replayed from further back). 2: the payload's msgspec structs are msgpack bytes
#: (engine.recovery._StatePickler), not pickled field dicts.
FORMAT = 2
SUFFIX = ".ckpt"
# magic, format, reserved, seq, record hash, payload layout, payload length, payload SHA-256
_HEADER = struct.Struct(f"<8sHHQ{HASH_SIZE}s16sQ32s")


def _layout() -> bytes:
    """A fingerprint of what a checkpoint's payload holds: the fields of every struct it
    pickles (orders, children, messages) with their types, defaults and encoding
    options, the replay's saved attributes, the order table's and the trade history's.
    A version of the engine that changes any of them reads no checkpoint of the one
    before: a field moved or renamed would otherwise land in another, and a field whose
    type or default changed would be decoded (the payload's structs are msgpack, decoded
    by their types) into another value, without an error."""
    import msgspec

    from engine import messages, orders
    from engine.history import _Account
    structs = sorted((f"{cls.__module__}.{cls.__qualname__}", _struct_layout(cls))
                     for module in (messages, orders) for cls in vars(module).values()
                     if isinstance(cls, type) and issubclass(cls, msgspec.Struct)
                     and cls.__module__ == module.__name__)
    parts = (FORMAT, structs, Replay.SAVED, sorted(vars(orders.OrderTable())), _Account.__slots__)
    return hashlib.sha256(repr(parts).encode()).digest()[:16]


#: The encoding options of a struct that change its msgpack bytes.
_ENCODING_OPTIONS = ("array_like", "omit_defaults", "forbid_unknown_fields", "tag", "tag_field",
                     "rename")


def _struct_layout(cls) -> str:
    """A struct's fields (name, wire name, type, default) and encoding options as text,
    with no memory address in it (a default factory's, say): the engine and its
    checkpoint child, two processes, must compute the same fingerprint."""
    import msgspec.structs

    text = repr((tuple((f.name, f.encode_name, f.type, f.default, f.default_factory)
                       for f in msgspec.structs.fields(cls)),
                 tuple(getattr(cls.__struct_config__, name, None)
                       for name in _ENCODING_OPTIONS)))
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


#: This engine's payload layout (:func:`_layout`).
LAYOUT = _layout()
#: What a checkpoint leaves free on the journal's file system, at least: this share of it,
#: and no less than RESERVE_BYTES (check_room).
RESERVE_FRACTION = 0.05
RESERVE_BYTES = 1 << 30
#: How long a checkpoint writer waits for the record it was asked to stop at to be
#: readable (the engine journals a roll and flushes it at once).
WAIT_FOR_RECORD_S = 60.0


class CheckpointError(Exception):
    """A checkpoint file cannot be used (the message says why)."""


def checkpoint_dir(journal_dir: str | os.PathLike) -> Path:
    """Where the checkpoints of the journal in ``journal_dir`` are kept."""
    return Path(journal_dir) / "checkpoints"


def checkpoint_path(journal_dir: str | os.PathLike, seq: int) -> Path:
    """The file of the checkpoint after record ``seq``."""
    return checkpoint_dir(journal_dir) / f"{seq:020d}{SUFFIX}"


def list_checkpoints(journal_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The checkpoint files, as (seq, path), newest first (by the seq their names give)."""
    directory = checkpoint_dir(journal_dir)
    if not directory.is_dir():
        return []
    found = [(int(p.stem), p) for p in directory.iterdir()
             if p.suffix == SUFFIX and p.stem.isdigit() and len(p.stem) == 20]
    return sorted(found, reverse=True)


def write(journal_dir: str | os.PathLike, replay: Replay) -> Path:
    """Save ``replay``'s state (after record ``replay.seq``) as a checkpoint; returns its path."""
    payload = replay.save()
    check_room(journal_dir, len(payload))
    header = _HEADER.pack(MAGIC, FORMAT, 0, replay.seq, replay.hash, LAYOUT, len(payload),
                          hashlib.sha256(payload).digest())
    path = checkpoint_path(journal_dir, replay.seq)
    # The engine's user's alone: a checkpoint is loaded as pickled Python (see read).
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_durably(path, header, payload, mode=0o600)
    return path


def _check_private(path: Path) -> None:
    """Refuse ``path`` unless it is this process's user's own and writable by no one else:
    a checkpoint is unpickled, which can run code, so only the engine's user may have
    written it (a symlink is refused: it could point anywhere)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise CheckpointError(f"unreadable: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(f"{path.name} is a symbolic link")
    if st.st_uid != os.geteuid():
        raise CheckpointError(f"{path} belongs to uid {st.st_uid}, not to this engine's "
                              f"user (uid {os.geteuid()})")
    if st.st_mode & 0o022:
        raise CheckpointError(f"{path} is writable by others (mode {st.st_mode & 0o777:o})")


def _check_engines_user(journal_dir: str | os.PathLike) -> None:
    """Refuse to checkpoint another user's journal (one whose newest segment this process's
    user did not write): the engine loads only its own user's checkpoints (see
    :func:`_check_private`), and could not write beside them in a checkpoints directory
    another user created."""
    segments = list_segments(journal_dir)
    if not segments:
        return
    owner = os.stat(segments[-1]).st_uid
    if owner != os.geteuid():
        raise CheckpointError(f"the journal in {journal_dir} is written by uid {owner}, not "
                              f"by this user (uid {os.geteuid()}): run it as the engine's "
                              f"user, whose engine would skip this user's checkpoints")


def _read_header(path: Path, data: bytes | memoryview) -> tuple:
    """The header fields of a checkpoint file's bytes, checked (not the payload)."""
    if len(data) < _HEADER.size:
        raise CheckpointError(f"cut short: {len(data)} bytes, less than its header")
    magic, fmt, _, seq, record_hash, layout, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CheckpointError("not a checkpoint file (wrong magic)")
    if fmt != FORMAT:
        raise CheckpointError(f"format {fmt}, this engine reads format {FORMAT}")
    if seq != int(path.stem):
        raise CheckpointError(f"holds the state after record {seq}, not after {int(path.stem)}")
    return seq, record_hash, layout, length, digest


def check_room(journal_dir: str | os.PathLike, size: int) -> None:
    """Refuse to write ``size`` bytes of checkpoint where the journal would be left less than
    :data:`RESERVE_FRACTION` of its file system (at least :data:`RESERVE_BYTES`): the
    journal is on the same disk, and a full disk stops the engine (it fails stop), which a
    checkpoint must never cause."""
    usage = shutil.disk_usage(journal_dir)
    reserve = max(RESERVE_BYTES, int(usage.total * RESERVE_FRACTION))
    if usage.free - size < reserve:
        raise CheckpointError(
            f"not written: {size / 2**20:.0f} MiB would leave {max(usage.free - size, 0) / 2**30:.1f} "
            f"GiB free on the journal's disk, less than the {reserve / 2**30:.1f} GiB kept for "
            f"the journal")


def read(path: Path) -> tuple[int, bytes, memoryview]:
    """A checkpoint file's (seq, record hash, payload), checked whole.

    Raises
    ------
    CheckpointError
        The file or its directory is not the engine's user's own, or writable
        by others; it is cut short, damaged (the payload's SHA-256 differs),
        of another format or payload layout (another engine version), or
        named for another seq than it holds.
    """
    _check_private(path.parent)
    _check_private(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"unreadable: {exc.strerror or exc}") from None
    seq, record_hash, layout, length, digest = _read_header(path, data)
    if layout != LAYOUT:
        raise CheckpointError("written by an engine version whose state layout differs")
    payload = memoryview(data)[_HEADER.size:]  # (no copy of what may be gigabytes)
    if len(payload) != length:
        raise CheckpointError(f"cut short: {len(payload)} of {length} payload bytes")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError("damaged: its payload's SHA-256 does not match")
    return seq, record_hash, payload


def _bound(journal_dir, path: Path, hashes: dict[int, bytes | None]) -> bool:
    """Whether checkpoint ``path`` is bound to a record this journal holds (its header
    only is read): one that is not (another journal's, or past the journal's end after a
    torn tail was dropped) can never be used.

    ``hashes``: record hashes by seq already known to the caller, and where this
    adds those it reads (each one read from the journal costs a scan of its segment
    up to it: one caller looking at several checkpoints, or at one twice, scans once).
    """
    try:
        with open(path, "rb") as f:
            seq, record_hash = _read_header(path, f.read(_HEADER.size))[:2]
    except (OSError, CheckpointError):
        return False
    if seq not in hashes:
        hashes[seq] = _record_hash(journal_dir, seq)
    return hashes[seq] == record_hash


def _record_hash(journal_dir, seq: int) -> bytes | None:
    """The chain hash of record ``seq`` of the journal (None: the journal has no such record)."""
    record = next(iter(JournalReader(journal_dir).records(seq)), None)
    return record.hash if record is not None and record.seq == seq else None


class Loaded(NamedTuple):
    """A checkpoint :func:`load_newest` loaded, and the journal's records after it."""

    #: the checkpoint's file
    path: Path
    #: the journal's records after the checkpoint's, for the replay to go on with: read
    #: on from the record the checkpoint was checked against, so that the segment holding
    #: it is read and scanned up to it once, not once more by the replay
    records: Iterator[Record]


def load_newest(replay: Replay, journal_dir: str | os.PathLike) -> Loaded | None:
    """Load the newest usable checkpoint of the journal into ``replay`` (which has read
    nothing); returns it with the journal's records after it, or None when there is none
    to use (each one skipped is logged with why)."""
    for seq, path in list_checkpoints(journal_dir):
        started = time.monotonic()
        try:
            seq, record_hash, payload = read(path)
            records = JournalReader(journal_dir).records(seq)
            found = next(records, None)
            if found is None or found.seq != seq:
                raise CheckpointError(f"the journal has no record {seq}")
            if found.hash != record_hash:
                raise CheckpointError(f"record {seq} of the journal is not the one it was "
                                      f"taken after (another journal's checkpoint)")
            try:
                replay.load(payload)
            except ValueError as exc:
                raise CheckpointError(str(exc)) from None
            finally:
                del payload  # (the file's bytes, freed before the replay goes on)
        except CheckpointError as exc:
            log.warning("checkpoint %s skipped: %s", path.name, exc)
            continue
        log.info("recovery: loaded checkpoint %s (after record %d, %d orders) in %.2f s",
                 path.name, seq, len(replay.pipeline.orders), time.monotonic() - started,
                 extra={"checkpoint_seq": seq})
        return Loaded(path, records)
    return None


def make(cfg, until_seq: int | None = None, *, wait_s: float = 0.0) -> Path | None:
    """Write the checkpoint after record ``until_seq`` of ``cfg``'s journal (None: its last
    record), from the newest usable checkpoint before it; returns its path (None: the
    journal is empty, or a checkpoint of this journal at or past ``until_seq`` exists
    already). Then :func:`prune` keeps ``[journal] checkpoints_kept``.

    ``wait_s``: how long to wait for record ``until_seq`` to be readable (a
    running engine's roll record, flushed as it is written).
    """
    from engine.intake import client_names
    from engine.service import build_pipeline, build_venues
    journal_dir = cfg.journal.dir
    _check_engines_user(journal_dir)
    hashes: dict[int, bytes | None] = {}  # (record hashes by seq: see _bound)
    if until_seq is not None and any(seq >= until_seq and _bound(journal_dir, path, hashes)
                                     for seq, path in list_checkpoints(journal_dir)):
        return None
    started = time.monotonic()
    pipeline = build_pipeline(cfg, build_venues(cfg), None)
    replay = Replay(pipeline, cfg.intake.resend_ring_size, client_names(cfg.security))
    newest = load_newest(replay, journal_dir)
    loaded = replay.seq
    if newest is not None:
        hashes[loaded] = replay.hash  # (load_newest checked it against the journal)
    check_whole(journal_dir, loaded)
    records = newest.records if newest is not None else JournalReader(journal_dir).records(1)
    deadline = time.monotonic() + wait_s
    while True:
        replay.run(records, until_seq)
        if until_seq is None or replay.seq >= until_seq or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
        records = JournalReader(journal_dir).records(replay.seq + 1)
    if until_seq is not None and replay.seq < until_seq:
        raise CheckpointError(f"the journal has no record {until_seq} (it ends at {replay.seq})")
    if replay.missing:
        # Saved, it would stop every restart that loads it; the engine itself would refuse
        # this journal under this configuration (a configuration other than the engine's?).
        (what, name), n = next(iter(replay.missing.items()))
        raise CheckpointError(f"the journal holds {n} accepted orders of {what} {name!r}, "
                              f"which this configuration does not have: not the engine's?")
    if replay.seq == loaded:
        return None  # (nothing after the one loaded, or an empty journal)
    path = write(journal_dir, replay)
    hashes[replay.seq] = replay.hash  # (the replay read it, its chain checked)
    prune(journal_dir, cfg.journal.checkpoints_kept, hashes)
    # (A journal an older engine wrote has no identity file yet: written while the journal
    # still begins at seq 1, before any segment is archived; see archivable_segments.)
    keep_identity(journal_dir)
    log.info("checkpoint %s written (after record %d, %d orders) in %.2f s", path.name,
             replay.seq, len(pipeline.orders), time.monotonic() - started,
             extra={"checkpoint_seq": replay.seq})
    return path


def archivable_segments(journal_dir: str | os.PathLike) -> list[Path]:
    """The journal's segments the engine no longer needs to start: those wholly before the
    record of the oldest checkpoint kept (so that it can stand in for a damaged newest one).
    None while there is no checkpoint, or no ``identity`` file
    (engine.journal.keep_identity). Gateways and resends may still want them: see
    *Checkpoints* in docs/engine.md."""
    kept = list_checkpoints(journal_dir)
    if not kept or not (Path(journal_dir) / IDENTITY_FILE).exists():
        # (Without the identity file, the first segment names the journal: archived, the
        # gateways would take the journal for another one.)
        return []
    oldest = kept[-1][0]
    segments = list_segments(journal_dir)
    # (A segment can go once the next one starts at or before that record.)
    return [path for path, following in zip(segments, segments[1:]) if int(following.stem) <= oldest]


def prune(journal_dir: str | os.PathLike, keep: int,
          hashes: dict[int, bytes | None] | None = None) -> list[Path]:
    """Delete the checkpoints not bound to this journal (they can never be used, and would
    count among the newest), all but the ``keep`` newest of the rest, and temporary files of
    writers that died (older than an hour); returns what was deleted. ``hashes``: the
    journal's record hashes by seq the caller knows already (see ``_bound``)."""
    directory = checkpoint_dir(journal_dir)
    hashes = {} if hashes is None else hashes
    kept, gone = [], []
    for _, path in list_checkpoints(journal_dir):
        (kept if len(kept) < keep and _bound(journal_dir, path, hashes) else gone).append(path)
    stale = time.time() - 3600
    for path in directory.glob(f".*{SUFFIX}.*.tmp"):
        try:
            if path.stat().st_mtime < stale:
                gone.append(path)
        except FileNotFoundError:
            pass  # (another writer's, renamed meanwhile)
    for path in gone:
        path.unlink(missing_ok=True)
    if gone:
        sync_dir(directory)
    return gone



# ---------------------------------------------------------------- checked against the journal
class CheckpointCheck(NamedTuple):
    """What :func:`check_against_journal` found of one checkpoint."""

    path: Path
    #: the record it was taken after
    seq: int
    #: True: the journal's replay through ``seq`` reaches its state; False: it does not (a
    #: restart would load a state the journal does not hold); None: not checked (``detail``)
    agrees: bool | None
    detail: str


def check_against_journal(cfg) -> list[CheckpointCheck]:
    """Hold each checkpoint of ``cfg``'s journal to the journal: replay the journal (from its
    first record) through each checkpoint's record and compare the states.

    A checkpoint's header binds it to a record's chain hash, and its payload's
    SHA-256 finds damage, but neither can find a payload rewritten (its SHA-256
    recomputed): the engine would load it and start on a state its journal does
    not hold, the replay of the records before it never read again. Only a
    replay tells. A checkpoint the engine would skip (damaged, another journal's
    or version's, past the journal's end) is not compared (``agrees`` None).
    When the journal's first segments were archived, its oldest usable
    checkpoint is taken as given and the later ones are checked from it.

    Parameters
    ----------
    cfg : engine.config.EngineConfig
        The engine's configuration (its journal, risk and venues: the replay is
        the engine's own, as in :func:`make`).

    Returns
    -------
    list of CheckpointCheck
        Oldest first.
    """
    import pickle

    from engine.intake import client_names
    from engine.journal import first_segment_header
    from engine.service import build_pipeline, build_venues
    journal_dir = cfg.journal.dir

    def fresh() -> Replay:
        return Replay(build_pipeline(cfg, build_venues(cfg), None),
                      cfg.intake.resend_ring_size, client_names(cfg.security))

    found: list[CheckpointCheck] = []
    pending = sorted(list_checkpoints(journal_dir))
    replay = fresh()
    first = first_segment_header(journal_dir)
    if first is not None and first[1].first_seq != 1:
        # Without the journal's beginning, the oldest checkpoint that loads stands in for it.
        while pending and not replay.seq:
            seq, path = pending.pop(0)
            try:
                seq, record_hash, payload = read(path)
                record = next(iter(JournalReader(journal_dir).records(seq)), None)
                if record is None or record.seq != seq or record.hash != record_hash:
                    raise CheckpointError("not bound to a record of this journal")
                replay.load(payload)
            except (CheckpointError, ValueError) as exc:
                found.append(CheckpointCheck(path, seq, None, f"not checked: {exc}"))
                replay = fresh()
                continue
            found.append(CheckpointCheck(
                path, seq, None, f"taken as given: the journal begins at seq "
                                 f"{first[1].first_seq}, so no replay reaches it; the later "
                                 f"checkpoints are checked from it"))
    for index, (seq, path) in enumerate(pending):
        try:
            seq, record_hash, payload = read(path)
        except CheckpointError as exc:
            found.append(CheckpointCheck(path, seq, None, f"not checked (the engine skips "
                                                          f"it): {exc}"))
            continue
        replay.run(JournalReader(journal_dir).records(replay.seq + 1), seq)
        if replay.missing:
            # (As make() refuses to write it: a state compared under another configuration
            # than the engine's would differ from every checkpoint.)
            (what, name), n = next(iter(replay.missing.items()))
            found.extend(CheckpointCheck(later, later_seq, None,
                                         f"not checked: the journal holds {n} accepted orders "
                                         f"of {what} {name!r}, which this configuration does "
                                         f"not have: not the engine's?")
                         for later_seq, later in pending[index:])
            break
        if replay.seq != seq:
            found.append(CheckpointCheck(path, seq, None, f"not checked (the engine skips it): "
                                                          f"the journal ends at seq {replay.seq}"))
            continue
        if replay.hash != record_hash:
            found.append(CheckpointCheck(path, seq, None, f"not checked (the engine skips it): "
                                                          f"record {seq} of the journal is not "
                                                          f"the one it was taken after"))
            continue
        saved = replay.save()
        # (Equal bytes as a rule; a set of texts pickles in an order of the process's.)
        difference = None if saved == payload else \
            _first_difference(pickle.loads(payload), pickle.loads(saved), "state")
        if difference is None:
            found.append(CheckpointCheck(path, seq, True, f"the journal's replay through seq "
                                                          f"{seq} reaches its state"))
        else:
            found.append(CheckpointCheck(
                path, seq, False, f"holds a state the journal's replay through seq {seq} does "
                                  f"not reach ({difference}): a restart would load it; move it "
                                  f"out of {checkpoint_dir(journal_dir)}"))
    return found


def _first_difference(held, replayed, where: str, seen: set | None = None) -> str | None:
    """Where two unpickled states first differ (``where`` the path to them), or None.

    By value all the way down, objects of the engine's own classes (slots or a
    ``__dict__``) by their attributes; an object met again (shared, or a cycle)
    is not compared twice.
    """
    import collections
    import enum

    import msgspec

    seen = set() if seen is None else seen
    if type(held) is not type(replayed):
        return f"{where} is a {type(held).__name__}, the replay's a {type(replayed).__name__}"
    if held is None or isinstance(held, (str, bytes, int, float, enum.Enum, set, frozenset)):
        return None if held == replayed else f"{where} is {held!r}, the replay's {replayed!r}"
    if (id(held), id(replayed)) in seen:
        return None
    seen.add((id(held), id(replayed)))
    if isinstance(held, msgspec.Struct):
        pairs = [(f"{where}.{name}", getattr(held, name), getattr(replayed, name))
                 for name in held.__struct_fields__]
    elif isinstance(held, dict):
        if held.keys() != replayed.keys():
            extra = [k for k in held if k not in replayed][:3]
            lacking = [k for k in replayed if k not in held][:3]
            return f"{where} has keys {extra} the replay's has not, and lacks {lacking}"
        pairs = [(f"{where}[{key!r}]", value, replayed[key]) for key, value in held.items()]
    elif isinstance(held, (list, tuple, collections.deque)):
        if len(held) != len(replayed):
            return f"{where} has {len(held)} items, the replay's {len(replayed)}"
        pairs = [(f"{where}[{i}]", a, b) for i, (a, b) in enumerate(zip(held, replayed))]
    else:
        fields = {}
        for cls in type(held).__mro__:
            names = getattr(cls, "__slots__", ())
            for name in (names,) if isinstance(names, str) else names:
                if name not in ("__dict__", "__weakref__"):
                    fields[name] = (getattr(held, name, None), getattr(replayed, name, None))
        if hasattr(held, "__dict__"):
            if vars(held).keys() != vars(replayed).keys():
                return f"{where} has other attributes than the replay's"
            fields.update((name, (value, vars(replayed)[name]))
                          for name, value in vars(held).items())
        if not fields:
            return None if held == replayed else f"{where} is {held!r}, the replay's {replayed!r}"
        pairs = [(f"{where}.{name}", a, b) for name, (a, b) in fields.items()]
    for at, a, b in pairs:
        difference = _first_difference(a, b, at, seen)
        if difference is not None:
            return difference
    return None


# ---------------------------------------------------------------- the engine's child
def start_child(cfg, until_seq: int):
    """Start the child process that writes the checkpoint after record ``until_seq``
    (:func:`make`); returns the ``multiprocessing`` process. It dies with the engine."""
    import multiprocessing

    from engine.children import spawn_child
    from engine.metrics import logging_settings
    process = multiprocessing.get_context("spawn").Process(
        target=_child_main, name="checkpoint", daemon=True,
        args=(cfg, until_seq, os.getpid(), logging_settings()))
    spawn_child(process)
    return process


def _child_main(cfg, until_seq: int, parent: int, log_settings) -> None:
    """The checkpoint writer's process: at the lowest CPU priority, so that on a machine
    with few cores the engine's own loop keeps its core; exits 1 on failure (logged)."""
    import signal
    import sys

    from engine.children import die_with_parent
    from engine.metrics import setup_logging
    if not die_with_parent(parent):
        return
    # The engine ends it (SIGKILL at its stop); a Ctrl-C to the process group is the engine's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.nice(19)
    if log_settings is not None:
        setup_logging(log_settings[0], json=log_settings[1])
    try:
        make(cfg, until_seq, wait_s=WAIT_FOR_RECORD_S)
    except Exception:
        log.exception("checkpoint after record %d failed", until_seq)
        sys.exit(1)
