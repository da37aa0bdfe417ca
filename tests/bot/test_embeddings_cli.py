"""`hitl task create --features embeddings`: refused in one line when the model cannot load."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from bot.storage.schema import AuditLog, Task
from model import embeddings
from model.embeddings import DEFAULT_MODEL, INSTALL_HINT
from tests.bot.conftest import Hitl


@pytest.fixture(autouse=True)
def default_embedding_model() -> Iterator[None]:
    """Each test ends with the default embedding model configured again."""
    yield
    embeddings.configure(None)


def task_rows(tmp_path: Path) -> tuple[int, int]:
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.connect() as connection:
        tasks = connection.scalar(select(func.count()).select_from(Task))
        audits = connection.scalar(select(func.count()).select_from(AuditLog))
    engine.dispose()
    return tasks or 0, audits or 0


def test_missing_model_refuses_the_task_and_writes_nothing(
    hitl: Hitl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HITL_EMBEDDING_MODEL", str(tmp_path / "no-model"))
    code, out, err = hitl("task", "create", "t", "--labels", "a,b", "--features", "embeddings")
    assert code == 2 and out == ""
    assert err.startswith("error: cannot use --features embeddings: embedding model directory ")
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert task_rows(tmp_path) == (0, 0)


def test_missing_extra_names_the_install_command(
    hitl: Hitl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    (folder / "tokenizer.json").write_bytes(b"{}")
    (folder / "SHA256SUMS").write_text(
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881  model.onnx\n"
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a  tokenizer.json\n"
    )
    monkeypatch.setenv("HITL_EMBEDDING_MODEL", str(folder))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as on the base install
    code, _, err = hitl("task", "create", "t", "--labels", "a,b", "--features", "embeddings")
    assert code == 2 and INSTALL_HINT in err
    assert task_rows(tmp_path) == (0, 0)


def test_task_with_embeddings_is_created_when_the_model_loads(hitl: Hitl) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tokenizers")
    pytest.importorskip(DEFAULT_MODEL)
    code, out, _ = hitl("task", "create", "t", "--labels", "a,b", "--features", "embeddings")
    assert code == 0 and out.startswith("created task 't'")
    code, out, _ = hitl("task", "show", "t", "--json")
    assert code == 0 and '"features": "embeddings"' in out
