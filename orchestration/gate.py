"""The champion/challenger gate: which rule lets a retrained version replace production, or keeps it out.

Rules, first match wins (``Verdict.rule`` names the one that applied):
``never`` / ``always`` the policy says so (``always`` still stops at a pin);
``pinned``  a person pinned production (``batcomputer promote --pin``): no automatic move until it is unpinned;
``first``   there is no production version yet;
``blocked`` the challenger refuses a field or category the champion accepts;
``better``  the challenger beats the champion by at least the spec's margin, on the same holdout;
``stale``   the champion was trained longer ago than the spec's ``freshness_days`` and the challenger is no
            worse than it by more than the margin;
``worse`` / ``within``  otherwise: a challenger merely within the margin never displaces the champion (two
            versions within the margin of each other would otherwise alternate as production on every run).
A person's promotion is held by the same rule: only a challenger better by the margin replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Verdict:
    promote: bool
    rule: str
    reasons: list[str] = field(default_factory=list)


def coverage_gaps(champion: Any, challenger: Any) -> list[str]:
    """Fields and categories the champion accepts that the challenger would refuse."""
    gaps = []
    theirs = {f.name: f for f in challenger.fields}
    for old in champion.fields:
        new = theirs.get(old.name)
        if new is None:
            gaps.append(f"field {old.name!r} is gone")
            continue
        lost = sorted(set(old.categories or ()) - set(new.categories or ()))
        if lost:
            gaps.append(f"field {old.name!r} no longer accepts {', '.join(map(repr, lost))}")
        if old.kind != new.kind:
            gaps.append(f"field {old.name!r} changed from {old.kind} to {new.kind}")
    return gaps


def age_days(created: str | None, now: datetime | None = None) -> float | None:
    """Days since an ISO time (a version's ``created``), or None when it is unknown."""
    if not created:
        return None
    return ((now or datetime.now(UTC)) - datetime.fromisoformat(created)).total_seconds() / 86_400


def decide(policy: str, compared: dict[str, Any], gaps: list[str], pin: dict[str, Any] | None = None,
           champion_age: float | None = None, freshness_days: float | None = None,
           promoted_by: str | None = None) -> Verdict:
    """Whether to move production, by which rule, and why. ``compared`` holds the metric, whether lower is
    better, the margin and both versions' metrics on the same holdout; ``pin`` the production alias's pin;
    ``champion_age`` days since the champion was published; ``promoted_by`` who moved production last."""
    if policy == "never":
        return Verdict(False, "never", ["policy never: published without promotion"])
    if pin:
        return Verdict(False, "pinned", [f"production is pinned by {pin['by']} since {pin['at']}"
                                         + (f" ({pin['reason']})" if pin.get("reason") else "")
                                         + ": no automatic move until it is unpinned"])
    if policy == "always":
        return Verdict(True, "always", ["policy always: promoted whatever the comparison"]
                       + [f"forced past: {g}" for g in gaps])
    if compared["champion"] is None:
        return Verdict(True, "first", ["no production version yet: the first version is promoted"])
    if gaps:
        return Verdict(False, "blocked", [f"blocked: {gap}" for gap in gaps])
    metric, lower, margin = compared["metric"], compared["lower_is_better"], float(compared["margin"])
    challenger, champion = float(compared["challenger"][metric]), float(compared["champion"][metric])
    better_by = (champion - challenger) if lower else (challenger - champion)
    person = ("; production was promoted by a person, " + promoted_by
              if promoted_by and not promoted_by.startswith("prefect:") else "")
    if better_by > 0 and better_by >= margin:
        return Verdict(True, "better", [f"{metric} {challenger:.4f} beats production's {champion:.4f} by "
                                        f"{better_by:.4f}, at least the margin {margin:g}{person}"])
    if champion_age is not None and freshness_days is not None and champion_age > freshness_days \
            and better_by >= -margin:
        return Verdict(True, "stale", [f"{metric} {challenger:.4f} is within the margin {margin:g} of production's "
                                       f"{champion:.4f}, and production was trained {champion_age:.1f} days ago, "
                                       f"past the spec's freshness limit of {freshness_days:g} days"])
    if better_by < -margin:
        return Verdict(False, "worse", [f"{metric} {challenger:.4f} is worse than production's {champion:.4f} by "
                                        f"{-better_by:.4f}, more than the margin {margin:g}"])
    return Verdict(False, "within", [f"{metric} {challenger:.4f} is within the margin {margin:g} of production's "
                                     f"{champion:.4f}: a challenger must beat production by the margin to replace "
                                     f"it{person}"])
