"""A search space whose every child fails to build: the toy space (tests/toy_space.py) with a
``build`` that raises, registered as ``broken_toy``. Importing this module registers it.

Run as a script, it is ``evo`` with this space registered: ``python broken_space.py worker URL``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_space import ToySpace  # noqa: E402  (registers the toy space and its mutations)

from evo.spaces import register_space  # noqa: E402

BUILD_FAILURE = "this space cannot build anything"


@register_space
class BrokenToySpace(ToySpace):
    name = "broken_toy"

    def build(self, dna: Any, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        raise RuntimeError(BUILD_FAILURE)


if __name__ == "__main__":
    from launch.cli import main

    sys.exit(main(sys.argv[1:]))
