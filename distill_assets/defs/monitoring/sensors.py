"""The drift sensor: turns the drift each materialization recorded into asset-check alerts."""

import dagster as dg
import orjson

from distill_assets.lib import constants as C
from distill_assets.lib import stages as S
from distill_assets.lib.publishing.diff import explained_by
from distill_assets.lib.records.alerts import deliver, judge, make_alert, record_alerts
from distill_assets.runtime.resource import DistillResource, provenance

WATCHED = [
    C.ASSET_EVIDENCE_INDEX,
    C.ASSET_SCORED_RUNS,
    C.ASSET_EXTRACTED_PLAYBOOKS,
    C.ASSET_RAG_PLAYBOOKS,
    C.ASSET_SFT_DATASET,
    C.ASSET_PREFERENCE_PAIRS,
    C.ASSET_KTO_DATASET,
    C.ASSET_PLAYBOOK_INDEX,
    C.ASSET_DATASET_MANIFEST,
]
BATCH = 500


def _plain(metadata) -> dict:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


LOOKBACK = 50


def _previous(instance: dg.DagsterInstance, key: dg.AssetKey, record, metadata: dict) -> tuple:
    """Run id and metadata of the latest earlier materialization of the same partition made
    over the same partition range (a one-day run is not compared with a month-long one)."""
    partitions = [record.partition_key] if record.partition_key else None
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=key, asset_partitions=partitions, before_storage_id=record.storage_id
        ),
        limit=LOOKBACK,
        ascending=False,
    ).records
    span = metadata.get(C.MD_PARTITIONS)
    for prior in found:
        prior_metadata = _plain(prior.asset_materialization.metadata)
        if prior_metadata.get(C.MD_PARTITIONS) == span:
            return prior.run_id, prior_metadata
    return None, None


@dg.sensor(
    name="drift_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Compares each new materialization with the previous one and raises drift checks.",
)
def drift_sensor(context: dg.SensorEvaluationContext, distill: DistillResource):
    """Judge every new materialization of the watched assets once; warn/alert becomes a failed
    ``drift`` check, a line in reports/alerts.jsonl and, when configured, a webhook POST."""
    cursor = orjson.loads(context.cursor) if context.cursor else {}
    thresholds = distill.thresholds()
    out_root = distill.output_root()
    stamps = provenance()
    evaluations: list[dg.AssetCheckEvaluation] = []
    alerts = []
    judged = 0
    for asset in WATCHED:
        key = dg.AssetKey(asset)
        after = cursor.get(asset)
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
            limit=BATCH,
            ascending=True,
        ).records
        if not records:
            continue
        by_run: dict[str, list] = {}
        for record in records:
            by_run.setdefault(record.run_id, []).append(record)
        for run_id, run_records in by_run.items():
            pairs = []
            for record in run_records:
                metadata = _plain(record.asset_materialization.metadata)
                prior_run, prior_metadata = _previous(context.instance, key, record, metadata)
                pairs.append((record.partition_key, metadata, prior_run, prior_metadata))
            judged += 1
            drift, partitions = judge(S.ASSET_STAGE[asset], run_id, pairs, thresholds)
            if drift is None or drift.severity == C.SEVERITY_OK:
                continue
            alert = make_alert(asset, drift, run_id, partitions, stamps)
            alerts.append(alert)
            evaluations.append(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=C.CHECK_DRIFT,
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR
                    if drift.severity == C.SEVERITY_ALERT
                    else dg.AssetCheckSeverity.WARN,
                    description=f"drift {drift.severity} against run {drift.prior_run_id}",
                    metadata={
                        "severity": drift.severity,
                        "run_id": run_id,
                        "prior_run_id": drift.prior_run_id or "",
                        "flags": ", ".join(drift.flags),
                        "partitions": ", ".join(partitions),
                        **explained_by(drift.prior_run_id, run_id),
                    },
                )
            )
        cursor[asset] = records[-1].storage_id
    record_alerts(out_root, alerts)
    delivered, queued = deliver(out_root, distill.webhook_url(), alerts, context.log.warning)
    new_cursor = orjson.dumps(cursor, option=orjson.OPT_SORT_KEYS).decode()
    if not evaluations and not delivered:
        reason = (
            f"judged {judged} new materialization batch(es): no drift above thresholds"
            if judged
            else "no new materializations of the watched assets"
        )
        if queued:
            reason += f"; {queued} alert(s) still queued for the webhook"
        return (
            dg.SkipReason(reason)
            if new_cursor == context.cursor
            else dg.SensorResult(skip_reason=reason, cursor=new_cursor)
        )
    return dg.SensorResult(asset_events=evaluations, cursor=new_cursor)
