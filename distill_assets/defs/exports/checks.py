import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib.exports import ExportSettings
from distill_assets.lib.firewall import (
    FirewallReport,
    verify_kto,
    verify_pair_rules,
    verify_preference,
    verify_rag,
    verify_sft,
)
from distill_assets.orchestration import (
    DistillResource,
    conservation_check,
    frozen_gc,
    hygiene_checks,
    report_check,
    schema_check,
    this_runs_receipt,
)


def _settings_used(receipt) -> ExportSettings:
    """The export settings the checked run used, as its receipt recorded them."""
    from distill_assets.orchestration import ExportConfig

    return ExportConfig(**receipt.extra.get("settings", {})).settings()


def _written_root(out_root, receipt):
    """Where the checked run wrote its exports (its version directory)."""
    return out_root / receipt.extra.get("root", "")


def _is(relpath: str):
    """The receipt outputs a firewall check reads: its dataset's train and holdout files."""
    holdout = relpath.rsplit("/", 1)[0] + "/holdout.jsonl"
    return lambda path: path in (relpath, holdout)


def _firewall_result(context, workspace, asset: str, check: str, report: FirewallReport):
    description = (
        f"{report.rows} rows verified against the scored runs"
        if report.passed
        else f"{report.count} violation(s) in {report.rows} rows"
    )
    return report_check(
        context,
        workspace,
        asset,
        check,
        report.passed,
        True,
        report.count,
        description,
        {"rows": report.rows, "violations": dg.MetadataValue.json(report.violations)},
    )


@dg.asset_check(asset=C.ASSET_RAG_PLAYBOOKS, name=C.CHECK_SCHEMA, blocking=True)
def rag_playbooks_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Playbooks match RagPlaybookSchema."""
    return schema_check(context, distill, C.ASSET_RAG_PLAYBOOKS, (C.RAG_PATH, C.RAG_HOLDOUT_PATH))


@dg.asset_check(asset=C.ASSET_RAG_PLAYBOOKS, name=C.CHECK_FIREWALL, blocking=True)
def rag_playbooks_firewall(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Only accepted or partially accepted runs of the same task back a playbook."""
    asset = C.ASSET_RAG_PLAYBOOKS
    with this_runs_receipt(context, distill, asset, _is(C.RAG_PATH)) as (workspace, receipt):
        root = _written_root(workspace.root, receipt)
        with frozen_gc():
            report = verify_rag(workspace.root, _settings_used(receipt), root)
        return _firewall_result(context, workspace, asset, C.CHECK_FIREWALL, report)


@dg.asset_check(asset=C.ASSET_RAG_PLAYBOOKS, name=C.CHECK_CONSERVATION, blocking=True)
def rag_playbooks_conservation(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Every extracted playbook is rendered or quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_RAG_PLAYBOOKS)


@dg.asset_check(asset=C.ASSET_SFT_DATASET, name=C.CHECK_SCHEMA, blocking=True)
def sft_dataset_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """SFT rows match SftExampleSchema (user first, assistant last)."""
    return schema_check(context, distill, C.ASSET_SFT_DATASET, (C.SFT_PATH, C.SFT_HOLDOUT_PATH))


@dg.asset_check(asset=C.ASSET_SFT_DATASET, name=C.CHECK_FIREWALL, blocking=True)
def sft_dataset_firewall(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Only accepted runs in allowed categories reach SFT."""
    asset = C.ASSET_SFT_DATASET
    with this_runs_receipt(context, distill, asset, _is(C.SFT_PATH)) as (workspace, receipt):
        root = _written_root(workspace.root, receipt)
        with frozen_gc():
            report = verify_sft(workspace.root, _settings_used(receipt), root)
        return _firewall_result(context, workspace, asset, C.CHECK_FIREWALL, report)


@dg.asset_check(asset=C.ASSET_SFT_DATASET, name=C.CHECK_CONSERVATION, blocking=True)
def sft_dataset_conservation(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Every scored run is an SFT example or is quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_SFT_DATASET)


@dg.asset_check(asset=C.ASSET_PREFERENCE_PAIRS, name=C.CHECK_SCHEMA, blocking=True)
def preference_pairs_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Pairs match PreferencePairSchema."""
    return schema_check(
        context, distill, C.ASSET_PREFERENCE_PAIRS, (C.PREFERENCE_PATH, C.PREFERENCE_HOLDOUT_PATH)
    )


@dg.asset_check(asset=C.ASSET_PREFERENCE_PAIRS, name=C.CHECK_FIREWALL, blocking=True)
def preference_pairs_firewall(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Pairs keep rejected and unreviewed runs off the chosen side, checked against the scores."""
    asset = C.ASSET_PREFERENCE_PAIRS
    with this_runs_receipt(context, distill, asset, _is(C.PREFERENCE_PATH)) as (workspace, receipt):
        root = _written_root(workspace.root, receipt)
        with frozen_gc():
            report = verify_preference(workspace.root, _settings_used(receipt), root)
        return _firewall_result(context, workspace, asset, C.CHECK_FIREWALL, report)


@dg.asset_check(asset=C.ASSET_PREFERENCE_PAIRS, name=C.CHECK_CONSERVATION, blocking=True)
def preference_pairs_conservation(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Every scored run is in a pair or is quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_PREFERENCE_PAIRS)


@dg.asset_check(asset=C.ASSET_PREFERENCE_PAIRS, name=C.CHECK_PAIR_RULES, blocking=True)
def preference_pairs_rules(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Pairs are two distinct runs of one task, chosen strictly better, texts different."""
    asset = C.ASSET_PREFERENCE_PAIRS
    with this_runs_receipt(context, distill, asset, _is(C.PREFERENCE_PATH)) as (workspace, receipt):
        root = _written_root(workspace.root, receipt)
        with frozen_gc():
            report = verify_pair_rules(workspace.root, _settings_used(receipt), root)
        return _firewall_result(context, workspace, asset, C.CHECK_PAIR_RULES, report)


@dg.asset_check(asset=C.ASSET_KTO_DATASET, name=C.CHECK_SCHEMA, blocking=True)
def kto_dataset_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Unpaired rows match KtoExampleSchema (label true exactly for accepted runs)."""
    return schema_check(context, distill, C.ASSET_KTO_DATASET, (C.KTO_PATH, C.KTO_HOLDOUT_PATH))


@dg.asset_check(asset=C.ASSET_KTO_DATASET, name=C.CHECK_FIREWALL, blocking=True)
def kto_dataset_firewall(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Label true only for accepted runs, false only for rejected ones; none needs review."""
    asset = C.ASSET_KTO_DATASET
    with this_runs_receipt(context, distill, asset, _is(C.KTO_PATH)) as (workspace, receipt):
        root = _written_root(workspace.root, receipt)
        report = verify_kto(workspace.root, _settings_used(receipt), root)
        return _firewall_result(context, workspace, asset, C.CHECK_FIREWALL, report)


@dg.asset_check(asset=C.ASSET_KTO_DATASET, name=C.CHECK_CONSERVATION, blocking=True)
def kto_dataset_conservation(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Every scored run is an unpaired row or is quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_KTO_DATASET)


rag_playbooks_hygiene = hygiene_checks(C.ASSET_RAG_PLAYBOOKS, holdout=True)
sft_dataset_hygiene = hygiene_checks(C.ASSET_SFT_DATASET, holdout=True)
preference_pairs_hygiene = hygiene_checks(C.ASSET_PREFERENCE_PAIRS, holdout=True)
kto_dataset_hygiene = hygiene_checks(C.ASSET_KTO_DATASET, holdout=True)
review_queue_hygiene = hygiene_checks(C.ASSET_REVIEW_QUEUE, holdout=False)


@dg.asset_check(asset=C.ASSET_REVIEW_QUEUE, name=C.CHECK_CONSERVATION, blocking=True)
def review_queue_conservation(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Every run needing review is queued or quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_REVIEW_QUEUE)
