"""Pretrained weights: the registry's cards, downloads from a server on 127.0.0.1 (verified, converted
once, cached), in-package weights checked against their SHA-256 and card, and every reference form.

No real weights are used: a test entry points at a file the test writes (their layout, random).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from akamaster_layout import random_their_net, save_their_way
from cli_runner import run_cli
from http_server import serving, unused_port
from resnetlab import create_model
from resnetlab.download import file_digest
from resnetlab.engine.state import model_from_checkpoint
from resnetlab.errors import UserError
from resnetlab.models import model_info
from resnetlab.weights import (
    WEIGHTS,
    card_record,
    get_weights,
    list_weights,
    load_weights,
    loading,
    output_dir,
    registry,
)
from resnetlab.weights.card import CIFAR10, CIFAR10_JPEG, OURS
from resnetlab.weights.convert import CIFAR10_CLASSES, CONVERTERS
from resnetlab.weights.export import export_safetensors

IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def test_every_card_is_complete_and_consistent():
    seen = set()
    for card in WEIGHTS:
        info = model_info(card.model)
        assert (card.model, card.tag) not in seen
        seen.add((card.model, card.tag))
        assert re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{64}", card.sha256), card.ref
        assert len(card.classes) == info.spec["num_classes"] and len(card.image_size) == 2
        assert card.normalization in ("per-pixel", "per-channel")
        assert (card.mean is None) == (card.normalization == "per-pixel") == (card.std is None)
        assert card.results and all(0 < r.top1 <= 100 and r.data for r in card.results)
        assert card.result_on(CIFAR10), f"{card.ref} has no result on the official test set"
        assert card.trained_on and card.paper_recipe in (True, False)
        assert card.convert_from is None or card.convert_from in CONVERTERS
        if card.url is None:  # in-package: the file is there, its SHA-256 and config JSON match the card
            assert (registry.PACKAGE_DIR / card.file).is_file() and len(card.sha256) == 64
            assert load_weights(card.ref)["model_name"] == card.model
    akamaster = {c.model: c for c in WEIGHTS if c.tag == "akamaster"}
    assert sorted(akamaster, key=lambda n: int(n[6:])) == [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)]
    assert all(len(akamaster[f"resnet{d}"].sha256) == 64 for d in (20, 32, 44, 56))
    for card in akamaster.values():  # their file names carry the first 8 digits of the SHA-256
        assert card.file == f"{card.model}-{card.sha256[:8]}.th" and card.url.endswith(card.file)


def test_models_pretrained_lists_every_card(capsys):
    code, out, err = run_cli(["models", "--pretrained"])
    assert code == 0, err
    for card in WEIGHTS:
        assert card.ref in out
    assert "BSD-2-Clause" in out and "top-1 93.39%" in out and "per-channel mean [0.485, 0.456, 0.406]" in out
    code, out, _ = run_cli(["models", "--pretrained", "resnet1*", "--json"])
    cards = json.loads(out)
    assert code == 0 and [c["ref"] for c in cards] == [
        "pretrained:resnet110:akamaster",
        "pretrained:resnet1202:akamaster",
    ]
    assert cards[0]["default"] is True and cards[0]["license"] == "BSD-2-Clause"
    assert cards[0]["results"][0]["test_set"].startswith("CIFAR-10 test set")
    assert cards[0]["official_test_top1"] == 93.68 and cards[0]["paper_top1"] == 93.57  # Table 6: 6.43%
    assert cards[0]["paper_source"] == "Table 6" and cards[0]["trained_on"] == "cifar10"
    code, _, err = run_cli(["models", "--pretrained", "vgg*"])
    assert code == 2 and "no pretrained weights match 'vgg*'" in err


def test_models_pretrained_puts_the_official_top1_beside_the_papers():
    code, out, err = run_cli(["models", "--pretrained", "*20:*"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["weights", "default"] and "official test top-1" in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    # akamaster's are no longer the default (the column is blank): paper 8.75% error
    assert rows["pretrained:resnet20:akamaster"][1:3] == ["91.73%", "91.25%"]
    assert "reproduced by resnetlab eval" in lines[1]
    for name, paper in (("plain20", "-"), ("resnet20", "91.25%")):
        ours = get_weights(name)  # the in-package weights trained on the official data
        top1 = ours.result_on(CIFAR10).top1
        assert (ours.tag, ours.publisher, ours.trained_on) == ("cifar10", OURS, CIFAR10)
        assert rows[f"pretrained:{name}:cifar10"][1:4] == ["yes", f"{top1:.2f}%", paper]
    assert "100 minus the paper's test error" in lines[4]
    code, out, _ = run_cli(["models", "--pretrained", "plain20", "--json"])
    (card,) = json.loads(out)
    assert card["official_test_top1"] == get_weights("plain20").result_on(CIFAR10).top1
    assert card["paper_top1"] is None


# ---- a publisher's file downloaded from 127.0.0.1 -----------------------------------------------


@pytest.fixture
def published(tmp_path, monkeypatch):
    """A random net in akamaster's layout served on 127.0.0.1 as the registry's resnet20:akamaster."""
    net = random_their_net(20, seed=3)
    blob_path = save_their_way(net, tmp_path / "theirs.th")
    blob = blob_path.read_bytes()
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))
    with serving() as (httpd, base):
        httpd.routes["/pretrained_models/resnet20-test.th"] = (blob, "ok")
        card = dataclasses.replace(
            get_weights("resnet20", "akamaster"),
            file="resnet20-test.th",
            sha256=file_digest(blob_path),
            url=f"{base}/pretrained_models/resnet20-test.th",
        )
        others = tuple(c for c in WEIGHTS if c.model != "resnet20")
        monkeypatch.setattr(registry, "WEIGHTS", (card, *others))
        yield net, httpd, card


def test_download_verify_convert_once_then_cached(published, tmp_path):
    net, httpd, card = published
    x = torch.randn(3, 3, 32, 32)
    model = create_model("resnet20", pretrained=True)
    assert (_logits(model, x) - _logits(net, x)).abs().max() < 1e-5
    assert not model.training and model.pretrained_cfg["origin"] == "pretrained:resnet20:akamaster"
    assert model.pretrained_cfg["normalizer"]["mode"] == "per-channel"
    assert httpd.requests == ["/pretrained_models/resnet20-test.th"]
    root = tmp_path / "cache" / "weights"
    assert sorted(p.name for p in (root / "downloads").iterdir()) == ["resnet20-test.th"]
    converted = root / "converted" / "resnet20-akamaster"
    assert sorted(p.name for p in converted.iterdir()) == ["resnet20.json", "resnet20.safetensors"]
    # Every other way of naming these weights comes from the cache: no second request.
    for ref in ("pretrained:resnet20", "pretrained:resnet20:akamaster", "akamaster:resnet20"):
        ckpt = load_weights(ref)
        assert ckpt["origin"] == "pretrained:resnet20:akamaster" and ckpt["classes"] == list(CIFAR10_CLASSES)
        assert ckpt["provenance"]["source"] == card.url
        assert (_logits(model_from_checkpoint(ckpt), x) - _logits(net, x)).abs().max() < 1e-5
    assert torch.equal(_logits(create_model("resnet20", pretrained="akamaster"), x), _logits(model, x))
    assert len(httpd.requests) == 1


def _tiny_cifar_folder(root):
    """One 32x32 PNG per class in train/ and test/, CIFAR-10's class names."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in CIFAR10_CLASSES:
            (root / split / name).mkdir(parents=True)
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name / "0.png")
    return root


def test_cli_commands_take_pretrained_refs(published, tmp_path, monkeypatch):
    net, _, _ = published
    monkeypatch.setenv("RESNETLAB_DATA_DIR", str(tmp_path / "data-cache"))
    monkeypatch.chdir(tmp_path)
    folder = _tiny_cifar_folder(tmp_path / "cifar")
    code, out, err = run_cli(["eval", "pretrained:resnet20:akamaster", "--dataset", f"folder:{folder}"])
    assert code == 0, err
    record = json.loads((tmp_path / "runs" / "pretrained-resnet20-akamaster" / "eval-test.json").read_text())
    assert record["checkpoint"] == "pretrained:resnet20:akamaster" and record["images"] == 10
    # The weights' own preprocessing: ImageNet mean/std per channel on x / 255.
    pixels = [np.array(Image.open(folder / "test" / c / "0.png")) for c in CIFAR10_CLASSES]
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255
    x = (images - IMAGENET_MEAN.view(3, 1, 1)) / IMAGENET_STD.view(3, 1, 1)
    correct = (_logits(net, x).argmax(1) == torch.arange(10)).float().mean().item()
    assert record["top1_error"] == pytest.approx(1 - correct)
    code, out, err = run_cli(
        ["predict", "akamaster:resnet20", str(folder / "test" / "cat" / "0.png"), "--json"]
    )
    assert code == 0, err
    assert json.loads(out)["top"][0]["class"] in CIFAR10_CLASSES
    code, out, err = run_cli(["export", "pretrained:resnet20"])
    assert code == 0, err
    exported = tmp_path / "runs" / "pretrained-resnet20-akamaster" / "resnet20.safetensors"
    assert (
        exported.is_file() and json.loads(exported.with_suffix(".json").read_text())["provenance"]["license"]
    )


@pytest.mark.parametrize("mode", ["wrong-checksum", "cut"])
def test_bad_downloads_leave_nothing(published, tmp_path, monkeypatch, mode):
    _, httpd, card = published
    if mode == "wrong-checksum":
        monkeypatch.setattr(registry, "WEIGHTS", (dataclasses.replace(card, sha256="0" * 64),))
    else:
        httpd.routes["/pretrained_models/resnet20-test.th"] = (
            httpd.routes["/pretrained_models/resnet20-test.th"][0],
            "cut",
        )
    with pytest.raises(UserError) as err:
        load_weights("akamaster:resnet20")
    message = str(err.value)
    assert "\n" not in message and card.url in message and "nothing was saved" in message
    assert ("SHA-256" in message) == (mode == "wrong-checksum")
    downloads = tmp_path / "cache" / "weights" / "downloads"
    assert list(downloads.iterdir()) == [] and not (tmp_path / "cache" / "weights" / "converted").exists()


def test_offline_says_which_url_to_fetch_and_where_to_put_it(published, tmp_path, monkeypatch):
    net, _, card = published
    offline = dataclasses.replace(card, url=f"http://127.0.0.1:{unused_port()}/resnet20-test.th")
    monkeypatch.setattr(registry, "WEIGHTS", (offline,))
    dest = tmp_path / "cache" / "weights" / "downloads" / "resnet20-test.th"
    code, _, err = run_cli(["eval", "pretrained:resnet20"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"could not reach {offline.url}" in err and f"put it at {dest}" in err
    # Doing what the message says works without the network.
    dest.write_bytes((tmp_path / "theirs.th").read_bytes())
    x = torch.randn(2, 3, 32, 32)
    assert (_logits(create_model("resnet20", pretrained=True), x) - _logits(net, x)).abs().max() < 1e-5
    # A damaged file there is named, not used.
    dest.write_bytes(b"not the published file")
    for converted in (tmp_path / "cache" / "weights" / "converted" / "resnet20-akamaster").iterdir():
        converted.unlink()
    with pytest.raises(UserError, match=f"{re.escape(str(dest))} has SHA-256 .* delete it"):
        load_weights("pretrained:resnet20")


# ---- in-package weights --------------------------------------------------------------------------


# The registry without our real official-data resnet20, so that a test's own card decides the default.
WITHOUT_OURS_20 = tuple(c for c in WEIGHTS if c.ref != "pretrained:resnet20:cifar10")


@pytest.fixture
def in_package(tmp_path, monkeypatch):
    """A registry entry for weights 'shipped' in a package directory the test writes."""
    torch.manual_seed(0)
    model = create_model("resnet20")
    ckpt = {
        "model": model.state_dict(),
        "model_name": "resnet20",
        "model_config": model.config,
        "classes": list(CIFAR10_CLASSES),
        "image_size": [32, 32],
        "normalizer": {"mode": "per-pixel", "mean": torch.rand(3, 32, 32), "std": None},
        "config": {"dataset": "folder:cifar10-jpeg"},
        "iteration": 7,
    }
    package = tmp_path / "pretrained"
    path, _ = export_safetensors(ckpt, package / "resnet20-ours.safetensors")
    card = dataclasses.replace(
        get_weights("resnet20", "akamaster"),
        tag="ours",
        publisher="resnetlab",
        license="MIT",
        normalization="per-pixel",
        mean=None,
        std=None,
        file=path.name,
        sha256=file_digest(path),
        url=None,
        convert_from=None,
    )
    monkeypatch.setattr(registry, "PACKAGE_DIR", package)
    monkeypatch.setattr(registry, "WEIGHTS", (*WITHOUT_OURS_20, card))
    return model.eval(), path


def test_in_package_weights_are_verified_on_every_load(in_package):
    model, path = in_package
    x = torch.randn(2, 3, 32, 32)
    loaded = create_model("resnet20", pretrained="ours")
    assert torch.equal(_logits(loaded, x), _logits(model, x))
    ckpt = load_weights("pretrained:resnet20:ours")
    assert ckpt["normalizer"]["mean"].shape == (3, 32, 32) and ckpt["iteration"] == 7
    assert get_weights("resnet20").tag == "akamaster"  # not the paper's recipe: akamaster's stay the default
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(
        UserError, match=r"has SHA-256 .*, not .* as the card of pretrained:resnet20:ours says"
    ):
        create_model("resnet20", pretrained="ours")


def test_in_package_config_must_agree_with_the_card(in_package):
    _, path = in_package
    config = path.with_suffix(".json")
    meta = json.loads(config.read_text())
    meta["classes"][0] = "aeroplane"
    config.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="disagrees with the card of pretrained:resnet20:ours on classes"):
        load_weights("pretrained:resnet20:ours")


# ---- references that cannot work -------------------------------------------------------------


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("converted")
    src = save_their_way(random_their_net(20), root / "theirs.th")
    assert (
        run_cli(
            ["convert", str(src), "--from", "akamaster", "--model", "resnet20", "--out", str(root / "r20")]
        )[0]
        == 0
    )
    return root / "r20"


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda d, t: create_model("plain32", pretrained=True), "no pretrained weights for plain32"),
        (
            lambda d, t: create_model("resnet20", pretrained="nosuchtag"),
            "no resnet20 weights tagged 'nosuchtag'",
        ),
        (lambda d, t: create_model("resnet20", pretrained=True, shortcut="B"), "fix the architecture"),
        (lambda d, t: create_model("resnet56", pretrained=d), "holds weights for resnet20, not resnet56"),
        (lambda d, t: load_weights("pretrained:resnt20"), "unknown model 'resnt20'"),
        (lambda d, t: load_weights(t / "missing"), "does not exist (give a checkpoint file"),
        (lambda d, t: load_weights(t), "has neither a checkpoint.pt nor an exported"),
    ],
)
def test_bad_references_are_one_line_user_errors(converted_dir, tmp_path, call, fragment):
    with pytest.raises(UserError) as err:
        call(converted_dir, tmp_path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_directory_with_several_exports_asks_for_the_file(converted_dir, tmp_path):
    for name in ("resnet20.safetensors", "resnet20.json"):
        (tmp_path / name).write_bytes((converted_dir / name).read_bytes())
        (tmp_path / name.replace("resnet20", "other")).write_bytes((converted_dir / name).read_bytes())
    with pytest.raises(UserError, match="several exported nets"):
        load_weights(tmp_path)
    assert load_weights(tmp_path / "other.safetensors")["model_name"] == "resnet20"
    assert output_dir(load_weights(tmp_path / "other.safetensors")) == tmp_path


def test_list_weights_filters_on_name_and_tag():
    assert [c.ref for c in list_weights("resnet5")] == [
        "pretrained:resnet56:akamaster",
        "pretrained:resnet56:cifar10-jpeg",
    ]
    assert len(list_weights("*:akamaster")) == 6 and list_weights("nothing") == []
    assert [c.model for c in list_weights("*:cifar10-jpeg")] == ["resnet56", "plain56"]
    assert [c.model for c in list_weights("*:cifar10")] == ["plain20", "resnet20"]  # registered from runs


@pytest.mark.parametrize("card", [c for c in WEIGHTS if c.url is None], ids=lambda c: c.ref)
def test_the_weights_we_ship_load_offline_match_their_cards_and_classify(card):
    ckpt = load_weights(card.ref)  # checks the file's SHA-256 and its config against the card
    assert ckpt["model_name"] == card.model and list(ckpt["classes"]) == list(card.classes)
    model = model_from_checkpoint(ckpt).eval()
    assert not any(t.is_floating_point() and t.dtype != torch.float32 for t in model.state_dict().values())
    with torch.no_grad():
        logits = model(torch.randn(2, 3, *card.image_size))
    assert logits.shape == (2, len(card.classes)) and torch.isfinite(logits).all()


def test_default_weights_are_the_official_data_ones_where_they_exist_else_ours():
    assert get_weights("resnet20").tag == get_weights("plain20").tag == "cifar10"
    assert get_weights("resnet56").tag == "akamaster" and get_weights("plain56").tag == "cifar10-jpeg"
    model = create_model("resnet20", pretrained=True)
    assert model.pretrained_cfg["origin"] == "pretrained:resnet20:cifar10" and not model.training
    model = create_model("plain20", pretrained=True)
    assert model.pretrained_cfg["origin"] == "pretrained:plain20:cifar10" and not model.training


def test_ours_with_the_papers_recipe_on_the_official_data_become_the_default(in_package, monkeypatch):
    """The rule is the cards' data: a card of ours trained with the paper's recipe on the official
    data is the default the moment it is registered, and works with no network."""
    model, _ = in_package
    ours = get_weights("resnet20", "ours")
    monkeypatch.setattr(loading, "download_file", lambda *a, **k: pytest.fail("tried to download"))
    for card in (  # not the paper's recipe, or not the official data: akamaster's stay the default
        dataclasses.replace(ours, trained_on=CIFAR10, paper_recipe=False),
        dataclasses.replace(ours, trained_on=CIFAR10_JPEG, paper_recipe=True),
    ):
        monkeypatch.setattr(registry, "WEIGHTS", (*WITHOUT_OURS_20, card))
        assert get_weights("resnet20").tag == "akamaster" and not card_record(card)["default"]
    official = dataclasses.replace(ours, publisher=OURS, trained_on=CIFAR10, paper_recipe=True)
    monkeypatch.setattr(registry, "WEIGHTS", (*WITHOUT_OURS_20, official))
    assert get_weights("resnet20") == official and card_record(official)["default"]
    x = torch.randn(2, 3, 32, 32)
    for loaded in (
        create_model("resnet20", pretrained=True),
        model_from_checkpoint(load_weights("pretrained:resnet20")),
    ):
        assert torch.equal(_logits(loaded, x), _logits(model, x))
    assert create_model("resnet20", pretrained=True).pretrained_cfg["origin"] == "pretrained:resnet20:ours"
    # The others stay reachable by their tags; nets without such weights keep their defaults.
    assert get_weights("resnet20", "akamaster").url and get_weights("resnet56").tag == "akamaster"
    monkeypatch.setattr(
        registry, "PACKAGE_DIR", Path(registry.__file__).parents[1] / "pretrained"
    )  # the real one
    jpeg = create_model("resnet56", pretrained="cifar10-jpeg")
    assert jpeg.pretrained_cfg["origin"] == "pretrained:resnet56:cifar10-jpeg"
    assert get_weights("plain56").tag == "cifar10-jpeg"
    code, out, _ = run_cli(["models", "--pretrained", "resnet20", "--json"])
    assert code == 0 and [c["ref"] for c in json.loads(out) if c["default"]] == ["pretrained:resnet20:ours"]
