"""A stochastic SIR model in pure Python: the example bundle for the local runtime and the demo.

Entrypoints (with ``--bundle-path scripts/example_model``; ModelOps needs a dotted import path):
- ``models.sir/baseline``: the scenario function ``baseline`` below (scenario → function of that name);
- ``models.sir:simulate``: the same model called directly.
Its target is ``targets.prev/loss`` (``targets/prev.py``).

The callable gets ``(params, seed)`` and returns {output name: bytes}: ``incidence`` and
``prevalence`` as JSON arrays (one value per day). It fails on purpose for some
parameters: ``beta`` or ``gamma`` not positive, or R0 = beta/gamma above 20 ("R0 diverged").
"""
from __future__ import annotations

import json
import math
import random

MAX_R0 = 20.0


def simulate(params: dict, seed: int) -> dict[str, bytes]:
    beta, gamma = float(params["beta"]), float(params["gamma"])
    if beta <= 0 or gamma <= 0:
        raise ValueError(f"beta and gamma must be positive (beta={beta}, gamma={gamma})")
    if beta / gamma > MAX_R0:
        raise ValueError(f"R0 diverged: beta/gamma = {beta / gamma:.1f} > {MAX_R0}")
    population = int(params.get("population", 1000))
    infected = int(params.get("initial_infected", 5))
    days = int(params.get("n_days", 60))
    rng = random.Random(seed)
    susceptible, recovered = population - infected, 0
    incidence, prevalence = [], []
    for _ in range(days):
        # Chain binomial: each susceptible escapes every infectious contact independently.
        p_infect = 1.0 - math.exp(-beta * infected / population)
        p_recover = 1.0 - math.exp(-gamma)
        new_cases = sum(rng.random() < p_infect for _ in range(susceptible))
        new_recoveries = sum(rng.random() < p_recover for _ in range(infected))
        susceptible -= new_cases
        infected += new_cases - new_recoveries
        recovered += new_recoveries
        incidence.append(new_cases)
        prevalence.append(infected)
    return {"incidence": json.dumps(incidence).encode(), "prevalence": json.dumps(prevalence).encode()}


def baseline(params: dict, seed: int) -> dict[str, bytes]:
    """The baseline scenario: the model as parameterised."""
    return simulate(params, seed)
