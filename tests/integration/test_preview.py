"""``daam-datasets preview``: the static gallery, grid.png in the card, the overlay helpers, and the
gallery rendered by headless Chromium (skipped when Chromium is not installed)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from datasets import load_dataset
from PIL import Image, ImageChops

from pipeline.preview.gallery import DEFAULT_SIZE
from tests.conftest import copy_output

PROMPTS = [
    "a dog and a dog playing with a ball",  # repeated word
    "an armadillo eating watermelon, slowly",  # multi-token word (armad + illo), punctuation
    "A Red Sofa next to a lamp",  # upper case in the prompt
    "two horses in a snowy field",
    "a cup of coffee",
]
HEIGHT, WIDTH = 64, 96  # not square
N_SHOWN = 4
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def out(built_output, tmp_path_factory) -> Path:
    """A 5-row output (Parquet and WebDataset, 3 shards) with a preview of its first 4 rows."""
    from pipeline.cli import main

    built = built_output(PROMPTS, "--steps", "2", "--height", HEIGHT, "--width", WIDTH, "--shard-size", "2",
                         "--format", "parquet,webdataset")
    output = copy_output(built, tmp_path_factory.mktemp("preview") / "out")
    assert main(["preview", str(output), "--n", str(N_SHOWN), "--grid", "3"]) == 0
    return output


@pytest.fixture(scope="module")
def rows(out):
    return list(load_dataset(str(out), split="train"))


class Page(HTMLParser):
    """The gallery's samples: per figure its attributes, images, word buttons and tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []
        self.srcs: list[str] = []
        self.external: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if a.get(key) and re.match(r"^(https?:)?//", a[key]):
                self.external.append(a[key])
        if tag == "link":
            self.external.append(str(a))
        if tag == "figure" and "sample" in (a.get("class") or ""):
            self.figures.append({"attrs": a, "base": None, "overlay": None, "words": [], "tokens": [], "status": ""})
        if not self.figures:
            return
        fig = self.figures[-1]
        if tag == "img":
            if a.get("src"):
                self.srcs.append(a["src"])
            fig["base" if "base" in a.get("class", "") else "overlay"] = a
        elif tag == "button" and "word" in (a.get("class") or ""):
            fig["words"].append(dict(a, text=""))
            self._in = "word"
        elif tag == "li" and "data-t" in a:
            fig["tokens"].append("")
            self._in = "token"
        elif tag == "p" and a.get("class") == "status":
            self._in = "status"

    def handle_endtag(self, tag):
        if tag in ("button", "li", "p"):
            self._in = None

    def handle_data(self, data):
        if not self.figures or self._in is None:
            return
        fig = self.figures[-1]
        if self._in == "word":
            fig["words"][-1]["text"] += data
        elif self._in == "token":
            fig["tokens"][-1] += data
        else:
            fig["status"] += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


# -- files -----------------------------------------------------------------------------------------
def test_gallery_has_every_sample_word_and_token(out, rows):
    page = parse((out / "preview" / "index.html").read_text(encoding="utf-8"))
    assert len(page.figures) == N_SHOWN
    assert page.external == [], "the gallery must not load anything from the network"
    for fig, row in zip(page.figures, rows):
        assert fig["attrs"]["data-id"] == row["id"]
        assert [w["text"].lower() for w in fig["words"]] == [w["word"] for w in row["words"]]
        assert [(int(w["data-start"]), int(w["data-end"])) for w in fig["words"]] == [
            (w["start"], w["end"]) for w in row["words"]
        ]
        assert fig["tokens"] == row["tokens"]
        assert "hidden" in fig["overlay"] and "src" not in fig["overlay"]
        assert len({w["data-overlay"] for w in fig["words"]}) == len(row["words"])  # one overlay per word
    # the prompt keeps its own spelling around the word buttons
    sofa = next(f for f, r in zip(page.figures, rows) if r["prompt"].startswith("A Red"))
    assert [w["text"] for w in sofa["words"]][:3] == ["A", "Red", "Sofa"]


def test_every_referenced_image_exists_and_overlays_differ(out, rows):
    preview = out / "preview"
    page = parse((preview / "index.html").read_text(encoding="utf-8"))
    referenced = set(page.srcs) | {w["data-overlay"] for f in page.figures for w in f["words"]}
    assert len(referenced) == N_SHOWN + sum(len(r["words"]) for r in rows[:N_SHOWN])
    for rel in referenced:
        path = preview / rel
        assert path.is_file(), rel
        with Image.open(path) as image:
            # the image's aspect ratio, not a square, enlarged to the gallery size (a small image)
            assert image.size == (DEFAULT_SIZE, round(DEFAULT_SIZE * HEIGHT / WIDTH))
    first = page.figures[0]["words"]
    a = np.asarray(Image.open(preview / first[0]["data-overlay"]), dtype=np.int16)
    b = np.asarray(Image.open(preview / first[1]["data-overlay"]), dtype=np.int16)
    assert np.abs(a - b).mean() > 1.0
    # nothing stale: exactly the referenced assets, the page and the grid
    written = {str(p.relative_to(preview)) for p in preview.rglob("*") if p.is_file()}
    assert written == referenced | {"index.html", "grid.png"}


def test_grid_png_is_in_the_card_and_data_still_loads(out, rows):
    with Image.open(out / "preview" / "grid.png") as grid:
        pixels = np.asarray(grid.convert("RGB"), dtype=np.float32)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 200 and pixels.std() > 20
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "](preview/grid.png)" in card and card.count("## Preview") == 1
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert len(rows) == len(PROMPTS)  # preview/ is not read as data
    from pipeline.validate import validate_output

    assert validate_output(str(out)) == []


def test_preview_survives_a_rerun_and_is_replaced(out):
    """A rerun keeps the card's preview; a new preview replaces the old one's files."""
    from pipeline.cli import main
    from pipeline.preview import write_preview

    settings = json.loads((out / "run.json").read_text())["settings"]
    code = main(["run", "--prompts", settings["prompts"], "--output", str(out), "--steps", "2", "--height",
                 str(HEIGHT), "--width", str(WIDTH), "--shard-size", "2", "--format", "parquet,webdataset"])
    assert code == 0
    assert "](preview/grid.png)" in (out / "README.md").read_text(encoding="utf-8")
    result = write_preview(str(out), n=2, grid=1)
    assert result.samples == 2 and not result.card_updated
    assert not (out / "preview" / "assets" / "003" / "image.jpg").exists()
    write_preview(str(out), n=N_SHOWN, grid=3)
    assert (out / "preview" / "assets" / "003" / "image.jpg").exists()


def test_webdataset_rows_equal_parquet_rows(out):
    from pipeline.preview import parquet_rows, webdataset_rows
    from transforms.shards.layout import OutputLayout

    layout = OutputLayout(str(out))
    parquet = list(parquet_rows(layout))
    wds = {r["id"]: r for r in webdataset_rows(layout)}
    assert len(parquet) == len(wds) == len(PROMPTS)
    for row in parquet:
        other = wds[row["id"]]
        assert other["words"] == row["words"] and other["tokens"] == row["tokens"]
        np.testing.assert_array_equal(other["token_maps"], row["token_maps"])
        assert other["image"]["bytes"] == row["image"]["bytes"]
        assert row["token_maps"].dtype == other["token_maps"].dtype == np.float32
        assert row["token_maps"].ndim == 3 and len(row["token_maps"]) == len(row["tokens"])
    assert [r["id"] for r in parquet] == list(wds)  # same shard order


def test_read_rows_decodes_only_the_rows_asked_for(out, rows, monkeypatch):
    import pipeline.preview.rows as reader
    from pipeline.preview import read_rows

    decoded = []
    real = reader.decode_token_maps
    monkeypatch.setattr(reader, "decode_token_maps", lambda cell: decoded.append(1) or real(cell))
    [first] = read_rows(str(out), 1)
    assert len(decoded) == 1, "read_rows(output, 1) must decode one row's maps, not a shard's"
    assert first["id"] == rows[0]["id"]
    np.testing.assert_array_equal(first["token_maps"], np.asarray(rows[0]["token_maps"], dtype=np.float32))
    with Image.open(io.BytesIO(first["image"]["bytes"])) as image:  # not decoded by the reader
        np.testing.assert_array_equal(np.asarray(image), np.asarray(rows[0]["image"]))


def test_read_rows_falls_back_to_webdataset(out, tmp_path):
    from pipeline.preview import read_rows

    wds_only = tmp_path / "wds-only"
    shutil.copytree(out / "wds", wds_only / "wds")
    got = read_rows(str(wds_only), 3)
    assert [r["id"] for r in got] == [r["id"] for r in read_rows(str(out), 3)]


def test_page_inlines_the_package_css_and_script(out):
    text = (out / "preview" / "index.html").read_text(encoding="utf-8")
    import pipeline.preview

    static = Path(pipeline.preview.__file__).parent / "static"
    for name in ("gallery.css", "gallery.js"):
        assert (static / name).read_text(encoding="utf-8") in text, f"{name} is not inlined verbatim"
    assert text.count("<script") == 1 and text.count("<style") == 1


def test_prompt_markup_is_escaped(tmp_path):
    """A prompt with markup, ``&`` and quotes reaches index.html as text (autoescaped template)."""
    from pipeline.cli import main

    prompt = """a "cat" & a <script>document.title='pwned'</script> dog's <b>bowl</b>"""
    corpus = tmp_path / "prompts.txt"
    corpus.write_text(prompt + "\n", encoding="utf-8")
    output = tmp_path / "out"
    assert main(["run", "--prompts", str(corpus), "--output", str(output), "--steps", "2", "--height", "64",
                 "--width", "64"]) == 0
    assert main(["preview", str(output), "--n", "1", "--grid", "1"]) == 0
    [row] = list(load_dataset(str(output), split="train"))
    assert row["prompt"] == prompt
    text = (output / "preview" / "index.html").read_text(encoding="utf-8")
    assert "<script>document" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text and "&amp;" in text and "&lt;b&gt;" in text
    assert 'alt="a &#34;cat&#34; &amp; a &lt;script&gt;' in text  # quotes escaped inside attributes
    assert text.count("<script") == 1  # the gallery's own script only
    page = parse(text)
    [fig] = page.figures
    assert fig["base"]["alt"] == prompt
    assert [w["text"].lower() for w in fig["words"]] == [w["word"] for w in row["words"]]
    assert fig["tokens"] == row["tokens"]
    if CHROMIUM is not None:  # the page as a browser builds it: the prompt's markup stays text
        dom = chromium(tmp_path, (output / "preview" / "index.html").as_uri(), "--dump-dom").stdout
        assert "<title>DAAM preview — 1 samples</title>" in dom  # the prompt's script did not run
        assert parse(dom).figures[0]["base"]["alt"] == prompt


def test_preview_errors_are_one_line(tmp_path, run_cli):
    code, _, err = run_cli("preview", tmp_path / "missing")
    assert code == 2 and err.count("\n") == 1 and "no such folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("preview", tmp_path / "empty")
    assert code == 2 and err.count("\n") == 1 and "no data shards" in err


def test_bad_preview_arguments_are_one_line(out, run_cli):
    for args, message in ((("--cmap", "nope"), "not a matplotlib colour map"), (("--size", "8"), "--size: expected an integer in [16, 4096]"),
                          (("--n", "0"), "--n: expected an integer in [1, 1000]")):
        code, stdout, err = run_cli("preview", out, *args)
        assert code == 2 and stdout == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err


# -- overlay helpers -------------------------------------------------------------------------------
def test_word_map_and_mask_follow_daam(rows):
    from transforms.attribution.heatmap import word_mask as daam_mask
    from transforms.attribution.overlay import word_map, word_mask, word_overlay

    row = rows[0]  # "a dog and a dog playing with a ball"
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    dogs = [w for w in row["words"] if w["word"] == "dog"]
    assert len(dogs) == 2
    merged = word_overlay(row, "dog")
    assert merged.spans == [(d["start"], d["end"]) for d in dogs]
    np.testing.assert_allclose(merged.map, maps[[d["start"] for d in dogs]].mean(0), rtol=1e-6)
    expected_mask = daam_mask(torch.from_numpy(merged.map), (HEIGHT, WIDTH), 0.4).numpy()
    assert merged.mask.shape == (HEIGHT, WIDTH) and merged.image.size == (WIDTH, HEIGHT)
    np.testing.assert_array_equal(merged.mask, expected_mask)
    assert 0 < merged.mask.mean() < 1
    second = word_overlay(row, "dog", occurrence=1)
    assert second.spans == [(dogs[1]["start"], dogs[1]["end"])]
    np.testing.assert_array_equal(second.map, maps[dogs[1]["start"]])
    assert not np.array_equal(second.map, merged.map)
    k = row["words"].index(dogs[1])
    np.testing.assert_array_equal(word_map(row, k), second.map)  # an index picks that entry
    np.testing.assert_array_equal(word_mask(row, "DOG"), merged.mask)  # case-insensitive
    with pytest.raises(ValueError, match="not in the prompt"):
        word_map(row, "cat")
    with pytest.raises(ValueError, match="occurs 2 times"):
        word_map(row, "dog", occurrence=2)


def test_multi_token_and_multi_word_queries(rows):
    from transforms.attribution.overlay import find_spans, word_map
    from transforms.attribution.words import token_merge_indices
    from transforms.models.tiny_sd import build_clip_tokenizer

    row = next(r for r in rows if r["prompt"].startswith("an armadillo"))
    maps = np.asarray(row["token_maps"], dtype=np.float32)
    [(start, end)] = find_spans(row, "armadillo")
    assert end - start == 2, row["tokens"]  # armad + illo
    np.testing.assert_allclose(word_map(row, "armadillo"), maps[start:end].mean(0), rtol=1e-6)
    assert find_spans(row, "watermelon,")[0][1] - find_spans(row, "watermelon,")[0][0] == 2  # word + comma
    sofa = next(r for r in rows if r["prompt"].startswith("A Red"))
    [(s, e)] = find_spans(sofa, "red sofa")
    assert sofa["tokens"][s:e] == ["red", "sofa"]
    # with the tokenizer: DAAM's exact token-sequence rule gives the same rows
    tokenizer = build_clip_tokenizer()
    rows_daam = [i - 1 for i in token_merge_indices(tokenizer, [t for t in row["tokens"]], "armadillo")]
    spans = find_spans(row, "armadillo", tokenizer=tokenizer)
    assert [i for a, b in spans for i in range(a, b)] == rows_daam
    with pytest.raises(ValueError, match="not a token sequence"):
        find_spans(row, "armad", tokenizer=tokenizer)


def test_overlay_is_daam_blend_with_outline(rows):
    from matplotlib import colormaps

    from transforms.attribution.overlay import (
        compose,
        heat_and_mask,
        mask_outline,
        row_image,
        word_map,
    )

    row = rows[1]
    image = row_image(row)
    heat, mask = heat_and_mask(word_map(row, 1), (HEIGHT, WIDTH))
    assert heat.min() == pytest.approx(0, abs=1e-6) and heat.max() == pytest.approx(1, abs=1e-4)
    plain = np.asarray(compose(image, heat), dtype=np.float32)
    rgb = np.asarray(image, dtype=np.float32) / 255
    expected = rgb * (1 - heat[..., None]) + colormaps["jet"](heat)[..., :3] * heat[..., None]
    assert np.abs(plain - expected * 255).max() <= 1.0
    cold = heat == heat.min()
    np.testing.assert_allclose(plain[cold], np.asarray(image, dtype=np.float32)[cold], atol=1)
    outlined = np.asarray(compose(image, heat, mask))
    inner, outer = mask_outline(mask, 1)
    assert inner.any() and outer.any() and not (inner & outer).any()
    assert (outlined[inner] == 255).all() and (outlined[outer] == 0).all()
    assert (outlined[~(inner | outer)] == plain[~(inner | outer)]).all()
    half = compose(image, heat, alpha=0.5, size=(WIDTH * 2, HEIGHT * 2))
    assert half.size == (WIDTH * 2, HEIGHT * 2)


def test_plot_word_draws_on_an_axis(rows):
    from matplotlib.figure import Figure

    from transforms.attribution.overlay import plot_word

    ax = Figure().add_subplot()
    assert plot_word(rows[0], "ball", ax=ax) is ax
    assert "ball" in ax.get_title() and len(ax.images) == 1


# -- in a browser ----------------------------------------------------------------------------------
def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--window-size=1200,900", "--virtual-time-budget=3000", *args, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium): browser tests skipped"
)


@needs_chromium
@pytest.mark.slow
def test_browser_dom_switches_words(out, tmp_path):
    index = (out / "preview" / "index.html").as_uri()
    plain = parse(chromium(tmp_path, index, "--dump-dom").stdout)
    assert len(plain.figures) == N_SHOWN
    assert all("hidden" in f["overlay"] for f in plain.figures)
    picked = {}
    for k in (1, 2):
        page = parse(chromium(tmp_path, f"{index}?word={k}", "--dump-dom").stdout)
        assert len(page.figures) == N_SHOWN
        for i, fig in enumerate(page.figures):
            wanted = fig["words"][k]["data-overlay"]
            assert fig["overlay"].get("src") == wanted and "hidden" not in fig["overlay"]
            assert fig["attrs"].get("data-loaded") == wanted, "the browser did not load the overlay"
            assert "data-failed" not in fig["attrs"]
            assert fig["words"][k].get("aria-pressed") == "true"
            assert f"[{fig['words'][k]['data-start']}" in fig["status"]
            picked[(i, k)] = wanted
    assert all(picked[(i, 1)] != picked[(i, 2)] for i in range(N_SHOWN))
    by_text = parse(chromium(tmp_path, f"{index}?sample=0&word=dog", "--dump-dom").stdout)
    first = by_text.figures[0]
    assert first["overlay"]["src"] == first["words"][1]["data-overlay"]  # "a dog …": word 1
    assert all("hidden" in f["overlay"] for f in by_text.figures[1:])


@needs_chromium
@pytest.mark.slow
def test_browser_screenshot_shows_the_overlay(out, tmp_path):
    index = (out / "preview" / "index.html").as_uri()
    shots = {}
    for name, query in (("plain", ""), ("dog", "?sample=0&word=1"), ("ball", "?sample=0&word=-1")):
        path = tmp_path / f"{name}.png"
        chromium(tmp_path, index + query, f"--screenshot={path}")
        shots[name] = Image.open(path).convert("RGB")
    pixels = np.asarray(shots["plain"], dtype=np.float32)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000, "blank screenshot"
    for word in ("dog", "ball"):
        box = ImageChops.difference(shots["plain"], shots[word]).getbbox()
        assert box is not None, f"selecting {word} changed nothing on screen"
        assert box[2] <= 1200 // 2, f"only sample 0 (left column) should change, diff box {box}"
    assert ImageChops.difference(shots["dog"], shots["ball"]).getbbox() is not None


@pytest.fixture(scope="module")
def concept_out(tmp_path_factory) -> Path:
    """A tiny-flux output with ConceptAttention maps (``--concepts`` adds a concept the prompts
    do not name) and its preview."""
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("concept-preview")
    corpus = root / "prompts.txt"
    corpus.write_text("a cat on a red sofa\na dog near a tree\n", encoding="utf-8")
    assert main(["run", "--prompts", str(corpus), "--output", str(root / "out"), "--model", "tiny-flux", "--steps", "2",
                 "--height", "64", "--width", "64", "--concept-maps", "--concepts", "cat,dog,background",
                 "--runner", "FnApiRunner"]) == 0
    assert main(["preview", str(root / "out")]) == 0
    return root / "out"


def test_gallery_switches_to_concept_maps(concept_out):
    html = (concept_out / "preview" / "index.html").read_text(encoding="utf-8")
    page = parse(html)
    assert 'data-maps="concept"' in html and 'data-maps="daam"' in html
    rows = list(load_dataset(str(concept_out), split="train"))
    for fig, row in zip(page.figures, rows):
        concepts = [w for w in fig["words"] if "concept" in w.get("class", "")]
        words = [w for w in fig["words"] if "concept" not in w.get("class", "")]
        assert [c["text"] for c in concepts] == row["concepts"] == ["cat", "dog", "background"]
        overlays = [c["data-overlay"] for c in concepts]
        assert len(set(overlays)) == 3 and all((concept_out / "preview" / o).is_file() for o in overlays)
        for word in words:  # a word named like a concept shows that concept in the concept view
            named = [c for c in concepts if c["text"] == word["text"].lower()]
            assert word.get("data-concept") == (named[0]["data-overlay"] if named else None)
        assert any(w.get("data-concept") for w in words)


def test_gallery_without_concept_maps_has_no_switch(out):
    html = (out / "preview" / "index.html").read_text(encoding="utf-8")
    assert 'class="maps"' not in html and 'class="word concept"' not in html


@needs_chromium
@pytest.mark.slow
def test_browser_shows_concept_maps(concept_out, tmp_path):
    index = (concept_out / "preview" / "index.html").as_uri()
    daam = parse(chromium(tmp_path, f"{index}?word=cat", "--dump-dom").stdout)
    concept = parse(chromium(tmp_path, f"{index}?maps=concept&word=cat", "--dump-dom").stdout)
    first_daam, first_concept = daam.figures[0], concept.figures[0]
    cat = next(w for w in first_concept["words"] if w["text"] == "cat" and "concept" not in w.get("class", ""))
    assert first_concept["overlay"]["src"] == cat["data-concept"] != first_daam["overlay"]["src"]
    assert first_concept["attrs"].get("data-loaded") == cat["data-concept"]
    assert "ConceptAttention map" in first_concept["status"]
