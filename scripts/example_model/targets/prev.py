"""The example bundle's target: how far the replicates' epidemic peak is from an observed one.

Entrypoint ``targets.prev/loss`` (a study's ``"targets": ["targets.prev/loss"]``). The local
runtime calls it once per param set with that set's replicate results, as SimReturn objects
in the order they ran (errored replicates included, as the ModelOps runner hands them over),
and writes what it returns as the aggregation's ``loss``.
"""
from __future__ import annotations

import json

OBSERVED_PEAK = 250  # infected at the peak, in the (made-up) surveillance data


def peak(sim_return) -> int:
    """The largest prevalence of one replicate (the output is small, so it is inline)."""
    return max(json.loads(sim_return.outputs["prevalence"].inline), default=0)


def loss(sim_returns: list) -> dict:
    """Squared relative error of the mean peak over the replicates that succeeded."""
    ok = [r for r in sim_returns if r.error is None]
    if not ok:
        return {"loss": None, "diagnostics": {"reason": "no replicate succeeded"}}
    mean_peak = sum(peak(r) for r in ok) / len(ok)
    loss = ((mean_peak - OBSERVED_PEAK) / OBSERVED_PEAK) ** 2
    return {"loss": loss, "diagnostics": {"mean_peak": mean_peak}}
