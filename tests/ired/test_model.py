import torch

from diffusion_lib.ired.model import EBM, DiffusionWrapper, sinusoidal_embedding


def test_parameter_count_matches_spec():
    assert sum(p.numel() for p in EBM(400, 400).parameters()) == 1_437_840


def test_energy_is_nonnegative_scalar_per_problem():
    ebm = EBM(9, 9)
    e = ebm(torch.randn(5, 9), torch.randn(5, 9), torch.randint(0, 10, (5,)))
    assert e.shape == (5,) and (e >= 0).all()


def test_time_embedding_frequencies():
    emb = sinusoidal_embedding(torch.tensor([1.0]), 128)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(64) / 63)
    assert torch.allclose(emb[0, :64], torch.sin(freqs), atol=1e-6)
    assert torch.allclose(emb[0, 64:], torch.cos(freqs), atol=1e-6)


def test_wrapper_gradient_matches_finite_differences():
    wrapper = DiffusionWrapper(EBM(4, 4)).double()
    x, y, t = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 4, 9])
    with torch.no_grad():
        energy, grad = wrapper(x, y, t, return_both=True)
        h = 1e-6
        for j in range(4):
            d = torch.zeros_like(y)
            d[:, j] = h
            fd = (wrapper(x, y + d, t, return_energy=True) - wrapper(x, y - d, t, return_energy=True)) / (2 * h)
            assert torch.allclose(grad[:, j], fd, rtol=1e-5, atol=1e-8)
    assert torch.allclose(energy, wrapper.ebm(x, y, t))


def test_double_backward_graph_only_when_grad_enabled():
    wrapper = DiffusionWrapper(EBM(4, 4))
    x, y, t = torch.randn(2, 4), torch.randn(2, 4), torch.tensor([1, 2])
    with torch.no_grad():
        g = wrapper(x, y, t)
    assert g.grad_fn is None and not g.requires_grad
    g = wrapper(x, y, t)
    assert g.grad_fn is not None
    g.pow(2).sum().backward()  # trains θ through ∇_y E
    assert all(p.grad is not None for p in wrapper.parameters())
