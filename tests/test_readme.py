"""The README is the manual: its generated parts and the commands CI runs must stay true."""

import re
import subprocess
from pathlib import Path

from everest.config import with_reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_configuration_reference_matches_the_dataclasses():
    assert README == with_reference(README), "run: python -m everest.config --write-readme README.md"


def test_ci_runs_the_readme_test_command():
    block = README.split("<!-- ci:test -->", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", block, re.S).group(1)
    extracted = subprocess.run(
        ["awk", '/<!-- ci:test -->/{found=1; next} found && /^```/{if (inside) exit; inside=1; next} inside{print; exit}',
         "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == command
    assert "pytest" in command and "requirements.txt" in command
    assert "awk" in (ROOT / ".ci" / "run").read_text()


def test_files_the_readme_names_exist():
    for path in set(re.findall(r"\b((?:configs|launch|ds_configs|kernels)/[\w./-]+\.(?:yaml|py|json|example|md))", README)):
        if "{" in path:
            continue
        assert (ROOT / path).exists(), path
