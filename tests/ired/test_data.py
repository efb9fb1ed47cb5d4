import pytest
import torch

from diffusion_lib.ired.data import HeldoutError, ProblemStream, inverse_problems, load_heldout, make_heldout, reference_mean_target, save_heldout, trivial_predictor_mse


def _matrices(A, n):
    return A.double().reshape(-1, n, n)


@pytest.mark.parametrize("eps", [0.5, 0.1])
def test_problems_are_spd_with_exact_inverses(eps):
    n = 6
    A, Y = inverse_problems(200, n, eps, torch.Generator().manual_seed(1))
    assert A.shape == Y.shape == (200, n * n) and A.dtype == Y.dtype == torch.float32
    M = _matrices(A, n)
    assert torch.allclose(M, M.transpose(-1, -2))
    assert torch.linalg.eigvalsh(M).min() >= eps - 1e-5
    residual = (M @ _matrices(Y, n) - torch.eye(n, dtype=torch.float64)).abs().max()
    assert residual < 1e-4  # float32 storage of an exact float64 inverse


def test_seeds_control_the_data():
    a = inverse_problems(8, 5, 0.5, torch.Generator().manual_seed(3))
    b = inverse_problems(8, 5, 0.5, torch.Generator().manual_seed(3))
    c = inverse_problems(8, 5, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_bad_eps_is_rejected():
    with pytest.raises(ValueError, match="eps"):
        inverse_problems(2, 3, 0.0)


def test_stream_state_round_trip():
    s = ProblemStream(4, 3, 0.5, seed=7, device="cpu")
    next(s)
    state = s.state_dict()
    expected = next(s)
    s2 = ProblemStream(4, 3, 0.5, seed=99, device="cpu")
    s2.load_state_dict(state)
    assert torch.equal(next(s2)[0], expected[0])


def test_reference_facts_of_spec_section_2():
    """method §2: zeros ≈ 0.0207 and per-entry mean ≈ 0.0141 on ID (n = 20); ≈ 0.258 / 0.217 on OOD."""
    for eps, zeros, mean in ((0.5, 0.0207, 0.0141), (0.1, 0.258, 0.217)):
        h = make_heldout(1500, 20, eps, seed=11)
        mse = trivial_predictor_mse(h, reference_mean_target(20, eps, seed=12, num_problems=4000))
        assert mse["zeros"] == pytest.approx(zeros, rel=0.06)
        assert mse["entry_mean"] == pytest.approx(mean, rel=0.06)


def test_heldout_round_trip_and_metadata(tmp_path):
    h = make_heldout(10, 4, 0.1, seed=5, name="test_ood")
    save_heldout(h, tmp_path / "h.pt")
    g = load_heldout(tmp_path / "h.pt", rank=4)
    assert torch.equal(g.A, h.A) and torch.equal(g.Y, h.Y)
    assert g.meta["eps"] == 0.1 and g.meta["seed"] == 5 and g.meta["rank"] == 4 and len(g) == 10


def test_heldout_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(HeldoutError, match="nope.pt"):
        load_heldout(missing)
    h = make_heldout(10, 4, 0.5, seed=5)
    path = tmp_path / "t.pt"
    save_heldout(h, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HeldoutError, match="t.pt.*truncated"):
        load_heldout(path)
    save_heldout(h, path)
    with pytest.raises(HeldoutError, match="rank 5"):
        load_heldout(path, rank=5)
    blob = torch.load(path, weights_only=True)
    blob["Y"] = blob["Y"][:, :3]
    torch.save(blob, path)
    with pytest.raises(HeldoutError, match="'Y' has shape"):
        load_heldout(path)
