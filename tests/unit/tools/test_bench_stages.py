"""`python -m relay.tools.bench.stages`: every stage measured, the shaped route where a mapping has one."""

from __future__ import annotations

import math

from relay.tools.bench.stages import STAGES, measure


def test_fluentbit_has_a_shaped_figure_and_no_typed_one() -> None:
    figures = measure("fluentbit", bodies=1, repeat=1)
    assert set(STAGES) <= set(figures) and figures["entries"] == 1000
    assert math.isnan(figures["typed"])
    assert all(figures[stage] > 0 for stage in STAGES if stage != "typed")  # CPU spent; never how much


def test_levers_measures_every_variant_of_a_shaped_mapping() -> None:
    from relay.tools.bench import levers

    figures = levers.measure("fluentbit", bodies=1, rounds=1)
    assert set(figures) == {"dict, check()", "dict, fused", "shaped, check()", "shaped, fused",
                            "dict decode", "shaped decode"}
    assert all(figure > 0 for figure in figures.values())


def test_native_protocol_workloads_measure_every_stage_they_run() -> None:
    # the protocol workloads once crashed the table (no `shaped` figure): each prints every column
    for name in ("otlp", "loki"):
        figures = measure(name, bodies=1, repeat=1)
        assert set(STAGES) <= set(figures) and figures["entries"] == 1000
        assert math.isnan(figures["typed"]) and math.isnan(figures["shaped"])
        assert all(figures[stage] > 0 for stage in ("decompress", "decode", "map", "encode", "prepare"))
