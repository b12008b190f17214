"""Report embeddings: a frozen BERT encoder, a per-study cache file, and the transform that attaches them.

The paper embeds each report with BioBERT (no fine-tuning) and feeds the vector to two 512-unit
layers (§3.3). Here:

* :class:`ReportEncoder` loads any Hugging Face BERT-like model by name or local directory,
  **offline by default** (``local_files_only=True``), keeps it frozen (``eval`` + ``no_grad``) and
  pools the last hidden layer. Pooling is the **mean over the attention mask** by default: a BERT
  pretrained with masked-language modelling is not trained to summarise a text in its ``[CLS]``
  token, and mean pooling is the better frozen sentence vector (Reimers & Gurevych, Sentence-BERT,
  2019); ``cls`` is selectable. The dimension is the model config's ``hidden_size``.
* :func:`embed_datalist` embeds every unique ``study_id`` of a datalist JSON once and stores the
  vectors in one ``.pt`` file (see :func:`save_embedding_cache`). Re-running skips studies already
  embedded with the same model, pooling and length, so an interrupted run resumes.
* :class:`AttachReportEmbeddingd` loads that file once and adds each item's vector under
  ``report_embedding``, so nothing in the training step reads a file.

Nothing here logs report text; errors name studies by ``study_id`` and items by split and position.
Only :class:`ReportEncoder` needs the ``[reports]`` extra (transformers); the cache and the transform
run on the core.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.transforms import MapTransform

from l2v_monai.extras import import_extra

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "dmis-lab/biobert-v1.1"
# BERT's position embeddings stop at 512 tokens; longer inputs are truncated.
MAX_TOKENS = 512
CACHE_FORMAT = "l2v-report-embeddings/1"
DATALIST_SPLITS = ("training", "validation", "test")


class ReportModelNotFoundError(FileNotFoundError):
    """The text model is neither a local directory nor in the Hugging Face cache (nothing is downloaded)."""


class MissingReportEmbeddingError(LookupError):
    """An item's study has no vector in the embedding file."""


# --------------------------------------------------------------------------------------------- pooling


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of ``B × T × D`` token states over the tokens where ``attention_mask`` is 1."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def cls_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The first token's state (``[CLS]`` for BERT)."""
    return hidden[:, 0]


POOLINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"mean": mean_pool, "cls": cls_pool}


# --------------------------------------------------------------------------------------------- encoder


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _model_not_found(model: str, err: Exception) -> ReportModelNotFoundError:
    from huggingface_hub.constants import HF_HUB_CACHE

    return ReportModelNotFoundError(
        f"text model {model!r} could not be loaded offline ({type(err).__name__}). Nothing is downloaded at "
        f"run time: either pass a local directory holding config.json, the weights and the tokenizer files "
        f"(e.g. saved with save_pretrained, or copied from a machine with internet via "
        f"`hf download {model} --local-dir DIR`), or pre-populate the Hugging Face cache at "
        f"{HF_HUB_CACHE} (set HF_HOME to move it)."
    )


class ReportEncoder:
    """A frozen BERT-like encoder that turns report texts into ``len × hidden_size`` float32 vectors.

    Args:
        model: Hugging Face model name or local directory.
        pooling: ``"mean"`` (over the attention mask, default) or ``"cls"``.
        max_length: token limit; capped at 512 and at the model's own limits.
        batch_size: texts per forward pass.
        device: where to run; CUDA when available by default.
        local_files_only: keep ``True`` offline; a missing model is then a clear error.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_MODEL,
        pooling: str = "mean",
        max_length: int = MAX_TOKENS,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        local_files_only: bool = True,
    ) -> None:
        transformers = import_extra("transformers", "reports", "report embedding (ReportEncoder)")
        AutoModel, AutoTokenizer = transformers.AutoModel, transformers.AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(POOLINGS)}, got {pooling!r}")
        if batch_size < 1 or max_length < 2:
            raise ValueError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size}, {max_length}")
        self.model_name = str(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name, local_files_only=local_files_only)
            self.model = AutoModel.from_pretrained(self.model_name, local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise _model_not_found(self.model_name, err) from err
        self.device = torch.device(device) if device is not None else _default_device()
        self.model.to(self.device).eval().requires_grad_(False)
        self.pooling = pooling
        self.dim = int(self.model.config.hidden_size)
        limits = [max_length, MAX_TOKENS, int(getattr(self.model.config, "max_position_embeddings", MAX_TOKENS))]
        # Tokenizers without a limit report a huge sentinel (1e30); only a real one counts.
        if 0 < int(min(self.tokenizer.model_max_length, 10**9)) < 10**9:
            limits.append(int(self.tokenizer.model_max_length))
        self.max_length = min(limits)
        self.batch_size = batch_size

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts`` → ``len(texts) × dim`` float32 on the CPU, in input order."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, expected str")
        out = torch.empty(len(texts), self.dim, dtype=torch.float32)
        # Similar lengths in a batch waste less compute on padding; the mask makes pooling pad-invariant.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        pool = POOLINGS[self.pooling]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            tokens = self.tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**tokens).last_hidden_state
            out[chunk] = pool(hidden, tokens["attention_mask"]).float().cpu()
        return out


# --------------------------------------------------------------------------------------------- cache file


@dataclass
class EmbeddingCache:
    """What one embedding file holds: the settings that made it and one vector per study."""

    model: str
    dim: int
    pooling: str
    max_length: int
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    def matches(self, other: EmbeddingCache) -> bool:
        """True when ``other`` was made with the same model, pooling, length and dimension."""
        return (self.model, self.dim, self.pooling, self.max_length) == (
            other.model,
            other.dim,
            other.pooling,
            other.max_length,
        )


def save_embedding_cache(cache: EmbeddingCache, path: str | Path) -> Path:
    """Write ``cache`` atomically (temporary file, then rename) so an interrupted write never corrupts it.

    File layout (``torch.save``): ``{"format", "model", "dim", "pooling", "max_length",
    "study_ids": [S str], "embeddings": S × dim float32}``; one matrix rather than S small tensors
    keeps large caches quick to save and load.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = list(cache.embeddings)
    matrix = torch.stack([cache.embeddings[s] for s in ids]) if ids else torch.empty(0, cache.dim)
    payload = {
        "format": CACHE_FORMAT,
        "model": cache.model,
        "dim": cache.dim,
        "pooling": cache.pooling,
        "max_length": cache.max_length,
        "study_ids": ids,
        "embeddings": matrix.to(torch.float32).contiguous(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_embedding_cache(path: str | Path) -> EmbeddingCache:
    """Read a file written by :func:`save_embedding_cache`; a clear error naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report embedding file not found: {path} (make it with scripts/embed_reports.py)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, Mapping) or payload.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path} is not a report embedding file (expected format {CACHE_FORMAT!r})")
    ids, matrix = payload["study_ids"], payload["embeddings"]
    if matrix.ndim != 2 or matrix.shape != (len(ids), payload["dim"]):
        raise ValueError(f"{path}: embeddings have shape {tuple(matrix.shape)}, expected ({len(ids)}, {payload['dim']})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: study_ids are not unique")
    # clone() gives each study its own storage: a row view would drag the whole matrix along when
    # a DataLoader worker pickles one item.
    embeddings = {str(s): matrix[i].clone() for i, s in enumerate(ids)}
    return EmbeddingCache(payload["model"], int(payload["dim"]), payload["pooling"], int(payload["max_length"]), embeddings)


# --------------------------------------------------------------------------------------------- datalist


@dataclass
class StudyReports:
    """One report per unique study of a datalist, plus the items that had none (counted per split)."""

    reports: dict[str, str]
    skipped: dict[str, list[int]]

    def skipped_counts(self) -> dict[str, int]:
        return {split: len(positions) for split, positions in self.skipped.items() if positions}


def collect_study_reports(datalist: Mapping[str, Any], source: str = "datalist") -> StudyReports:
    """Unique ``study_id → report`` over all splits of a datalist.

    Items without a ``study_id`` or with no/blank ``report`` are **skipped and counted** (per split,
    by position), because hand-labelled or image-only items may legitimately have no text; the
    caller prints the counts, and :class:`AttachReportEmbeddingd` later fails loudly for any such
    study that a report-using network actually needs. Two items of one study with different report
    text are an error naming the study_id.
    """
    splits = [s for s in datalist if isinstance(datalist[s], list) and s not in ("findings", "label_sets")]
    reports: dict[str, str] = {}
    skipped: dict[str, list[int]] = {}
    for split in splits:
        for position, item in enumerate(datalist[split]):
            if not isinstance(item, Mapping):
                raise ValueError(f"{source}: {split}[{position}] is a {type(item).__name__}, expected an object")
            study, report = item.get("study_id"), item.get("report")
            if study is None or not isinstance(report, str) or not report.strip():
                skipped.setdefault(split, []).append(position)
                continue
            study = str(study)
            if study in reports and reports[study] != report:
                raise ValueError(f"{source}: study_id {study!r} appears with two different report texts ({split}[{position}])")
            reports[study] = report
    return StudyReports(reports, skipped)


@dataclass
class EmbeddingRun:
    """What :func:`embed_datalist` did: counts only, never text."""

    path: Path
    studies: int
    embedded: int
    reused: int
    skipped: dict[str, int]


def embed_datalist(
    datalist: str | Path | Mapping[str, Any],
    output: str | Path,
    encoder: ReportEncoder,
    overwrite: bool = False,
    save_every_s: float = 600.0,
    chunk_size: int = 1024,
) -> EmbeddingRun:
    """Embed every unique study of ``datalist`` into the cache file ``output``; resumable.

    Studies already in ``output`` with the same model, pooling, length and dimension are reused.
    A file made with other settings is an error unless ``overwrite``. Progress is saved every
    ``save_every_s`` seconds (and at the end), so an interrupted run loses at most that much work.
    """
    if isinstance(datalist, Mapping):
        data, source = datalist, "datalist"
    else:
        source = str(datalist)
        with open(datalist, encoding="utf-8") as f:
            data = json.load(f)
    collected = collect_study_reports(data, source)
    wanted = EmbeddingCache(encoder.model_name, encoder.dim, encoder.pooling, encoder.max_length)
    output = Path(output)
    cache = wanted
    if output.exists() and not overwrite:
        existing = load_embedding_cache(output)
        if not existing.matches(wanted):
            raise ValueError(
                f"{output} was made with model={existing.model!r}, pooling={existing.pooling!r}, "
                f"max_length={existing.max_length}, dim={existing.dim}; this run uses model={wanted.model!r}, "
                f"pooling={wanted.pooling!r}, max_length={wanted.max_length}, dim={wanted.dim}. "
                f"Use another output file or overwrite=True (--overwrite)."
            )
        cache = existing
    todo = [s for s in collected.reports if s not in cache.embeddings]
    reused = len(collected.reports) - len(todo)
    logger.info("%d studies: %d to embed, %d already in %s", len(collected.reports), len(todo), reused, output)
    last_save = time.monotonic()
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        vectors = encoder.embed([collected.reports[s] for s in chunk])
        cache.embeddings.update(zip(chunk, vectors))
        if time.monotonic() - last_save >= save_every_s:
            save_embedding_cache(cache, output)
            last_save = time.monotonic()
            logger.info("saved %d/%d new studies to %s", start + len(chunk), len(todo), output)
    save_embedding_cache(cache, output)
    return EmbeddingRun(output, len(collected.reports), len(todo), reused, collected.skipped_counts())


# --------------------------------------------------------------------------------------------- transform


class AttachReportEmbeddingd(MapTransform):
    """Add each item's report vector (float32, ``dim``) under ``key``, looked up by its study.

    The embedding file is read once, at construction. An item whose study has no vector is an
    error naming the study_id (never the report text); an item without a ``study_key`` is an error
    naming its image path.
    """

    def __init__(
        self,
        embedding_file: str | Path,
        key: str = "report_embedding",
        study_key: str = "study_id",
        image_key: str = "image",
    ) -> None:
        super().__init__(keys=[study_key])
        self.embedding_file = Path(embedding_file)
        cache = load_embedding_cache(self.embedding_file)
        self.embeddings = cache.embeddings
        self.model = cache.model
        self.dim = cache.dim
        self.key = key
        self.study_key = study_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.study_key not in d:
            image = d.get(self.image_key)
            where = f"item with image {str(image)!r}" if isinstance(image, (str, Path)) else "an item"
            raise ValueError(f"{where} has no {self.study_key!r}; report embeddings are looked up by study")
        study = str(d[self.study_key])
        vector = self.embeddings.get(study)
        if vector is None:
            raise MissingReportEmbeddingError(
                f"study_id {study!r} has no report embedding in {self.embedding_file} "
                f"(it holds {len(self.embeddings)} studies; re-run scripts/embed_reports.py on this datalist)"
            )
        d[self.key] = vector.clone()
        return d
