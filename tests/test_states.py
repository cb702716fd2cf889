"""The job state machine: legal moves, terminal rules, and random sequences through the real ledger."""
from __future__ import annotations


import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from jobledger import api, states
from jobledger.ledger import Ledger
from jobledger.states import IllegalTransition, check_transition

ISSUE_TABLE = {
    "pending": {"submitting", "scheduled", "cancelled"},
    "submitting": {"scheduled", "failed"},
    "scheduled": {"running", "validating", "failed", "cancelled"},
    "running": {"validating", "failed", "cancelled"},
    "validating": {"succeeded", "partial", "failed"},
}


def test_transition_table_is_the_issue_table():
    for source in states.STATUSES:
        for target in states.STATUSES:
            legal = target in ISSUE_TABLE.get(source, set())
            assert states.is_legal(source, target) == legal, (source, target)


def test_only_explicit_revalidation_reopens_a_verdict():
    for terminal in ("succeeded", "partial", "failed"):
        with pytest.raises(IllegalTransition, match="re-validation"):
            check_transition(terminal, "validating")
        check_transition(terminal, "validating", revalidate=True)
    with pytest.raises(IllegalTransition):
        check_transition("cancelled", "validating", revalidate=True)
    with pytest.raises(IllegalTransition):
        check_transition("running", "bogus")


def test_force_decides_any_job_but_a_cancelled_one():
    for status in ("pending", "submitting", "scheduled", "running", "succeeded", "partial", "failed"):
        assert not states.is_legal(status, "validating") or status in ("scheduled", "running")
        check_transition(status, "validating", revalidate=True)
    assert not states.is_legal("cancelled", "validating", revalidate=True)


def test_only_a_submit_the_runtime_never_took_may_be_submitted_again():
    assert not states.is_legal("failed", "submitting")
    assert states.is_legal("failed", "submitting", resubmit=True)
    assert not states.is_legal("partial", "submitting", resubmit=True)
    assert states.may_resubmit("failed", states.SUBMIT_FAILED)
    assert states.may_resubmit("failed", states.SUBMIT_INTERRUPTED)
    assert not states.may_resubmit("failed", "BackoffLimitExceeded")  # the job ran: resume, not resubmit
    assert not states.may_resubmit("partial", states.SUBMIT_FAILED)


def test_verdict_from_counts():
    assert states.verdict(10, 10) == "succeeded"
    assert states.verdict(10, 3) == "partial"
    assert states.verdict(10, 0) == "failed"
    assert states.verdict(0, 0) == "failed"


@pytest.fixture(scope="module")
def seeded_ledger(tmp_path_factory, golden):
    path = tmp_path_factory.mktemp("sm") / "ledger.db"
    with Ledger(path) as ledger:
        spec = dict(golden["simjob_spec_example"])
        api.register(ledger, spec, store=str(path.parent / "store"))
    return path, spec


moves = st.lists(st.tuples(st.sampled_from(states.STATUSES), st.booleans()), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=moves)
def test_random_sequences_follow_the_table_and_history_explains_status(seeded_ledger, sequence):
    path, spec = seeded_ledger
    with Ledger(path) as ledger:
        job_id = spec["job_id"]
        with ledger.transaction():  # reset this job to its registered state for each example
            ledger.conn.execute("UPDATE jobs SET status='scheduled' WHERE job_id=?", (job_id,))
            ledger.conn.execute("DELETE FROM transitions WHERE job_id=? AND from_status IS NOT NULL", (job_id,))
        current = "scheduled"
        for target, revalidate in sequence:
            legal = states.is_legal(current, target, revalidate=revalidate)
            before = ledger.query("SELECT count(*) AS n FROM transitions WHERE job_id=?", (job_id,))[0]["n"]
            if legal:
                row = ledger.transition(job_id, target, "test", revalidate=revalidate)
                assert row["status"] == target
                current = target
            else:
                with pytest.raises(IllegalTransition):
                    ledger.transition(job_id, target, "test", revalidate=revalidate)
            after = ledger.query("SELECT count(*) AS n FROM transitions WHERE job_id=?", (job_id,))[0]["n"]
            assert after == before + (1 if legal else 0)
            assert ledger.job(job_id)["status"] == current
        chain = ledger.transitions(job_id)
        assert chain[-1]["to_status"] == current
        for prev, nxt in zip(chain, chain[1:]):
            assert nxt["from_status"] == prev["to_status"]
        if "cancelled" in [r["to_status"] for r in chain]:
            assert chain[-1]["to_status"] == "cancelled"
