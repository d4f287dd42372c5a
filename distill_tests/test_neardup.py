"""Near-duplicate decisions (lib/hygiene/neardup.py): which rows cluster, which row represents a
cluster, and that batching and spilling to a scratch file change nothing. Deterministic: fixed
texts, fixed permutations; nothing is timed."""

from __future__ import annotations

import gc
import random
from pathlib import Path

import numpy as np
import pytest

from distill_assets.lib.hygiene import neardup
from distill_assets.lib.hygiene.neardup import NearDupIndex, lsh_params, shingle_hashes


def _words(seed: int, count: int = 300, vocabulary: int = 5000) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(vocabulary)}" for _ in range(count)]


def _edit(words: list[str], positions: list[int], tag: str) -> list[str]:
    edited = list(words)
    for position in positions:
        edited[position] = f"{tag}{position}"
    return edited


def _text(words: list[str]) -> str:
    return " ".join(words)


def _reps(
    texts: list[str], batch_rows: int = neardup.BATCH_ROWS, scratch_dir: Path | None = None
) -> list[int]:
    with NearDupIndex(0.8, batch_rows=batch_rows, scratch_dir=scratch_dir) as index:
        rows = [index.add(text) for text in texts]
        assert rows == list(range(len(texts)))
        return index.representatives().tolist()


def _share_a_band(index: NearDupIndex, one: str, two: str) -> bool:
    first, second = index._band_hashes(one), index._band_hashes(two)
    assert first is not None and second is not None
    return bool((first == second).any())


def _corpus() -> tuple[list[str], list[int]]:
    """Unrelated texts, exact and normalized copies, planted near-duplicates, a chain, empties;
    and each row's expected representative."""
    texts: list[str] = []
    reps: list[int] = []

    def add(text: str, rep: int | None = None) -> None:
        reps.append(len(texts) if rep is None else rep)
        texts.append(text)

    unrelated = [_text(_words(1000 + i)) for i in range(30)]
    a = _words(6)
    b = _edit(a, [20, 70, 120], "b")
    c = _edit(b, [170, 220, 270], "c")
    for text in unrelated[:5]:
        add(text)  # rows 0-4
    add(_text(a))  # row 5
    add(_text(c), rep=5)  # joins a's cluster through b, further down
    for text in unrelated[5:]:
        add(text)  # rows 7-31: unrelated[i] is row i + 2
    add(_text(b), rep=5)
    add(unrelated[0], rep=0)
    add(unrelated[3].upper(), rep=3)
    add("")
    add("   ")
    add("a b c")
    add("A  B\tc", rep=len(texts) - 1)
    for i in range(10, 20):
        add(_text(_edit(_words(1000 + i), [100, 200], "x")), rep=i + 2)
    return texts, reps


# --- the decisions ---------------------------------------------------------------------------


def test_exact_and_normalized_duplicates_always_cluster_on_the_first_row():
    base, other = _text(_words(1)), _text(_words(2))
    spaced = "  ".join(base.split()) + "\n"
    assert _reps([base, other, base, base.upper(), spaced, other]) == [0, 1, 0, 0, 0, 1]
    assert _reps(["one two", "x", "ONE\ntwo"]) == [0, 1, 0]  # shorter than a shingle


def test_a_planted_near_duplicate_clusters():
    base = _words(0)
    edited = _edit(base, [100, 200], "changed")  # 2 of 300 words
    unrelated = _text(_words(3))
    assert _reps([unrelated, _text(base), _text(edited)]) == [0, 1, 1]


def test_unrelated_texts_of_one_vocabulary_never_cluster():
    texts = [_text(_words(seed, vocabulary=500)) for seed in range(60)]
    assert _reps(texts) == list(range(60))


def test_empty_texts_are_never_duplicates():
    assert _reps(["", "", "  \n\t ", "x y", ""]) == [0, 1, 2, 3, 4]


def test_a_chain_is_one_cluster_represented_by_its_first_row():
    a = _words(6)
    b = _edit(a, [20, 70, 120], "b")
    c = _edit(b, [170, 220, 270], "c")
    index = NearDupIndex(0.8)
    # the chain's precondition: a ~ b and b ~ c share bands, a and c share none
    assert _share_a_band(index, _text(a), _text(b))
    assert _share_a_band(index, _text(b), _text(c))
    assert not _share_a_band(index, _text(a), _text(c))
    unrelated = _text(_words(3))
    # c joins a's cluster only through b, which comes last
    assert _reps([_text(a), unrelated, _text(c), _text(b)]) == [0, 1, 0, 0]
    assert _reps([_text(c), _text(a), unrelated, _text(b)]) == [0, 0, 2, 0]


# --- batching and spilling change nothing ----------------------------------------------------


@pytest.mark.parametrize(
    ("batch_rows", "block_rows", "spill"),
    [(1, 65536, False), (100_000, 65536, False), (1, 4, True), (7, 8, True), (100_000, 3, True)],
)
def test_batches_and_spilling_give_the_same_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int, block_rows: int, spill: bool
):
    monkeypatch.setattr(neardup, "_BLOCK_ROWS", block_rows)
    texts, expected = _corpus()
    scratch = tmp_path if spill else None
    assert _reps(texts, batch_rows=batch_rows, scratch_dir=scratch) == expected
    assert list(tmp_path.iterdir()) == []  # the scratch file is gone


def test_add_many_is_add_in_order():
    texts, _expected = _corpus()
    with NearDupIndex(0.8, batch_rows=5) as index:
        assert index.add_many(texts[:10]) == range(10)
        assert index.add("x") == 10
        assert index.add_many(texts[10:]) == range(11, len(texts) + 1)
        reps = index.representatives().tolist()
    assert reps == _reps([*texts[:10], "x", *texts[10:]])


def test_spilled_blocks_leave_memory_flat_and_the_scratch_file_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(neardup, "_BLOCK_ROWS", 8)
    texts = [_text(_words(seed, count=20)) for seed in range(100)]
    spilled = NearDupIndex(0.8, scratch_dir=tmp_path, batch_rows=16)
    in_memory = NearDupIndex(0.8, batch_rows=16)
    spilled.add_many(texts)
    in_memory.add_many(texts)
    assert spilled.nbytes == spilled.bands * 8 * 8  # one block, whatever the row count
    assert in_memory.nbytes > spilled.nbytes * 10
    (scratch,) = tmp_path.iterdir()
    assert scratch.name.startswith(".neardup.") and scratch.stat().st_size > 0
    assert spilled.representatives().tolist() == in_memory.representatives().tolist()
    spilled.close()
    spilled.close()  # idempotent
    assert list(tmp_path.iterdir()) == []
    in_memory.close()


def test_the_scratch_file_is_removed_on_abort_and_when_collected(tmp_path: Path):
    with pytest.raises(RuntimeError), NearDupIndex(0.8, scratch_dir=tmp_path) as index:
        index.add("some text")
        raise RuntimeError("the export failed")
    assert list(tmp_path.iterdir()) == []
    forgotten = NearDupIndex(0.8, scratch_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    del forgotten
    gc.collect()
    assert list(tmp_path.iterdir()) == []


# --- the estimator is datasketch's, value for value --------------------------------------------

_FOX = "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun."


def test_shingle_hashes_are_the_polynomial_hashes_of_the_normalized_words():
    assert shingle_hashes(_FOX) == [
        947309256, 964307727, 1048872412, 1435110097, 1574497103, 1613415784,
        1930775729, 2305840746, 2347524001, 2578268167, 3109356962, 4277252293,
    ]  # fmt: skip
    # NFKC, case folding and str.split()'s blanks, ASCII or not
    assert shingle_hashes("Ｆｉｎｅ\u00a0STRASSE a\u2028b c d") == shingle_hashes(
        "fine strasse a b c d"
    )
    assert shingle_hashes("Straße x y z w") == shingle_hashes("STRASSE X Y Z W")
    assert shingle_hashes("e\u0301 x y z w") == shingle_hashes("\u00e9 x y z w")


@pytest.mark.parametrize(
    ("num_perm", "seed", "first"),
    [
        (128, 1, [166866571, 131324243, 129799807, 266169137, 504793691, 378028016]),
        (64, 7, [795617275, 568953423, 70657275, 23068258, 43929387, 3917520]),
    ],
)
def test_signatures_are_datasketch_affine32_values(num_perm: int, seed: int, first: list[int]):
    # datasketch.MinHash(num_perm, seed, hashfunc=int).update_batch(shingle_hashes(_FOX))
    hashes, offsets = neardup._shingle_batch([_FOX.encode()])
    signature = neardup._signatures(hashes, offsets, num_perm, num_perm, seed)
    assert signature.shape == (num_perm, 1)
    assert signature[:6, 0].tolist() == first


def test_lsh_parameters_are_datasketchs():
    assert lsh_params(0.8) == neardup._optimal_param(0.8, 128, 0.5, 0.5) == (9, 13)
    index = NearDupIndex(0.5, num_perm=64)
    assert (index.bands, index.rows) == neardup._optimal_param(0.5, 64, 0.5, 0.5)


def test_decisions_do_not_depend_on_the_instance():
    texts, _expected = _corpus()
    assert _reps(texts) == _reps(texts)
    one, two = NearDupIndex(0.8), NearDupIndex(0.8)
    assert np.array_equal(one._band_hashes(texts[0]), two._band_hashes(texts[0]))
