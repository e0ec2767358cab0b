"""The glossary defines the terms the notebooks use, and every link into it lands on a definition."""

import re

from finescope_nb.paths import REPO_ROOT

GLOSSARY = (REPO_ROOT / "docs" / "GLOSSARY.md").read_text()
ANCHORS = set(re.findall(r'<a id="([^"]+)"></a>', GLOSSARY))
REQUIRED = ["sae", "residual-stream", "l0", "k-versus-K", "taylor-importance", "non-embedding-parameters", "cloze",
            "precision-at-m", "auroc", "dsir", "centred", "byte-piece", "fragment"]


def _linking_files():
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))]


def test_the_terms_the_notebooks_use_are_defined():
    assert not set(REQUIRED) - ANCHORS


def test_every_link_into_the_glossary_lands_on_a_definition():
    linked = set()
    for path in _linking_files():
        for anchor in re.findall(r"GLOSSARY\.md#([A-Za-z0-9-]+)", path.read_text()):
            assert anchor in ANCHORS, f"{path.name} links to a missing glossary entry #{anchor}"
            linked.add(anchor)
    assert not set(REQUIRED) - linked, "every required term is linked from a notebook or the README"
