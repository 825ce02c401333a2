"""Prints the N-th shell command block at the top of README.md (1-based).

`.ci/run` executes the README's test command through this script, so the two can never drift apart.
"""

import re
import sys
from pathlib import Path

blocks = re.findall(
    r"```bash\n(.*?)\n```", (Path(__file__).parents[1] / "README.md").read_text(), flags=re.S
)
print(blocks[int(sys.argv[1]) - 1].strip())
