"""The interpretability command prints the TFCAF's weights over a recorded episode."""
from qllm.explain import explain


def test_explain_prints_weights_per_step():
    lines = []
    w, b = explain("lbf_8x8_2p_2f_coop", steps=4, out=lines.append, describe=True)
    assert w.shape == (4, 2) and b.shape == (4, 1) and (w >= 0).all()  # the reference runs with the gate on
    assert "igm_gate True" in lines[0] and "w_0" in lines[1]
    assert any("food_0 = [" in line for line in lines)  # --describe renders each state


def test_explain_uses_the_recorded_gate_of_the_climbing_reference():
    lines = []
    explain("climbing", steps=3, out=lines.append)
    assert "igm_gate False" in lines[0]
