"""Math drill worksheets from DeepMind's mathematics-dataset generator (PyPI 1.0.1, Apache-2.0).

The 2019 generator needs three small source patches to run under numpy 2 and sympy 1.14, and
one to be reproducible (see PATCHES); build_corpus.py installs the pinned wheel into
data/.cache/pydeps and applies them there, so the generator never becomes a dependency of the kit.

Reproducibility: every worksheet reseeds Python's ``random``, numpy's legacy global generator
and sympy's own generator from (build seed, family, worksheet number). The generator also
iterates over sets of strings, so the build runs with PYTHONHASHSEED=0 (build_corpus.py
re-executes itself to make sure).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
from pathlib import Path

from corpus_sources import LICENSES, Document, Unit

# (file inside the package, text to replace, replacement)
PATCHES = [
    # numpy 2 removed ndarray.itemset and np.object.
    ("sample/polynomials.py", "coeffs.itemset(index, value)", "coeffs[index] = value"),
    ("sample/polynomials.py", "expanded_coefficients.itemset(power, coeffs)",
     "expanded_coefficients[power] = coeffs"),
    ("sample/polynomials.py", "dtype=np.object)", "dtype=object)"),
    # sympy >= 1.7 moved base_solution_linear into the diophantine submodule.
    ("sample/polynomials.py",
     "from sympy.solvers.diophantine import base_solution_linear",
     "from sympy.solvers.diophantine.diophantine import base_solution_linear"),
    # A set of entities ordered by object address made composed questions differ run to run.
    ("util/composition.py", "  entities = set(context.child_entities)",
     "  entities = dict.fromkeys(context.child_entities)"),
    ("util/composition.py", "      entities.add(maybe_entity)",
     "      entities[maybe_entity] = None"),
]


def apply_patches(package_dir: Path) -> None:
    """Apply PATCHES to the installed ``mathematics_dataset`` package (idempotent)."""
    for rel, old, new in PATCHES:
        path = package_dir / rel
        text = path.read_text(encoding="utf-8")
        if new in text and old not in text:
            continue
        if old not in text:
            raise RuntimeError(f"mathematics-dataset patch target not found in {rel}: {old!r}")
        path.write_text(text.replace(old, new), encoding="utf-8")


_MODULES: dict[str, object] = {}   # flattened module name -> problem function (set per process)


def _load_modules() -> dict[str, object]:
    """All training modules over their full difficulty range, as ``family__name`` -> function."""
    if not _MODULES:
        from mathematics_dataset.modules import modules

        def add(tree, prefix):
            for key, value in tree.items():
                name = f"{prefix}__{key}" if prefix else key
                if isinstance(value, dict):
                    add(value, name)
                else:
                    _MODULES[name] = value
        add(modules.train(lambda entropy_range: entropy_range), "")
    return _MODULES


def families() -> dict[str, list[str]]:
    """Module family (the generator's top-level group, e.g. ``polynomials``) -> module names."""
    grouped: dict[str, list[str]] = {}
    for name in sorted(_load_modules()):
        grouped.setdefault(name.split("__")[0], []).append(name)
    return grouped


def _reseed(key: str) -> None:
    import numpy
    import sympy.core.random

    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    random.seed(value)
    numpy.random.seed(value)
    sympy.core.random.seed(value)


def _problem(name: str) -> tuple[str, str]:
    """One question/answer pair, skipping over-long ones as the generator's own driver does."""
    from mathematics_dataset import generate_settings

    while True:
        problem = _load_modules()[name]()
        question, answer = str(problem.question), str(problem.answer)
        if (len(question) <= generate_settings.MAX_QUESTION_LENGTH
                and len(answer) <= generate_settings.MAX_ANSWER_LENGTH):
            return question, answer


def worksheet(task: tuple[int, str, int, int]) -> list[str]:
    """The problems of one worksheet: ``Question\\nAnswer: answer``, until about ``chars`` long."""
    seed, family, number, chars = task
    _reseed(f"{seed}/{family}/{number}")
    names = families()[family]
    items: list[str] = []
    while sum(len(item) + 2 for item in items) < chars:
        question, answer = _problem(random.choice(names))
        items.append(f"{question}\nAnswer: {answer}")
    return items


def generate(seed: int, per_family: int, chars: int, processes: int = 2) -> list[Document]:
    """``per_family`` worksheets for every module family, as documents ``drills/<family>/<n>``
    with topic ``drill_<family>``. Runs on ``processes`` forked workers; results are in task
    order, so the output does not depend on scheduling."""
    _load_modules()
    tasks = [(seed, family, n, chars) for family in families() for n in range(per_family)]
    context = multiprocessing.get_context("fork")
    with context.Pool(processes) as pool:
        sheets = pool.map(worksheet, tasks, chunksize=8)
    return [Document(f"drills/{family}/{n:04d}", "math", f"drill_{family}",
                     "mathematics_dataset", LICENSES["mathematics_dataset"],
                     [Unit(item) for item in items])
            for (_, family, n, _), items in zip(tasks, sheets)]
