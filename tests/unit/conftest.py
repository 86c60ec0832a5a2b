"""Hypothesis profiles for the unit tests.

``mutation`` is what ``scripts/mutation.sh`` runs under: no deadline, because a
mutant's trampolines and a machine busy with parallel mutants make per-example timing
meaningless (a deadline error would count as a kill, or fail the clean run), and
derandomized, so a mutant is killed or not the same way on every run.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "mutation",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
