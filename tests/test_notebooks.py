"""The course notebooks follow the notebook guide, checked mechanically with nbformat (issue 23).

Executing them is `make notebooks` (CI runs it after the tests, in the fast setting); this file checks
their shape, which needs no kernel: cell counts, markdown before code, the template's sections, the
CONFIG cell, seeds and devices from ``studio.notebook``, imports where first used, Lightning with a
CSV logger and early stopping where they train, the studio's own packages, no committed outputs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from studio.notebook import quick

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
COURSE = ["01_distributions_and_sampling", "02_vae", "03_gan", "04_diffusion", "05_lora", "06_prompting",
          "07_rag", "08_evaluation"]
SECTIONS = ["Introduction", "Setup", "Putting it together", "Experiments", "Key takeaways"]
BLOCK_PARTS = ["Intuition", "Implementation", "Visualization", "Key insight"]
STUDIO_PACKAGES = ("studio", "generative", "finetune", "ingest", "eval")
# where a notebook trains with something other than L.Trainer, and why (the guide's two exceptions)
NOT_LIGHTNING = {"05_lora": "Hugging Face's Trainer, as the course does for LoRA"}


def load(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def headings(cell, level: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{level} (.+)$", cell.source, re.M)]


def sections(nb) -> list[tuple[str, list]]:
    """The notebook cut at its '## ' headings: [(title, cells)]."""
    out: list[tuple[str, list]] = []
    for cell in nb.cells:
        titles = headings(cell, "##") if cell.cell_type == "markdown" else []
        if titles:
            out.append((titles[0], []))
        if out:
            out[-1][1].append(cell)
    return out


def code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_every_notebook_of_the_course_is_there():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == COURSE


@pytest.mark.parametrize("name", COURSE)
def test_cells_are_50_to_80_and_markdown_comes_before_every_code_cell(name):
    nb = load(name)
    nbformat.validate(nb)
    assert 50 <= len(nb.cells) <= 80, f"{name}: {len(nb.cells)} cells"
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and headings(nb.cells[0], "#"), f"{name}: starts with a '# ' title"
    for i, kind in enumerate(kinds):
        if kind == "code":
            assert kinds[i - 1] == "markdown", f"{name}: code cell {i} follows code cell {i - 1}"
            assert nb.cells[i].source.strip(), f"{name}: empty code cell {i}"


@pytest.mark.parametrize("name", COURSE)
def test_outputs_are_not_committed(name):
    for i, cell in enumerate(load(name).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: cell {i} keeps its output"


@pytest.mark.parametrize("name", COURSE)
def test_the_template_sections_in_order_with_building_blocks_between_setup_and_putting_it_together(name):
    titles = [t for t, _ in sections(load(name))]
    found = [next((i for i, t in enumerate(titles) if t.lower().startswith(s.lower())), -1) for s in SECTIONS]
    assert -1 not in found, f"{name}: missing {[s for s, i in zip(SECTIONS, found, strict=True) if i < 0]} in {titles}"
    assert found == sorted(found), f"{name}: sections out of order: {titles}"
    blocks = sections(load(name))[found[1] + 1:found[2]]
    assert len(blocks) >= 2, f"{name}: at least two building blocks between Setup and Putting it together"
    for title, cells in blocks:
        parts = [h for c in cells if c.cell_type == "markdown" for h in headings(c, "###")]
        assert parts == BLOCK_PARTS, f"{name}: block {title!r} has {parts}, not {BLOCK_PARTS}"
        first_code = next(i for i, c in enumerate(cells) if c.cell_type == "code")
        assert any("### Intuition" in c.source for c in cells[:first_code]), \
            f"{name}: block {title!r} shows code before its intuition"


@pytest.mark.parametrize("name", COURSE)
def test_a_config_cell_right_after_setup_with_every_value_commented_and_seed_and_device(name):
    nb = load(name)
    titles = sections(nb)
    setup = next(cells for t, cells in titles if t.lower().startswith("setup"))
    cells = [c for c in setup if c.cell_type == "code"]
    config_cell = next((c.source for c in cells if re.search(r"^CONFIG = \{", c.source, re.M)), None)
    assert config_cell, f"{name}: the Setup section defines CONFIG = {{...}}"
    tree = ast.parse(config_cell)
    literal = next(n.value for n in tree.body if isinstance(n, ast.Assign)
                   and getattr(n.targets[0], "id", "") == "CONFIG" and isinstance(n.value, ast.Dict))
    lines = config_cell.splitlines()
    keys = [k.value for k in literal.keys]
    assert "seed" in keys, f"{name}: CONFIG has a seed"
    for k in literal.keys:
        assert "#" in lines[k.lineno - 1], f"{name}: CONFIG[{k.value!r}] has no inline comment"
    assert "set_seed(CONFIG['seed'])" in config_cell.replace('"', "'"), f"{name}: set_seed(CONFIG['seed'])"
    assert re.search(r"^device = get_device\(", config_cell, re.M), f"{name}: device = get_device(...)"
    assert "from studio.notebook import" in config_cell
    assert "quick(CONFIG" in config_cell, f"{name}: quick(CONFIG, ...) gives the fast setting"
    trains = any(re.search(r"\bTrainer\(", s) for s in code(nb))  # Lightning's or Hugging Face's
    if trains:
        assert "early_stop_patience" in keys, f"{name}: a notebook that trains has CONFIG['early_stop_patience']"


@pytest.mark.parametrize("name", COURSE)
def test_imports_sit_in_the_cell_where_they_are_first_used(name):
    cells = code(load(name))
    first_use: dict[str, int] = {}
    imported_in: dict[str, int] = {}
    for i, src in enumerate(cells):
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    imported_in.setdefault((alias.asname or alias.name).split(".")[0], i)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                first_use.setdefault(node.id, i)
    for alias, i in imported_in.items():
        assert alias in first_use, f"{name}: {alias} is imported in cell {i} and never used"
        assert first_use[alias] == i, \
            f"{name}: {alias} is imported in code cell {i} but first used in code cell {first_use[alias]}"
    only_imports = [i for i, src in enumerate(cells)
                    if all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.parse(src).body)]
    assert not only_imports, f"{name}: code cells {only_imports} hold nothing but imports"


@pytest.mark.parametrize("name", COURSE)
def test_training_uses_lightning_with_a_csv_logger_and_early_stopping_and_plots_the_curves(name):
    src = "\n".join(code(load(name)))
    if name in NOT_LIGHTNING:  # the guide's exception: it trains, but not with L.Trainer
        assert "L.Trainer(" not in src and "early_stop_patience" in src, f"{name}: {NOT_LIGHTNING[name]}"
        return
    if "L.Trainer(" not in src:
        assert not re.search(r"\bTrainer\(|trainer\.fit\(", src), f"{name}: trains without L.Trainer"
        return
    assert "CSVLogger(" in src and "EarlyStopping(" in src and "val_loss" in src, \
        f"{name}: L.Trainer with CSVLogger and EarlyStopping on val_loss"
    assert "axvline(" in src, f"{name}: curves plotted with the early-stopping point marked (axvline)"


@pytest.mark.parametrize("name", COURSE)
def test_notebooks_use_the_studios_packages_not_a_second_copy_of_the_models(name):
    src = "\n".join(code(load(name)))
    used = {m.group(1) for m in re.finditer(r"^\s*(?:from|import) (\w+)", src, re.M)}
    assert used & set(STUDIO_PACKAGES) - {"studio"} or "from studio." in src.replace("from studio.notebook", ""), \
        f"{name}: imports none of the studio's packages beyond studio.notebook"
    studio_models = {"VAE", "DCGAN", "DDPM", "ConvVAE", "MLPVAE", "MLPDenoiser", "Generator", "Discriminator"}
    defined = {n.name for s in code(load(name)) for n in ast.walk(ast.parse(s)) if isinstance(n, ast.ClassDef)}
    assert not defined & studio_models, f"{name}: defines {defined & studio_models} again"


@pytest.mark.parametrize("name", COURSE)
def test_each_notebook_ends_with_key_takeaways_and_a_responsible_use_note(name):
    nb = load(name)
    tail = " ".join(c.source for c in nb.cells[-6:] if c.cell_type == "markdown").lower()
    assert "key takeaways" in tail
    assert "responsible use" in " ".join(c.source.lower() for c in nb.cells if c.cell_type == "markdown"), \
        f"{name}: a synthetic-data and responsible-use note"


def test_quick_swaps_in_the_fast_values_only_under_the_fast_setting(monkeypatch):
    config = {"seed": 0, "steps": 2000}
    monkeypatch.delenv("STUDIO_NOTEBOOK_FAST", raising=False)
    assert quick(config, steps=20) == config
    monkeypatch.setenv("STUDIO_NOTEBOOK_FAST", "1")
    assert quick(config, steps=20) == {"seed": 0, "steps": 20} and config["steps"] == 2000
    with pytest.raises(KeyError, match="stepz"):
        quick(config, stepz=20)
