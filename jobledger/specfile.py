"""Spec files in, SimJobs out, without holding a big spec whole.

A SimJob JSON of 400,000 tasks is ~140 MB of text and over a gigabyte as parsed Python objects.
``load_spec_file`` reads it with the standard library's JSON scanner one value at a time: the
top-level keys whole, the ``tasks`` array task by task. Each task becomes a compact SimTask at once
(contracts.TaskReader). What the ledger keeps of the spec (jobrows.StoredSpec) is made on the way, on
a background thread: the text as submitted, gzip-compressed chunk by chunk as it is read, and the
SHA-256 of the canonical JSON (sorted keys), fed task by task. Neither the document nor its
canonical text ever exists whole. Specs without a task list (SimulationStudy) are small per entry
and are read whole.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .contracts import (
    ContractError,
    SimJob,
    SimTask,
    TaskReader,
    check_job_header,
    is_study,
    load_spec,
    simjob_from_json,
)
from .jobrows import CANONICAL_SPEC, SPEC_GZIP_LEVEL, StoredSpec, spec_hash

CHUNK = 1 << 20  # characters read at a time
FLUSH = 1 << 20  # canonical text handed to the hash and compressor at a time
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*\Z")
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
_TASK_KEYS = frozenset(("bundle_ref", "entrypoint", "outputs", "params", "seed"))
_PARAMS_KEYS = frozenset(("param_id", "values"))


@dataclass(frozen=True)
class LoadedSpec:
    job: SimJob
    stored: StoredSpec
    format: str  # 'simjob' | 'study'


def load_document(doc: Any, *, bundle: str | None = None, job_id: str | None = None) -> LoadedSpec:
    """A spec already in memory: the job, and what the ledger keeps of it (a study, with its bundle)."""
    fmt = "study" if is_study(doc) else "simjob"
    job = load_spec(doc, bundle_ref=bundle, job_id=job_id)
    kept = {"study": doc, "bundle_ref": job.bundle_ref} if fmt == "study" else doc
    return LoadedSpec(job, StoredSpec.of(kept), fmt)


def load_spec_file(path: str | Path, *, bundle: str | None = None, job_id: str | None = None) -> LoadedSpec:
    """Read a spec file ('-' reads stdin), streaming a SimJob's tasks. Errors are one-line ContractErrors."""
    try:
        handle: TextIO = sys.stdin if str(path) == "-" else open(path, encoding="utf-8")
    except OSError as exc:
        raise ContractError(f"cannot read spec {path}: {exc.strerror or exc}") from None
    background = _Background()
    submitted = _Compressed(background)
    try:
        return _load(_JsonReader(handle, str(path), submitted.add), submitted, bundle=bundle, job_id=job_id)
    finally:
        background.close()
        if handle is not sys.stdin:
            handle.close()


def _load(reader: _JsonReader, submitted: _Compressed, *, bundle: str | None,
          job_id: str | None) -> LoadedSpec:
    if reader.peek() != "{":
        doc = reader.value()
        reader.end()
        return load_document(doc, bundle=bundle, job_id=job_id)
    reader.take("{")
    fields: dict[str, Any] = {}
    tasks: list | None = None
    canonical: _CanonicalHash | None = None
    first = True
    while reader.peek() != "}":
        if not first:
            reader.take(",")
        first = False
        if reader.peek() != '"':
            reader.fail("Expecting property name enclosed in double quotes")
        key = reader.value()
        reader.take(":")
        if key == "tasks" and reader.peek() == "[":
            if bundle and fields.get("bundle_ref", bundle) != bundle:
                raise ContractError(
                    "--bundle: a SimJob spec carries its own bundle_ref; --bundle is for study specs"
                )
            fields.pop("tasks", None)
            check_job_header(fields, job_id, partial=True)  # the errors a whole-document read gives first
            # (a later task list replaces an earlier one, as json.load has it)
            canonical = _CanonicalHash(fields, submitted.background)
            task_reader, tasks = TaskReader(), []
            for index, doc in enumerate(reader.array()):
                task = task_reader.task(doc, index)
                tasks.append(task)
                canonical.add(doc, task)
        else:
            fields[key] = reader.value()
            if key == "tasks":
                tasks = None  # a later 'tasks' wins, as in a whole-document read
    reader.take("}")
    reader.end()
    if tasks is None or canonical is None:
        return load_document(fields, bundle=bundle, job_id=job_id)
    if bundle and fields.get("bundle_ref") != bundle:
        raise ContractError(
            "--bundle: a SimJob spec carries its own bundle_ref; --bundle is for study specs"
        )
    job = simjob_from_json(fields, job_id=job_id, tasks=tuple(tasks))
    gz = submitted.finish()
    return LoadedSpec(job, StoredSpec(canonical.finish(fields, gz), gz), "simjob")


class _Background:
    """One thread that hashes and compresses (both release the GIL) while the next tasks are parsed;
    a few chunks in flight at most."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="spec-store")
        self._in_flight: list[Future] = []

    def submit(self, fn, data: bytes) -> None:
        if len(self._in_flight) >= 4:
            self._in_flight.pop(0).result()
        self._in_flight.append(self._thread.submit(fn, data))

    def wait(self) -> None:
        while self._in_flight:
            self._in_flight.pop(0).result()

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


class _Compressed:
    """The spec as submitted, gzip-compressed as the reader reads it."""

    def __init__(self, background: _Background) -> None:
        self.background = background
        self._gz = zlib.compressobj(SPEC_GZIP_LEVEL, zlib.DEFLATED, 31)
        self._parts: list[bytes] = []

    def add(self, text: str) -> None:
        self.background.submit(self._compress, text.encode())

    def _compress(self, data: bytes) -> None:
        self._parts.append(self._gz.compress(data))

    def finish(self) -> bytes:
        self.background.wait()
        self._parts.append(self._gz.flush())
        return b"".join(self._parts)


class _CanonicalHash:
    """SHA-256 of a streamed SimJob's canonical JSON, ``{<keys before "tasks">,"tasks":[...],<keys
    after>}`` with keys sorted, fed as its tasks arrive. That works when every key sorting before
    "tasks" was read before the task list (ModelOps writes tasks last); otherwise the submitted text
    is read back whole once to hash it (the rare case)."""

    def __init__(self, fields: dict, background: _Background) -> None:
        """The task list begins; ``fields`` holds the keys read before it."""
        self._background = background
        self._head_text = self._head(fields)
        self._sha = hashlib.sha256(self._head_text.encode())
        self._pending: list[str] = ['"tasks":[']
        self._size = 0
        self._first = True
        self._pieces: dict = {}
        self._param_sets: list = []

    def add(self, task_doc: Any, task: SimTask) -> None:
        if task_doc.keys() == _TASK_KEYS:
            text = self._task_text(task_doc, task)
        else:
            text = CANONICAL_SPEC.encode(task_doc)
        if self._first:
            self._first = False
        else:
            text = "," + text
        self._pending.append(text)
        self._size += len(text)
        if self._size >= FLUSH:
            self._flush()

    def _task_text(self, doc: dict, task: SimTask) -> str:
        """The canonical JSON of a task written with exactly the SimTask keys, assembled from pieces
        encoded once per distinct value (encoding each task whole is most of the cost otherwise);
        equal to ``CANONICAL_SPEC.encode(doc)``, which tests check."""
        params = doc["params"]
        if params.keys() != _PARAMS_KEYS:
            return CANONICAL_SPEC.encode(doc)
        pieces = self._pieces
        outputs = doc["outputs"]
        names = tuple(outputs) if outputs is not None else None
        values = pieces.get(id(task.params))  # a TaskReader shares one parameter set among its replicates
        if values is None:
            values = pieces[id(task.params)] = CANONICAL_SPEC.encode(task.params.params)
            self._param_sets.append(task.params)  # kept alive so that its id is not reused
        head = pieces.get((task.bundle_ref, task.entrypoint, names))
        if head is None:
            head = pieces[(task.bundle_ref, task.entrypoint, names)] = (
                f'{{"bundle_ref":{CANONICAL_SPEC.encode(task.bundle_ref)},'
                f'"entrypoint":{CANONICAL_SPEC.encode(task.entrypoint)},'
                f'"outputs":{CANONICAL_SPEC.encode(outputs)},"params":{{"param_id":'
            )
        return f'{head}"{task.params.param_id}","values":{values}}},"seed":{task.seed}}}'

    def _flush(self) -> None:
        data = "".join(self._pending).encode()
        self._pending, self._size = [], 0
        self._background.submit(self._sha.update, data)

    def finish(self, fields: dict, submitted_gz: bytes) -> str:
        """The hex digest, given the keys read after the task list and the compressed text."""
        if self._head(fields) != self._head_text:  # a key sorting before "tasks" came after the list
            return spec_hash(json.loads(gzip.decompress(submitted_gz)))
        self._pending.append("]")
        self._flush()
        self._background.wait()
        self._sha.update(self._tail(fields).encode())
        return self._sha.hexdigest()

    @staticmethod
    def _head(fields: dict) -> str:
        items = [f"{json.dumps(k)}:{CANONICAL_SPEC.encode(fields[k])}" for k in sorted(fields) if k < "tasks"]
        return "{" + "".join(item + "," for item in items)

    @staticmethod
    def _tail(fields: dict) -> str:
        later = [k for k in sorted(fields) if k > "tasks"]
        items = [f",{json.dumps(k)}:{CANONICAL_SPEC.encode(fields[k])}" for k in later]
        return "".join(items) + "}"


class _JsonReader:
    """JSON values read one at a time from a text stream with json's C scanner (``raw_decode``),
    keeping only the unread rest of the current chunk. Errors name the line and column in the
    whole file, as a whole-document read would."""

    def __init__(self, handle: TextIO, name: str, keep: Callable[[str], None] | None = None):
        self.handle, self.name, self.keep = handle, name, keep
        self.buf, self.pos = "", 0
        self.eof = False
        self.line0, self.col0 = 1, 0  # line and column of buf[0] in the file
        self._decoder = json.JSONDecoder()

    def _more(self) -> bool:
        """Append the next chunk, dropping what was read; False at the end of the input."""
        if self.eof:
            return False
        try:
            chunk = self.handle.read(CHUNK)
        except UnicodeDecodeError as exc:
            raise ContractError(f"cannot read spec {self.name}: {exc}") from None
        except OSError as exc:
            raise ContractError(f"cannot read spec {self.name}: {exc.strerror or exc}") from None
        if not chunk:
            self.eof = True
            return False
        if self.keep is not None:
            self.keep(chunk)
        done = self.buf[: self.pos]
        newlines = done.count("\n")
        self.line0 += newlines
        self.col0 = len(done) - done.rfind("\n") - 1 if newlines else self.col0 + len(done)
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def fail(self, message: str, pos: int | None = None):
        pos = self.pos if pos is None else pos
        before = self.buf[:pos]
        newlines = before.count("\n")
        line = self.line0 + newlines
        column = pos - before.rfind("\n") if newlines else self.col0 + pos + 1
        raise ContractError(f"spec {self.name}: invalid JSON at line {line} column {column}: {message}")

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the end)."""
        while True:
            blank = _WHITESPACE.match(self.buf, self.pos)
            assert blank is not None  # the pattern matches the empty string
            self.pos = blank.end()
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos : self.pos + 1]

    def take(self, char: str) -> None:
        if self.peek() != char:
            expected = {",": "',' delimiter", ":": "':' delimiter"}.get(char, repr(char))
            self.fail(f"Expecting {expected}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        return self._decode()

    def _decode(self) -> Any:
        """The value at ``pos`` (no whitespace before it)."""
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self._more():
                    continue  # the value runs on into the next chunk
                self.fail(exc.msg, exc.pos)
            except ValueError as exc:  # an integer of more than 4,300 digits (Python's int/str limit)
                raise ContractError(f"spec {self.name}: {str(exc).partition(';')[0]}") from None
            except RecursionError:
                raise ContractError(f"spec {self.name}: JSON nested too deeply") from None
            if _NUMBER_TAIL.match(self.buf, end) and self._more():
                continue  # a number that reaches the end of the chunk may go on in the next one
            if self.buf.find("\\u", self.pos, end) != -1:
                self._check_text(value)
            self.pos = end
            return value

    def _check_text(self, value: Any) -> None:
        """An escape can make a lone surrogate: text that can be neither hashed nor stored."""
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ContractError(f"spec {self.name}: holds text that is not valid Unicode "
                                "(a lone surrogate escape)") from None

    def array(self) -> Iterator[Any]:
        """The elements of the array that starts here, one at a time."""
        self.take("[")
        if self.peek() == "]":
            self.pos += 1
            return
        yield self._decode()
        while True:
            comma = _COMMA.match(self.buf, self.pos)
            if comma is not None and comma.end() < len(self.buf):
                self.pos = comma.end()  # the common case: ", " and the next element in this chunk
            elif self.peek() == "]":
                self.pos += 1
                return
            else:
                self.take(",")
                self.peek()
            yield self._decode()

    def end(self) -> None:
        if self.peek():
            self.fail("Extra data")
