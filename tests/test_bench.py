"""lenet5 bench runs and reports both engines (structure only: timings belong to the benchmark)."""

import json

from lenet5 import cli


def test_bench_json_reports_both_engines_and_environment(capsys):
    assert cli.main(["bench", "--batch-sizes", "1,16", "--steps", "2", "--repeats", "2", "--infer-images", "64",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"]["numpy"] and report["environment"]["cores"] >= 1
    assert [r["batch_size"] for r in report["results"]] == [1, 16]
    for r in report["results"]:
        for kind in ("train", "infer"):
            assert r[kind]["numpy"]["images_per_s"] > 0 and r[kind]["numpy"]["repeats"] == 2
            assert r[kind]["torch"]["images_per_s"] > 0 and r[kind]["numpy_time_over_torch"] > 0


def test_bench_profile_lists_every_layer(capsys):
    assert cli.main(["bench", "--profile", "--steps", "2", "--batch-sizes", "8"]) == 0
    out = capsys.readouterr().out
    for name in ("c1", "s2", "c3", "s4", "c5", "f6", "output", "loss", "optimizer"):
        assert f"\n{name} " in out


def test_bench_rejects_bad_batch_sizes(capsys):
    assert cli.main(["bench", "--batch-sizes", "64,x"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
