"""The ledger ↔ registry mirror: status changes by compare-and-swap, publication, pull and push.

Per job the registry holds ``jobs/<job_id>/state.json`` (see registry.state) and two side blobs
(see registry.blobs). Every write goes through ``cas`` and no network round trip ever happens while
this ledger's write lock is held: a move is read, computed and swapped first, then written locally
in one short transaction. A job ModelOps wrote has only ``state.json``: it is imported with no
expected outputs.
"""
from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field

from .. import staging, states
from ..contracts import ContractError, check_job_id
from ..ledger import Ledger, SpecNeeded, spec_document
from ..timeutil import utcnow
from .base import MovedElsewhere, RegistryError, VersionedStore
from .blobs import (
    build_manifest,
    dump_observed,
    encode_observed,
    manifest_outputs,
    manifest_rows,
    merge_observed,
    parse_manifest,
    parse_observed,
    same_observations,
)
from .cas import cas
from .state import (
    SHARED_COLUMNS,
    Progress,
    build_state,
    comparable,
    counts_of,
    encode_state,
    foreign_job_columns,
    jobledger_part,
    make_progress,
    manifest_key,
    merged_history,
    moved_message,
    observed_key,
    parse_state,
    registry_history,
    relation,
    reported_paths,
    state_columns,
    state_key,
    with_progress_of,
)

TAKE_THEIRS = ("`jobledger forget {0}` then `jobledger pull {0}` replace this ledger's copy with the "
               "registry's (the moves only this ledger made are dropped)")


def actor() -> str:
    """Who made a move, as shown in conflict messages."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass
class Swapped:
    """What the registry holds after a move: the whole history and the columns to write locally."""
    history: list[list]
    columns: dict


@dataclass
class PullResult:
    job_id: str
    action: str  # imported | updated | unchanged | failed
    status: str | None = None
    expected: int | None = None
    note: str | None = None


@dataclass
class PushResult:
    job_id: str
    status: str
    note: str | None = None


def local_history(ledger: Ledger, job_id: str, by: str | None) -> list[list]:
    return [[t["from_status"], t["to_status"], t["at"], t["reason"], by] for t in ledger.transitions(job_id)]


def local_state(ledger: Ledger, job_id: str, by: str | None) -> tuple[dict, list[list]]:
    """The job row and its history as of one commit. Read apart, another process sharing the ledger file
    could commit a move in between: a row still at ``running`` beside a history that already went on to
    ``validating`` would make a writer repeat that move in the registry."""
    with ledger.snapshot():
        return ledger.job(job_id), local_history(ledger, job_id, by)


def read_progress(ledger: Ledger, job_id: str) -> Progress:
    """What the ledger's recorded output states say, in ModelOps's terms (path lists capped)."""
    def paths(condition: str):
        return (r[0] for r in ledger.conn.execute(
            f"SELECT path FROM outputs WHERE job_id = ? AND {condition} ORDER BY output_id", (job_id,)))
    observed = ledger.conn.execute("SELECT 1 FROM validation_runs WHERE job_id = ? LIMIT 1",
                                   (job_id,)).fetchone()
    return make_progress(ledger.summary(job_id), paths("state <> 'verified'"), paths("state = 'verified'"),
                         observed=observed is not None)


def _staged_progress(ledger: Ledger, job: dict) -> Progress:
    """What a job about to be registered will show: every staged output not looked at yet."""
    n = job["expected_total"]
    counts = {"expected": n, "verified": 0, "missing": 0, "errored": 0, "incomplete": 0, "stale": 0}
    return make_progress(counts, staging.paths(ledger.conn), iter(()), observed=False)


def ledger_spec(job: dict):
    """The spec a job row holds (gzip JSON), as the manifest carries it."""
    return spec_document(job["spec_gz"], job["job_id"])


def _state_doc(ledger: Ledger, job: dict, history: list[list], base: dict | None,
               progress: Progress | None = None) -> dict:
    return build_state(job, progress or read_progress(ledger, job["job_id"]), history, base)


@dataclass
class Mirror:
    """What a Ledger consults before a status change and informs after a command commits."""

    store: VersionedStore
    by: str = field(default_factory=actor)

    @property
    def url(self) -> str:
        return self.store.url

    # -------------------------------------------------------- the Ledger hooks

    def swap_transition(self, ledger: Ledger, job: dict, to_status: str, reason: str, fields: dict, *,
                        revalidate: bool = False, resubmit: bool = False,
                        progress: Progress | None = None) -> Swapped:
        """Compare-and-swap the move into state.json; the caller then writes the result locally.

        ``progress`` is what the move's transaction will record (a validation's verdict); without it
        the ledger's current output states are published.

        When another machine moved the job further and the move is still legal from there, it is
        applied on top of that history; when another machine made this very move, nothing is
        written and its history is returned to import. No local transaction is open meanwhile.
        """
        job_id = job["job_id"]
        key = state_key(job_id)

        def modify(current: bytes | None) -> tuple[bytes | None, Swapped]:
            local, mine = local_state(ledger, job_id, self.by)
            row, base, remote = local, mine, None
            if current is None:
                self._publish_side_blobs(ledger, local)
            else:
                remote = parse_state(current, key)
                self._check_same_job(local, remote, key)
                theirs, where = _histories(job_id, mine, remote)
                if where == "remote-ahead":
                    if remote["status"] == to_status:  # another machine made this very move
                        return None, Swapped(theirs, state_columns(remote))
                    reopen = revalidate and remote["status"] in states.REVALIDATABLE
                    if not states.is_legal(remote["status"], to_status, revalidate=reopen):
                        raise MovedElsewhere(f"job {job_id}: {moved_message(remote)}; not moving it to "
                                             f"{to_status} (run `jobledger pull {job_id}` to refresh)",
                                             job_id, remote["status"])
                    row = {**local, **state_columns(remote)}
                    base = theirs
                else:
                    base = merged_history(mine, theirs)
            states.check_transition(row["status"], to_status, revalidate=revalidate, resubmit=resubmit)
            now = utcnow()
            history = base + [[row["status"], to_status, now, reason, self.by]]
            row = {**row, **fields, "status": to_status, "updated_at": now}
            columns = {c: row.get(c) for c in ("status", "updated_at", "runtime", "runtime_ref", "metadata",
                                               *SHARED_COLUMNS)}
            doc = _state_doc(ledger, row, history, remote, progress)
            return encode_state(doc), Swapped(history, {**columns, **fields})

        return cas(self.store, key, modify)

    def publish(self, ledger: Ledger, job_id: str) -> None:
        """After a command committed: create what is missing, merge observations, refresh state.json."""
        key = state_key(job_id)

        def modify(current: bytes | None) -> tuple[bytes | None, None]:
            job = ledger.job(job_id)
            remote = parse_state(current, key) if current is not None else None
            if remote is not None:
                self._check_same_job(job, remote, key)
            if remote is None or (job["spec_format"] is not None and not jobledger_part(remote)):
                # a new job, or one ModelOps created that jobledger now knows in full
                self._publish_side_blobs(ledger, job)
            elif job["spec_format"] is not None:
                self.sync_observed(ledger, job_id)
            doc = self._refreshed_doc(ledger, job_id, remote)
            if remote is None:
                return encode_state(doc), None
            if counts_of(doc) != counts_of(remote) and job["spec_format"] is not None:
                # Fold in the observations published since our last merge, so that our counts are never
                # older than the ones we would overwrite.
                self.sync_observed(ledger, job_id)
                doc = self._refreshed_doc(ledger, job_id, remote)
                if counts_of(doc) != counts_of(remote) and not _knows_validation_of(ledger, remote):
                    # A verdict is swapped into state.json before its machine publishes the observations
                    # behind it: until they arrive, its progress fields stand.
                    doc = with_progress_of(doc, remote)
            return (None if comparable(doc) == comparable(remote) else encode_state(doc)), None

        cas(self.store, key, modify)

    # -------------------------------------------------------- pieces

    def _refreshed_doc(self, ledger: Ledger, job_id: str, remote: dict | None) -> dict:
        """The state document for the local job, after importing what the registry knows beyond it."""
        job, mine = local_state(ledger, job_id, self.by)
        if remote is None:
            return _state_doc(ledger, job, mine, None)
        theirs, where = _histories(job_id, mine, remote)
        if _registry_newer(where, remote, job):
            with ledger.transaction():
                ledger.import_history(job_id, theirs, state_columns(remote))
            job, mine = local_state(ledger, job_id, self.by)
            theirs, _ = _histories(job_id, mine, remote)
        return _state_doc(ledger, job, merged_history(mine, theirs), remote)

    def _publish_side_blobs(self, ledger: Ledger, job: dict) -> None:
        """Manifest and observations go up before state.json, where readers start.

        A job without a spec has neither: its observations are kept by output position, which only a
        manifest fixes (its rows are the result paths ModelOps reported, in whatever order it listed
        them); its verdict travels in state.json's path lists."""
        if job["spec_format"] is not None:
            self._create_manifest(job, build_manifest(job, ledger.spec_of(job["job_id"]),
                                                      manifest_rows(ledger, job["job_id"])))
            self.sync_observed(ledger, job["job_id"])

    def _create_manifest(self, job: dict, data: bytes) -> None:
        """Create the job's manifest once; one already there must be of the same spec (an earlier attempt)."""
        key = manifest_key(job["job_id"])
        if not self.store.create_if_absent(key, data):
            got = self.store.get(key)
            if got is not None:
                header, _ = parse_manifest(got[0], key)
                if header["job"].get("spec_sha256") != job["spec_sha256"]:
                    raise RegistryError(f"{key}: the registry holds a different job {job['job_id']} "
                                        f"(spec differs from the local one)")

    # -------------------------------------------------------- registration (outputs staged, not committed)

    def publish_new(self, ledger: Ledger, job: dict, history: list[list]) -> bool:
        """Publish a job about to be registered, before the ledger commits it: the manifest (create-once)
        from the outputs staged on the ledger's connection, then state.json. ``job`` is the row about to
        be inserted, ``history`` its first move. False, with state.json untouched, when state.json exists
        already: the job was created in the registry meanwhile (another machine, ModelOps, or an earlier
        attempt whose local commit failed), and the caller imports it from there."""
        self._create_manifest(job, build_manifest(job, ledger_spec(job), staging.manifest_rows(ledger.conn)))
        doc = build_state(job, _staged_progress(ledger, job), [move + [self.by] for move in history])
        return self.store.create_if_absent(state_key(job["job_id"]), encode_state(doc))

    def swap_adoption(self, ledger: Ledger, job_id: str, adopted: dict) -> Swapped:
        """Publish the spec of a job known only from ModelOps's state.json, before the ledger adopts it: the
        manifest from the staged outputs, then state.json by compare-and-swap with jobledger's part added
        (ModelOps's fields, status and history kept). The caller writes the result in one transaction."""
        local = ledger.job(job_id)
        job = {**local, **adopted}
        self._create_manifest(job, build_manifest(job, ledger_spec(job), staging.manifest_rows(ledger.conn)))
        progress = _staged_progress(ledger, job)
        key = state_key(job_id)

        def modify(current: bytes | None) -> tuple[bytes | None, Swapped]:
            local, mine = local_state(ledger, job_id, self.by)
            job = {**local, **adopted}
            if current is None:  # gone from the registry since it was pulled: publish it whole
                row, base, history = job, None, mine
            else:
                base = parse_state(current, key)
                self._check_same_job(job, base, key)
                theirs, where = _histories(job_id, mine, base)
                row = {**job, **state_columns(base), **adopted} if where == "remote-ahead" else job
                history = merged_history(mine, theirs)
            doc = build_state(row, progress, history, base)
            return encode_state(doc), Swapped(history, state_columns(doc))

        return cas(self.store, key, modify)

    @staticmethod
    def _check_same_job(job: dict, remote: dict, key: str) -> None:
        ours = jobledger_part(remote)
        theirs = (ours or {}).get("spec_sha256")
        if theirs and job["spec_sha256"] and theirs != job["spec_sha256"]:
            raise RegistryError(f"{key}: the registry holds a different job {job['job_id']} "
                                f"(spec differs from the local one)")

    def sync_observed(self, ledger: Ledger, job_id: str) -> None:
        """Merge the registry's observations into the ledger, then publish the union if it says more."""
        key = observed_key(job_id)

        def modify(current: bytes | None) -> tuple[bytes | None, None]:
            remote = parse_observed(current, key) if current is not None else None
            if remote is not None:
                with ledger.transaction():
                    merge_observed(ledger, job_id, remote)
            local = dump_observed(ledger, job_id)
            nothing_new = same_observations(local, remote) if remote is not None else not local["runs"]
            if nothing_new:  # (or nothing observed anywhere yet)
                return None, None
            return encode_observed(local), None

        cas(self.store, key, modify)

    # -------------------------------------------------------- commands

    def job_ids(self) -> list[str]:
        return sorted(k.split("/")[1] for k in self.store.list_keys("jobs/")
                      if k.count("/") == 2 and k.endswith("/state.json"))

    def pull_job(self, ledger: Ledger, job_id: str, since: str | None = None, _depth: int = 0, *,
                 missing_ok: bool = False, observations: bool = True) -> PullResult | None:
        """Import or refresh one job from the registry; ``observations=False`` reads only state.json
        (its status, history and ModelOps's fields), as a command does before deciding from the status."""
        try:
            check_job_id(job_id, "registry key jobs/<job_id>")
        except ContractError as exc:
            raise RegistryError(str(exc)) from None
        key = state_key(job_id)
        got = self.store.get(key)
        if got is None:
            if missing_ok:
                return None
            raise RegistryError(f"{key}: not in registry {self.url}")
        remote = parse_state(got[0], key)
        if since and (remote.get("updated_at") or "") < since:
            return None
        ours = jobledger_part(remote)
        # observations are kept by output position: only a job with a manifest has them (_publish_side_blobs)
        observed_blob = self.store.get(observed_key(job_id)) \
            if observations and ours and ours.get("manifest") else None
        observed = parse_observed(observed_blob[0], observed_key(job_id)) if observed_blob else None
        if not ledger.job_exists(job_id):
            manifest = self._fetch_manifest(ledger, remote, _depth)
            if ledger.job_exists(job_id):  # its parent chain led back to it (a cycle) and imported it
                return PullResult(job_id, "imported", ledger.job(job_id)["status"],
                                  ledger.summary(job_id)["expected"], "imported through its parent chain")
            with ledger.transaction():
                count = _import_job(ledger, remote, manifest)
                if observed:
                    merge_observed(ledger, job_id, observed)
            note = None if manifest else (
                f"written by ModelOps: its {count} reported result paths are the expected outputs until its "
                f"spec is registered" if count else
                f"written by ModelOps: {SpecNeeded(job_id, 'imported with no expected outputs', 'validate')}")
            return PullResult(job_id, "imported", remote["status"], count, note)
        job = ledger.job(job_id)
        self._check_same_job(job, remote, key)
        before = (job, ledger.summary(job_id), len(ledger.transitions(job_id)))
        note = None
        with ledger.transaction():
            if observed and job["spec_format"] is not None:
                merge_observed(ledger, job_id, observed)
            mine = local_history(ledger, job_id, None)
            theirs = registry_history(remote, mine)
            where = relation(mine, theirs)
            if _registry_newer(where, remote, job):
                ledger.import_history(job_id, theirs, state_columns(remote))
                if job["spec_format"] is None:
                    ledger.set_reported_outputs(job_id, *reported_paths(remote))
            elif where == "local-ahead":
                note = "this ledger is ahead of the registry: run `jobledger push`"
            elif where == "diverged":
                note = (f"histories differ ({moved_message(remote)}); this ledger's status is kept: "
                        f"{TAKE_THEIRS.format(job_id)}")
        after = (ledger.job(job_id), ledger.summary(job_id), len(ledger.transitions(job_id)))
        return PullResult(job_id, "updated" if after != before else "unchanged", after[0]["status"],
                          after[1]["expected"], note)

    def _fetch_manifest(self, ledger: Ledger, remote: dict, depth: int) -> tuple[dict, list[list]] | None:
        """The manifest state.json names (None for a job ModelOps wrote); its parent is pulled first."""
        ours = jobledger_part(remote)
        if not (ours and ours.get("manifest")):
            return None
        blob = self.store.get(ours["manifest"])
        if blob is None:
            raise RegistryError(f"{ours['manifest']}: missing (state.json names it)")
        manifest = parse_manifest(blob[0], ours["manifest"])
        parent = manifest[0]["job"].get("parent_job_id")
        if parent and not ledger.job_exists(parent) and depth < 64:
            try:
                self.pull_job(ledger, parent, None, depth + 1)
            except RegistryError:
                pass  # imported unlinked; the parent is not in the registry
        return manifest


def _histories(job_id: str, mine: list[list], remote: dict) -> tuple[list[list], str]:
    """The registry's history of a job beside this ledger's, whose is ahead (state.relation); not diverged."""
    theirs = registry_history(remote, mine)
    where = relation(mine, theirs)
    if where == "diverged":
        raise RegistryError(f"job {job_id}: the registry's history differs from this ledger's "
                            f"({moved_message(remote)}): {TAKE_THEIRS.format(job_id)}")
    return theirs, where


def _knows_validation_of(ledger: Ledger, remote: dict) -> bool:
    """Whether this ledger holds the run behind the registry's last validation (runs are shared with all
    their columns, so the run of a validation started at ``validation_started_at`` has that start)."""
    started = remote.get("validation_started_at")
    return not started or ledger.conn.execute(
        "SELECT 1 FROM validation_runs WHERE job_id = ? AND started_at >= ? LIMIT 1",
        (remote["job_id"], started)).fetchone() is not None


def _registry_newer(where: str, remote: dict, job: dict) -> bool:
    """The registry knows moves this ledger lacks, or the same moves with later column values."""
    later = (remote.get("updated_at") or "") > job["updated_at"]
    return where == "remote-ahead" or (where == "same" and later)


def _import_job(ledger: Ledger, doc: dict, manifest: tuple[dict, list[list]] | None) -> int:
    """Create a local job from its registry state (+ manifest); returns the number of expected outputs."""
    if manifest is not None:
        header, rows = manifest
        constants = dict(header["job"])
        spec = header["spec"]
        params, outputs = manifest_outputs(header, rows)
    else:
        constants, spec, params, outputs = foreign_job_columns(doc), None, {}, iter(())
    if constants.get("parent_job_id") and not ledger.job_exists(constants["parent_job_id"]):
        constants["parent_job_id"] = None  # the caller pulls parents first; an absent parent stays unlinked
    columns = {**constants, **state_columns(doc), "job_id": doc["job_id"]}
    count = ledger.import_job(columns, spec, params, outputs, registry_history(doc, []))
    if manifest is None:
        verified, unverified = reported_paths(doc)
        ledger.set_reported_outputs(doc["job_id"], verified, unverified)
        count = len(verified) + len(unverified)
    return count


__all__ = ["Mirror", "Swapped", "PullResult", "PushResult"]
