"""Successful task results (django-q2's Success rows), kept up to `TASK_RESULTS_KEPT`.

django-q2 prunes them itself when its `save_limit` is positive, but on every saved result:
it reads back every kept row (unpickling each one's arguments and result) to count them.
With 1,000 kept that cost its monitor ~30 ms per task, a third of a core at the pipeline's
pace, taken from the workers. So the cluster keeps every result (`save_limit` 0) and the
redeploy tick prunes the oldest, a bounded number per minute.
"""

from __future__ import annotations

from django.conf import settings
from django_q.models import Success, Task

# Results deleted per call: more than a minute of tasks at full pace (about 240 a minute for
# 6,000 rotations), so the table stays near `TASK_RESULTS_KEPT`.
PRUNE_BATCH = 2000


def task_results_prune() -> int:
    """Delete the oldest successful task results beyond `TASK_RESULTS_KEPT` (0: keep all);
    returns how many."""
    kept = settings.TASK_RESULTS_KEPT
    if kept <= 0:
        return 0
    old = list(
        Success.objects.order_by("-stopped", "-pk").values_list("pk", flat=True)[
            kept : kept + PRUNE_BATCH
        ]
    )
    if not old:
        return 0
    deleted, _ = Task.objects.filter(pk__in=old, success=True).delete()
    return deleted
