"""Which NATS subjects each program of one ReasoningService may publish and subscribe to.

With NATS authentication on (the chart's `nats.auth.enabled`), every service gets its own
credentials per role, issued by the operator (`ponder.operator.nats_trust`), and the NATS
server enforces these lists: a worker of one service can neither pull another's jobs nor read
its results, and only a service's own schedulers may publish its jobs, cancels and the stats
that drive its autoscaler. The lists name exactly what the code uses; docs/architecture.md
("NATS credentials") explains each.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.api.priority import PRIORITY_ORDER
from ponder.api.subjects import ServiceSubjects


@dataclass(frozen=True)
class SubjectPermissions:
    """Allowed subjects (NATS wildcards `*` and `>` allowed); everything else is refused.

    `respond`: may publish one reply to the reply subject of a request it received (the
    scheduler answers workers' liveness requests, whose inboxes it may not otherwise publish to).
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    respond: bool = False


def _js_api(*calls: str) -> tuple[str, ...]:
    return tuple(f"$JS.API.{call}" for call in calls)


def scheduler_permissions(subjects: ServiceSubjects) -> SubjectPermissions:
    """A scheduler publishes its service's jobs of every priority class (JetStream,
    acknowledged to its inbox),
    cancels and stats; reads its results inbox, answers liveness requests, and reads the
    stream's info (readiness) and its consumers' (whether the pool is cold). It may not
    create, change or delete streams."""
    stream = subjects.stream
    return SubjectPermissions(
        publish=(
            *subjects.job_subjects,
            subjects.cancel,
            subjects.stats,
            *_js_api(f"STREAM.INFO.{stream}", f"CONSUMER.LIST.{stream}"),
        ),
        subscribe=(
            subjects.results_wildcard,
            subjects.alive_wildcard,
            f"{subjects.inbox_prefix}.>",
        ),
        respond=True,
    )


def worker_permissions(subjects: ServiceSubjects) -> SubjectPermissions:
    """A worker pulls from its service's consumers (one per priority class) and acknowledges
    what it pulled, publishes results to its service's scheduler inboxes (and nowhere else,
    whatever a job names), asks those schedulers whether they live, reports its slot use
    (`worker_stats`, never the schedulers' `stats`), hears cancels,
    dead-letters into its own stream, and handles its consumers' max-deliveries advisories
    (reading and deleting the message named)."""
    stream = subjects.stream
    per_consumer = [
        (
            f"$JS.ACK.{stream}.{consumer}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        )
        for consumer in subjects.consumers
    ]
    return SubjectPermissions(
        publish=(
            subjects.results_wildcard,
            subjects.alive_wildcard,
            subjects.worker_stats,
            subjects.deadletter,
            *(subject for each in per_consumer for subject in each),
            *_js_api(
                f"STREAM.MSG.GET.{stream}",
                f"DIRECT.GET.{stream}",
                f"STREAM.MSG.DELETE.{stream}",
            ),
        ),
        subscribe=(
            subjects.cancel,
            *(subjects.max_deliveries_advisory(priority) for priority in PRIORITY_ORDER),
            f"{subjects.inbox_prefix}.>",
        ),
    )


ADMIN_PERMISSIONS = SubjectPermissions(publish=(">",), subscribe=(">",))
"""The operator's own: it manages every service's stream and consumer and reads all stats."""
