"""The training step compiled ahead of time (diffusion_lib.train.aot, train.aot): it reproduces the engine's
golden runs in float64, is compiled once per key and loaded by later jobs, and where it cannot be had
(no compiler, a failed build, a package that disagrees with the eager step) training is eager.

Compiling costs 15-30 s per graph, so the rest of the suite trains eagerly (conftest.py sets
IRED_AOT=off); the tests here turn it back on with a cache of their own."""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from diffusion_lib.train import aot
from diffusion_lib.ired.data import inverse_problems
from diffusion_lib.ired.diffusion import build_diffusion
from diffusion_lib.train.engine import Engine
from diffusion_lib.ired.functional import draw_noise
from diffusion_lib.ired.gradients import closed_form_gradients
from diffusion_lib.settings.run_config import TrainConfig
from diffusion_lib.train.step_mode import step_mode
from tests.golden import scenarios as rec
from tests.train.test_engine_golden import GOLDEN, assert_reproduces

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.export's own deprecation notes


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("aot-cache")


@pytest.fixture
def aot_on(monkeypatch, cache):
    monkeypatch.delenv(aot.SWITCH_ENV, raising=False)
    monkeypatch.setenv(aot.CACHE_ENV, str(cache))
    return cache


def _golden_run_matches(name, tmp_path):
    assert_reproduces(name, torch.load(GOLDEN / "engine_float64.pt", weights_only=False)[name], tmp_path)


needs_compiler = pytest.mark.skipif(not aot.compiler_available(), reason="no C++ compiler: nothing to compile with")


def _compiled_kinds(caplog):
    return [r.getMessage() for r in caplog.records if "compiled ahead of time: loaded" in r.getMessage()]


@needs_compiler
def test_the_compiled_step_reproduces_the_golden_run_and_a_second_job_only_loads_it(aot_on, float64, tmp_path,
                                                                                    caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="diffusion_lib")
    _golden_run_matches("solo-none", tmp_path)
    assert len(list(aot_on.glob("*.pt2"))) == 1 and not list(aot_on.glob("*.failed"))
    assert any("training step (ordinary) compiled ahead of time" in m for m in _compiled_kinds(caplog))
    # a second job with the same key loads the package: compiling again would fail it
    monkeypatch.setattr(aot, "_compile", lambda *a: pytest.fail("compiled a graph that was in the cache"))
    engine = Engine.seeded([rec.CFG], rec.MINING["none"], progress=False)
    engine.step_once(0, [True])
    engine.step_once(1, [True])
    assert engine.update.mode == "aot" and not engine.update.aot_failed
    assert engine.update._aot_runners[False] is not None


@pytest.mark.slow
@needs_compiler
def test_the_compiled_mining_and_ordinary_steps_reproduce_the_golden_adversarial_run(aot_on, float64, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="diffusion_lib")
    _golden_run_matches("solo-adversarial", tmp_path)
    messages = " ".join(_compiled_kinds(caplog))
    assert "(mining)" in messages and "(ordinary)" in messages


def _params(d):
    """The weights a gradient function takes: the run's own parameters."""
    return dict(d.model.ebm.named_parameters())


def _draws(mode="adversarial", n=8):
    torch.manual_seed(0)
    d = build_diffusion(2, 10, {"mode": mode, "opt_steps": 2})
    A, Y = inverse_problems(n, 2, 0.5, torch.Generator().manual_seed(1))
    t, xi, *neg = draw_noise(d, Y)
    return d, (A, Y, t, xi, neg[0] if neg else None)


def test_without_a_compiler_the_step_is_eager_and_says_so(aot_on, monkeypatch, caplog):
    monkeypatch.setattr(aot, "compiler_available", lambda: False)
    d, draws = _draws()
    fn = aot.aot_gradients(d, 1.0, aot_on)
    with caplog.at_level(logging.WARNING, logger="diffusion_lib"):
        grads, parts = fn(_params(d), *draws, True)
    want, want_parts = closed_form_gradients(d, 1.0)(_params(d), *draws, True)
    assert all(torch.equal(a, b) for a, b in zip(grads, want, strict=True))
    assert fn.runners == {True: None} and "needs a C++ compiler" in caplog.text
    assert not list(aot_on.glob("*.failed"))  # installing a compiler is enough to get it


def test_a_failed_build_is_remembered_and_not_retried(tmp_path, monkeypatch, caplog):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(torch.export, "export", broken)
    d, draws = _draws("random")
    with caplog.at_level(logging.WARNING, logger="diffusion_lib"):
        for _ in range(2):  # two jobs
            fn = aot.aot_gradients(d, 1.0, tmp_path)
            fn(_params(d), *draws, False)
            assert fn.runners == {False: None}
    failed = list(tmp_path.glob("*.failed"))
    assert len(calls) == 1 and len(failed) == 1 and "inductor exploded" in failed[0].read_text()
    assert caplog.text.count("could not be compiled ahead of time") == 2 and not list(tmp_path.glob("*.pt2"))


def test_a_package_that_disagrees_with_the_eager_step_is_not_used(tmp_path, monkeypatch, caplog):
    d, draws = _draws()
    eager = closed_form_gradients(d, 1.0)

    def wrong_runner(*args):
        grads, parts = eager(_params(d), *draws, True)
        return tuple(g * 1.01 for g in grads), parts

    monkeypatch.setattr(aot, "load_or_compile", lambda *a: wrong_runner)
    fn = aot.aot_gradients(d, 1.0, tmp_path)
    with caplog.at_level(logging.WARNING, logger="diffusion_lib"):
        first, _ = fn(_params(d), *draws, True)
        second, _ = fn(_params(d), *draws, True)
    want, _ = eager(_params(d), *draws, True)
    assert fn.runners == {True: None} and "disagrees with the eager step" in caplog.text
    assert all(torch.equal(a, b) and torch.equal(b, c) for a, b, c in zip(first, second, want))
    monkeypatch.setattr(aot, "load_or_compile", lambda *a: lambda *args: eager(_params(d), *draws, True))
    fn = aot.aot_gradients(d, 1.0, tmp_path)  # one that agrees is used
    fn(_params(d), *draws, True)
    assert fn.runners[True] is not None


def test_the_package_key_changes_with_everything_that_shapes_the_compiled_code():
    d, draws = _draws()
    weights = tuple(p.detach() for p in d.model.ebm.parameters())
    args = (weights, *draws[:4], draws[4])
    key = aot.package_key(d, 1.0, True, args)
    assert aot.package_key(d, 1.0, True, args) == key
    d2, draws2 = _draws(n=9)
    variants = [aot.package_key(d, 0.5, True, args), aot.package_key(d, 1.0, False, args),
                aot.package_key(d2, 1.0, True, (weights, *draws2[:4], draws2[4])),
                aot.package_key(d, 1.0, True, (tuple(w.double() for w in weights), *args[1:])),
                aot.package_key(build_diffusion(2, 10, {"mode": "adversarial", "opt_steps": 3}), 1.0, True, args)]
    assert len({key, *variants}) == 6


def test_train_aot_chooses_the_step_on_cpus_only(monkeypatch, caplog):
    monkeypatch.delenv(aot.SWITCH_ENV, raising=False)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [step_mode(TrainConfig(aot=v), cpu) for v in ("auto", True, False)] == ["aot", "aot", "eager"]
    with caplog.at_level(logging.WARNING):
        assert [step_mode(TrainConfig(aot=v, cuda_graphs=False), gpu) for v in ("auto", True)] == ["eager", "eager"]
    assert caplog.text.count("is for CPUs only") == 1  # auto says nothing
    assert step_mode(TrainConfig(aot=True, compile=True), cpu) == "compile"
    monkeypatch.setenv(aot.SWITCH_ENV, "off")
    assert step_mode(TrainConfig(aot=True), cpu) == "eager"


def test_a_pack_trains_eagerly_under_train_aot(monkeypatch):
    monkeypatch.delenv(aot.SWITCH_ENV, raising=False)
    configs = [dataclasses.replace(TrainConfig(rank=2, batch_size=4, measure_flops=False), seed=s) for s in (0, 1)]
    assert Engine.seeded(configs, {"mode": "none"}, progress=False).update.mode == "eager"
