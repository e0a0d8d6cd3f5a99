"""Text metrics: hand-computed values, the CT-SpatialVQA reference numbers, and cache/worker invariance.

The reference numbers are in fixtures/spatialvqa_mini/reference_metrics.json (read in place,
never copied). METEOR needs WordNet from Debian's wordnet-base and wordnet-sense-index.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest

from rad3d_pipeline.evaluation import text_metrics as tm
from rad3d_pipeline.evaluation.text_metrics import meteor_score, rouge, sacrebleu_rules, tokenizers, wordnet_synonyms
from rad3d_pipeline.evaluation.text_metrics import pool as scoring_pool
from rad3d_pipeline.evaluation.text_metrics.wordnet_setup import (
    LEXNAMES,
    WordNetUnavailableError,
    ensure_wordnet,
    lexnames_text,
)
from rad3d_pipeline.evaluation.text_metrics.wordnet_synonyms import SOURCE_FILES, SynonymTable
from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[1]
FIXTURE_FILES = ("merlin_predictions_600.jsonl", "radfm_predictions_600.jsonl")
TEXT_KEYS = ("count", "bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor")


def spatial_dir() -> Path:
    root = Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures"))
    path = root / "spatialvqa_mini"
    if not (path / "reference_metrics.json").is_file():
        skip_or_fail(f"CT-SpatialVQA fixtures not found at {path} (set RAD3D_FIXTURES to ../shared/fixtures)")
    return path


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = json.loads((spatial_dir() / "reference_metrics.json").read_text())["results"]
    return results


@pytest.fixture(scope="module")
def fixture_rows() -> list[tuple[str, str]]:
    """Both fixture files' (prediction, answer) rows, once each and then again (duplicates)."""
    rows: list[tuple[str, str]] = []
    for name in FIXTURE_FILES:
        preds, refs = tm.read_predictions_jsonl(spatial_dir() / name)
        rows.extend(zip(preds, refs, strict=True))
    return rows


# --------------------------------------------------------------------------- WordNet setup


def test_lexnames_is_the_wordnet_30_list() -> None:
    lines = lexnames_text().splitlines()
    assert len(lines) == len(LEXNAMES) == 45
    assert lines[0] == "00\tadj.all\t3"
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_ensure_wordnet_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk  # type: ignore[import-untyped]

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    monkeypatch.setenv("NLTK_DATA", "")
    root = ensure_wordnet(tmp_path / "nltk_data")
    target = root / "corpora" / "wordnet"
    assert (target / "lexnames").read_text() == lexnames_text()
    assert (target / "index.sense").is_file() and (target / "data.noun").is_file()
    stamp = (target / "data.noun").stat().st_mtime_ns
    assert ensure_wordnet(tmp_path / "nltk_data") == root
    assert (target / "data.noun").stat().st_mtime_ns == stamp
    assert nltk.data.path[0] == str(root)
    assert os.environ["NLTK_DATA"].split(os.pathsep)[0] == str(root)
    # An incomplete copy (an interrupted install) is replaced whole, and no stray folder is left.
    (target / "data.verb").unlink()
    ensure_wordnet(tmp_path / "nltk_data")
    assert (target / "data.verb").is_file() and (target / "lexnames").read_text() == lexnames_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["wordnet"]


def test_missing_wordnet_names_the_debian_packages(tmp_path: Path) -> None:
    with pytest.raises(WordNetUnavailableError, match=r"wordnet-base.*wordnet-sense-index"):
        ensure_wordnet(tmp_path / "nltk_data", source=tmp_path / "no-wordnet")


# --------------------------------------------------------------------------- single metrics, by hand


def test_tokenize_13a() -> None:
    assert tm.tokenize_13a("No pleural effusion.") == ["No", "pleural", "effusion", "."]
    assert tm.tokenize_13a("3.5 cm, left-sided") == ["3.5", "cm", ",", "left-sided"]


def test_hf_bleu_max_order_1() -> None:
    # 5 of 6 unigrams match ("the" twice), equal lengths: BP = 1
    assert tm.hf_bleu("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6, abs=1e-15)
    # all matched but 2 tokens against 6: BP = exp(1 - 6/2)
    assert tm.hf_bleu("the cat", "the cat is on the mat") == pytest.approx(math.exp(-2), abs=1e-15)
    # "No." is two tokens, one matches; longer than the reference: BP = 1
    assert tm.hf_bleu("No.", "No") == pytest.approx(0.5, abs=1e-15)
    assert tm.hf_bleu("yes", "no") == 0.0
    assert tm.hf_bleu("anything", "") == 0.0  # empty reference: 0, as current `evaluate` returns


def test_compute_bleu_order_2() -> None:
    bleu, precisions, bp, ratio, hyp_len, ref_len = tm.compute_bleu([[["a", "b", "d"]]], [["a", "b", "c"]], max_order=2)
    assert precisions == [2 / 3, 1 / 2]
    assert (bp, ratio, hyp_len, ref_len) == (1.0, 1.0, 3, 3)
    assert bleu == pytest.approx(math.sqrt(1 / 3), abs=1e-15)


def test_rouge_by_hand_and_against_rouge_score() -> None:
    r1, r2, rl = tm.rouge_f("the cat sat", "the cat")
    assert (r1, r2, rl) == pytest.approx((0.8, 2 / 3, 0.8), abs=1e-15)
    # Porter stemming: lesions/lesion -> lesion, enlarging/enlarged -> enlarg
    assert tm.rouge_f("Lesions are enlarging.", "lesion enlarged")[0] == pytest.approx(0.8, abs=1e-15)
    assert tm.rouge_f("Lesions are enlarging.", "lesion enlarged", use_stemmer=False)[0] == 0.0
    assert tm.rouge_f("", "anything") == (0.0, 0.0, 0.0)
    scorer = rouge.library_scorer(True)
    for ref, pred in [("a b c d e", "e d c b a"), ("right upper lobe nodule", "nodule in the right lobe")]:
        s = scorer.score(ref, pred)
        assert tm.rouge_f(ref, pred) == (s["rouge1"].fmeasure, s["rouge2"].fmeasure, s["rougeL"].fmeasure)


def test_lcs_length() -> None:
    assert tm.lcs_length("ABCBDAB", "BDCABA") == 4
    assert tm.lcs_length([], ["a"]) == 0
    assert tm.lcs_length(["x"] * 70, ["x"] * 65) == 65  # more than 64 tokens: big-int masks


def test_meteor_by_hand_and_against_nltk() -> None:
    from nltk.translate.meteor_score import meteor_score  # type: ignore[import-untyped]

    ensure_wordnet()
    # three exact matches in one chunk: (1 - 0.5 * (1/3)**3) * 1
    assert tm.meteor(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1 - 1 / 54, abs=1e-15)
    assert tm.meteor(["this", "is", "a", "cat"], ["non", "matching", "hypothesis"]) == 0.0
    assert tm.meteor([], ["a"]) == 0.0
    # WordNet synonym stage: sick ~ ill
    assert tm.meteor(["he", "is", "ill"], ["he", "is", "sick"]) == pytest.approx(1 - 1 / 54, abs=1e-15)
    # NLTK looks synonyms up for the *stemmed* leftovers: large -> "larg" has none, so 2 matches in 2 chunks
    assert tm.meteor(["the", "big", "cat"], ["the", "large", "cat"]) == pytest.approx(1 / 3, abs=1e-15)
    cases = [
        (["the", "big", "cat"], ["the", "large", "cat"]),
        (["he", "is", "ill"], ["he", "is", "sick"]),
        (
            ["no", "pleural", "effusion", "was", "observed", "."],
            ["there", "is", "no", "effusion", "in", "the", "pleura"],
        ),
        (["the", "the", "cat", "on", "the", "mat"], ["a", "cat", "on", "the", "the", "mat", "the"]),
        (["Both", "Lungs"], ["both", "lungs"]),
    ]
    for ref, hyp in cases:
        assert tm.meteor(ref, hyp) == meteor_score([ref], hyp)


def _random_texts(alphabet: str, count: int, max_length: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_length))) for _ in range(count)]


def _random_sentences(words: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))) for _ in range(count)]


# words with WordNet synonyms of each other, inflections, repeats and punctuation
MATCH_WORDS_TEXT = (
    "the a lung lungs left right ill sick big large great nodule nodules is are was seen present lesion "
    "lesions enlarged enlarge normal no yes , . running ran runs car automobile auto Left LUNG"
)
MATCH_WORDS = MATCH_WORDS_TEXT.split(" ")


def test_meteor_equals_nltk_on_random_pairs() -> None:
    """Exact, stem and synonym stages with repeated words: every value equals NLTK's, bit for bit."""
    from nltk.translate.meteor_score import meteor_score

    ensure_wordnet()
    sentences = _random_sentences(MATCH_WORDS, 3000, seed=3)
    for ref, hyp in zip(sentences[::2], sentences[1::2], strict=True):
        assert tm.meteor(ref.split(), hyp.split()) == meteor_score([ref.split()], hyp.split()), (ref, hyp)


def test_wordnet_synonyms_equal_nltk_synsets(fixture_rows: list[tuple[str, str]]) -> None:
    """The precomputed table gives NLTK's lemma names for base forms, inflections, exceptions and non-words."""
    wordnet = meteor_score.nltk_wordnet()  # NLTK's own reader, the reference
    table = meteor_score.wordnet_synonyms()
    assert isinstance(table, SynonymTable)
    names = sorted(wordnet.all_lemma_names())
    words = names[::53] + [n + "s" for n in names[::301]] + [n + "ed" for n in names[::301]]
    words += [n + suffix for n in names[::997] for suffix in ("es", "ing", "er", "est", "ies", "men")]
    words += [n.upper() for n in names[::1999]] + [n.capitalize() for n in names[::1999]]
    words += [form for pos in "nvar" for form in sorted(wordnet._exception_map[pos])[::23]]
    words += sorted({w for row in fixture_rows for text in row for w in text.lower().split()})[::3]
    words += ["went", "better", "lesions", "Paris", "galore", "", "12mm", "(a)", "ill", "large", "a", "s", "men"]
    assert len(set(words)) > 5000
    for word in words:
        expected = {lemma.name() for synset in wordnet.synsets(word) for lemma in synset.lemmas()}
        assert table.lookup(word) == frozenset(n for n in expected if "_" not in n) | {word}, word


class _TinyWordNet:
    """A reader-shaped stand-in on a two-synset WordNet folder (what ``build_table`` reads)."""

    def __init__(self, root: Path) -> None:
        self.MORPHOLOGICAL_SUBSTITUTIONS = {"n": [("s", "")], "v": [], "a": [], "r": []}
        self.root = root
        self._lemma_pos_offset_map: dict[str, dict[str, list[int]]] = {}
        self._exception_map: dict[str, dict[str, list[str]]] = {pos: {} for pos in "nvar"}
        data = (root / "data.noun").read_bytes()
        offset = 0
        for line in data.splitlines(keepends=True):
            fields = line.decode().split()
            for word in fields[4 : 4 + 2 * int(fields[3], 16) : 2]:
                self._lemma_pos_offset_map.setdefault(word.lower(), {}).setdefault("n", []).append(offset)
            offset += len(line)


def _tiny_wordnet(root: Path, synonym: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"{0:08d} 03 n 02 lung 0 pulmo 0 | x\n", ""]
    lines[1] = f"{len(lines[0]):08d} 03 n 02 scan 0 {synonym} 0 | y\n"
    (root / "data.noun").write_text("".join(lines))
    for name in SOURCE_FILES:
        if not (root / name).exists():
            (root / name).write_text("")
    return root


def test_synonym_table_is_rebuilt_when_wordnet_or_nltk_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nltk_data = tmp_path / "nltk_data"
    wordnet_root = _tiny_wordnet(nltk_data / "corpora" / "wordnet", "tomogram")
    monkeypatch.setattr(wordnet_synonyms, "load_nltk_wordnet", lambda data: _TinyWordNet(data / "corpora" / "wordnet"))
    table = wordnet_synonyms.open_table(nltk_data)  # missing: built
    assert table.path == wordnet_synonyms.table_path(nltk_data)
    assert table.lookup("lungs") == {"lungs", "lung", "pulmo"} and table.lookup("scan") == {"scan", "tomogram"}
    assert wordnet_synonyms.open_table(nltk_data, rebuild=False).lookup("scan") == {"scan", "tomogram"}
    # the same contents with new modification times (a fresh copy) stay valid: the checksum decides
    os.utime(wordnet_root / "data.noun", ns=(1, 1))
    assert wordnet_synonyms.open_table(nltk_data, rebuild=False).lookup("scan") == {"scan", "tomogram"}
    # another WordNet (same size, other contents): stale, and rebuilt from the new files
    _tiny_wordnet(wordnet_root, "tomograf")
    with pytest.raises(wordnet_synonyms.StaleTableError, match="changed"):
        wordnet_synonyms.open_table(nltk_data, rebuild=False)
    assert wordnet_synonyms.open_table(nltk_data).lookup("scan") == {"scan", "tomograf"}
    assert wordnet_synonyms.open_table(nltk_data, rebuild=False).lookup("scan") == {"scan", "tomograf"}
    # another NLTK WordNet reader (its morphology or lookup may differ): stale as well
    monkeypatch.setattr(wordnet_synonyms, "nltk_reader_checksum", lambda: "another nltk")
    with pytest.raises(wordnet_synonyms.StaleTableError, match="NLTK"):
        wordnet_synonyms.open_table(nltk_data, rebuild=False)
    # a damaged file is rebuilt too
    wordnet_synonyms.table_path(nltk_data).write_bytes(b"garbage")
    with pytest.raises(wordnet_synonyms.StaleTableError):
        wordnet_synonyms.open_table(nltk_data, rebuild=False)
    assert wordnet_synonyms.open_table(nltk_data).lookup("lung") == {"lung", "pulmo"}


def test_porter_stemmer_from_source_equals_nltk(fixture_rows: list[tuple[str, str]]) -> None:
    """NLTK's porter.py run without importing the nltk package stems every word as the imported class."""
    from nltk.stem.porter import PorterStemmer

    ours, theirs = tokenizers.porter_from_source()(), PorterStemmer()
    assert type(ours).__module__ == "rad3d_pipeline._nltk_porter"
    words = sorted(meteor_score.nltk_wordnet().all_lemma_names())[::7]
    words += sorted({w for row in fixture_rows for text in row for w in text.lower().split()})
    words += [*_random_texts("aeiouybcdlnrstgy", 3000, 12, seed=8), "", "ies", "sky", "dying", "generalizations"]
    for word in words:
        assert ours.stem(word) == theirs.stem(word), word


def test_bleu_formula_equals_sacrebleu() -> None:
    import sacrebleu

    assert sacrebleu_rules.matches()
    rng = random.Random(9)
    for _ in range(3000):
        total = [rng.choice((0, 1, rng.randint(1, 40), rng.randint(1, 10**7))) for _ in range(4)]
        correct = [rng.randint(0, t) if rng.random() < 0.7 else 0 for t in total]
        sys_len, ref_len = rng.randint(0, 10**7), rng.randint(0, 10**7)
        expected = sacrebleu.BLEU.compute_bleu(list(correct), list(total), sys_len, ref_len, smooth_method="exp")
        assert sacrebleu_rules.bleu_exp(correct, total, sys_len, ref_len) == expected.score


def test_spatial_metrics_import_no_heavy_library() -> None:
    """One spatial scoring in a fresh process: no NLTK, sacreBLEU, rouge-score, pandas, torch, numpy or pool import."""
    import subprocess
    import sys

    ensure_wordnet()
    meteor_score.wordnet_synonyms()  # the table exists (built once per WordNet)
    code = (
        "import sys\n"
        "from rad3d_pipeline.evaluation import text_metrics as tm\n"
        "from rad3d_pipeline.evaluation.text_metrics import sacrebleu_rules\n"
        "sacrebleu_rules.verified()\n"
        "print(tm.spatial_metrics(['sick lungs are seen'], ['ill lung seen'], sbert=False))\n"
        "heavy = ['nltk', 'sacrebleu', 'rouge_score', 'pandas', 'torch', 'sentence_transformers', 'scipy', 'numpy',\n"
        "         'multiprocessing', 'concurrent.futures']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    values, loaded = out.stdout.splitlines()
    assert loaded == "[]", out.stdout
    assert values == str(tm.spatial_metrics(["sick lungs are seen"], ["ill lung seen"], sbert=False, cache=False))


def test_13a_tokenizer_equals_sacrebleu(fixture_rows: list[tuple[str, str]]) -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    reference = Tokenizer13a()
    texts = [text for row in fixture_rows for text in row]
    texts += ["&quot;x&amp;y&lt;z&gt;", "<skipped>a-\nb\nc", "3.5-4.2 cm, i.e. 1,000", "e.g.,x.y", "-1-2", ""]
    texts += _random_texts("ab1.,-&;qut<>\n \t\"'(){}[]~`^_|\\/:?@!#$%*+=09é—\xa0\u3000", 4000, 40, seed=1)
    for alphabet in ("a1.,- ", "1.,-\t\xa0(", "x1.,-&;/ "):
        texts += _random_texts(alphabet, 4000, 14, seed=2)
    for text in texts:
        assert tokenizers.tokenize_13a_cached(text) == reference(text), repr(text)


def test_rouge_tokens_equal_rouge_score(fixture_rows: list[tuple[str, str]]) -> None:
    from nltk.stem import porter
    from rouge_score import tokenize

    stemmer = porter.PorterStemmer()
    texts = [text for row in fixture_rows for text in row] + _random_sentences(MATCH_WORDS, 500, seed=4)
    texts += [*_random_texts("ab1 -.İé\t", 2000, 20, seed=5), "The LESIONS were seen, 3.5cm!", "", " ies "]
    for text in texts:
        assert list(tm.rouge_tokens(text, True)) == tokenize.tokenize(text, stemmer), repr(text)
        assert list(tm.rouge_tokens(text, False)) == tokenize.tokenize(text, None), repr(text)


def test_spatial_scores_equal_the_libraries_on_random_pairs() -> None:
    sentences = _random_sentences(MATCH_WORDS, 2000, seed=6)
    preds, refs = sentences[::2], [s or "x" for s in sentences[1::2]]
    assert tm.spatial_metrics(preds, refs, sbert=False) == tm.spatial_metrics(preds, refs, sbert=False, cache=False)


def test_word_tokenize() -> None:
    assert tm.word_tokenize("No pleural effusion.") == ["No", "pleural", "effusion", "."]
    assert "word_tokenize" in tm.meteor_tokenizer_label()


def test_exact_match() -> None:
    assert tm.normalize_answer("  The Right Lung. ") == "the right lung"
    assert tm.exact_match("Right lung.", "right lung")
    assert tm.exact_match("(B) no!", "b NO")
    assert not tm.exact_match("right-lung", "right lung")  # punctuation is removed, not turned into a space
    assert tm.exact_match_accuracy(["yes", "No.", "left"], ["Yes", "no", "right"]) == pytest.approx(2 / 3)
    assert tm.exact_match_accuracy([], []) == 0.0


def test_corpus_bleu_dedup_is_exact() -> None:
    preds = ["the cat sat on the mat", "no .", "the cat sat on the mat", "a b c d", "no ."]
    refs = ["the cat is on the mat", "no", "the cat is on the mat", "a b c e", "no"]
    assert tm.corpus_bleu(preds, refs, cache=True) == tm.corpus_bleu(preds, refs, cache=False)


def test_normalize_pairs_drops_empty_answers() -> None:
    preds, refs = tm.normalize_pairs([" A ", "b", None, "C"], ["X ", "  ", "y", None])
    assert (preds, refs) == (["a", ""], ["x", "y"])
    preds, refs = tm.normalize_pairs([" A "], ["X "], lowercase=False)
    assert (preds, refs) == (["A"], ["X"])
    result = tm.spatial_metrics(["a"], [" "], sbert=False)
    assert result["count"] == 0


def test_open_ended_skips_empty_predictions() -> None:
    scores = tm.open_ended_metrics(["", "yes"], ["no", "Yes"], bertscore=False)
    assert scores.count == 1 and scores.skipped_empty == 1
    assert scores.bleu == 0.0  # "yes" vs "Yes": 13a is case-sensitive
    assert scores.rouge1 == 1.0  # rouge-score lowercases
    assert scores.meteor == pytest.approx(0.5, abs=1e-15)  # one match, one chunk: penalty 0.5
    assert scores.exact_match == 0.5
    assert scores.bert_f1 is None and scores.bertscore_model is None
    samples = tm.open_ended_samples(["", "yes"], ["no", "Yes"], bertscore=False)
    assert samples.bleu == [None, 0.0] and samples.exact_match == [False, True]


# --------------------------------------------------------------------------- the CT-SpatialVQA reference


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_spatial_protocol_reproduces_reference(name: str, reference: dict[str, dict[str, float]]) -> None:
    result = tm.spatial_metrics_jsonl(spatial_dir() / name, lowercase=True, sbert=False)
    expected = reference[name]
    assert result["count"] == expected["count"]
    for key in TEXT_KEYS[1:]:
        assert abs(result[key] - expected[key]) <= 1e-9, (key, result[key], expected[key])
    assert result["bleu"] > 1.0  # sacreBLEU's 0-100 scale, like the reference


@pytest.mark.slow
@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_spatial_sbert_reproduces_reference(name: str, reference: dict[str, dict[str, float]]) -> None:
    result = tm.spatial_metrics_jsonl(spatial_dir() / name, embedder=_EMBEDDER)
    assert list(result) == list(tm.SPATIAL_METRIC_NAMES)
    for key in TEXT_KEYS[1:]:
        assert abs(result[key] - reference[name][key]) <= 1e-9
    # float32 embeddings: batch composition changes the last bits only
    assert abs(result["sbert_cosine"] - reference[name]["sbert_cosine"]) <= 1e-6


_EMBEDDER = tm.SentenceEmbedder()


# --------------------------------------------------------------------------- caching / workers invariance


def test_spatial_values_do_not_depend_on_cache_or_workers(fixture_rows: list[tuple[str, str]]) -> None:
    rows = fixture_rows[::2] + fixture_rows[:300]  # 900 rows, 300 of them repeated
    preds = [p for p, _ in rows]
    refs = [r for _, r in rows]
    cached = tm.spatial_metrics(preds, refs, sbert=False, cache=True)
    plain = tm.spatial_metrics(preds, refs, sbert=False, cache=False)
    pooled = tm.spatial_metrics(preds, refs, sbert=False, cache=True, workers=2)
    assert cached == plain == pooled
    assert tm.score_pairs("spatial", list(zip(preds, refs, strict=True)), cache=True) == tm.score_pairs(
        "spatial", list(zip(preds, refs, strict=True)), cache=False
    )


def test_3drad_values_do_not_depend_on_cache_or_workers(fixture_rows: list[tuple[str, str]]) -> None:
    rows = fixture_rows[1::3] + fixture_rows[:100] + [("", "no"), ("  ", "yes")]
    preds = [p for p, _ in rows]
    refs = [r for _, r in rows]
    cached = tm.open_ended_metrics(preds, refs, bertscore=False, cache=True)
    plain = tm.open_ended_metrics(preds, refs, bertscore=False, cache=False)
    pooled = tm.open_ended_metrics(preds, refs, bertscore=False, cache=True, workers=2)
    assert cached == plain == pooled
    assert cached.skipped_empty == 2 and cached.count == len(rows) - 2


@pytest.mark.slow
def test_embeddings_once_per_string_same_values() -> None:
    texts = ["no pleural effusion.", "right lower lobe", "no pleural effusion.", "the heart is enlarged"]
    cached = tm.SentenceEmbedder(cache=True)
    plain = tm.SentenceEmbedder(cache=False)
    a = cached.encode(texts)
    b = plain.encode(texts)
    assert a.shape == (4, 384) and len(cached._vectors) == 3
    assert abs(a - b).max() <= 1e-6
    assert float((a * a).sum(axis=1).min()) == pytest.approx(1.0, abs=1e-5)
    cos = cached.cosine(texts[:2], texts[2:])
    assert cos[0] == pytest.approx(0.0 + float((a[0] * a[2]).sum()), abs=1e-7)


@pytest.mark.slow
def test_bertscore_offline_stand_in() -> None:
    scorer = tm.BertScoreF1()
    assert "stand-in" in scorer.label and scorer.num_layers == 6
    preds = ["no pleural effusion", "right lower lobe", "no pleural effusion"]
    refs = ["no pleural effusion", "left upper lobe", "no pleural effusion"]
    f1 = scorer.f1(preds, refs)
    assert f1[0] == pytest.approx(1.0, abs=1e-5) and f1[0] == f1[2]
    assert 0.0 < f1[1] < f1[0]
    import bert_score  # type: ignore[import-untyped]

    _, _, direct = bert_score.score(preds[1:2], refs[1:2], model_type=scorer.path, num_layers=6)
    assert f1[1] == pytest.approx(float(direct[0]), abs=1e-5)
    scores = tm.open_ended_metrics(preds, refs, bertscore=scorer)
    assert scores.bertscore_model == scorer.label
    assert scores.bert_f1 == pytest.approx(sum(f1) / 3, abs=1e-9)


def test_bertscore_model_setting_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        tm.BertScoreF1(model_path=tmp_path / "roberta-large")


def test_forked_workers_read_wordnet_safely(fixture_rows: list[tuple[str, str]]) -> None:
    """Forked workers must not share the parent's WordNet file offsets (they read garbage synsets)."""
    meteor_score.nltk_wordnet().synsets("lung")  # the parent has WordNet's data files open
    meteor_score.wordnet_synonyms.cache_clear()  # the workers look every word up themselves
    scoring_pool.discard_worker_pool(2)  # a fresh pool, forked now
    pooled = tm.score_pairs("spatial", fixture_rows, workers=2)
    meteor_score.wordnet_synonyms.cache_clear()
    assert pooled == tm.score_pairs("spatial", fixture_rows, workers=1)
    plain = tm.score_pairs("spatial", fixture_rows, workers=2, cache=False)  # NLTK's own reader in the workers
    assert plain == pooled


def test_a_forked_child_starts_its_own_pool(fixture_rows: list[tuple[str, str]]) -> None:
    """A child forked from a process holding a pool must not wait on the parent's workers."""
    pairs = fixture_rows[:100]
    expected = tm.score_pairs("spatial", pairs, workers=2)
    assert scoring_pool.WORKER_POOLS  # the parent holds a pool
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: score with workers and report, never return into pytest
        try:
            ok = not scoring_pool.WORKER_POOLS and tm.score_pairs("spatial", pairs, workers=2) == expected
            os.write(write, b"1" if ok else b"0")
        finally:
            tm.clear_caches()  # stops the child's own pool: its workers would outlive an os._exit
            os._exit(0)
    os.close(write)
    import select

    ready, _, _ = select.select([read], [], [], 120)
    answer = os.read(read, 1) if ready else b"timeout"
    os.close(read)
    if not ready:
        os.kill(child, 9)
    os.waitpid(child, 0)
    assert answer == b"1"


def test_13a_falls_back_to_sacrebleu_when_its_rules_change(monkeypatch: pytest.MonkeyPatch) -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    text = "No effusion, 3.5-4 cm."
    assert tokenizers.tokenize_13a_uncached(text) == Tokenizer13a()(text) == "No effusion , 3.5 - 4 cm ."
    assert tm.tokenize_13a(text, cache=False) == tm.tokenize_13a(text)
    monkeypatch.setattr(tokenizers, "regexp_tokenizer_steps", lambda: None)  # other rules in a future sacreBLEU
    monkeypatch.setattr(tokenizers, "sacrebleu_13a", lambda: lambda line: f"sacrebleu:{line}")
    assert tokenizers.tokenize_13a_uncached(text) == f"sacrebleu:{text}"


def test_worker_pool_is_kept_and_replaced_when_broken(fixture_rows: list[tuple[str, str]]) -> None:
    pairs = fixture_rows[:200]
    expected = tm.score_pairs("spatial", pairs, workers=1)
    assert tm.score_pairs("spatial", pairs, workers=2) == expected
    pool = scoring_pool.worker_pool(2)
    assert tm.score_pairs("spatial", pairs, workers=2) == expected
    assert scoring_pool.worker_pool(2) is pool  # kept across calls, with the workers' caches
    for process in list(pool._processes.values()):  # a worker killed from outside breaks the pool
        process.kill()
        process.join()
    assert tm.score_pairs("spatial", pairs, workers=2) == expected
    assert scoring_pool.worker_pool(2) is not pool


# --------------------------------------------------------------------------- what the fast paths reproduce


def test_numpy_mean_without_numpy_is_numpys_bit_for_bit() -> None:
    """numpy's float64 mean (pairwise summation in blocks of 128, eight accumulators) reproduced exactly."""
    import numpy as np

    from rad3d_pipeline.evaluation.text_metrics.memo import numpy_mean

    rng = random.Random(21)
    lengths = [*range(1, 300), 1000, 1024, 1031, 4099, 8191, 8192, 8193, 9077, 20011, 65537]
    for n in lengths:
        # values over 16 orders of magnitude, so the order of the additions shows in the last bits
        values = [rng.random() * 10 ** rng.randint(-8, 8) for _ in range(n)]
        assert numpy_mean(values) == float(np.mean(np.asarray(values, dtype=np.float64))), n
    scores = [rng.random() for _ in range(9077)]  # metric values in [0, 1], the protocols' case
    assert numpy_mean(scores) == float(np.mean(scores))
    assert numpy_mean([]) == 0.0


def test_bleu_segment_statistics_equal_sacrebleu_per_pair() -> None:
    """Per pair, the n-gram matches counted on shared words equal sacreBLEU's own statistics (repeats clipped)."""
    from sacrebleu.metrics.bleu import BLEU

    from rad3d_pipeline.evaluation.text_metrics.bleu import sacrebleu_segment_stats

    bleu = BLEU()
    rng = random.Random(22)
    words = ["a", "b", "c", "a.", "b,", "1-2", "the", "the", "lung"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 16))) for _ in range(3000)]
    texts += _random_sentences(MATCH_WORDS, 1000, seed=23)
    for hyp, ref in zip(texts[::2], texts[1::2], strict=True):
        expected = bleu._extract_corpus_statistics([hyp], [[ref]])[0]
        assert sacrebleu_segment_stats(hyp, ref) == expected, (hyp, ref)


def test_rouge_equals_rouge_score_per_pair() -> None:
    """ROUGE-1/2/L from shared words and bit-parallel LCS equal rouge-score's on repetitive random pairs."""
    rng = random.Random(24)
    words = ["a", "b", "c", "lesions", "lesion", "the", "the", "of", "left"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 14))) for _ in range(2000)]
    texts += _random_sentences(MATCH_WORDS, 1000, seed=25)
    for stemmed in (True, False):
        scorer = rouge.library_scorer(stemmed)
        for ref, pred in zip(texts[::2], texts[1::2], strict=True):
            s = scorer.score(ref, pred)
            expected = (s["rouge1"].fmeasure, s["rouge2"].fmeasure, s["rougeL"].fmeasure)
            assert tm.rouge_f(ref, pred, use_stemmer=stemmed) == expected, (ref, pred)
            assert rouge.rouge1_f(ref, pred, use_stemmer=stemmed) == expected[0]
