"""Map storage (issue 16, must-have 3): ``--map-size`` grids and the resize, uint8 quantisation
(error bound, the one decoder), the ``overlay`` picture, the options and their fingerprint rules,
records through Arrow, and the validator's checks of scales. Runs: tests/integration/test_map_storage_run.py."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Features
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.cli import build_parser
from pipeline.options import RunSettings
from pipeline.validate.context import Validation
from pipeline.validate.row_checks import check_row, check_timestep_maps
from schemas.maps import (
    check_map_size,
    decode_maps,
    decode_timestep_maps,
    decode_token_maps,
    decoded_row,
    encode_maps,
    quantize_maps,
    row_maps,
    stored_map_size,
    token_maps_column,
)
from schemas.record import Record, build_features, encode_png, records_to_table
from transforms.attribution.heatmap import expand_map
from transforms.attribution.overlay import (
    OVERLAY_COLOURS,
    encode_jpeg,
    overlay_size,
    strongest_words,
    words_overlay,
)
from transforms.shards.layout import OutputLayout
from transforms.shards.sinks import _write_parquet, leaf_columns
from transforms.shards.generator import resize_maps


@pytest.fixture(autouse=True, scope="module")
def _threads(one_torch_thread):
    yield


# --- uint8 quantisation ---------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 6), log_scale=st.floats(-30, 30))
def test_uint8_error_is_within_half_a_step_of_each_maps_maximum(seed, n, log_scale):
    rng = np.random.default_rng(seed)
    maps = (rng.random((n, 5, 7)) ** 3 * np.exp(log_scale) * rng.random((n, 1, 1))).astype(np.float32)
    if n:
        maps[0] = 0.0  # an empty map: scale 0, codes 0
    codes, scale = encode_maps(maps, "uint8")
    assert codes.dtype == np.uint8 and scale.dtype == np.float32 and scale.shape == (n,)
    np.testing.assert_array_equal(scale, maps.max(axis=(1, 2)))
    back = decode_maps(codes, scale)
    error = np.abs(back - maps).max(axis=(1, 2)) if n else np.zeros(0)
    assert (error <= scale / 510 * (1 + 1e-5) + 1e-37).all()  # half a code step ...
    assert (error <= scale / 255).all()  # ... so well within 1/255 of the map's own maximum
    peaks = codes.reshape(n, -1).max(-1) if n else np.zeros(0)
    assert ((scale > 0) == (peaks == 255)).all() and (codes[scale == 0] == 0).all()


def test_quantisation_is_per_map_over_any_leading_shape():
    maps = np.zeros((2, 3, 4, 4), np.float32)
    maps[..., 1, 2] = np.arange(1, 7, dtype=np.float32).reshape(2, 3)  # each map's own peak
    codes, scale = quantize_maps(maps)
    assert scale.shape == (2, 3) and (codes[..., 1, 2] == 255).all() and codes.sum() == 255 * 6
    np.testing.assert_allclose(decode_maps(codes, scale), maps, rtol=1e-6)


def test_float_dtypes_are_stored_as_they_are():
    maps = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    for dtype in ("float16", "float32"):
        values, scale = encode_maps(maps, dtype)
        assert scale is None and values.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(values, maps.astype(dtype))
    with pytest.raises(ValueError, match="map dtype must be one of"):
        encode_maps(maps, "int8")


def test_decoding_rows_applies_the_scale_once():
    codes, scale = quantize_maps(np.array([[[0.0, 2.0]], [[1.0, 0.5]]], np.float32))
    row = {"token_maps": codes.tolist(), "token_map_scale": scale.tolist(), "tokens": ["a", "b"]}
    np.testing.assert_allclose(row_maps(row), [[[0.0, 2.0]], [[1.0, 0.5]]], atol=1 / 255)
    decoded = decoded_row(row)
    assert "token_map_scale" not in decoded and decoded["tokens"] == ["a", "b"]
    np.testing.assert_array_equal(row_maps(decoded), row_maps(row))  # decoded rows are not scaled again
    assert row_maps({"token_maps": [[[1, 2]]]}).dtype == np.float32  # float maps: no scale
    with pytest.raises(ValueError, match="one scale per map"):
        decode_maps(codes, scale[:1])


# --- --map-size ---------------------------------------------------------------------------------

@pytest.mark.parametrize("grid, size, expected", [
    ((64, 64), None, (64, 64)), ((64, 64), 32, (32, 32)), ((64, 96), 32, (21, 32)), ((96, 64), 32, (32, 21)),
    ((8, 12), 6, (4, 6)), ((16, 24), 5, (3, 5)),  # 3.33 -> 3
    ((2, 3), 1, (1, 1)), ((8, 8), 8, (8, 8)),
])
def test_stored_size_keeps_the_aspect_ratio_with_the_longer_side_s(grid, size, expected):
    assert stored_map_size(grid, size) == expected


def test_map_size_larger_than_the_grid_is_refused():
    check_map_size((8, 12), 12)
    check_map_size((8, 12), None)
    with pytest.raises(ValueError, match=r"--map-size 13 is larger than this model's map grid 12x8 .* use at most 12"):
        check_map_size((8, 12), 13)


def test_resize_is_expand_map_per_map_clamped_at_zero():
    maps = torch.randn(2, 3, 8, 12)  # negative values: bicubic undershoots, the clamp applies
    resized = resize_maps(maps, (4, 6))
    assert resized.shape == (2, 3, 4, 6) and resized.dtype == torch.float32 and (resized >= 0).all()
    for k in range(2):
        for i in range(3):
            torch.testing.assert_close(resized[k, i], expand_map(maps[k, i], (4, 6)).clamp_min(0), rtol=0, atol=0)
    assert resize_maps(maps, (8, 12)) is maps  # the grid itself: untouched
    assert resize_maps(torch.zeros(0, 8, 8), (4, 4)).shape == (0, 4, 4)


# --- the overlay --------------------------------------------------------------------------------

WORDS = [{"word": w, "start": i, "end": i + 1} for i, w in enumerate(["a", "cat", "on", "the", "sofa", "Cat"])]


def _maps() -> np.ndarray:
    maps = np.full((6, 16, 16), 0.1, np.float32)
    maps[1, 2:6, 2:6] = 3.0  # "cat": focused, top left
    maps[5, 2:6, 2:6] = 2.0  # its second occurrence ("Cat")
    maps[4, 10:15, 9:15] = 1.0  # "sofa": focused, bottom right
    maps[0, 4:12, 4:12] = 9.0  # "a": the most peaked of all, but a function word
    return maps


def test_strongest_words_are_content_words_merged_over_occurrences():
    chosen = strongest_words(_maps(), WORDS)
    assert chosen == [("cat", [(1, 2), (5, 6)]), ("sofa", [(4, 5)])]
    assert strongest_words(_maps(), WORDS, k=1) == [("cat", [(1, 2), (5, 6)])]
    assert strongest_words(_maps(), [WORDS[0], WORDS[2]]) == []  # only function words


def test_overlay_tints_each_words_region_in_its_colour():
    image = Image.new("RGB", (512, 384), (128, 128, 128))
    picture, words = words_overlay(image, _maps(), WORDS)
    assert words == ["cat", "sofa"] and picture.size == overlay_size(image.size) == (256, 192)
    pixels = np.asarray(picture, dtype=np.int32)
    cat = pixels[30, 40]  # inside the cat's blob (rows 2-6 of 16 -> 24-72 of 192; cols 32-96 of 256)
    sofa = pixels[150, 190]
    background = pixels[100, 128]
    assert cat[0] > 160 and cat[1] < 110  # red (OVERLAY_COLOURS[0])
    assert sofa[1] > 140 and sofa[0] < 110  # green (OVERLAY_COLOURS[1])
    assert (np.abs(background - 128) <= 2).all()
    decoded = Image.open(io.BytesIO(encode_jpeg(picture)))
    assert decoded.format == "JPEG" and decoded.size == (256, 192) and decoded.mode == "RGB"


def test_small_images_keep_their_size_and_rows_without_content_words_show_the_image():
    image = Image.new("RGB", (64, 48), (10, 20, 30))
    picture, words = words_overlay(image, _maps()[[0, 2]], [WORDS[0], {"word": "on", "start": 1, "end": 2}])
    assert words == [] and picture.size == (64, 48) and np.asarray(picture).tolist() == np.asarray(image).tolist()
    assert overlay_size((1000, 10)) == (256, 3) and len(OVERLAY_COLOURS) == 3


# --- options --------------------------------------------------------------------------------------

def _args(*extra: str):
    return build_parser().parse_known_args(["run", "--prompts", "p.txt", "--output", "out", *extra])[0]


@pytest.mark.parametrize("flags, line", [
    (["--map-size", "0"], "argument --map-size: expected an integer in [1, 65536], got '0'"),
    (["--map-size", "32.5"], "argument --map-size: expected an integer in [1, 65536], got '32.5'"),
    (["--map-size", "big"], "argument --map-size: expected an integer in [1, 65536], got 'big'"),
    (["--map-dtype", "int8"], "argument --map-dtype: invalid choice: 'int8'"),
    (["--overlay=yes"], "argument --overlay/--no-overlay: ignored explicit argument 'yes'"),
    (["--compile=1"], "argument --compile: ignored explicit argument '1'"),
])
def test_bad_storage_flags_end_in_one_line(flags, line, run_cli, tmp_path):
    code, out, err = run_cli("run", "--prompts", tmp_path / "missing.txt", "--output", tmp_path / "out", *flags)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert line in err, err
    assert not (tmp_path / "out").exists()


def test_storage_flags_fill_the_settings_and_survive_run_json():
    settings = RunSettings.from_args(_args("--map-size", "32", "--map-dtype", "uint8", "--no-overlay", "--compile"))
    assert (settings.map_size, settings.map_dtype, settings.overlay, settings.model.compile) == (32, "uint8", False, True)
    assert RunSettings.from_dict(settings.to_dict()) == settings
    default = RunSettings.from_args(_args())
    assert (default.map_size, default.map_dtype, default.overlay, default.model.compile) == (None, "float16", True, False)
    earlier = {k: v for k, v in default.to_dict().items() if k not in ("overlay", "map_size")}  # a 1.2 run.json
    earlier["model"] = {k: v for k, v in earlier["model"].items() if k != "compile"}
    assert RunSettings.from_dict(earlier).overlay is False and RunSettings.from_dict(earlier).model.compile is False


def _fingerprint(*flags: str) -> str:
    return RunSettings.from_args(_args(*flags)).output_fingerprint("corpus-digest")


def test_fingerprint_changes_exactly_when_the_stored_rows_change():
    earlier = "4e73f27ce0fac3bd"  # the default run before these options (tests/unit/test_trace_selection.py)
    assert _fingerprint("--no-overlay") == _fingerprint("--no-overlay", "--compile") == earlier
    assert _fingerprint("--no-overlay", "--map-dtype", "float16") == earlier
    assert _fingerprint() == _fingerprint("--overlay", "--compile") != earlier  # a new column
    changed = {_fingerprint("--no-overlay", *f) for f in (["--map-size", "32"], ["--map-size", "16"], ["--map-dtype", "uint8"])}
    assert len(changed) == 3 and earlier not in changed


# --- records through Arrow ----------------------------------------------------------------------

def _record(n: int = 3, bins: int = 2) -> Record:
    rng = np.random.default_rng(1)
    maps, scale = quantize_maps(rng.random((n, 4, 6), dtype=np.float32))
    binned, bin_scale = quantize_maps(rng.random((bins, n, 4, 6), dtype=np.float32))
    class_maps, class_scale = quantize_maps(rng.random((1, 4, 6), dtype=np.float32))
    image = np.zeros((32, 48, 3), np.uint8)
    return Record(
        id="r", prompt_id="r", prompt="a cat", negative_prompt="", seed=1, image_index=0, png=encode_png(image),
        tokens=["a", "cat", "x"][:n], token_ids=[1, 2, 3][:n], token_maps=maps,
        words=[{"word": "a", "start": 0, "end": 1}, {"word": "cat", "start": 1, "end": 2}], truncated=False,
        classes=[{"label": 1, "name": "cat", "spans": [{"start": 1, "end": 2}], "peak": 1.0, "area": 0.5,
                  "ignore_fraction": 0.0, "agreement": 1.0}],
        class_maps=class_maps, label_png=encode_png(np.zeros((32, 48), np.uint8)), timestep_maps=binned,
        overlay_jpeg=encode_jpeg(Image.fromarray(image)), overlay_words=["cat"],
        token_map_scale=scale, timestep_map_scale=bin_scale, class_map_scale=class_scale,
    )


def test_uint8_records_round_trip_through_arrow_with_their_scales():
    record = _record()
    features = build_features(4, 6, "uint8", segmentation=True, timestep_bins=2, overlay=True)
    table = records_to_table([record], features)
    assert Features.from_arrow_schema(table.schema) == features
    names = table.column_names
    assert names.index("overlay") == names.index("image") + 1 and names.index("token_map_scale") == names.index("token_maps") + 1
    row = table.to_pylist()[0]
    codes = decode_token_maps(token_maps_column(table.column("token_maps").combine_chunks())[0], (4, 6))
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, record.token_maps)
    np.testing.assert_array_equal(decode_maps(codes, row["token_map_scale"]), decode_maps(record.token_maps, record.token_map_scale))
    binned = decode_timestep_maps(table.column("timestep_maps")[0], (4, 6))
    np.testing.assert_array_equal(binned, record.timestep_maps)
    np.testing.assert_array_equal(row_maps({**row, "class_maps": record.class_maps}, "class_maps"),
                                  decode_maps(record.class_maps, record.class_map_scale))
    assert Image.open(io.BytesIO(row["overlay"]["bytes"])).size == (48, 32) and row["overlay_words"] == ["cat"]
    meta = record.metadata()
    assert meta["token_map_scale"] == record.token_map_scale.tolist() and meta["overlay_words"] == ["cat"]
    assert np.asarray(meta["timestep_map_scale"]).shape == (2, 3)


def test_float_features_have_no_scale_columns_and_no_overlay_unless_asked():
    names = set(build_features(8, 8, "float16", segmentation=True, timestep_bins=2))
    assert not names & {"token_map_scale", "timestep_map_scale", "class_map_scale", "overlay", "overlay_words"}


# --- the validator's checks of uint8 rows --------------------------------------------------------

def _validation(tmp_path) -> Validation:
    return Validation(OutputLayout(str(tmp_path)), map_size=(4, 6), map_dtype="uint8", timestep_bins=2,
                      image_size=(32, 48), overlay=True)


def _check(v: Validation, record: Record, **changes) -> list[str]:
    fields = {"scale": record.token_map_scale.tolist(), "overlay": (record.overlay_jpeg, record.overlay_words), **changes}
    check_row(v, "s", "f", 0, record.tokens, record.token_maps, record.png, record.words, **fields)
    return [f"{p.kind}: {p.message}" for p in v.problems]


def test_validator_accepts_good_uint8_rows_and_names_bad_scales(tmp_path):
    record = _record()
    assert _check(_validation(tmp_path), record) == []
    assert _check(_validation(tmp_path), record, scale=None) == ["map_values: row 0: maps are uint8 codes without their scales"]
    assert _check(_validation(tmp_path), record, scale=[1.0]) == ["map_shape: row 0: (1,) scales for maps of shape (3, 4, 6)"]
    assert _check(_validation(tmp_path), record, scale=[1.0, -1.0, 1.0]) == [
        "map_values: row 0: maps scales are not finite and non-negative"]
    halved = record.token_maps // 2
    v = _validation(tmp_path)
    check_row(v, "s", "f", 0, record.tokens, halved, record.png, record.words, scale=record.token_map_scale.tolist(),
              overlay=(record.overlay_jpeg, record.overlay_words))
    assert [p.message for p in v.problems] == ["row 0: maps are not coded by their own maximum (peak code must be 255)"]
    v = _validation(tmp_path)
    check_timestep_maps(v, "s", "f", 0, record.tokens, record.timestep_maps, "", record.timestep_map_scale[:, :2].tolist())
    assert [p.kind for p in v.problems] == ["map_shape"]


def test_validator_checks_the_overlay_size_and_words(tmp_path):
    record = _record()
    wrong_size = encode_jpeg(Image.new("RGB", (10, 10)))
    assert _check(_validation(tmp_path), record, overlay=(wrong_size, ["cat"])) == [
        "image: row 0: overlay is 10x10, expected 48x32"]
    assert _check(_validation(tmp_path), record, overlay=(record.overlay_jpeg, ["dog"])) == [
        "image: row 0: overlay_words ['dog'] are not up to 3 words of the prompt"]
    assert _check(_validation(tmp_path), record, overlay=(None, None))[0] == "image: row 0: no overlay bytes"


def _float_record(dtype: str) -> Record:
    rng = np.random.default_rng(2)
    maps = {name: rng.random(shape, dtype=np.float32).astype(dtype) for name, shape in
            {"token_maps": (3, 4, 6), "timestep_maps": (2, 3, 4, 6), "class_maps": (1, 4, 6)}.items()}
    return dataclasses.replace(_record(), **maps, token_map_scale=None, timestep_map_scale=None, class_map_scale=None)


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_parquet_encodes_float_leaves_without_a_dictionary_and_reads_back_exactly(dtype, tmp_path):
    record = _record() if dtype == "uint8" else _float_record(dtype)
    table = records_to_table([record], build_features(4, 6, dtype, segmentation=True, timestep_bins=2, overlay=True))
    path = tmp_path / "shard.parquet"
    _write_parquet(OutputLayout(str(tmp_path)), str(path), table)
    meta = pq.read_metadata(path).row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    leaves = dict(leaf_columns(table.schema))
    assert set(encodings) == set(leaves)  # the writer's paths are the ones the encodings name
    maps = "token_maps.list.element.list.element.list.element"
    for path_in_schema, kind in leaves.items():
        if not pa.types.is_boolean(kind):  # Parquet never dictionary-encodes booleans
            dictionary = "RLE_DICTIONARY" in encodings[path_in_schema]
            assert dictionary == (not pa.types.is_floating(kind)), path_in_schema
    assert ("BYTE_STREAM_SPLIT" in encodings[maps]) == (dtype == "float32")
    assert "BYTE_STREAM_SPLIT" in encodings["classes.list.element.peak"]  # float32 scores
    assert pq.read_table(path).equals(table)
