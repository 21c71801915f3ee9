"""Generation's stops and damaged parts say the cause and the fix: non-finite samples name target_rtg and the
guidance weights, a delta that was already auto is not told to use auto, and a truncated finished part is named
(delete it and rerun) before the missing parts are generated."""
import pytest
from tests.augmenters.test_codi_stitching import generate, killed_after_first_part, source  # noqa: F401 (the fixture)

from augmenters.codi import generation
from augmenters.codi.stitching import GenerationError, StitchSettings, _stuck

COUNTERS = {"accepted": 0, "segments": 8, "rejected_unavailable": 0, "rejected_view_gap": 0, "dropped": 2}


def test_nonfinite_samples_name_target_rtg_and_guidance_weights_not_delta():
    settings = StitchSettings(4, 4, 10, target_rtg=1e30, delta=0.05)
    message = _stuck("the last 8 segments all failed", COUNTERS, [float("nan")] * 6 + [float("inf")] * 2, settings)
    assert "8 of the rejected segments were not finite" in message
    assert "target_rtg (now 1e+30)" in message and "guidance_weights" in message
    assert "raise delta" not in message and "delta=auto" not in message


def test_a_delta_already_auto_is_not_told_to_use_auto():
    settings = StitchSettings(4, 4, 10, target_rtg=-10.0, delta=0.05, delta_quantile=0.95)
    message = _stuck("the last 8 segments all failed", COUNTERS, [0.2, 0.3, 0.4], settings)
    assert "use delta=auto" not in message
    assert "raise delta_quantile (delta=auto took the 0.95 quantile" in message and "delta=0.3 would pass" in message
    given = _stuck("x", COUNTERS, [0.2, 0.3, 0.4], StitchSettings(4, 4, 10, target_rtg=-10.0, delta=0.05))
    assert "use delta=auto" in given  # a delta given as a number: auto is the advice


def test_a_truncated_part_is_named_before_the_missing_parts_are_generated(tmp_path, source, monkeypatch):  # noqa: F811
    out = tmp_path / "gen.h5"
    killed_after_first_part(monkeypatch, out, source)
    part = generation._part_path(generation.parts_folder(out), 0)
    with open(part, "r+b") as f:  # a damaged disk or copy: the zip's directory at the end is lost
        f.truncate(200)
    stitched, stitch = [], generation.stitch
    monkeypatch.setattr(generation, "stitch", lambda *a, **kw: stitched.append(1) or stitch(*a, **kw))
    with pytest.raises(GenerationError, match=r"part_00000.npz cannot be read .*delete it and rerun"):
        generate(out, source)
    assert not stitched and not out.exists()  # noticed before part 1 was generated
