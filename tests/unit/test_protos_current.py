"""The committed generated code must be exactly what the protos produce."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos() -> None:
    result = subprocess.run(["bash", "scripts/check_protos.sh"], cwd=REPO, capture_output=True,
                            text=True, env={"PYTHON": sys.executable,
                                 "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
                            timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
