"""``daam-datasets publish``: against a fake Hub client that records every operation, and ``--to`` a
local folder (and an in-memory fsspec file system)."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import fsspec
import httpx2
import pytest
import yaml
from datasets import load_dataset
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.hf_api import RepoFile, RepoFolder
from huggingface_hub.utils.sha import git_hash, sha_fileobj

from pipeline.errors import DamagedOutput, PublishError
from pipeline.publish import lfs_pointer, publish_to_hub, publish_to_path
from transforms.shards.layout import OutputLayout

from tests.conftest import copy_output

PROMPTS = ["a photo of a cat", "a dog on a sofa", "a red bicycle", "two horses in a field", "a cup of coffee"]
REPO = "lab/daam-test"
LFS_SUFFIXES = (".parquet", ".tar", ".png", ".jpg")  # what the Hub's default .gitattributes store in LFS


class FakeHfApi:
    """Records create_repo / create_branch / create_commit calls and keeps the repo's files, listed
    back like the Hub does (LFS files with their sha256, regular files with their git blob id)."""

    endpoint = "https://hub.invalid"

    def __init__(self, fail_at_commit: int | None = None) -> None:
        self.repos: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.calls: list[tuple] = []
        self.commits: list[dict] = []
        self.fail_at_commit = fail_at_commit

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
        assert exist_ok, "publishing twice must not fail on an existing repo"
        self.repos.setdefault(repo_id, {"private": private})
        return f"https://hub.invalid/datasets/{repo_id}"

    def create_branch(self, repo_id, *, branch, repo_type=None, exist_ok=False, **kwargs):
        self.calls.append(("create_branch", repo_id, branch, repo_type, exist_ok))

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, expand=False, revision=None,
                       repo_type=None, **kwargs):
        self.calls.append(("list_repo_tree", repo_id, revision, repo_type))
        if repo_id not in self.repos:
            request = httpx2.Request("GET", f"{self.endpoint}/api/datasets/{repo_id}/tree/main")
            raise RepositoryNotFoundError("404: repository not found", response=httpx2.Response(404, request=request))
        folders = sorted({p.rsplit("/", 1)[0] for p in self.files if "/" in p})
        entries = [RepoFolder(path=f, oid="0" * 40) for f in folders]
        for path, data in sorted(self.files.items()):
            sha = hashlib.sha256(data).hexdigest()
            if path.endswith(LFS_SUFFIXES):
                pointer = lfs_pointer(sha, len(data))
                entries.append(RepoFile(path=path, size=len(data), oid=git_hash(pointer),
                                        lfs={"size": len(data), "oid": sha, "pointerSize": len(pointer)}))
            else:
                entries.append(RepoFile(path=path, size=len(data), oid=git_hash(data)))
        return iter(entries)

    def create_commit(self, repo_id, *, operations, commit_message, repo_type=None, revision=None, **kwargs):
        number = len(self.commits) + 1
        if self.fail_at_commit == number:
            self.fail_at_commit = None
            raise httpx2.ConnectError("[Errno 101] Network is unreachable")
        assert repo_id in self.repos, "create_commit before create_repo"
        record = {"message": commit_message, "revision": revision, "repo_type": repo_type, "add": [], "delete": []}
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                with op.as_file() as fh:
                    data = fh.read()
                assert op.upload_info.sha256.hex() == hashlib.sha256(data).hexdigest()
                self.files[op.path_in_repo] = data
                record["add"].append(op.path_in_repo)
            else:
                assert isinstance(op, CommitOperationDelete)
                del self.files[op.path_in_repo]
                record["delete"].append(op.path_in_repo)
        self.commits.append(record)
        return type("CommitInfo", (), {"commit_url": f"https://hub.invalid/commit/{number}"})()

    def sent(self) -> list[str]:
        return [p for c in self.commits for p in c["add"]]


@pytest.fixture(scope="module")
def out(built_output, tmp_path_factory) -> Path:
    """5 prompts in 5 shards (64×64, 2 steps), plus a hand-made preview/ and the run's markers."""
    built = built_output(PROMPTS, "--steps", "2", "--height", "64", "--width", "64", "--shard-size", "1")
    output = copy_output(built, tmp_path_factory.mktemp("publish") / "out")
    (output / "preview" / "assets").mkdir(parents=True)
    (output / "preview" / "grid.png").write_bytes(b"\x89PNG fake grid")
    (output / "preview" / "index.html").write_text("<!doctype html><title>gallery</title>", encoding="utf-8")
    (output / "preview" / "assets" / "000.jpg").write_bytes(b"jpeg bytes")
    (output / "_failures").mkdir(exist_ok=True)
    (output / "_failures" / "read.jsonl").write_text('{"line": 9, "error": "bad row"}\n', encoding="utf-8")
    (output / ".lock").write_text('{"owner": "elsewhere:1", "heartbeat": 0}', encoding="utf-8")
    return output


@pytest.fixture
def copy(out, tmp_path) -> Path:
    """A private copy of the output that a test may change."""
    return copy_output(out, tmp_path / "out")


def data_files(output: Path) -> list[str]:
    return sorted(str(p.relative_to(output)) for p in (output / "data").glob("*.parquet"))


def expected_paths(output: Path, failures: bool = False) -> set[str]:
    paths = set(data_files(output)) | {"README.md", "run.json", "preview/grid.png", "preview/index.html",
                                       "preview/assets/000.jpg"}
    return paths | ({"_failures/read.jsonl"} if failures else set())


def quiet(_: str) -> None:
    pass


# -- content ids -----------------------------------------------------------------------------------
SAMPLES = [b"", b"Hello, World!", b"\x00\xff" * 4099, "zürich ✓\n".encode(), lfs_pointer("ab" * 32, 12345)]


@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
def test_library_hashes_match_the_hand_written_ones(data, tmp_path):
    """huggingface_hub's helpers compute what the hand-written git blob id and sha256 did."""
    assert git_hash(data) == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    path = tmp_path / "blob"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    with path.open("rb") as fh:
        assert sha_fileobj(fh).hex() == sha == OutputLayout(str(tmp_path)).sha256(str(path))


def test_git_hash_and_lfs_pointer_agree_with_git_and_the_hub():
    assert git_hash(b"Hello, World!") == "b45ef6fec89518d314f546fd6c3025367b721684"  # `git hash-object`
    assert git_hash(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    # the Hub lists this LFS file (497764107 bytes) with pointerSize 134
    pointer = lfs_pointer("d88b0d6a6ff9c3f8151f9d3228f57092aaea997f09af009eefd7373a77b5abb9", 497764107)
    assert len(pointer) == 134 and pointer.startswith(b"version https://git-lfs.github.com/spec/v1\n")


# -- the Hub ---------------------------------------------------------------------------------------
def test_publish_uploads_data_card_and_summary_in_batches(out):
    api = FakeHfApi()
    result = publish_to_hub(str(out), REPO, api=api, max_files=2, log=quiet)
    assert api.calls[0] == ("create_repo", REPO, "dataset", None, True)
    assert set(api.files) == expected_paths(out)
    assert len(api.sent()) == len(set(api.sent()))  # nothing sent twice
    messages = [c["message"] for c in api.commits]
    # 5 shards at 2 per commit, then the preview, then card + summary last
    assert [c["add"] for c in api.commits[:3]] == [data_files(out)[0:2], data_files(out)[2:4], data_files(out)[4:]]
    assert sorted(api.commits[3]["add"]) == ["preview/assets/000.jpg", "preview/grid.png", "preview/index.html"]
    assert sorted(api.commits[-1]["add"]) == ["README.md", "run.json"] and len(api.commits) == 5
    assert messages[0] == "Upload data shards (1-2 of 5)" and "dataset card" in messages[-1]
    assert all(c["repo_type"] == "dataset" and c["revision"] is None for c in api.commits)
    assert result.commits == [f"https://hub.invalid/commit/{i}" for i in range(1, 6)]
    for path in data_files(out):  # bytes on the Hub are the shard files, checked against the stats markers
        stats = json.loads((out / "_stats" / (Path(path).stem + ".json")).read_text())
        assert hashlib.sha256(api.files[path]).hexdigest() == stats["files"]["parquet"]["sha256"]


def test_published_card_is_what_the_hub_reads(out):
    api = FakeHfApi()
    publish_to_hub(str(out), REPO, api=api, log=quiet)
    card = api.files["README.md"].decode("utf-8")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    assert front["dataset_info"]["splits"][0]["num_examples"] == len(PROMPTS)
    assert {f["name"] for f in front["dataset_info"]["features"]} >= {"image", "tokens", "token_maps", "words"}
    assert front["task_categories"] == ["image-segmentation", "text-to-image"]
    assert front["license"] and front["tags"] and front["size_categories"] == ["n<1K"]
    assert "@inproceedings{tang2023daam" in card
    assert "](preview/grid.png)" in card  # the preview image, embedded when present
    assert f'load_dataset("{REPO}"' in card and "path/or/org-name" not in card
    assert not any(p.endswith(".py") for p in api.files)


def test_markers_and_failures_are_not_published_unless_asked(out):
    api = FakeHfApi()
    publish_to_hub(str(out), REPO, api=api, log=quiet)
    assert not [p for p in api.files if p.startswith(("_stats/", "_manifest/", "_failures/", ".")) or p == ".lock"]
    with_failures = FakeHfApi()
    publish_to_hub(str(out), REPO, api=with_failures, include_failures=True, log=quiet)
    assert set(with_failures.files) == expected_paths(out, failures=True)
    no_preview = FakeHfApi()
    publish_to_hub(str(out), REPO, api=no_preview, include_preview=False, log=quiet)
    assert not [p for p in no_preview.files if p.startswith("preview/")]
    assert "](preview/grid.png)" not in no_preview.files["README.md"].decode()


def test_publish_resumes_without_resending(out):
    api = FakeHfApi(fail_at_commit=3)
    with pytest.raises(PublishError, match="cannot reach the Hugging Face Hub"):
        publish_to_hub(str(out), REPO, api=api, max_files=2, log=quiet)
    first = set(api.sent())
    assert first == set(data_files(out)[:4])
    result = publish_to_hub(str(out), REPO, api=api, max_files=2, log=quiet)
    resent = set(api.sent()) - first
    assert not first & {p for c in api.commits[2:] for p in c["add"]}, "files already on the Hub were sent again"
    assert resent == expected_paths(out) - first
    assert {f.path for f in result.plan.unchanged} == first
    # a third run finds everything in place: no commit at all
    before = len(api.commits)
    again = publish_to_hub(str(out), REPO, api=api, log=quiet)
    assert len(api.commits) == before and again.plan.upload == [] and again.commits == []
    assert set(api.files) == expected_paths(out)


def test_changed_and_stale_files(copy):
    api = FakeHfApi()
    publish_to_hub(str(copy), REPO, api=api, log=quiet)
    api.files["data/train-00007-of-00009.parquet"] = b"an earlier version's shard"
    api.files["preview/assets/099.jpg"] = b"old preview asset"
    api.files["notes/extra.txt"] = b"added on the Hub by a person"
    api.files["run.json"] = b"{}"  # a regular (non-LFS) file that differs
    card = copy / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\nEdited.\n", encoding="utf-8")
    before = len(api.commits)
    publish_to_hub(str(copy), REPO, api=api, log=quiet)
    [last] = api.commits[before:]
    assert sorted(last["add"]) == ["README.md", "run.json"]
    assert sorted(last["delete"]) == ["data/train-00007-of-00009.parquet", "preview/assets/099.jpg"]
    assert "notes/extra.txt" in api.files  # not ours: left alone
    assert api.files["README.md"].decode().endswith("Edited.\n")


def test_card_preview_section_follows_the_published_files(copy):
    from pipeline.card import with_preview

    card = copy / "README.md"
    original = card.read_text(encoding="utf-8")
    card.write_text(with_preview(original), encoding="utf-8")  # what `daam-datasets preview` leaves
    api = FakeHfApi()
    publish_to_hub(str(copy), REPO, api=api, include_preview=False, log=quiet)
    published = api.files["README.md"].decode()
    assert "## Preview" not in published and "preview/" not in published
    assert published == original.replace('load_dataset("path/or/org-name"', f'load_dataset("{REPO}"')


def test_revision_and_private(out):
    api = FakeHfApi()
    publish_to_hub(str(out), REPO, api=api, revision="v2", private=True, log=quiet)
    assert ("create_repo", REPO, "dataset", True, True) in api.calls
    assert ("create_branch", REPO, "v2", "dataset", True) in api.calls
    assert {c["revision"] for c in api.commits} == {"v2"}


def test_damaged_output_is_refused(copy, run_cli):
    shard = copy / data_files(copy)[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    api = FakeHfApi()
    with pytest.raises(DamagedOutput, match="refusing to publish a damaged output") as error:
        publish_to_hub(str(copy), REPO, api=api, log=quiet)
    assert data_files(copy)[1] in str(error.value)
    assert api.calls == [] and api.files == {}
    code, stdout, stderr = run_cli("publish", copy, "--repo-id", REPO, "--dry-run")
    assert code == 1 and "refusing" in stderr and "validate" in stderr and stdout == ""
    with pytest.raises(DamagedOutput, match="refusing to publish a damaged output"):
        publish_to_path(str(copy), str(copy.parent / "dest"), log=quiet)
    assert not (copy.parent / "dest").exists()


def test_dry_run_prints_the_plan_and_sends_nothing(out):
    api = FakeHfApi()
    lines: list[str] = []
    result = publish_to_hub(str(out), REPO, api=api, max_files=2, dry_run=True, log=lines.append)
    text = "\n".join(lines)
    assert result.dry_run and api.commits == []
    assert [c[0] for c in api.calls] == ["list_repo_tree"]  # read only: no repo is created
    for path in data_files(out):
        size = (out / path).stat().st_size
        assert path in text and f"{size / 1024:.1f} KiB" in text
    assert "upload  README.md" in text and "upload  preview/ (3 files)" in text
    assert "in 5 commits:" in text and "commit 1/5: 'Upload data shards (1-2 of 5)' (2 files" in text
    assert "_stats" not in text and ".lock" not in text
    # after a real publish the dry run says everything is in place
    publish_to_hub(str(out), REPO, api=api, log=quiet)
    lines.clear()
    publish_to_hub(str(out), REPO, api=api, dry_run=True, log=lines.append)
    assert "0 files to upload" in lines[-1] and "(up to date)" in lines[-1]


def test_cli_without_network_says_so_in_one_line(out, run_cli, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    code, stdout, stderr = run_cli("publish", out, "--repo-id", REPO)
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: cannot reach the Hugging Face Hub at http://127.0.0.1:9") and stderr.count("\n") == 1
    code, stdout, stderr = run_cli("publish", out, "--repo-id", REPO, "--dry-run")
    assert code == 0 and "cannot reach the Hugging Face Hub" in stdout and "planned as if" in stdout
    assert "dry run: nothing was sent" in stdout


def test_hub_errors_are_one_line(out):
    class Offline(FakeHfApi):
        def create_repo(self, *args, **kwargs):
            raise httpx2.ConnectError("[Errno -2] Name or service not known")

    class Forbidden(FakeHfApi):
        def create_repo(self, repo_id, **kwargs):
            from huggingface_hub.errors import HfHubHTTPError

            request = httpx2.Request("POST", "https://hub.invalid/api/repos/create")
            raise HfHubHTTPError("403 Forbidden", response=httpx2.Response(403, request=request))

    with pytest.raises(PublishError, match=r"^cannot reach the Hugging Face Hub at https://hub.invalid \(") as error:
        publish_to_hub(str(out), REPO, api=Offline(), log=quiet)
    assert "\n" not in str(error.value)
    with pytest.raises(PublishError, match="not allowed to write to lab/daam-test.*--token"):
        publish_to_hub(str(out), REPO, api=Forbidden(), log=quiet)
    with pytest.raises(PublishError, match="expected ORG/NAME"):
        publish_to_hub(str(out), "no-namespace", api=FakeHfApi(), log=quiet)


@pytest.mark.parametrize("error", [
    httpx2.ConnectTimeout("timed out"),
    httpx2.ProxyError("407 Proxy Authentication Required"),
    httpx2.ReadTimeout("read timed out"),
    OfflineModeIsEnabled("HF_HUB_OFFLINE=1"),
    ConnectionRefusedError(111, "Connection refused"),
    socket.gaierror(-2, "Name or service not known"),
    RuntimeError("retries exhausted"),  # raised from a network error: see the cause
], ids=lambda e: type(e).__name__)
def test_network_errors_are_recognised_by_type(out, error):
    class Failing(FakeHfApi):
        def create_repo(self, *args, **kwargs):
            if isinstance(error, RuntimeError):
                raise error from httpx2.ConnectError("[Errno 101] Network is unreachable")
            raise error

    with pytest.raises(PublishError, match=r"^cannot reach the Hugging Face Hub at https://hub.invalid \("):
        publish_to_hub(str(out), REPO, api=Failing(), log=quiet)


def test_cli_usage_errors(out, run_cli):
    code, _, stderr = run_cli("publish", out)
    assert code == 2 and "--repo-id" in stderr
    code, _, stderr = run_cli("publish", out, "--repo-id", REPO, "--to", "/tmp/x")
    assert code == 2 and "not allowed with" in stderr
    code, _, stderr = run_cli("publish", out, "--to", "/tmp/x", "--private")
    assert code == 2 and "--private" in stderr


# -- any fsspec destination ------------------------------------------------------------------------
def test_to_local_folder_loads_and_resumes(out, tmp_path, run_cli):
    dest = tmp_path / "published"
    code, stdout, stderr = run_cli("publish", out, "--to", dest)
    assert code == 0, stderr
    assert stdout.startswith(f"publish {out} -> {dest}: ")
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == expected_paths(out) | {".daam-publish.json"}
    ds = load_dataset(str(dest), split="train")
    assert ds.num_rows == len(PROMPTS) and sorted(ds["prompt"]) == sorted(PROMPTS)
    assert ds[0]["image"].size == (64, 64)
    from pipeline.card import with_preview

    assert (dest / "README.md").read_text() == with_preview((out / "README.md").read_text())  # grid.png is there
    assert "](preview/grid.png)" in (dest / "README.md").read_text()
    # a stale shard that an earlier publish copied there goes; the rest is not copied again
    (dest / "data" / "train-00008-of-00009.parquet").write_bytes(b"old")
    manifest = json.loads((dest / ".daam-publish.json").read_text())
    manifest["data/train-00008-of-00009.parquet"] = {"bytes": 3, "sha256": hashlib.sha256(b"old").hexdigest()}
    (dest / ".daam-publish.json").write_text(json.dumps(manifest))
    (dest / "data" / data_files(out)[0].split("/")[1]).write_bytes(b"damaged copy")
    result = publish_to_path(str(out), str(dest), log=quiet)
    assert [f.path for f in result.plan.upload] == [data_files(out)[0]]
    assert result.plan.delete == ["data/train-00008-of-00009.parquet"]
    assert not (dest / "data" / "train-00008-of-00009.parquet").exists()
    assert load_dataset(str(dest), split="train").num_rows == len(PROMPTS)
    assert publish_to_path(str(out), str(dest), log=quiet).plan.upload == []
    assert not (dest / ".tmp").exists()


def test_to_fsspec_url(out):
    dest = "memory://daam-publish-test/ds"
    result = publish_to_path(str(out), dest, include_failures=True, log=quiet)
    fs = fsspec.filesystem("memory")
    assert len(result.plan.upload) == len(expected_paths(out, failures=True))
    for path in expected_paths(out, failures=True) - {"README.md"}:
        with fs.open(f"/daam-publish-test/ds/{path}", "rb") as fh:
            assert fh.read() == (out / path).read_bytes()
    assert "](preview/grid.png)" in fs.cat_file("/daam-publish-test/ds/README.md").decode()
    again = publish_to_path(str(out), dest, include_failures=True, log=quiet)  # sha256 from the manifest
    assert again.plan.upload == [] and len(again.plan.unchanged) == len(expected_paths(out, failures=True))
    fs.rm("/daam-publish-test", recursive=True)


def test_to_the_output_itself_is_refused(out):
    with pytest.raises(PublishError, match="is the output itself"):
        publish_to_path(str(out), str(out), log=quiet)


# -- --config segmentation: the segmentation view as a dataset of its own ---------------------------
SEGMENTATION_FILES = {"README.md", "id2label.json", "data/train-00000-of-00001.parquet",
                      "data/validation-00000-of-00001.parquet"}


def test_segmentation_config_to_a_folder_is_a_dataset_of_its_own(segmentation_output, tmp_path, run_cli):
    dest = tmp_path / "seg"
    code, stdout, stderr = run_cli("publish", segmentation_output, "--to", dest, "--config", "segmentation",
                                   "--validation-fraction", "0.5")
    assert code == 0, stderr
    assert stdout.startswith(f"publish {segmentation_output} (segmentation config) -> {dest}: 4 files to copy")
    files = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert files == SEGMENTATION_FILES | {".daam-publish.json"}  # no run.json, _stats/, default config
    ds = load_dataset(str(dest))  # the default config is the segmentation view
    assert set(ds) == {"train", "validation"} and sum(d.num_rows for d in ds.values()) == 5
    assert set(ds["train"].column_names) == {"id", "prompt", "image", "label", "classes"}
    front = yaml.safe_load((dest / "README.md").read_text().split("---\n")[1])
    assert [c["config_name"] for c in front["configs"]] == ["default"]
    assert front["configs"][0]["data_files"][0] == {"split": "train", "path": "data/train-*.parquet"}
    classes = json.loads((segmentation_output / "run.json").read_text())["settings"]["segmentation"]["classes"]
    assert json.loads((dest / "id2label.json").read_text()) == {str(i): c for i, c in enumerate(["background", *classes])}
    again = publish_to_path(str(segmentation_output), str(dest), config="segmentation", validation_fraction=0.5, log=quiet)
    assert again.plan.upload == [] and again.plan.delete == []  # the export is the same bytes: nothing copied again
    moved = publish_to_path(str(segmentation_output), str(dest), config="segmentation", validation_fraction=0, log=quiet)
    assert moved.plan.delete == ["data/validation-00000-of-00001.parquet"]
    assert set(load_dataset(str(dest))) == {"train"}


def test_segmentation_config_to_the_hub_names_the_repository(segmentation_output):
    api = FakeHfApi()
    publish_to_hub(str(segmentation_output), REPO, api=api, config="segmentation", validation_fraction=0.5, log=quiet)
    assert set(api.files) == SEGMENTATION_FILES
    assert [sorted(c["add"]) for c in api.commits] == [
        ["data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet"], ["id2label.json"], ["README.md"]]
    card = api.files["README.md"].decode("utf-8")
    assert f'load_dataset("{REPO}")' in card and f"--dataset_name {REPO}" in card and "path/or/org-name" not in card


def test_segmentation_config_refusals(segmentation_output, out, tmp_path, run_cli):
    cases = [
        (("publish", out, "--to", tmp_path / "a", "--config", "segmentation"),
         f"error: {out} has no segmentation config: run with --classes"),
        (("publish", segmentation_output, "--to", tmp_path / "b", "--validation-fraction", "0.2"),
         "error: publish: --validation-fraction applies to --config segmentation"),
        (("publish", segmentation_output, "--to", tmp_path / "c", "--config", "segmentation", "--include-failures"),
         "error: publish: --include-failures applies to the default config, not --config segmentation"),
        (("publish", segmentation_output, "--to", tmp_path / "d", "--config", "panoptic"),
         "error: daam-datasets publish: argument --config: invalid choice: 'panoptic' (choose from 'default', 'segmentation')"),
    ]
    for args, message in cases:
        code, stdout, stderr = run_cli(*args)
        assert (code, stderr.strip()) == (2, message), args
    assert not any((tmp_path / name).exists() for name in "abcd")
    foreign = tmp_path / "site"
    foreign.mkdir()
    (foreign / "index.html").write_text("mine")
    with pytest.raises(PublishError, match=r"holds files daam-datasets did not write \(index.html\)"):
        publish_to_path(str(segmentation_output), str(foreign), config="segmentation", log=quiet)
