import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib.extraction import verify_extracted
from distill_assets.lib.search import index_problems
from distill_assets.orchestration import (
    DistillResource,
    conservation_check,
    report_check,
    schema_check,
    this_runs_receipt,
)


@dg.asset_check(asset=C.ASSET_EXTRACTED_PLAYBOOKS, name=C.CHECK_SCHEMA, blocking=True)
def extracted_playbooks_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Extracted playbooks match ExtractedPlaybookSchema (numbered steps, known divergences)."""
    return schema_check(context, distill, C.ASSET_EXTRACTED_PLAYBOOKS, C.EXTRACTED_PATH)


@dg.asset_check(asset=C.ASSET_EXTRACTED_PLAYBOOKS, name=C.CHECK_CONSERVATION, blocking=True)
def extracted_playbooks_conservation(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
):
    """Every scored run is a source, a failed run compared, or quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_EXTRACTED_PLAYBOOKS)


@dg.asset_check(asset=C.ASSET_EXTRACTED_PLAYBOOKS, name=C.CHECK_FIREWALL, blocking=True)
def extracted_playbooks_firewall(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Sources are verified runs, failed runs are rejected ones, nothing unreviewed appears."""
    out_root, receipt = this_runs_receipt(context, distill, C.ASSET_EXTRACTED_PLAYBOOKS)
    report = verify_extracted(out_root, out_root / receipt.extra.get("root", ""))
    description = (
        f"{report.rows} playbooks verified against the scored runs"
        if report.passed
        else f"{report.count} violation(s) in {report.rows} playbooks"
    )
    return report_check(
        context,
        distill,
        C.ASSET_EXTRACTED_PLAYBOOKS,
        C.CHECK_FIREWALL,
        report.passed,
        True,
        report.count,
        description,
        {"rows": report.rows, "violations": dg.MetadataValue.json(report.violations)},
    )


def _index_result(context, distill, check: str, problems: list[str], passed_text: str):
    return report_check(
        context,
        distill,
        C.ASSET_PLAYBOOK_INDEX,
        check,
        not problems,
        True,
        len(problems),
        "; ".join(problems[:5]) if problems else passed_text,
        {"problems": dg.MetadataValue.json(problems[:20])},
    )


def _index_files(context, distill):
    out_root, receipt = this_runs_receipt(context, distill, C.ASSET_PLAYBOOK_INDEX)
    root = out_root / receipt.extra.get("root", "")
    return index_problems(root / C.INDEX_PATH, root / C.RAG_PATH)


@dg.asset_check(asset=C.ASSET_PLAYBOOK_INDEX, name=C.CHECK_SCHEMA, blocking=True)
def playbook_index_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """The index file is a distill search index of this schema version, intact."""
    schema, _ = _index_files(context, distill)
    return _index_result(context, distill, C.CHECK_SCHEMA, schema, "index schema valid")


@dg.asset_check(asset=C.ASSET_PLAYBOOK_INDEX, name=C.CHECK_INDEX_CONSISTENT, blocking=True)
def playbook_index_consistent(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """The index holds exactly the playbooks beside it, at their byte offsets."""
    schema, consistency = _index_files(context, distill)
    problems = consistency or [f"not checked: {p}" for p in schema]
    return _index_result(
        context, distill, C.CHECK_INDEX_CONSISTENT, problems, "index matches the playbooks"
    )


@dg.asset_check(asset=C.ASSET_PLAYBOOK_INDEX, name=C.CHECK_CONSERVATION, blocking=True)
def playbook_index_conservation(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Every playbook is indexed or quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_PLAYBOOK_INDEX)
