"""``kronos-exec journal``: check a journal, export it for analysis, checkpoint it.

``verify`` walks every record of a journal directory and reports the first
one whose checksum, sequence or hash chain breaks (exit status 1), or how
many records are intact (exit status 0); a directory that holds no journal
is exit status 2, like other unusable arguments. ``export`` writes the records of a
time range to a Parquet file, one row per record, with the common order
fields pulled out into columns and the whole payload kept as JSON.
``checkpoint`` saves the replay of an engine's journal (``--config``: the
engine's file) at its last record, so that the engine's next start replays
only what follows (``engine.checkpoint``); it runs beside a serving engine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from pathlib import Path

import msgspec

from engine.journal import (
    FILE_MAGIC,
    Anchor,
    SEGMENT_SUFFIX,
    JournalCorruptError,
    JournalReader,
    RecordKind,
    clock_back_note,
    first_kept_seq,
    fsync_path,
    is_segment_name,
    list_segments,
    missing_note,
    sync_dir,
    unsynced_note,
    verify,
    written_mark,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``verify`` and ``export``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("verify", help="check checksums and the hash chain of every record")
    check.add_argument("--data-dir", required=True, type=Path, help="journal directory")
    check.add_argument("--anchor", action="append", default=[], type=parse_anchor,
                       metavar="SEQ:HASH",
                       help="a chain hash kept outside the journal (an earlier verify's "
                            "'chain head' at its last seq): the journal must hold record SEQ "
                            "with this hash (repeatable)")
    check.add_argument("--config", default=None, metavar="FILE",
                       help="the engine's TOML configuration: also replay the journal and "
                            "hold each checkpoint to it (a checkpoint the replay does not "
                            "reach fails verification)")
    out = sub.add_parser("export", help="write records of a time range to Parquet")
    out.add_argument("--data-dir", required=True, type=Path, help="journal directory")
    out.add_argument("--start", type=parse_time, default=None,
                     help="first timestamp included: ISO 8601 (UTC if no zone) or integer ns")
    out.add_argument("--end", type=parse_time, default=None,
                     help="first timestamp excluded: ISO 8601 or integer ns")
    out.add_argument("--out", required=True, type=Path, help="Parquet file to write")
    save = sub.add_parser("checkpoint", help="save the journal's replay at its last record, "
                                             "so that a restart replays only what follows")
    save.add_argument("--config", default=None,
                      help="the engine's TOML configuration: its journal, risk and venues "
                           "(default: the embedded default, as for serve)")


# The fraction of a second, split off so that it is read to the nanosecond
# (datetime keeps microseconds and silently drops the rest): it follows the
# seconds' last digit and only a zone may come after it.
_FRACTION = re.compile(r"(.*\d)[.,](\d+)([zZ]|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d+)?)?)?)?")


def parse_time(text: str) -> int:
    """``2024-01-02T09:30:00.123456789Z`` (naive means UTC) or ``1704187800000000000`` -> ns
    since the epoch, exact to the nanosecond (a finer fraction is refused)."""
    if text.lstrip("-").isdigit():
        try:
            # ISO 8601's basic form of a date (20240102) is digits too: read as
            # nanoseconds, it selected a few ms after 1970, and the export of the
            # day asked for was empty, exit 0.
            day = dt.date.fromisoformat(text)
        except ValueError:
            return int(text)
        raise argparse.ArgumentTypeError(
            f"{text!r} is ambiguous: the date {day.isoformat()} or {int(text)} nanoseconds "
            f"after the epoch; write the date as {day.isoformat()}")
    given = text
    fraction_ns, match = 0, _FRACTION.fullmatch(text)
    if match:
        head, digits, zone = match.groups()
        if len(digits) > 9 and digits[9:].strip("0"):
            raise argparse.ArgumentTypeError(f"{text!r}: the journal's timestamps are whole "
                                             f"nanoseconds; give at most 9 fractional digits")
        fraction_ns = int(digits[:9].ljust(9, "0"))
        text = head + (zone or "")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{given!r} is neither ISO 8601 nor integer "
                                         f"nanoseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
            + fraction_ns)


def parse_anchor(text: str) -> Anchor:
    """``SEQ:HASH`` -> :class:`~engine.journal.Anchor` (argparse's type for ``--anchor``)."""
    try:
        return Anchor.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _usage_problem(args: argparse.Namespace) -> str | None:
    """Why the arguments cannot be acted on (before anything is read), or None."""
    if args.action == "checkpoint":
        return None
    if not args.data_dir.is_dir():
        return f"{args.data_dir} is not a directory"
    try:
        segments = list_segments(args.data_dir)
    except OSError as exc:
        return f"cannot list {args.data_dir}: {exc.strerror or exc}"
    if not segments:
        return (f"no journal in {args.data_dir}: it holds no segment files "
                f"(<first seq>{SEGMENT_SUFFIX}); is --data-dir the journal's directory?")
    if args.action == "export":
        if args.start is not None and args.end is not None and args.start > args.end:
            return f"--start ({args.start} ns) is after --end ({args.end} ns)"
        if args.out.is_dir():
            return f"--out {args.out} is a directory; give a file name"
        if not args.out.parent.is_dir():
            return f"--out {args.out}: directory {args.out.parent} does not exist"
        return _clobbers_journal(args.out, args.data_dir)
    return None


def _clobbers_journal(out: Path, data_dir: Path) -> str | None:
    """Why writing ``out`` could destroy journal data, or None.

    A typo in ``--out`` must not replace an acknowledged segment with
    Parquet, nor plant a file among the segments; both the path as written
    (where the file lands) and with every symlink followed are checked.
    """
    journal = data_dir.resolve()
    try:
        targets = (out.parent.resolve() / out.name, out.resolve())
    except RuntimeError as exc:  # a symlink loop
        return f"--out {out}: {exc}"
    for target in targets:
        if target == journal or journal in target.parents:
            return (f"--out {out} is inside the journal directory {data_dir}; "
                    f"write the export elsewhere")
    if is_segment_name(out) and out.exists():
        return f"--out {out} is named like a journal segment and exists; it is not overwritten"
    try:
        with open(out, "rb") as existing:
            magic = existing.read(len(FILE_MAGIC))
    except OSError:  # none there (or unreadable: the write says why)
        return None
    if magic == FILE_MAGIC:
        return f"--out {out} is a journal segment; it is not overwritten"
    return None


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit status."""
    problem = _usage_problem(args)
    if problem:
        print(f"kronos-exec journal: {problem}", file=sys.stderr)
        return 2
    if args.action == "verify":
        cfg = None
        if args.config is not None:  # (refused before the journal is read, as other arguments)
            cfg = _checkpoint_config(args.data_dir, args.config)
            if cfg is None:
                return 2
        status = _verify(args.data_dir, args.anchor)
        if status == 0 and cfg is not None:
            return _verify_checkpoints(cfg, args.config)
        return status
    if args.action == "checkpoint":
        return _checkpoint(args.config)
    return _export(args.data_dir, args.start, args.end, args.out)


def _checkpoint(config_path: str | None) -> int:
    """Exit status 2 for a configuration that cannot be used or a journal directory with
    no journal, 1 when the journal cannot be replayed or the checkpoint written (one line
    on stderr each), else 0."""
    from engine import checkpoint, service
    from engine.config import ConfigError
    from engine.recovery import RecoveryError
    try:
        cfg, _ = service.load(config_path)
    except (ConfigError, OSError) as exc:
        print(f"kronos-exec journal checkpoint: {exc}", file=sys.stderr)
        return 2
    if not list_segments(cfg.journal.dir):
        print(f"kronos-exec journal checkpoint: no journal in {cfg.journal.dir} (journal.dir "
              f"of {config_path or 'the embedded default configuration'})", file=sys.stderr)
        return 2
    try:
        path = checkpoint.make(cfg)
    except (RecoveryError, JournalCorruptError, checkpoint.CheckpointError, OSError) as exc:
        print(f"kronos-exec journal checkpoint: {exc}", file=sys.stderr)
        return 1
    if path is None:
        print("no checkpoint written: the journal is empty, or its newest checkpoint is "
              "at its last record already")
    else:
        print(f"wrote {path}")
    archivable = checkpoint.archivable_segments(cfg.journal.dir)
    if archivable:
        print(f"the engine no longer needs {len(archivable)} segments to start, "
              f"{archivable[0].name} to {archivable[-1].name}: they can be archived once "
              f"every gateway has delivered them (docs/engine.md, Checkpoints)")
    return 0


def _checkpoint_config(data_dir: Path, config_path: str):
    """The engine configuration ``verify --config`` replays the journal under, or None when
    it cannot be used or is another journal's (said in one line on stderr)."""
    from engine import service
    from engine.config import ConfigError
    try:
        cfg, _ = service.load(config_path)
    except (ConfigError, OSError) as exc:
        print(f"kronos-exec journal: --config: {exc}", file=sys.stderr)
        return None
    if Path(cfg.journal.dir).resolve() != data_dir.resolve():
        print(f"kronos-exec journal: --config {config_path} is the configuration of the "
              f"journal in {cfg.journal.dir}, not of {data_dir}", file=sys.stderr)
        return None
    return cfg


def _verify_checkpoints(cfg, config_path: str) -> int:
    """Hold each checkpoint to the journal's replay (``engine.checkpoint``): exit status 1
    when one holds a state the replay does not reach, else 0."""
    from engine import checkpoint
    from engine.recovery import RecoveryError
    try:
        checks = checkpoint.check_against_journal(cfg)
    except (RecoveryError, JournalCorruptError, OSError) as exc:
        print(f"BROKEN: checkpoints: the journal cannot be replayed under {config_path}: {exc}")
        return 1
    if not checks:
        print("checkpoints: none")
    status = 0
    for check in checks:
        if check.agrees is False:
            print(f"BROKEN: checkpoint {check.path.name}: {check.detail}")
            status = 1
        elif check.agrees:
            print(f"checkpoint {check.path.name}: {check.detail}")
        else:
            print(f"note: checkpoint {check.path.name}: {check.detail}")
    return status


def _verify(data_dir: Path, anchors: list[Anchor] = ()) -> int:
    try:
        result = verify(data_dir, anchors)
    except ValueError as exc:  # two anchors at one seq that disagree
        print(f"kronos-exec journal: --anchor: {exc}", file=sys.stderr)
        return 2
    span = f"seq {result.first_seq}..{result.last_seq}" if result.records else "no records"
    if result.torn is not None:
        print(f"torn tail: {result.torn.path.name} @ {result.torn.offset}, "
              f"{result.torn.dropped_bytes} bytes dropped ({result.torn.detail})")
    if result.clock_back:  # (before a break too: the steps it found up to there)
        print(f"note: {clock_back_note(result.clock_back)}")
    if result.ok:
        if anchors:
            seqs = ", ".join(str(seq) for seq in sorted({anchor.seq for anchor in anchors}))
            print(f"anchored: the chain hash of seq {seqs} is the one given")
        print(f"OK: {result.records} records ({span}) in {result.segments} segment(s); "
              f"chain head {result.last_hash.hex()}")
        if result.unsynced_mark:
            print(f"note: {unsynced_note(result.unsynced_mark, result.last_seq or 0)}")
        return 0
    p = result.problem
    if p.problem == "unreadable":
        # The whole path, for the operator to go and look at; no offset: the
        # operating system does not say where in the file it gave up.
        print(f"BROKEN: unreadable at {p.path} (seq {p.seq}): {p.detail}")
    else:
        print(f"BROKEN: {p.problem} at {p.path.name} offset {p.offset} (seq {p.seq}): {p.detail}")
    print(f"{result.records} records before it are intact ({span})")
    return 1


_COLUMNS = ("session_id", "account", "symbol", "cl_ord_id", "orig_cl_ord_id", "order_id",
            "side", "qty", "price", "exec_type", "ord_status", "cum_qty", "leaves_qty",
            "last_qty", "last_px", "reject_reason")
_INT_COLUMNS = {"side", "exec_type", "ord_status", "reject_reason"}


def _flatten(payload) -> dict:
    """The order fields of a payload, looking inside the journal envelopes."""
    row = {}
    if not isinstance(payload, dict):
        return row
    inner = payload.get("request") or payload.get("event")
    body = inner if isinstance(inner, dict) else payload
    row["msg_type"] = body.get("type") if isinstance(body.get("type"), str) else None
    for column in _COLUMNS:
        value = body.get(column, payload.get(column))
        if column in _INT_COLUMNS:
            # (int32 columns: a value past that, which no engine writes, is left out)
            row[column] = value if isinstance(value, int) and not isinstance(value, bool) \
                and -2**31 <= value < 2**31 else None
        elif column == "order_id" and isinstance(value, int) and not isinstance(value, bool):
            # JournalValuation keeps the engine's integer id; execution reports
            # carry it as text, and one column type lets the two be joined.
            row[column] = str(value)
        else:
            row[column] = value if isinstance(value, str) else None
    return row


#: Records per Parquet row group: the export holds one group's rows at a time, so its
#: memory does not grow with the journal.
EXPORT_BATCH = 16_384


def _export(data_dir: Path, start: int | None, end: int | None, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ("seq", "ts", "kind", "msg_type", *_COLUMNS, "payload_json")
    types = {"seq": pa.uint64(), "ts": pa.timestamp("ns", tz="UTC"),
             **{c: pa.int32() for c in _INT_COLUMNS}}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in names])
    columns: dict[str, list] = {name: [] for name in names}
    decoder = msgspec.msgpack.Decoder()
    mark, synced = written_mark(data_dir)  # (first: a live writer moves it on; see verify)
    # Where the journal begins (the reader refuses a misnamed first segment): after its
    # first segments were archived, a time range before them exported nothing of them.
    begins = first_kept_seq(data_dir)  # (not None: run() refused a journal without segments)
    reader = JournalReader(data_dir)
    # Written beside the target and renamed, so a reader never sees half a file
    # (nor one a refusal below leaves unfinished).
    tmp = out.with_name(out.name + ".tmp")
    writer, rows = None, 0
    opaque: list[int] = []  # seqs of records whose payload has no JSON form

    def flush() -> None:
        nonlocal writer, rows
        table = pa.table({name: pa.array(values, type=schema.field(name).type)
                          for name, values in columns.items()}, schema=schema)
        try:
            if writer is None:
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table)
        except OSError as exc:  # (pyarrow's names no file: told apart from a journal read)
            raise _WriteFailed(exc.strerror or str(exc)) from exc
        rows += len(columns["seq"])
        for values in columns.values():
            values.clear()

    def discard() -> None:
        if writer is not None:
            try:
                writer.close()
            except OSError:  # (the full disk being reported, say)
                pass
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. a leftover directory of that name: not ours to remove
            pass  # the first error is the one to report

    def give_up(message: str) -> int:
        discard()
        print(f"kronos-exec journal: {message}", file=sys.stderr)
        return 1

    try:
        for record in reader.records(start_ns=start, end_ns=end):
            try:
                payload = decoder.decode(record.payload)
            except msgspec.DecodeError:
                payload = None
            payload_json = None
            if payload is not None:
                try:
                    payload_json = msgspec.json.encode(payload).decode()
                except (TypeError, ValueError):
                    pass  # (a msgpack extension type: no JSON for it)
            if payload_json is None:
                # Not the engine's (its payloads are msgpack of its messages), but
                # JournalWriter.append takes any bytes: said, not a traceback.
                opaque.append(record.seq)
            row = _flatten(payload)
            columns["seq"].append(record.seq)
            columns["ts"].append(record.ts_ns)
            try:
                columns["kind"].append(RecordKind(record.kind).name.lower())
            except ValueError:
                columns["kind"].append(str(record.kind))
            columns["msg_type"].append(row.get("msg_type"))
            for column in _COLUMNS:
                columns[column].append(row.get(column))
            columns["payload_json"].append(payload_json)
            if len(columns["seq"]) >= EXPORT_BATCH:
                flush()
        last = (reader.next_seq or 1) - 1
        if synced and mark > last:
            # What verify calls missing: an export that left them out in silence
            # would pass for the whole record.
            return give_up(f"{missing_note(mark, last)} (run journal verify); nothing written")
        if columns["seq"] or writer is None:
            flush()  # (an export of no records is a file of no rows)
        try:
            writer.close()
            writer = None
            # On disk before it takes the name: renamed unsynced, a power loss could
            # leave an empty or partial file under the name of a finished export.
            fsync_path(tmp)
            os.replace(tmp, out)
            sync_dir(out.parent)
        except OSError as exc:
            raise _WriteFailed(exc.strerror or str(exc)) from exc
    except _WriteFailed as exc:  # a full disk, no permission: said, no partial file left
        return give_up(f"cannot write {out}: {exc}")
    except JournalCorruptError as exc:
        return give_up(f"journal is corrupt, nothing written: {exc}")
    except OSError as exc:  # a segment that cannot be read: a bad disk, a directory in its place
        return give_up(f"cannot read {exc.filename or data_dir}: {exc.strerror or exc}; "
                       f"nothing written")
    except BaseException:
        discard()  # (a value pyarrow refuses, an interrupt: no half file left)
        raise
    print(f"wrote {rows} records to {out}")
    if begins > 1:
        print(f"note: the journal begins at seq {begins} (its first segments were archived "
              f"or deleted): the records before it are not in this export, whatever "
              f"their times")
    if opaque:
        print(f"note: {len(opaque)} record(s) exported without payload_json (seq "
              f"{', '.join(map(str, opaque[:5]))}{', ...' if len(opaque) > 5 else ''}): their "
              f"payload is not msgpack that JSON can hold (the engine writes none such)")
    if reader.torn is not None:
        print(f"note: torn tail dropped at {reader.torn.path.name} @ {reader.torn.offset}")
    if mark > last:
        print(f"note: {unsynced_note(mark, last)}")
    return 0


class _WriteFailed(Exception):
    """The export's own file could not be written (the reason is its text)."""
