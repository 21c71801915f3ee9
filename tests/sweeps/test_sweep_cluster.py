"""A two-node Ray cluster on this machine (Ray's own multi-node test utility): a sweep joins it by address and its
trials run on both nodes."""
import pytest
from sweep_helpers import sweep_file

from sweeps import driver
from sweeps.manifest import read_manifest, sweep_folder

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.long
def test_trials_run_on_both_nodes_of_a_cluster(tmp_path, two_nodes):
    import ray

    spec = sweep_file(tmp_path, "cluster", algs=["qmix", "vdn"], envs=["matrix_game"], seeds=1,
                      **{"with": {"t_max": 2000}})
    sweep = driver.prepare(spec)
    assert driver.run(sweep, address=two_nodes.address) == 0  # joins the cluster: ray.init(address=...)
    node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    trials = read_manifest(sweep_folder(spec))["trials"]
    assert all(r["status"] == "COMPLETED" for r in trials)
    assert {r["node_id"] for r in trials} == node_ids and len(node_ids) == 2  # one CPU per node: one trial each
