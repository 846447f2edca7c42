"""Leave-one-source-out: sources are catalogue groups, nothing of a held-out group trains, data is licensed."""

from __future__ import annotations

from classifier.sources import CATALOGUE, EXAMPLES_SOURCE, SOURCES_DIR, load_manifest
from classifier.training import is_firing_rule, rule_sources, source_folds


def test_every_group_is_held_out_once_and_never_leaks_into_its_training_fold(split):
    train, test, _ = split
    corpus = train + test
    folds = source_folds(corpus)
    assert [f[0] for f in folds] == rule_sources(corpus)
    assert len(folds) == 13  # the catalogue's groups
    assert {s.source for s in corpus if s.origin == "rule"} == {s.group for s in corpus if s.origin == "rule"}
    assert {s.source for s in corpus if s.origin == "example"} == {EXAMPLES_SOURCE}
    for source, fold_train, held in folds:
        assert held and all(s.source == source and is_firing_rule(s) for s in held)
        assert source not in {s.source for s in fold_train}
        # every other source trains, the examples included
        assert {s.source for s in fold_train} == {s.source for s in corpus} - {source}


def test_only_the_sanctioned_catalogue_is_vendored_with_its_licence():
    manifest = load_manifest()
    assert [s.name for s in manifest] == [CATALOGUE]
    assert sorted(p.name for p in SOURCES_DIR.iterdir() if p.is_dir()) == [CATALOGUE]
    for source in manifest:
        folder = SOURCES_DIR / source.name
        assert (folder / "SOURCE.md").is_file()
        assert any(p.name.upper().startswith("LICEN") for p in folder.iterdir())
        assert all(f.is_file() for f in source.files)
        assert source.licence == "CC-BY-4.0"
