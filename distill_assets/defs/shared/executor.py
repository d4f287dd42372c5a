"""The executor the graph runs on: in-process by default, or one DISTILL_EXECUTOR names."""

import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.runtime.settings import executor_choice


def in_process_first() -> dg.ExecutorDefinition:
    """Dagster's default executor (``in_process`` or ``multiprocess`` by run config) with
    ``in_process`` as its default: a run of the whole graph on the fixtures then costs seconds,
    where a process per step costs minutes. ``execution: {config: {multiprocess: {}}}`` (or
    ``distill materialize --multiprocess``) runs the steps in subprocesses again."""
    base = dg.multi_or_in_process_executor
    return dg.ExecutorDefinition(
        name=C.EXECUTOR_DEFAULT_NAME,
        config_schema=dg.Field(
            base.config_schema.as_field().config_type,
            default_value={"in_process": {}},
            is_required=False,
        ),
        executor_creation_fn=base.executor_creation_fn,
        requirements=base.get_requirements,
        description="In-process by default; multiprocess by run config.",
    )


@dg.definitions
def executor() -> dg.Definitions:
    """The in-process-first default executor, or the one DISTILL_EXECUTOR names: celery or k8s.

    The Celery executor (dagster-celery) sends each step of a run to the workers listening on
    the broker, which also keeps the results; its URL is read from the environment
    (DISTILL_CELERY_BROKER_URL) when a run starts, so no URL (which may hold a password) is
    stored in run config. The Kubernetes
    executor (dagster-k8s) runs each step as a Kubernetes Job, configured in run config or the
    Helm chart (docs/deploy.md).
    """
    choice = executor_choice()
    if not choice:
        return dg.Definitions(executor=in_process_first())
    if choice not in C.EXECUTORS:
        raise dg.DagsterInvariantViolationError(
            f"invalid setting {C.ENV_EXECUTOR}={choice!r}: unset it or set it to one of "
            + ", ".join(C.EXECUTORS)
        )
    try:
        if choice == C.EXECUTOR_K8S:
            from dagster_k8s import k8s_job_executor

            return dg.Definitions(executor=k8s_job_executor)
        from dagster_celery import celery_executor
    except ImportError as exc:
        extra = "k8s" if choice == C.EXECUTOR_K8S else "scale"
        raise dg.DagsterInvariantViolationError(
            f"{C.ENV_EXECUTOR}={choice!r} needs its Dagster library: pip install 'distill[{extra}]'"
        ) from exc
    return dg.Definitions(
        executor=celery_executor.configured(
            {"broker": {"env": C.ENV_CELERY_BROKER}, "backend": {"env": C.ENV_CELERY_BROKER}},
            name=C.EXECUTOR_CELERY,
        )
    )
