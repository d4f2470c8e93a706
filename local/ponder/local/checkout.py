"""Where the repository checkout is, when `ponder.local` runs from one.

An editable install (`make venv`) imports this package from `<repo>/local/ponder/local/`; the
checkout beside it has the shipped model (`models/`), the benchmarks and the tool scripts. An
installed wheel has none of them, so every caller handles "no checkout".
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def checkout_root(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The repository root above `package_dir` (`<root>/local/ponder/local`), else None."""
    root = package_dir.parents[2]
    is_checkout = (
        package_dir.relative_to(root).as_posix() == "local/ponder/local"
        and (root / "pyproject.toml").is_file()
        and (root / "models").is_dir()
    )
    return root if is_checkout else None
