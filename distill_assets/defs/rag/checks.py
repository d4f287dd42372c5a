import dagster as dg

from distill_assets.lib import constants as C
from distill_assets.lib.extraction import verify_extracted
from distill_assets.lib.search import index_problems
from distill_assets.orchestration import (
    DistillResource,
    conservation_check,
    hygiene_checks,
    report_check,
    schema_check,
    this_runs_receipt,
)


@dg.asset_check(asset=C.ASSET_EXTRACTED_PLAYBOOKS, name=C.CHECK_SCHEMA, blocking=True)
def extracted_playbooks_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Extracted playbooks match ExtractedPlaybookSchema (numbered steps, known divergences)."""
    return schema_check(
        context,
        distill,
        C.ASSET_EXTRACTED_PLAYBOOKS,
        (C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH),
    )


@dg.asset_check(asset=C.ASSET_EXTRACTED_PLAYBOOKS, name=C.CHECK_CONSERVATION, blocking=True)
def extracted_playbooks_conservation(
    context: dg.AssetCheckExecutionContext, distill: DistillResource
):
    """Every scored run is a source, a failed run compared, or quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_EXTRACTED_PLAYBOOKS)


@dg.asset_check(asset=C.ASSET_EXTRACTED_PLAYBOOKS, name=C.CHECK_FIREWALL, blocking=True)
def extracted_playbooks_firewall(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Sources are verified runs, failed runs are rejected ones, nothing unreviewed appears."""
    asset = C.ASSET_EXTRACTED_PLAYBOOKS
    reads = lambda path: path in (C.EXTRACTED_PATH, C.EXTRACTED_HOLDOUT_PATH)  # noqa: E731
    with this_runs_receipt(context, distill, asset, reads) as (workspace, receipt):
        report = verify_extracted(workspace.root, workspace.root / receipt.extra.get("root", ""))
        description = (
            f"{report.rows} playbooks verified against the scored runs"
            if report.passed
            else f"{report.count} violation(s) in {report.rows} playbooks"
        )
        return report_check(
            context,
            workspace,
            asset,
            C.CHECK_FIREWALL,
            report.passed,
            True,
            report.count,
            description,
            {"rows": report.rows, "violations": dg.MetadataValue.json(report.violations)},
        )


def _index_check(context, distill, check: str, passed_text: str, pick) -> dg.AssetCheckResult:
    """Run ``index_problems`` on the index this run built and the playbooks beside it, and
    report the problems ``pick`` selects from (schema problems, consistency problems)."""
    asset = C.ASSET_PLAYBOOK_INDEX
    reads = lambda path: path == C.INDEX_PATH  # noqa: E731
    with this_runs_receipt(context, distill, asset, reads) as (workspace, receipt):
        root = receipt.extra.get("root", "")
        workspace.pull([f"{root}/{C.RAG_PATH}" if root else C.RAG_PATH])
        base = workspace.root / root
        problems = pick(*index_problems(base / C.INDEX_PATH, base / C.RAG_PATH))
        return report_check(
            context,
            workspace,
            asset,
            check,
            not problems,
            True,
            len(problems),
            "; ".join(problems[:5]) if problems else passed_text,
            {"problems": dg.MetadataValue.json(problems[:20])},
        )


@dg.asset_check(asset=C.ASSET_PLAYBOOK_INDEX, name=C.CHECK_SCHEMA, blocking=True)
def playbook_index_schema(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """The index file is a distill search index of this schema version, intact."""
    return _index_check(
        context, distill, C.CHECK_SCHEMA, "index schema valid", lambda schema, _: schema
    )


@dg.asset_check(asset=C.ASSET_PLAYBOOK_INDEX, name=C.CHECK_INDEX_CONSISTENT, blocking=True)
def playbook_index_consistent(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """The index holds exactly the playbooks beside it, at their byte offsets."""
    return _index_check(
        context,
        distill,
        C.CHECK_INDEX_CONSISTENT,
        "index matches the playbooks",
        lambda schema, consistency: consistency or [f"not checked: {p}" for p in schema],
    )


@dg.asset_check(asset=C.ASSET_PLAYBOOK_INDEX, name=C.CHECK_CONSERVATION, blocking=True)
def playbook_index_conservation(context: dg.AssetCheckExecutionContext, distill: DistillResource):
    """Every playbook is indexed or quarantined with a reason."""
    return conservation_check(context, distill, C.ASSET_PLAYBOOK_INDEX)


extracted_playbooks_hygiene = hygiene_checks(C.ASSET_EXTRACTED_PLAYBOOKS, holdout=True)
