"""The training loop as a library function: run directory, metrics, determinism, budgets, warm-up,
reuse of finished runs, non-finite losses and the one-step primitive."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from resnetlab.engine import TrainConfig, TrainStep, train
from resnetlab.engine import budget as budget_mod
from resnetlab.engine.checkpoint import CHECKPOINT_NAME
from resnetlab.engine.config import DEFAULT_CHECKPOINT_MINUTES
from resnetlab.engine.trainer import DivergedError
from resnetlab.errors import UserError
from resnetlab.models import build_model
from resnetlab.recipes import get_recipe
from tiny import LEARNABLE_DATA, LEARNABLE_NET, TINY_NET, synthetic_spec, tiny_config


def learnable_config(out: Path, **kw) -> TrainConfig:
    """A net and images big enough to learn the synthetic classes in a few dozen steps."""
    return tiny_config(out, model_overrides=LEARNABLE_NET, dataset=LEARNABLE_DATA, **kw)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_run_directory_follows_the_contract(tmp_path):
    result = train(tiny_config(tmp_path / "run", iterations=12, log_every=3, eval_every=6, val_split=64))
    out = result.out
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "metrics.jsonl", "metrics.csv", CHECKPOINT_NAME}
    stored = TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    assert stored.iterations == 12 and stored.recipe.batch_size == 32 and stored.eval_every == 6
    # The intervals left to choose are recorded as chosen: the subset is the whole 64-image split.
    assert (stored.eval_limit, stored.checkpoint_every, stored.checkpoint_minutes) == (
        64, None, DEFAULT_CHECKPOINT_MINUTES
    )  # fmt: skip

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    assert [r["iteration"] for r in train_rows] == [3, 6, 9, 12]
    assert set(train_rows[0]) == {
        "kind", "iteration", "epoch", "lr", "train_loss", "train_error", "images_per_s", "time_s"
    }  # fmt: skip
    assert train_rows[-1]["epoch"] == pytest.approx(12 * 32 / 192)  # 192 = 256 - 64 held out
    assert all(0 < r["eval_s"] < r["time_s"] for r in eval_rows)
    assert all(0 <= r["train_error"] <= 1 and r["images_per_s"] > 0 for r in train_rows)
    # lr divided by 10 at 32k/64k and 48k/64k of 12 iterations: steps 6 and 9 (0-based) onwards.
    assert [r["lr"] for r in train_rows] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    # An intermediate evaluation on val at 6, then the final ones on val and test.
    assert [(r["iteration"], r["split"], r["images"]) for r in eval_rows] == [
        (6, "val", 64),
        (12, "val", 64),
        (12, "test", 64),
    ]
    with open(out / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) and csv_rows[-1]["split"] == "test"
    assert float(csv_rows[0]["train_loss"]) == pytest.approx(train_rows[0]["train_loss"])

    ckpt = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    contract = "model model_name model_config optimizer scheduler iteration epoch step_in_epoch rng config"
    assert set(contract.split()) | {"classes", "normalizer", "image_size", "metrics"} <= set(ckpt)
    assert ckpt["iteration"] == 12 and ckpt["image_size"] == [8, 8] and len(ckpt["classes"]) == 10
    assert not any(k.startswith("module.") for k in ckpt["model"])

    summary = json.loads((out / "summary.json").read_text())
    assert summary == result.summary
    assert summary["iterations"] == 12 and summary["params"] == sum(
        p.numel() for p in result.model.parameters()
    )
    for key in ("torch_version", "device", "git_hash", "command", "resnetlab_version", "wall_time_s"):
        assert key in summary
    final = summary["final"]
    assert final["val_top1_error"] == eval_rows[1]["top1_error"]
    assert final["test_top1_error"] == eval_rows[2]["top1_error"] and final["split"] == "val"
    assert final["train_loss"] == train_rows[-1]["train_loss"]


def test_loss_decreases_on_learnable_data(tmp_path):
    result = train(learnable_config(tmp_path, iterations=60, log_every=10, eval_every=60))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows if r["kind"] == "train"]
    assert losses[-1] < 0.8 * losses[0]
    assert result.summary["final"]["top1_error"] < 0.8  # chance is 0.9


def test_deterministic_runs_are_bitwise_identical(tmp_path):
    a = weights(train(tiny_config(tmp_path / "a")).model)
    b = weights(train(tiny_config(tmp_path / "b")).model)
    c = weights(train(tiny_config(tmp_path / "c", seed=1)).model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_no_host_sync_per_step(tmp_path, monkeypatch):
    """Reads of device values happen per log interval, never per step."""
    counts = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counts["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    reads = []
    for iterations in (10, 40):
        counts["n"] = 0
        train(tiny_config(tmp_path / str(iterations), iterations=iterations, log_every=10, eval_every=1000))
        reads.append(counts["n"])
    # 30 more iterations cost 3 more log intervals, not 30 more reads.
    assert reads[1] - reads[0] <= 3 * 3


def test_finished_run_is_reused_not_retrained(tmp_path):
    config = tiny_config(tmp_path)
    first = train(config)
    mtime = (tmp_path / "metrics.jsonl").stat().st_mtime_ns
    again = train(tiny_config(tmp_path))
    assert again.summary == first.summary
    assert (tmp_path / "metrics.jsonl").stat().st_mtime_ns == mtime
    assert all(
        torch.equal(a, b)
        for a, b in zip(weights(first.model).values(), weights(again.model).values(), strict=True)
    )


def test_finished_run_is_reused_wherever_its_data_is_found(tmp_path):
    # data_dir is where the dataset lives, not what it is: the same run found through another
    # folder (or the environment variable instead of the flag) is still this run.
    first = train(tiny_config(tmp_path / "run", data_dir=str(tmp_path / "here")))
    again = train(tiny_config(tmp_path / "run", data_dir=None))
    assert again.summary == first.summary


def test_finished_run_with_other_config_is_refused_unless_overwrite(tmp_path):
    train(tiny_config(tmp_path))
    with pytest.raises(UserError, match="differs in recipe"):
        train(tiny_config(tmp_path, recipe=get_recipe("cifar-paper", batch_size=32, lr=0.05)))
    redone = train(
        tiny_config(tmp_path, recipe=get_recipe("cifar-paper", batch_size=32, lr=0.05), overwrite=True)
    )
    assert (
        redone.summary["final"]
        and yaml.safe_load((tmp_path / "config.yaml").read_text())["recipe"]["lr"] == 0.05
    )


def test_unfinished_run_is_refused_without_resume(tmp_path):
    train(tiny_config(tmp_path))
    (tmp_path / "summary.json").unlink()
    with pytest.raises(UserError, match="--resume"):
        train(tiny_config(tmp_path))


def test_warmup_switches_back_to_the_full_rate(tmp_path):
    """The ResNet-110 rule on a small net: lr 0.01 until the training error < 80%, then 0.1."""
    recipe = get_recipe("cifar-paper", batch_size=32, warmup_lr=0.01, warmup_error=0.8)
    result = train(learnable_config(tmp_path, recipe=recipe, iterations=120, log_every=5, eval_every=1000))
    switched = result.summary["warmup_ended_at"]
    assert switched is not None and switched % 10 == 0 and 0 < switched < 60
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["iteration"]: r["lr"] for r in rows if r["kind"] == "train"}
    assert all(lr == 0.01 for it, lr in lrs.items() if it <= switched)
    assert all(lr == 0.1 for it, lr in lrs.items() if switched < it <= 60)  # back to 0.1 until 32k/64k
    errors = {r["iteration"]: r["train_error"] for r in rows if r["kind"] == "train"}
    assert errors[switched] < 0.9  # the window that ended the warm-up was learning


def test_eval_limit_applies_to_intermediate_evaluations_only(tmp_path):
    train(tiny_config(tmp_path, iterations=12, eval_every=4, eval_limit=20, dataset=synthetic_spec(test=256)))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    images = [(r["iteration"], r["images"]) for r in rows if r["kind"] == "eval"]
    # Exactly 20 images, though evaluation batches hold 64 (twice the training batch).
    assert images == [(4, 20), (8, 20), (12, 256)]


def test_activation_checkpointing_gives_the_same_training(tmp_path):
    plain = train(tiny_config(tmp_path / "a"))
    recomputed = train(tiny_config(tmp_path / "b", checkpoint_activations=True))
    assert recomputed.model.checkpoint_activations
    a, b = weights(plain.model), weights(recomputed.model)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_budget_fixes_the_iteration_count_and_equals_that_many_iterations(tmp_path, monkeypatch):
    # The speed is measured for real (steps trained, then undone); the count planned from it is fixed
    # here, so the outcome cannot depend on how busy the machine is (plan_iterations has its own test).
    speeds = []
    monkeypatch.setattr(
        budget_mod, "plan_iterations", lambda budget_s, spent_s, speed, *a, **kw: speeds.append(speed) or 12
    )
    timed = train(tiny_config(tmp_path / "budget", iterations=None, budget_minutes=0.05, log_every=2))
    n = timed.summary["iterations"]
    assert n == 12 and yaml.safe_load((tmp_path / "budget" / "config.yaml").read_text())["iterations"] == n
    assert len(speeds) == 1 and timed.summary["measured_step_s"] == speeds[0].step_s > 0
    fixed = train(tiny_config(tmp_path / "fixed", iterations=n, log_every=2))
    # Measuring the speed trained a few steps, then restored everything: same weights as --iterations n.
    a, b = weights(timed.model), weights(fixed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe = get_recipe("cifar-paper", batch_size=32, lr=1e4)
    with pytest.raises(DivergedError, match=r"iteration \d+") as info:
        train(tiny_config(tmp_path, recipe=recipe, iterations=200, checkpoint_every=1, log_every=1))
    message = str(info.value)
    assert "\n" not in message and "checkpoint" in message
    if "no checkpoint had been written" not in message:
        ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
        assert f"iteration {ckpt['iteration']})" in message
    assert not (tmp_path / "summary.json").exists()


def test_train_step_is_one_sgd_step():
    torch.manual_seed(0)
    model = build_model("resnet20", **TINY_NET)
    reference = build_model("resnet20", **TINY_NET)
    reference.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model, opt, label_smoothing=0.1)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    loss, correct = step.step(x, y)
    assert loss.dim() == 0 and correct.dim() == 0 and correct.dtype == torch.int64
    logits = reference(x)
    expected = F.cross_entropy(logits, y, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert correct.item() == (logits.argmax(1) == y).sum().item()
    expected.backward()
    with torch.no_grad():
        for (name, p), q in zip(reference.named_parameters(), model.parameters(), strict=True):
            assert torch.allclose(p - 0.1 * p.grad, q, atol=1e-6), name


@pytest.mark.parametrize("options", [{"amp": "bf16"}, {"channels_last": True}])
def test_train_step_options_run_on_cpu(options):
    model = build_model("resnet20", **TINY_NET)
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), **options)
    loss, _ = step.step(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_train_step_fixes_the_memory_format_of_batches():
    """Gathered crops arrive channels-last; torch 2.14's CPU backward of a 1x1 stride-2 conv with
    few channels corrupts the heap on such input, so the step makes batches plain NCHW."""
    model = build_model("resnet20", **TINY_NET, shortcut="B")
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(8, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert step.prepare(x).is_contiguous()
    loss, _ = step.step(x, torch.randint(0, 10, (8,)))
    assert torch.isfinite(loss)
    wanted = TrainStep(model, step.optimizer, channels_last=True).prepare(torch.randn(8, 3, 8, 8))
    assert wanted.is_contiguous(memory_format=torch.channels_last)


def test_tensorboard_events_when_installed(tmp_path, monkeypatch):
    """With tensorboard importable every metrics row also goes to a SummaryWriter under the run."""
    import types

    scalars = []

    class FakeWriter:
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            scalars.append(("closed", self.log_dir))

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter)
    )
    train(tiny_config(tmp_path, iterations=6, log_every=3))
    assert ("train/train_loss", 3) in scalars and ("test/top1_error", 6) in scalars
    assert scalars[-1] == ("closed", str(tmp_path / "tensorboard"))


def test_progress_bar_on_a_terminal_lines_otherwise(tmp_path, monkeypatch, capsys):
    train(tiny_config(tmp_path / "lines", iterations=6, log_every=3, quiet=False))
    lines = capsys.readouterr().out
    assert "iter 3/6" in lines and "iter 6/6" in lines
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    train(tiny_config(tmp_path / "bar", iterations=6, log_every=3, quiet=False))
    bar = capsys.readouterr().out
    assert "6/6" in bar and "it/s" in bar and "iter 3/6" not in bar
