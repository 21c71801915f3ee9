import json
import os

import numpy as np
import pytest

from plot import aggregate, load_runs, main


def write_run(root, alg, env, run_id, t, values):
    d = os.path.join(root, alg, env, str(run_id))
    os.makedirs(d)
    json.dump({"test_return_mean": values, "test_return_mean_T": t}, open(os.path.join(d, "info.json"), "w"))


def test_mean_and_std_over_seeds_on_a_common_grid(tmp_path):
    write_run(tmp_path, "qmix", "penalty", 1, [0, 100, 200], [0.0, 1.0, 2.0])
    write_run(tmp_path, "qmix", "penalty", 2, [0, 110, 220], [0.0, 3.0, 6.0])
    groups = load_runs(str(tmp_path), "test_return_mean")
    grid, mean, std = aggregate(groups[("qmix", "penalty")], points=3)
    assert grid.tolist() == [0.0, 100.0, 200.0]
    # run 2 interpolated at 100 and 200: 100/110*3 and 3 + 90/110*3
    np.testing.assert_allclose(mean, [0.0, (1 + 300 / 110) / 2, (2 + 3 + 270 / 110) / 2])
    assert std[0] == 0 and std[2] > 0


def test_command_writes_png_and_prints_table(tmp_path, capsys):
    write_run(tmp_path / "s", "vdn", "climbing", 1, [0, 50], [1.0, 2.0])
    write_run(tmp_path / "s", "qmix", "climbing", 1, [0, 50], [1.0, 4.0])
    out = tmp_path / "curves.png"
    main([str(tmp_path / "s"), "--out", str(out)])
    assert out.stat().st_size > 1000 and open(out, "rb").read(4) == b"\x89PNG"
    table = capsys.readouterr().out
    assert "| qmix | climbing | 1 | 4.000 ± 0.000 |" in table


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no runs with 'test_return_mean'"):
        main([str(tmp_path)])
