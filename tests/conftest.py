"""Shared fixtures: a small real-text dataset built once per test session with `build_dataset`."""

import json
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep the embedded-corpus cache of the tests out of the user's home directory."""
    old = os.environ.get("PGOLF_CACHE")
    os.environ["PGOLF_CACHE"] = str(tmp_path_factory.mktemp("pgolf-cache"))
    yield
    if old is None:
        os.environ.pop("PGOLF_CACHE", None)
    else:
        os.environ["PGOLF_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_xdist_worker():
    """Under pytest-xdist (``-n 2``, the README's command) each worker is one of the machine's cores: torch
    and the subprocesses the tests start use one intra-op thread, so two workers never oversubscribe 2
    cores (many tests are small ops, for which 2 threads on a busy core are far slower than 1)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    import torch

    old_threads, old_env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(old_threads)
    if old_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old_env


@pytest.fixture(scope="session", autouse=True)
def _no_user_registry():
    """Runs made by the tests are never recorded in the user's registry; registry tests give a temp URL."""
    old = os.environ.get("PGOLF_REGISTRY")
    os.environ["PGOLF_REGISTRY"] = "off"
    yield
    if old is None:
        os.environ.pop("PGOLF_REGISTRY", None)
    else:
        os.environ["PGOLF_REGISTRY"] = old


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A dataset of ~200 standard-library docstring documents, 384-piece tokenizer (vocab 384)."""
    from pgolf.data.corpus import build_dataset
    from pgolf.data.embedded import stdlib_documents

    root = tmp_path_factory.mktemp("tiny-data")
    docs = [text for _name, text in stdlib_documents()[:200]]
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = root / "data"
    build_dataset([src], out, vocab_size=384, val_docs=20, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of many small ops: on 2 shared cores that is far
    faster under load (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
