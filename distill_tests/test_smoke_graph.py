from distill_tests.conftest import FIXTURES, materialize_graph


def test_graph_runs(project_defs, instance, tmp_path):
    result = materialize_graph(project_defs, instance, FIXTURES, tmp_path / "out")
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert evaluations and all(e.passed for e in evaluations)
