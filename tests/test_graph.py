"""View graphs: shapes, the paper's top_ring, the named ablations, validation and reachability."""

import pytest
import torch

from multiflow_pl.models.graph import GRAPH_NAMES, check_adjacency, reachable, view_graph


def _edge_set(adj: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in adj.nonzero()}


def _undirected(pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(i, j) for i, j in pairs} | {(j, i) for i, j in pairs}


@pytest.mark.parametrize("name", GRAPH_NAMES)
@pytest.mark.parametrize("n_views", [3, 5, 7])
def test_graphs_are_symmetric_bool_without_self_loops(name, n_views):
    adj = view_graph(name, n_views)
    assert adj.dtype == torch.bool and adj.shape == (n_views, n_views)
    assert not adj.diagonal().any()
    assert torch.equal(adj, adj.T)


def test_top_ring_is_the_papers_graph():
    adj = view_graph("top_ring", 5)
    expected = _undirected([(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (2, 3), (3, 4), (4, 1)])
    assert _edge_set(adj) == expected
    assert int(adj.sum()) == 16


@pytest.mark.parametrize(
    ("name", "pairs"),
    [
        ("ring", [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]),
        ("chain", [(0, 1), (1, 2), (2, 3), (3, 4)]),
        ("top", [(0, 1), (0, 2), (0, 3), (0, 4)]),
        ("side_ring", [(1, 2), (2, 3), (3, 4), (4, 1)]),
        ("full", [(i, j) for i in range(5) for j in range(i + 1, 5)]),
        ("none", []),
    ],
)
def test_named_ablation_graphs(name, pairs):
    assert _edge_set(view_graph(name, 5)) == _undirected(pairs)


def test_small_rings_degenerate_to_single_edges():
    assert _edge_set(view_graph("top_ring", 3)) == _undirected([(0, 1), (0, 2), (1, 2)])
    assert _edge_set(view_graph("ring", 2)) == _undirected([(0, 1)])
    assert _edge_set(view_graph("top_ring", 2)) == _undirected([(0, 1)])


def test_unknown_name_and_too_few_views_raise():
    with pytest.raises(ValueError, match="Unknown view graph 'star'"):
        view_graph("star", 5)
    with pytest.raises(ValueError, match="at least 3 views"):
        view_graph("side_ring", 2)
    with pytest.raises(ValueError, match="at least 2 views"):
        view_graph("ring", 1)
    assert view_graph("none", 1).shape == (1, 1)


def test_check_adjacency_rejects_bad_input():
    good = torch.zeros(3, 3, dtype=torch.bool)
    good[1, 0] = True
    assert torch.equal(check_adjacency(good, 3), good)
    with pytest.raises(ValueError, match="shape"):
        check_adjacency(good, 4)
    with pytest.raises(ValueError, match="bool"):
        check_adjacency(good.float(), 3)
    with pytest.raises(ValueError, match="self loops"):
        check_adjacency(good | torch.eye(3, dtype=torch.bool), 3)


def test_reachable_counts_hops_and_direction():
    chain = view_graph("chain", 5)
    assert torch.equal(reachable(chain, 0), torch.eye(5, dtype=torch.bool))
    one_hop = reachable(chain, 1)
    assert torch.equal(one_hop, chain | torch.eye(5, dtype=torch.bool))
    assert not reachable(chain, 3)[4, 0] and reachable(chain, 4)[4, 0]
    assert reachable(chain, 4).all()
    assert torch.equal(reachable(view_graph("none", 5), 6), torch.eye(5, dtype=torch.bool))
    directed = torch.zeros(3, 3, dtype=torch.bool)
    directed[1, 0] = directed[2, 1] = True  # 0 -> 1 -> 2
    two_hops = reachable(directed, 2)
    assert two_hops[2, 0] and not two_hops[0, 2] and not two_hops[1, 2]
