"""``run`` with ``--map-dtype uint8``, ``--map-size`` and the overlay: read back with
``load_dataset`` (Parquet and WebDataset) against a float32 twin run, through the preview's reader,
the training loader and pseudo-masks, checked by ``validate``; the default run's overlay and
``--no-overlay``; a ``--map-size`` above the map grid refused."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Array3D, Image, List, Value, load_dataset
from PIL import Image as PILImage

from pipeline.validate import validate_output
from schemas.maps import decode_maps, row_maps
from tests.conftest import FAST_ARGS, copy_output
from transforms.attribution.overlay import FUNCTION_WORDS, overlay_size

PROMPTS = ["an armadillo eating watermelon", "a dog and a dog playing with a ball", "a red sofa next to a lamp"]
GRID, STORED = (8, 12), (4, 6)  # 64x96 px: the map grid, and --map-size 6 (longer side 6, aspect kept)
ARGS = ("--steps", "2", "--height", "64", "--width", "96", "--map-size", "6", "--per-timestep", "2",
        "--format", "parquet,webdataset", "--shard-size", "2")


@pytest.fixture(scope="module")
def quantised(built_output) -> Path:
    return built_output(PROMPTS, *ARGS, "--map-dtype", "uint8")


@pytest.fixture(scope="module")
def exact(built_output) -> Path:
    """The same run with float32 maps: what the uint8 codes stand for."""
    return built_output(PROMPTS, *ARGS, "--map-dtype", "float32")


def _rows(out: Path) -> list[dict]:
    return sorted(load_dataset(str(out), split="train").with_format("numpy"), key=lambda r: r["id"])


def _assert_within_half_a_step(decoded: np.ndarray, exact: np.ndarray) -> None:
    """``decoded`` uint8 maps within half a code step of each map's maximum of the float32 ``exact``."""
    peak = exact.max(axis=(-2, -1), keepdims=True)
    assert np.all(np.abs(decoded - exact) <= peak / 510 * (1 + 1e-5) + 1e-30)


def test_uint8_maps_decode_to_the_float32_maps_within_half_a_step(quantised, exact):
    features = load_dataset(str(quantised), split="train").features
    assert features["token_maps"] == Array3D(shape=(None, *STORED), dtype="uint8")
    assert features["token_map_scale"] == List(Value("float32"))
    assert features["timestep_maps"] == List(Array3D(shape=(None, *STORED), dtype="uint8"), length=2)
    for q, f in zip(_rows(quantised), _rows(exact), strict=True):
        assert q["id"] == f["id"] and f["token_maps"].dtype == np.float32  # (datasets' numpy format reads codes as int64)
        assert q["token_maps"].min() >= 0 and q["token_maps"].max() == 255
        assert f["token_maps"].shape == (len(f["tokens"]), *STORED)
        np.testing.assert_array_equal(q["token_map_scale"], f["token_maps"].max(axis=(1, 2)))  # the map's own maximum
        _assert_within_half_a_step(row_maps(q), f["token_maps"])
        _assert_within_half_a_step(row_maps(q, "timestep_maps"), f["timestep_maps"])
        assert not np.array_equal(row_maps(q), f["token_maps"])  # codes, not the values themselves
        np.testing.assert_array_equal(q["image"], f["image"])


def test_webdataset_holds_the_codes_their_scales_and_the_overlay(quantised):
    tars = sorted(str(p) for p in (quantised / "wds").glob("*.tar"))
    samples = list(load_dataset("webdataset", data_files={"train": tars}, split="train"))
    parquet = {r["id"]: r for r in _rows(quantised)}
    assert len(samples) == len(parquet) == 3
    for sample in samples:
        meta = sample["json"]
        row = parquet[meta["id"]]
        maps = decode_maps(np.asarray(sample["maps.npy"]), meta["token_map_scale"])
        np.testing.assert_array_equal(maps, row_maps(row))
        np.testing.assert_array_equal(decode_maps(np.asarray(sample["timestep_maps.npy"]), meta["timestep_map_scale"]),
                                      row_maps(row, "timestep_maps"))
        assert sample["overlay.jpg"].size == (96, 64) and meta["overlay_words"] == list(row["overlay_words"])
    with tarfile.open(tars[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".maps.npy"))
        assert np.load(io.BytesIO(tar.extractfile(member).read())).dtype == np.uint8


def test_overlay_shows_content_words_on_the_image(quantised):
    ds = load_dataset(str(quantised), split="train")
    assert isinstance(ds.features["overlay"], Image)
    for row in ds:
        overlay = row["overlay"]
        assert overlay.format == "JPEG" and overlay.size == overlay_size(row["image"].size) == (96, 64)
        words = {w["word"] for w in row["words"]}
        assert 1 <= len(row["overlay_words"]) <= 3 and set(row["overlay_words"]) <= words
        assert not set(row["overlay_words"]) & FUNCTION_WORDS and len(set(row["overlay_words"])) == len(row["overlay_words"])
        difference = np.abs(np.asarray(overlay, np.int16) - np.asarray(row["image"], np.int16))
        assert difference.mean() > 5  # tinted, not just the image re-encoded


def test_validate_passes_and_the_card_says_how_maps_are_stored(quantised, exact):
    assert validate_output(str(quantised)) == [] and validate_output(str(exact)) == []
    card = (quantised / "README.md").read_text(encoding="utf-8")
    assert "| stored maps | 6×4, resized bicubically from the 12×8 map grid (`--map-size 6`) |" in card
    assert "| map dtype | uint8 codes, one scale per map in `token_map_scale`: value = code × scale / 255" in card
    assert 'maps *= np.asarray(row["token_map_scale"], dtype=np.float32)[:, None, None] / 255' in card
    front = yaml.safe_load(re.match(r"^---\n(.*?)\n---\n", card, re.S).group(1))
    names = [f["name"] for f in front["dataset_info"]["features"]]
    assert {"overlay", "overlay_words", "token_map_scale", "timestep_map_scale"} <= set(names)


def test_validate_finds_codes_that_lost_their_scale(quantised, tmp_path):
    broken = copy_output(quantised, tmp_path / "out")
    path = sorted((broken / "data").glob("*.parquet"))[0]
    table = pq.read_table(path)
    scales = table.column("token_map_scale").to_pylist()
    scales[0] = scales[0][:-1]  # one token without its scale
    index = table.column_names.index("token_map_scale")
    field = table.schema.field(index)
    table = table.set_column(index, field, pa.array(scales, type=field.type))
    pq.write_table(table, path)
    problems = validate_output(str(broken))
    assert any(p.kind == "map_shape" and "scales for maps of shape" in p.message for p in problems), problems


def test_preview_reads_uint8_rows_as_their_values(quantised, exact, tmp_path):
    from pipeline.cli import main
    from pipeline.preview.rows import read_rows, webdataset_rows
    from transforms.shards.layout import OutputLayout

    for q, f in zip(read_rows(str(quantised), 3), read_rows(str(exact), 3), strict=True):
        assert q["token_maps"].dtype == np.float32 and "token_map_scale" not in q
        _assert_within_half_a_step(q["token_maps"], f["token_maps"])
    for q, f in zip(webdataset_rows(OutputLayout(str(quantised))), webdataset_rows(OutputLayout(str(exact))), strict=True):
        _assert_within_half_a_step(q["token_maps"], f["token_maps"])
    shown = copy_output(quantised, tmp_path / "out")
    assert main(["preview", str(shown), "--n", "3", "--grid", "2"]) == 0
    assert (shown / "preview" / "index.html").exists() and list((shown / "preview").rglob("w00.jpg"))
    assert validate_output(str(shown)) == []


def test_training_loader_and_pseudo_masks_use_the_values(quantised, exact):
    from transforms.attribution.pseudo_masks import pseudo_mask
    from transforms.training import segmentation_dataset

    def targets(out: Path, word: str) -> list[np.ndarray]:
        data = segmentation_dataset(load_dataset(str(out), split="train"), ("word", word))
        return [target.numpy() for _, target in data]

    for word in ("armadillo", "dog"):  # armadillo: several tokens with their own scales
        for q, f in zip(targets(quantised, word), targets(exact, word), strict=True):
            assert (q == f).mean() > 0.99 and f.any()
    rows = {r["prompt"]: r for r in load_dataset(str(quantised), split="train")}
    twins = {r["prompt"]: r for r in load_dataset(str(exact), split="train")}
    prompt = PROMPTS[1]
    assert (pseudo_mask(rows[prompt], ["dog", "ball"]) == pseudo_mask(twins[prompt], ["dog", "ball"])).mean() > 0.99


def test_class_maps_are_quantised_with_their_scales(built_output):
    out = built_output(["a dog sleeping on a couch", "two cats and a potted plant"], *FAST_ARGS, "--classes", "voc",
                       "--no-refine", "--map-dtype", "uint8")
    assert validate_output(str(out)) == []
    for row in load_dataset(str(out), split="train").with_format("numpy"):
        assert row["class_maps"].max() <= 255 and row["class_map_scale"].shape == (len(row["classes"]),)
        values = row_maps(row, "class_maps")
        np.testing.assert_allclose(values.max(axis=(1, 2)), row["class_map_scale"], rtol=1e-6)


def test_default_run_adds_the_overlay_and_no_overlay_writes_the_earlier_rows(built_output):
    with_overlay = built_output(PROMPTS[:2], *FAST_ARGS)
    without = built_output(PROMPTS[:2], *FAST_ARGS, "--no-overlay")
    assert validate_output(str(with_overlay)) == [] and validate_output(str(without)) == []
    new = pq.read_table(sorted((with_overlay / "data").glob("*.parquet"))[0])
    old = pq.read_table(sorted((without / "data").glob("*.parquet"))[0])
    assert new.column_names == [*old.column_names[:7], "overlay", "overlay_words", *old.column_names[7:]]
    assert new.drop_columns(["overlay", "overlay_words"]).to_pylist() == old.to_pylist()  # maps bit for bit
    assert old.schema.field("token_maps").type.storage_type.value_type.value_type.value_type == "halffloat"
    for cell in new.column("overlay").to_pylist():
        assert PILImage.open(io.BytesIO(cell["bytes"])).size == (64, 64) and len(cell["bytes"]) < 20_000


def test_map_size_above_the_grid_is_refused_before_any_work(run_cli, write_corpus, tmp_path):
    corpus = write_corpus(PROMPTS[:1])
    code, out, err = run_cli("run", "--prompts", corpus, "--output", tmp_path / "out", *FAST_ARGS, "--map-size", "9")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--map-size 9 is larger than this model's map grid 8x8" in err
    assert not (tmp_path / "out").exists()
