"""``daam-datasets run --concept-maps`` on tiny-flux and tiny-sd3: the ConceptAttention columns in
Parquet and WebDataset, read back by ``load_dataset`` and ``webdataset``, checked by ``validate``
(which also catches a damaged concept map), and the flags refused in one line where they cannot
apply."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from schemas.maps import row_maps

PROMPTS = ["a skyscraper near a red bicycle", "two cats and a dog"]


@pytest.fixture(scope="module", params=["tiny-flux", "tiny-sd3"])
def output(request, tmp_path_factory, one_torch_thread):
    from pipeline.cli import main

    root = tmp_path_factory.mktemp(f"concepts-{request.param}")
    corpus = root / "prompts.txt"
    corpus.write_text("".join(p + "\n" for p in PROMPTS), encoding="utf-8")
    args = ["run", "--prompts", str(corpus), "--output", str(root / "out"), "--model", request.param,
            "--steps", "2", "--height", "64", "--width", "64", "--concept-maps", "--map-dtype", "uint8",
            "--format", "parquet,webdataset", "--runner", "FnApiRunner"]
    assert main(args) == 0
    return root / "out"


def test_rows_carry_concepts_and_their_maps(output):
    rows = {r["prompt"]: r for r in load_dataset(str(output), split="train")}
    assert rows[PROMPTS[0]]["concepts"] == ["skyscraper", "red", "bicycle"]
    assert rows[PROMPTS[1]]["concepts"] == ["cats", "dog"]
    for row in rows.values():
        maps = row_maps(row, "concept_maps")
        assert maps.shape == (len(row["concepts"]), *row_maps(row).shape[1:])
        assert np.isfinite(maps).all() and (maps >= 0).all()
        np.testing.assert_allclose(maps.sum(0), 1.0, atol=0.02)  # softmax over concepts, uint8 steps
    import webdataset as wds

    [tar] = sorted(output.rglob("*.tar"))
    samples = list(wds.WebDataset(str(tar), shardshuffle=False))
    assert len(samples) == 2
    for sample in samples:
        meta = json.loads(sample["json"])
        codes = np.load(io.BytesIO(sample["concept_maps.npy"]))
        assert codes.shape[0] == len(meta["concepts"]) and len(meta["concept_map_scale"]) == len(meta["concepts"])
    assert "ConceptAttention" in (output / "README.md").read_text()


def test_validate_passes_and_catches_a_damaged_concept_map(output, run_cli, tmp_path):
    import shutil

    code, out, err = run_cli("validate", str(output))
    assert code == 0, out + err
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    [parquet] = sorted(copy.rglob("train-*.parquet"))
    table = pq.read_table(parquet)
    concepts = table.column("concepts").to_pylist()
    concepts[0] = concepts[0][:-1]  # one name fewer than maps
    index = table.schema.get_field_index("concepts")
    table = table.set_column(index, table.schema.field(index), [concepts])
    pq.write_table(table, parquet)
    code, out, err = run_cli("validate", str(copy))
    assert code != 0 and "concept_maps of shape" in out + err


@pytest.mark.parametrize("args, message", [
    (["--model", "tiny", "--concept-maps"], "need a joint-attention transformer"),
    (["--model", "tiny", "--classes", "voc", "--label-maps", "concept"], "need a joint-attention transformer"),
    (["--model", "tiny-flux", "--label-maps", "concept"], "--label-maps needs --classes"),
    (["--model", "tiny-flux", "--concepts", "sky"], "--concepts needs --concept-maps"),
    (["--model", "tiny-flux", "--concept-space", "cross-attention"], "--concept-space needs --concept-maps"),
    (["--model", "tiny-flux", "--concept-maps", "--concept-space", "query"], "argument --concept-space: invalid choice"),
    (["--model", "tiny-flux", "--concept-maps", "--concept-blocks", "5:9"], "select none of the model's 2"),
    (["--model", "tiny-flux", "--concept-maps", "--concept-steps", "3:"], "--concept-steps 3: is outside --steps 2"),
])
def test_flags_refused_in_one_line(run_cli, write_corpus, tmp_path, args, message):
    corpus = write_corpus(["a cat"])
    code, _, err = run_cli("run", "--prompts", str(corpus), "--output", str(tmp_path / "out"), "--steps", "2",
                           "--height", "64", "--width", "64", "--runner", "FnApiRunner", *args)
    assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_label_maps_from_concept_maps(run_cli, write_corpus, tmp_path, one_torch_thread):
    """``--classes voc --label-maps concept`` on tiny-flux: concept maps are stored (the class
    names among the concepts, beside the ``--concepts`` competitors), the label maps come from
    them, run.json records the choice, and the images are those of a DAAM-label run."""
    corpus = write_corpus(["a cat near a dog on the grass", "a person riding a horse"])
    common = ["--prompts", str(corpus), "--model", "tiny-flux", "--steps", "2", "--height", "64", "--width", "64",
              "--classes", "voc", "--runner", "FnApiRunner"]
    code, _, err = run_cli("run", *common, "--output", str(tmp_path / "concept"), "--label-maps", "concept",
                           "--concept-maps", "--concepts", "grass,background")
    assert code == 0, err
    code, _, err = run_cli("run", *common, "--output", str(tmp_path / "daam"))
    assert code == 0, err
    concept = pq.read_table(tmp_path / "concept" / "data").to_pylist()
    daam = pq.read_table(tmp_path / "daam" / "data").to_pylist()
    run = json.loads((tmp_path / "concept" / "run.json").read_text())
    assert run["settings"]["segmentation"]["label_maps"] == "concept"
    assert json.loads((tmp_path / "daam" / "run.json").read_text())["settings"]["segmentation"]["label_maps"] == "daam"
    assert "concepts" not in daam[0] or daam[0]["concepts"] is None
    by_prompt = {r["prompt"]: r for r in daam}
    differs = 0
    for row in concept:
        assert row["concepts"][:2] == ["grass", "background"]
        names = [c["name"] for c in row["classes"]]
        assert names and set(names) <= set(row["concepts"])
        other = by_prompt[row["prompt"]]
        assert row["image"]["bytes"] == other["image"]["bytes"]  # the images never change
        assert names == [c["name"] for c in other["classes"]]
        differs += row["label"]["bytes"] != other["label"]["bytes"]
    assert differs  # the labels come from other maps
    card = (tmp_path / "concept" / "README.md").read_text(encoding="utf-8")
    assert "the class name's ConceptAttention map" in card
    assert "mean map of the tokens" in (tmp_path / "daam" / "README.md").read_text(encoding="utf-8")
