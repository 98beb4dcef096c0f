"""Make lava-nc 0.10.0 importable on Python 3.11 (run with the lava venv's python).

lava-nc 0.10.0 declares Requires-Python <3.11. On 3.11 its import fails with
"ValueError: mutable default <class '...ByteEncoder'> for field x is not allowed: use
default_factory": Python 3.11 refuses unhashable dataclass defaults, and eight fields of
CoreEncoder, ChipEncoder and AxonEncoder in lava/magma/compiler/var_model.py default to
ByteEncoder() (upstream: https://github.com/lava-nc/lava/blob/v0.10.0/src/lava/magma/compiler/
var_model.py, same on main). This rewrites those defaults to field(default_factory=ByteEncoder),
which builds the same value per instance. Idempotent; exits 1 if the file is not as expected.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

OLD = re.compile(r"^(\s+\w+: ByteEncoder) = ByteEncoder\(\)$", re.M)
IMPORT_OLD = "from dataclasses import dataclass, InitVar\n"
IMPORT_NEW = "from dataclasses import dataclass, InitVar, field\n"
EXPECTED = 8


def main() -> int:
    spec = importlib.util.find_spec("lava")
    if spec is None or not spec.submodule_search_locations:
        print("patch_lava_py311: lava-nc is not installed in this interpreter", file=sys.stderr)
        return 1
    path = Path(list(spec.submodule_search_locations)[0]) / "magma" / "compiler" / "var_model.py"
    text = path.read_text()
    if "field(default_factory=ByteEncoder)" in text and not OLD.search(text):
        return 0  # already patched
    new, n = OLD.subn(r"\1 = field(default_factory=ByteEncoder)", text)
    if n != EXPECTED or IMPORT_OLD not in new:
        print(f"patch_lava_py311: {path} is not lava-nc 0.10.0's ({n} defaults)", file=sys.stderr)
        return 1
    path.write_text(new.replace(IMPORT_OLD, IMPORT_NEW, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
