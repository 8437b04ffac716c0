"""The layout rules a newcomer relies on: stages in their own folders, short modules, data
flowing one way (the store knows no model or task; nothing but the CLI imports the CLI)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def modules(folder: str = "") -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_no_module_is_longer_than_about_300_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in modules()
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long


def test_stages_have_their_own_folders():
    for folder in ("embedding", "store", "training", "evaluation", "cli", "api", "corpus",
                   "tasks"):
        assert (PACKAGE / folder / "__init__.py").exists(), folder


def test_only_the_cli_imports_the_cli():
    # __main__ is `python -m pipeline`: the command itself
    offenders = [str(p.relative_to(PACKAGE)) for p in modules() if "cli" not in p.parts
                 and p.name != "__main__.py"
                 and any(name.startswith("pipeline.cli") for name in imports(p))]
    assert not offenders


def test_the_store_knows_no_model_and_no_task():
    for path in modules("store"):
        banned = {name for name in imports(path) if name.split(".")[0] in ("torch",
                  "transformers") or name.startswith(("pipeline.embedding", "pipeline.tasks",
                                                      "pipeline.training", "pipeline.corpus"))}
        assert not banned, (path.name, banned)


def test_embedding_knows_no_task_and_training_no_transformer():
    for path in modules("embedding"):
        assert not any(n.startswith(("pipeline.tasks", "pipeline.labels", "pipeline.training"))
                       for n in imports(path)), path.name
    for folder in ("training", "evaluation"):
        for path in modules(folder):
            assert not any(n.startswith(("pipeline.embedding", "transformers"))
                           for n in imports(path)), path.name
