"""``python -m lmlab <verb>``: the same CLI as the ``lmlab`` script."""

from lmlab.cli import main

main()
