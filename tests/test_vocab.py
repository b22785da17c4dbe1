import pytest

from rnnlab.data.vocab import UnknownSymbolError, Vocabulary


def test_build_orders_specials_then_frequency_and_round_trips():
    vocab = Vocabulary.build(["b", "a", "b", "c", "b", "a"], specials=["<eos>"])
    assert vocab.itos == ["<eos>", "b", "a", "c"]
    ids = vocab.encode(["a", "c", "b"])
    assert ids == [2, 3, 1]
    assert vocab.decode(ids) == ["a", "c", "b"]
    assert Vocabulary.from_state_dict(vocab.state_dict()) == vocab


def test_min_freq_and_max_size():
    words = ["a", "a", "a", "b", "b", "c"]
    vocab = Vocabulary.build(words, specials=["<pad>", "<unk>"], min_freq=2, max_size=3, unk="<unk>")
    assert vocab.itos == ["<pad>", "<unk>", "a"]
    assert vocab.encode(["b"]) == [1]


def test_extended_keeps_every_id_and_appends_the_missing_symbols_seen_often_enough():
    vocab = Vocabulary.build(["a", "a", "b"], specials=["<pad>", "<unk>"], unk="<unk>")
    bigger = vocab.extended(["z", "a", "y", "z", "x", "y", "w"], min_freq=2)
    assert bigger.itos == ["<pad>", "<unk>", "a", "b", "y", "z"]  # y and z twice each: alphabetical; w, x once
    assert bigger.encode(["a", "z", "w"]) == [2, 5, 1] and bigger.unk == "<unk>"
    assert vocab.itos == ["<pad>", "<unk>", "a", "b"]  # the original is left as it was
    assert vocab.extended(["w", "z"]).itos == ["<pad>", "<unk>", "a", "b", "w", "z"]


def test_unknown_symbols_map_to_unk_or_raise_listing_them():
    vocab = Vocabulary(["<unk>", "x"], unk="<unk>")
    assert vocab.encode(["x", "y"]) == [1, 0]
    strict = Vocabulary(["<unk>", "x"], unk="<unk>", on_unknown="error")
    with pytest.raises(UnknownSymbolError, match=r"^2 symbol\(s\) not in the vocabulary: 'y', 'z'$"):
        strict.encode(["z", "x", "y"])
    with pytest.raises(UnknownSymbolError):
        Vocabulary(["x"]).encode(["q"])


def test_bad_vocabularies_are_refused():
    with pytest.raises(ValueError, match="unique"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Vocabulary(["a"], unk="<unk>")
